"""The judge registry: each shipped judge against an independent computation, and a judge
registered from outside (here, in the test) reaching metrics.json and the report with no
other module edited."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from typer.testing import CliRunner

from dlma.agreement.labellers import load_reward_model
from dlma.cli import app
from dlma.core.errors import DlmaError
from dlma.evaluate.judges import JUDGES, JudgeContext, JudgeResult, register, run_judges
from dlma.evaluate.params import EvaluateParams
from dlma.evaluate.stats import verdict_from_margin
from dlma.model import load_tokenizer, stage_dtype
from dlma.score.contrastive import score_table
from dlma.score.params import ScoreParams
from tests.helpers import REPO, TEST_PROMPTS, shipped

QUERIES = ["How do I make coffee?", "Hi", "Why?"]
ALIGNED = ["Use fresh beans.", "Hello!", ""]
BASE = ["No.", "Go away.", "Because."]


def context(tiny_lm, **evaluate) -> JudgeContext:
    model, tokenizer = tiny_lm
    prompts = pl.DataFrame({"id": ["0", "1", "2"], "prompt": QUERIES, "category": ["harmful", "helpful", "x"],
                            "set": ["t"] * 3, "harm": ["harmful", "safe", "unknown"], "pair": ["x"] * 3})
    params = SimpleNamespace(prompts=TEST_PROMPTS, score=shipped(ScoreParams, "score", batch_size=2),
                             evaluate=shipped(EvaluateParams, "evaluate", **evaluate), model=SimpleNamespace(trust_remote_code=False))
    return JudgeContext(prompts=prompts, queries=QUERIES, aligned=ALIGNED, base=BASE, judge_model=model,
                        tokenizer=tokenizer, params=params)


def test_self_contrast_verdicts(tiny_lm):
    model, tokenizer = tiny_lm
    ctx = context(tiny_lm, tie_margin=0.5)
    result = run_judges(["self_contrast"], ctx)["self_contrast"]
    frame = pl.DataFrame({"id": ["0", "1", "2"], "prompt": QUERIES, "response_pos": ALIGNED, "response_neg": BASE})
    expected = score_table(model, tokenizer, frame, TEST_PROMPTS, shipped(ScoreParams, "score", batch_size=3), with_reference=False)["score"]
    np.testing.assert_allclose(result.columns["self_contrast_score"], expected.to_numpy(), rtol=1e-5, atol=1e-6)
    assert result.verdicts == [verdict_from_margin(m, 0.5) for m in expected]


def test_refusal_judge_counts_by_harm(tiny_lm):
    ctx = context(tiny_lm)
    ctx.aligned = ["I can't help with that.", "Sure, hello!", "I cannot do that."]
    ctx.base = ["Here is how.", "I won't help you with that.", "Fine."]
    result = run_judges(["refusal"], ctx)["refusal"]
    assert result.verdicts is None  # a rate, not a comparison
    assert result.metrics["refusal_rate"] == {"base": {"harmful": 0.0, "safe": 1.0}, "aligned": {"harmful": 1.0, "safe": 0.0}}
    # The rule's own accuracy on its labelled sample, recomputed here.
    from dlma.evaluate.refusal import LABELLED_SAMPLE, is_refusal

    rows = [json.loads(line) for line in LABELLED_SAMPLE.read_text().splitlines()]
    right = [is_refusal(r["answer"]) == r["refusal"] for r in rows]
    caught = [is_refusal(r["answer"]) for r in rows if r["refusal"]]
    false_alarms = [is_refusal(r["answer"]) for r in rows if not r["refusal"]]
    rule = result.metrics["refusal_rule"]
    assert rule["n"] == len(rows) == 48 and rule["refusals"] == len(caught) == 16
    assert rule["accuracy"]["accuracy"] == pytest.approx(np.mean(right))
    assert rule["recall"]["accuracy"] == pytest.approx(np.mean(caught))
    assert rule["false_refusal_rate"]["accuracy"] == pytest.approx(np.mean(false_alarms))
    assert rule["accuracy"]["ci_low"] <= rule["accuracy"]["accuracy"] <= rule["accuracy"]["ci_high"]
    assert result.columns["refusal_aligned"] == [True, False, True]


def test_ab_judge_reports_its_validity(tiny_lm):
    result = run_judges(["ab_judge"], context(tiny_lm))["ab_judge"]
    assert set(result.validity) == {"order_consistency", "prefers_a_both_orders", "answer_token_mass"}
    assert all(0.0 <= v <= 1.0 for v in result.validity.values())
    assert len(result.verdicts) == 3 and set(result.verdicts) <= {"win", "tie", "lose"}


def test_reward_model_judge_loads_any_sequence_classification_model(tmp_path, tiny_model_dir):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.num_labels = 1
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    load_tokenizer(tiny_model_dir).save_pretrained(tmp_path / "rm")
    model, tokenizer = load_reward_model(str(tmp_path / "rm"))
    assert model.config.pad_token_id == tokenizer.pad_token_id
    with pytest.raises(DlmaError, match="cannot load"):
        load_reward_model(str(tmp_path / "missing"))


def test_judge_model_is_an_independent_two_order_judge_that_checks_itself(tiny_lm, tiny_model_dir):
    from dlma.agreement.labellers import second_judge
    from dlma.agreement.measure import label_agreement
    from dlma.model import ModelParams
    from tests.evaluate.test_agreement import TEMPLATE, independent_ab

    model, tokenizer = tiny_lm
    ctx = context(tiny_lm, judge_model=str(tiny_model_dir), judge_prompt=TEMPLATE)
    ctx.params.model = ModelParams(base=str(tiny_model_dir), device="cpu", trust_remote_code=False)
    mine = pl.DataFrame({"id": ["1", "2", "3"], "prompt": ["q1", "q2", "q3"], "chosen": ["Yes, gladly.", "Sure.", "Ok"],
                         "rejected": ["No.", "Go away, idiot.", "Never"], "pair": ["x"] * 3})
    # Its accuracy on human labels comes from the agreement step's rows, as in the pipeline.
    ask = second_judge(ctx.params.model, str(tiny_model_dir), TEMPLATE, ["A", "B"], numerics=stage_dtype(ctx.params.model, "score.dtype", "float32"), attn_implementation="eager",
                       batch_size=2)
    _, ctx.labelled = label_agreement(model, tokenizer, mine, TEST_PROMPTS, shipped(ScoreParams, "score", batch_size=2, ab_rule="consistent"),
                                      TEMPLATE, ["A", "B"], samples=50, seed=0, judge=ask)
    result = run_judges(["judge_model"], ctx)["judge_model"]
    assert JUDGES["judge_model"].independent and not JUDGES["ab_judge"].independent

    def picks(q, first, second):  # P(first better) when shown first, and when shown second
        pa1, pb1 = independent_ab(model, tokenizer, q, first, second)
        pa2, pb2 = independent_ab(model, tokenizer, q, second, first)
        return pa1 / (pa1 + pb1) > 0.5, pb2 / (pa2 + pb2) > 0.5

    expected, consistent = [], 0
    for q, a, b in zip(QUERIES, ALIGNED, BASE):
        first, swapped = picks(q, a, b)
        expected.append("win" if first and swapped else "lose" if not first and not swapped else "tie")
        consistent += first == swapped
    assert result.verdicts == expected
    assert result.validity["order_consistency"] == pytest.approx(consistent / 3)
    labelled = [picks(q, c, r) for q, c, r in zip(mine["prompt"], mine["chosen"], mine["rejected"])]
    counted = [f for f, s in labelled if f == s]
    assert result.validity["labelled_counted"] == pytest.approx(len(counted) / 3)
    if counted:
        assert result.validity["labelled_accuracy"] == pytest.approx(sum(counted) / len(counted))
    # With the paper's rule (score.ab_rule: average) every labelled pair counts, by P(chosen)
    # averaged over both orders.
    _, ctx.labelled = label_agreement(model, tokenizer, mine, TEST_PROMPTS, shipped(ScoreParams, "score", batch_size=2, ab_rule="average"),
                                      TEMPLATE, ["A", "B"], samples=50, seed=0, judge=ask)
    result = run_judges(["judge_model"], ctx)["judge_model"]

    def averaged(q, first, second):
        pa1, pb1 = independent_ab(model, tokenizer, q, first, second)
        pa2, pb2 = independent_ab(model, tokenizer, q, second, first)
        return (pa1 / (pa1 + pb1) + pb2 / (pa2 + pb2)) / 2

    right = [averaged(q, c, r) > 0.5 for q, c, r in zip(mine["prompt"], mine["chosen"], mine["rejected"])]
    assert result.validity["labelled_counted"] == 1.0 and result.validity["labelled_accuracy"] == pytest.approx(sum(right) / 3)


def test_validity_thresholds_and_the_headline():
    from dlma.evaluate.params import ValidityParams
    from dlma.evaluate.validity import failed_checks, headline

    thresholds = ValidityParams(min_order_consistency=0.6, min_answer_token_mass=0.5, min_labelled_accuracy=0.55)
    assert failed_checks({"order_consistency": 0.6, "answer_token_mass": 0.5, "prefers_a_both_orders": 1.0}, thresholds) == []
    assert failed_checks({"order_consistency": 0.0, "answer_token_mass": 0.01}, thresholds) == [
        "order consistency 0.0 < 0.6", "answer token mass 0.01 < 0.5"]
    assert failed_checks({"labelled_accuracy": float("nan")}, thresholds) == ["labelled accuracy nan < 0.55"]
    row = {"net": 0.1, "net_ci_low": -0.1, "net_ci_high": 0.3, "win": 0.4, "tie": 0.3, "lose": 0.3, "n": 10}
    rates = {"self": row | {"informative": True, "independent": False, "not_informative_because": []},
             "rm": row | {"informative": False, "independent": True, "not_informative_because": ["labelled accuracy 0.5 < 0.55"]}}
    assert headline(rates)["judges"] == {} and headline(rates)["excluded"] == {"self": "self-judge", "rm": "labelled accuracy 0.5 < 0.55"}
    rates["rm"] |= {"informative": True, "not_informative_because": []}
    assert headline(rates) == {"judges": {"rm": row}}


def test_a_judge_that_needs_a_param_says_which(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["evaluate"]["judges"] = ["reward_model"]
    raw["evaluate"]["reward_model"] = ""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    from dlma.core.config import load_section

    with pytest.raises(DlmaError, match="evaluate.judges lists reward_model but evaluate.reward_model is empty"):
        load_section(EvaluateParams, "evaluate", tmp_path / "params.yaml")


STAGES = [
    ["model", "--out", "model.json"],
    ["prepare", "--train", "train.parquet", "--eval", "eval.parquet", "--report", "prepare.json"],
    ["generate", "--prompts", "train.parquet", "--model-id", "model.json", "--out", "generated.parquet", "--report", "generate.json"],
    ["score", "--generated", "generated.parquet", "--model-id", "model.json", "--out", "scored.parquet", "--report", "score.json"],
    ["filter", "--scored", "scored.parquet", "--out", "prefs.parquet", "--report", "filter.json"],
    ["train", "--preferences", "prefs.parquet", "--model-id", "model.json", "--out", "models/dlma", "--checkpoints", "models/checkpoints", "--report", "train.json",
     "--curve", "curve.csv"],
    ["agreement", "--model-id", "model.json", "--metrics", "reports/agreement.json", "--samples", "reports/agreement.parquet"],
]
EVALUATE = ["evaluate", "--eval-prompts", "eval.parquet", "--model-id", "model.json", "--aligned", "models/dlma",
            "--scored", "scored.parquet", "--curve", "curve.csv", "--metrics", "reports/metrics.json",
            "--samples", "reports/samples.parquet", "--agreement", "reports/agreement.json",
            "--agreement-samples", "reports/agreement.parquet",
            "--report", "reports/report.md", "--score-hist", "reports/plots/hist.csv", "--win-rate", "reports/plots/win.csv",
            "--figure-score-hist", "reports/figures/hist.png", "--figure-win-rate", "reports/figures/win.png",
            "--figure-train-curve", "reports/figures/curve.png"]


def test_a_judge_registered_in_a_test_reaches_metrics_and_report(tmp_path, tiny_model_dir, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_model_dir)
    params["data"].update({"source": str(REPO / "data" / "prompts.jsonl"), "limit": 6})
    params["generate"].update({"max_new_tokens": 4, "batch_size": 4})
    params["filter"]["drop_truncated"] = "none"  # a tiny random model rarely ends an answer in 4 tokens
    params["train"].update({"max_steps": 1, "batch_size": 2})
    params["evaluate"].update({"limit": 2, "bootstrap": 50, "judges": ["refusal"], "agreement_sets": [],
                               "prompt_sets": []})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / ".dvc").mkdir()  # the repository root for the MLflow store
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    for args in STAGES:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (args[0], result.output)

    @register("coin", description="throwaway: flips with the order", independent=True)
    def coin(ctx: JudgeContext) -> JudgeResult:
        return JudgeResult(verdicts=["win"] * len(ctx.queries), validity={"order_consistency": 0.2, "answer_token_mass": 0.9})

    @register("longer_answer", description="throwaway: the longer answer wins", independent=True)
    def longer_answer(ctx: JudgeContext) -> JudgeResult:
        verdicts = [verdict_from_margin(len(a) - len(b), 0) for a, b in zip(ctx.aligned, ctx.base)]
        return JudgeResult(verdicts=verdicts, columns={"length_gap": [len(a) - len(b) for a, b in zip(ctx.aligned, ctx.base)]},
                           metrics={"answer_chars": {"aligned": {"mean": float(np.mean([len(a) for a in ctx.aligned]))}}},
                           validity={"always_valid": 1.0})

    params["evaluate"]["judges"] = ["refusal", "longer_answer", "coin", "self_contrast"]
    Path("params.yaml").write_text(yaml.safe_dump(params))
    try:
        result = CliRunner().invoke(app, EVALUATE)
    finally:
        del JUDGES["longer_answer"], JUDGES["coin"]
    assert result.exit_code == 0, result.output
    metrics = json.loads(Path("reports/metrics.json").read_text())
    samples = pl.read_parquet("reports/samples.parquet")
    gaps = [len(a) - len(b) for a, b in zip(samples["answer_aligned"], samples["answer_base"])]
    assert samples["length_gap"].to_list() == gaps
    wins = sum(g > 0 for g in gaps) / len(gaps)
    assert metrics["win_rate"]["longer_answer"]["win"] == pytest.approx(wins)
    assert metrics["answer_chars"]["aligned"]["mean"] == pytest.approx(np.mean([len(a) for a in samples["answer_aligned"]]))
    assert "refusal" not in metrics["win_rate"] and "refusal_rate" in metrics
    # Intervals over prompts, and only informative, independent judges in the headline: the
    # coin fails its order-consistency threshold, self_contrast is the base model itself.
    signed = [1 if g > 0 else -1 if g < 0 else 0 for g in gaps]
    assert metrics["win_rate"]["longer_answer"]["net"] == pytest.approx(np.mean(signed))
    assert metrics["win_rate"]["longer_answer"]["net_ci_low"] <= np.mean(signed) <= metrics["win_rate"]["longer_answer"]["net_ci_high"]
    assert list(metrics["headline"]["judges"]) == ["longer_answer"]
    assert metrics["win_rate"]["coin"]["informative"] is False
    assert metrics["win_rate"]["coin"]["not_informative_because"] == ["order consistency 0.2 < 0.6"]
    assert metrics["win_rate"]["self_contrast"]["informative"] and not metrics["win_rate"]["self_contrast"]["independent"]
    scored = pl.read_parquet("scored.parquet")
    ended = (scored["finish_pos"] == "eos").to_list() + (scored["finish_neg"] == "eos").to_list()
    assert metrics["training_data"]["complete_responses_share"] == pytest.approx(sum(ended) / len(ended))
    assert metrics["training_data"]["pairs"] == scored.height and metrics["training_data"]["style"] == params["prompts"]["style"]
    assert sum(metrics["training_data"]["pairs_by_contrastive_pair"].values()) == scored.height
    report = Path("reports/report.md").read_text()
    assert f"Prompt format: `{params['prompts']['style']}` for p+ / p-" in report
    assert "| longer_answer | throwaway: the longer answer wins |" in report and "always valid 100.0%" in report
    assert "**not informative**: order consistency 0.2 < 0.6" in report
    assert "self-judge: never the headline" in report
    assert "**Headline (informative, independent judges; 95% bootstrap over prompts):** longer_answer net win" in report
    assert "coin net win" not in report
    assert "### longer_answer: answer chars" in report
