"""The rounds study pooled over seeds: collected from the seeds' workspaces as the pipeline
lays them out, its numbers checked against an independent computation, and its errors."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from dlma.cli import app
from dlma.core.errors import DlmaError
from dlma.rounds.study import collect, collect_control, collect_variant, markdown, summarize, verdict

PROMPTS = 12
ROUNDS = 3


def table(rng, aligned_answers, base_answers, shift: float) -> pl.DataFrame:
    base = rng.uniform(0, 1, PROMPTS)
    aligned = np.clip(base + shift + rng.normal(0, 0.05, PROMPTS), 0, 1)
    verdicts = np.where(aligned > base, "win", np.where(aligned < base, "lose", "tie"))
    return pl.DataFrame({"id": [f"p{i:02d}" for i in range(PROMPTS)], "set": ["heldout"] * PROMPTS,
                         "answer_base": base_answers, "answer_aligned": aligned_answers,
                         "sentiment_aligned": aligned, "sentiment_base": base, "verdict_sentiment": verdicts,
                         "kl_aligned": rng.uniform(0, 2, PROMPTS)})


def workspace(root, seed: int, *, break_pairing: bool = False) -> dict:
    """A seed's workspace as the pipeline leaves it: round 1's reports/eval_samples.parquet,
    rounds/<k>/eval_samples_vs_{base,previous}.parquet; round k's answers are 'r<k>-<i>'."""
    rng = np.random.default_rng(seed)
    answers = {k: [f"s{seed}-r{k}-{i}" for i in range(PROMPTS)] for k in range(ROUNDS + 1)}  # round 0: the base model
    tables = {}
    (root / "reports" / "rounds").mkdir(parents=True)
    for k in range(1, ROUNDS + 1):
        tables[(k, "vs_base")] = table(rng, answers[k], answers[0], 0.1 * k)
        previous = list(answers[k - 1])
        if break_pairing and k == 3:
            previous[0] = "something round 2 never said"
        tables[(k, "vs_previous")] = table(rng, answers[k], previous, 0.05)
        if k == 1:
            tables[(1, "vs_previous")] = tables[(1, "vs_base")]
            tables[(1, "vs_base")].write_parquet(root / "reports" / "eval_samples.parquet")
            (root / "reports" / "train.json").write_text(json.dumps({"pairs": 128, "steps": 32}))
            continue
        folder = root / "rounds" / str(k)
        folder.mkdir(parents=True)
        for against in ("vs_base", "vs_previous"):
            tables[(k, against)].write_parquet(folder / f"eval_samples_{against}.parquet")
        (root / "reports" / "rounds" / f"{k}.json").write_text(json.dumps(
            {"round": k, "start": "previous", "reference": "base", "keep_pairs": False, "train": {"pairs": 120 + k, "steps": 30 + k}}))
    return tables


def test_pooled_numbers_match_a_direct_computation(tmp_path):
    seeds = {0: workspace(tmp_path / "w0", 0), 1: workspace(tmp_path / "w1", 1)}
    collect({0: tmp_path / "w0", 1: tmp_path / "w1"}, ROUNDS, tmp_path / "study")
    summary = summarize(tmp_path / "study", samples=500)
    assert summary["seeds"] == [0, 1] and summary["rounds"] == [1, 2, 3] and summary["prompts"] == PROMPTS
    for k in (1, 2, 3):
        entry = summary["by_round"][str(k)]
        vs_base = [seeds[s][(k, "vs_base")] for s in (0, 1)]
        vs_previous = [seeds[s][(k, "vs_previous")] for s in (0, 1)]
        mean = np.mean(np.concatenate([t["sentiment_aligned"].to_numpy() for t in vs_base]))
        gain_base = np.mean(np.concatenate([(t["sentiment_aligned"] - t["sentiment_base"]).to_numpy() for t in vs_base]))
        gain_previous = np.mean(np.concatenate([(t["sentiment_aligned"] - t["sentiment_base"]).to_numpy() for t in vs_previous]))
        net = np.mean(np.concatenate([(t["verdict_sentiment"] == "win").to_numpy().astype(float)
                                      - (t["verdict_sentiment"] == "lose").to_numpy() for t in vs_previous]))
        kl = np.mean(np.concatenate([t["kl_aligned"].to_numpy() for t in vs_base]))
        assert entry["sentiment"]["mean"]["mean"] == pytest.approx(mean)
        assert entry["sentiment"]["gain_vs_base"]["mean"] == pytest.approx(gain_base)
        assert entry["sentiment"]["gain_vs_previous"]["mean"] == pytest.approx(gain_previous)
        assert entry["sentiment"]["net_win_vs_previous"]["mean"] == pytest.approx(net)
        for s, table in zip((0, 1), vs_previous):
            assert entry["sentiment"]["gain_vs_previous_by_seed"][str(s)] == pytest.approx(
                np.mean((table["sentiment_aligned"] - table["sentiment_base"]).to_numpy()))
        assert entry["kl_to_base"]["mean"] == pytest.approx(kl)
        for measure in ("mean", "gain_vs_base", "gain_vs_previous"):
            value = entry["sentiment"][measure]
            assert value["ci_low"] < value["mean"] < value["ci_high"] and value["seeds"] == 2 and value["prompts"] == PROMPTS
        if k > 1:
            assert entry["previous_answers_identical"] == 1.0  # round k's baseline answers are round k-1's own
    # round 1 is evaluated against the base model, which is also the round before it
    first = summary["by_round"]["1"]["sentiment"]
    assert first["gain_vs_previous"] == first["gain_vs_base"]
    assert summary["settings"]["1"]["budget"] == {"0": {"pairs": 128, "steps": 32}, "1": {"pairs": 128, "steps": 32}}
    assert summary["settings"]["3"]["budget"]["1"] == {"pairs": 123, "steps": 33}
    text = markdown(summary, title="t")
    assert "| 3 |" in text and "seed 1: 123 pairs, 33 steps" in text


def test_a_broken_pairing_shows(tmp_path):
    workspace(tmp_path / "w0", 0, break_pairing=True)
    collect({0: tmp_path / "w0"}, ROUNDS, tmp_path / "study")
    summary = summarize(tmp_path / "study", samples=100)
    assert summary["by_round"]["2"]["previous_answers_identical"] == 1.0
    assert summary["by_round"]["3"]["previous_answers_identical"] == pytest.approx(1 - 1 / PROMPTS)


def test_single_seed_interval_is_over_prompts_only(tmp_path):
    """With one seed the crossed bootstrap is a bootstrap over prompts: a constant
    difference has a zero-width interval."""
    tables = workspace(tmp_path / "w0", 0)
    const = tables[(2, "vs_previous")].with_columns((pl.col("sentiment_base") + 0.25).alias("sentiment_aligned"))
    const.write_parquet(tmp_path / "w0" / "rounds" / "2" / "eval_samples_vs_previous.parquet")
    collect({0: tmp_path / "w0"}, ROUNDS, tmp_path / "study")
    gain = summarize(tmp_path / "study", samples=200)["by_round"]["2"]["sentiment"]["gain_vs_previous"]
    assert gain["mean"] == pytest.approx(0.25) and gain["ci_low"] == pytest.approx(0.25) and gain["ci_high"] == pytest.approx(0.25)
    assert verdict(gain) == "adds (interval above 0)"
    assert verdict({"mean": 0.0, "ci_low": -0.1, "ci_high": 0.1}) == "not shown (interval covers 0)"
    assert verdict({"mean": -0.2, "ci_low": -0.3, "ci_high": -0.1}) == "loses (interval below 0)"


def test_errors_name_the_problem(tmp_path):
    workspace(tmp_path / "w0", 0)
    with pytest.raises(DlmaError, match="rounds.count >= 4"):
        collect({0: tmp_path / "w0"}, 4, tmp_path / "study")
    with pytest.raises(DlmaError, match="no seed"):
        summarize(tmp_path / "empty")
    workspace(tmp_path / "w1", 1)
    collect({0: tmp_path / "w0", 1: tmp_path / "w1"}, ROUNDS, tmp_path / "study")
    path = tmp_path / "study" / "seed1" / "round2_vs_base.parquet"
    pl.read_parquet(path).head(PROMPTS - 1).write_parquet(path)
    with pytest.raises(DlmaError, match="seed 1, round 2 .vs_base. judged other prompts"):
        summarize(tmp_path / "study")
    (tmp_path / "study" / "seed1" / "round3_vs_previous.parquet").unlink()
    with pytest.raises(DlmaError, match=r"seed 1 lacks round\(s\) \[3\]"):
        summarize(tmp_path / "study")


def test_command_collects_then_recomputes_from_the_copies(tmp_path):
    workspace(tmp_path / "w0", 0)
    workspace(tmp_path / "w1", 1)
    out, report, figure = tmp_path / "r" / "rounds_study", tmp_path / "r" / "rounds_study.md", tmp_path / "r" / "figures" / "rs.png"
    args = ["rounds-study", "--out", str(out), "--report", str(report), "--figure", str(figure), "--samples", "100"]
    done = CliRunner().invoke(app, [*args, "--run", f"0={tmp_path / 'w0'}", "--run", f"1={tmp_path / 'w1'}"])
    assert done.exit_code == 0, done.output
    first = json.loads((out / "study.json").read_text())
    assert figure.stat().st_size > 0 and "](figures/rs.png)" in report.read_text()
    # the workspaces gone, the copies alone give the same study
    import shutil

    shutil.rmtree(tmp_path / "w0")
    shutil.rmtree(tmp_path / "w1")
    assert CliRunner().invoke(app, args).exit_code == 0
    assert json.loads((out / "study.json").read_text()) == first
    bad = CliRunner().invoke(app, [*args, "--run", "zero=somewhere"])
    assert bad.exit_code == 2 and "SEED=WORKSPACE" in bad.output
    bad = CliRunner().invoke(app, [*args, "--control", "epochs3=somewhere"])
    assert bad.exit_code == 2 and "NAME:SEED=WORKSPACE" in bad.output
    bad = CliRunner().invoke(app, [*args, "--variant", "refprev=somewhere"])
    assert bad.exit_code == 2 and "--variant 'refprev=somewhere': expected NAME:SEED=WORKSPACE" in bad.output


def control_workspace(root, seed_tables: dict, shift: float, *, other_base: bool = False) -> None:
    """A one-round control run of the same seed: same prompts and base answers as round 1."""
    first = seed_tables[(1, "vs_base")]
    table = first.with_columns((pl.col("sentiment_base") + shift).alias("sentiment_aligned"),
                               pl.Series("answer_aligned", [f"control-{i}" for i in range(PROMPTS)]))
    if other_base:
        table = table.with_columns(pl.Series("answer_base", ["another draw"] * PROMPTS))
    (root / "reports").mkdir(parents=True)
    table.write_parquet(root / "reports" / "eval_samples.parquet")
    (root / "reports" / "train.json").write_text(json.dumps({"pairs": 128, "steps": 96}))


def test_control_is_paired_with_each_round(tmp_path):
    tables = {s: workspace(tmp_path / f"w{s}", s) for s in (0, 1)}
    control_workspace(tmp_path / "c0", tables[0], 0.2)
    collect({0: tmp_path / "w0", 1: tmp_path / "w1"}, ROUNDS, tmp_path / "study")
    collect_control("epochs3", 0, tmp_path / "c0", tmp_path / "study")
    control = summarize(tmp_path / "study", samples=300)["controls"]["epochs3"]
    assert control["seeds"] == [0] and control["budget"] == {"0": {"pairs": 128, "steps": 96}}  # seed 1 has no control
    sentiment = control["by_reward"]["sentiment"]
    controlled = (tables[0][(1, "vs_base")]["sentiment_base"] + 0.2).to_numpy()
    assert sentiment["gain_vs_base"]["mean"] == pytest.approx(0.2)
    assert control["kl_to_base"]["mean"] == pytest.approx(tables[0][(1, "vs_base")]["kl_aligned"].mean())
    for k in (1, 2, 3):
        expected = np.mean(tables[0][(k, "vs_base")]["sentiment_aligned"].to_numpy() - controlled)
        row = sentiment["by_round"][str(k)]
        assert row["round_minus_control"]["mean"] == pytest.approx(expected) and row["round_minus_control"]["seeds"] == 1
        assert row["steps_so_far"] == {"0": 32 + sum(30 + j for j in range(2, k + 1))}
    assert "## Against the control `epochs3`" in markdown(summarize(tmp_path / "study", samples=50), title="t")

    control_workspace(tmp_path / "c1", tables[1], 0.2, other_base=True)
    collect_control("epochs3", 1, tmp_path / "c1", tmp_path / "study")
    with pytest.raises(DlmaError, match="control epochs3, seed 1: its evaluation is not paired"):
        summarize(tmp_path / "study")


def variant_workspace(root, seed_tables: dict, shift: float, *, other_first_round: bool = False) -> dict:
    """The same seed's rounds with `rounds.reference=previous`: the same round 1, then rounds
    whose answers ('v<k>-<i>') score `shift` above the study's round k on the same base answers."""
    (root / "reports" / "rounds").mkdir(parents=True)
    first = seed_tables[(1, "vs_base")]
    if other_first_round:
        first = first.with_columns(pl.Series("answer_aligned", [f"another-{i}" for i in range(PROMPTS)]))
    first.write_parquet(root / "reports" / "eval_samples.parquet")
    (root / "reports" / "train.json").write_text(json.dumps({"pairs": 128, "steps": 32}))
    rng = np.random.default_rng(7)
    tables, previous_answers = {}, first["answer_aligned"].to_list()
    for k in range(2, ROUNDS + 1):
        answers = [f"v{k}-{i}" for i in range(PROMPTS)]
        tables[(k, "vs_base")] = seed_tables[(k, "vs_base")].with_columns(
            pl.col("sentiment_aligned") + shift, pl.col("kl_aligned") * 2, pl.Series("answer_aligned", answers))
        tables[(k, "vs_previous")] = table(rng, answers, previous_answers, 0.03)
        previous_answers = answers
        folder = root / "rounds" / str(k)
        folder.mkdir(parents=True)
        for against in ("vs_base", "vs_previous"):
            tables[(k, against)].write_parquet(folder / f"eval_samples_{against}.parquet")
        (root / "reports" / "rounds" / f"{k}.json").write_text(json.dumps(
            {"round": k, "start": "previous", "reference": "previous", "keep_pairs": False, "train": {"pairs": 128, "steps": 32}}))
    return tables


def test_variant_is_paired_with_the_study_round_by_round(tmp_path):
    tables = {s: workspace(tmp_path / f"w{s}", s) for s in (0, 1)}
    variant = variant_workspace(tmp_path / "v1", tables[1], 0.15)
    collect({0: tmp_path / "w0", 1: tmp_path / "w1"}, ROUNDS, tmp_path / "study")
    collect_variant("refprev", 1, tmp_path / "v1", ROUNDS, tmp_path / "study")
    summary = summarize(tmp_path / "study", samples=300)
    entry = summary["variants"]["refprev"]
    assert entry["seeds"] == [1] and entry["rounds"] == [2, 3]  # seed 0 has no variant; round 1 is shared
    assert entry["settings"]["2"] == {"start": "previous", "reference": "previous", "keep_pairs": False}
    assert entry["budget"]["3"] == {"1": {"pairs": 128, "steps": 32}}
    for k in (2, 3):
        row = entry["by_round"][str(k)]["sentiment"]
        own_base, own_previous = variant[(k, "vs_base")], variant[(k, "vs_previous")]
        assert row["variant_minus_study"]["mean"] == pytest.approx(0.15)
        assert row["variant_minus_study"]["ci_low"] == pytest.approx(0.15)  # a constant difference: no spread
        assert row["mean"]["mean"] == pytest.approx(own_base["sentiment_aligned"].mean())
        assert row["gain_vs_base"]["mean"] == pytest.approx((own_base["sentiment_aligned"] - own_base["sentiment_base"]).mean())
        assert row["gain_vs_previous"]["mean"] == pytest.approx(
            (own_previous["sentiment_aligned"] - own_previous["sentiment_base"]).mean())
        assert entry["by_round"][str(k)]["kl_to_base"]["mean"] == pytest.approx(own_base["kl_aligned"].mean())
        assert entry["by_round"][str(k)]["kl_minus_study"]["mean"] == pytest.approx(
            (own_base["kl_aligned"] - tables[1][(k, "vs_base")]["kl_aligned"]).mean())
    text = markdown(summary, title="t")
    assert "## Variant `refprev`" in text and "reference `previous`" in text and "+0.150 [+0.150, +0.150]" in text

    variant_workspace(tmp_path / "v0", tables[0], 0.1, other_first_round=True)
    collect_variant("refprev", 0, tmp_path / "v0", ROUNDS, tmp_path / "study")
    with pytest.raises(DlmaError, match="variant refprev, seed 0: its round 1 is not the study's"):
        summarize(tmp_path / "study")
    with pytest.raises(DlmaError, match="rounds.count >= 4"):
        collect_variant("refprev", 0, tmp_path / "v0", 4, tmp_path / "study")
    with pytest.raises(DlmaError, match="variant name 'a/b'"):
        collect_variant("a/b", 0, tmp_path / "v0", ROUNDS, tmp_path / "study")
