"""Labellers other than the contrastive score: RLAIF's A/B judge, in both orders, against a
scripted judge and against an independent computation on the tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dlma.lm.prompts import context_text, encode_response
from dlma.score.labellers import label, two_order_labels
from dlma.score.params import ScoreParams
from tests.evaluate.test_agreement import TEMPLATE, independent_ab
from tests.helpers import TEST_PROMPTS, reference_logprob, shipped


def test_two_order_labels_with_a_scripted_judge():
    # Scripted verdicts: picks response_pos with it shown first / with it shown second, and
    # P(response_pos better) averaged over both orders.
    judged = {"picks_chosen_first_order": np.array([True, False, True, False]),
              "picks_chosen_swapped_order": np.array([True, False, False, True]),
              "prob_chosen": np.array([0.9, 0.2, 0.6, 0.45])}
    score, labelled = two_order_labels(judged, "consistent")
    assert score.tolist() == [1.0, -1.0, 0.0, 0.0] and labelled.tolist() == [True, True, False, False]
    # The paper's rule: every pair labelled, by how far the averaged probability is from 1/2.
    score, labelled = two_order_labels(judged, "average")
    np.testing.assert_allclose(score, [0.4, -0.3, 0.1, -0.05]) and labelled.all()
    assert labelled.tolist() == [True] * 4


def test_rlaif_labeller_on_the_tiny_model(tiny_lm):
    model, tokenizer = tiny_lm
    frame = pl.DataFrame({"id": ["a", "b", "c"], "prompt": ["How do I make coffee?", "Hi", "Why?"],
                          "response_pos": ["Use fresh beans.", "Hello there!", "Because."],
                          "response_neg": ["No.", "Go away.", "I will not say."]})
    params = shipped(ScoreParams, "score", labeller="ab_judge", judge_prompt=TEMPLATE, batch_size=2)
    consistent = label("ab_judge", model, tokenizer, frame, TEST_PROMPTS, shipped(ScoreParams, "score", labeller="ab_judge",
                                                                                judge_prompt=TEMPLATE, batch_size=2,
                                                                                ab_rule="consistent"))
    result = label("ab_judge", model, tokenizer, frame, TEST_PROMPTS, params)  # the default rule: average
    for row, (q, pos, neg) in enumerate(zip(frame["prompt"], frame["response_pos"], frame["response_neg"])):
        pa1, pb1 = independent_ab(model, tokenizer, q, pos, neg)
        pa2, pb2 = independent_ab(model, tokenizer, q, neg, pos)
        first, swapped = pa1 > pb1, pb2 > pa2  # response_pos picked when shown first / second
        assert consistent["labelled"][row] == (first == swapped)
        assert consistent["score"][row] == (0.0 if first != swapped else 1.0 if first else -1.0)
        # The paper's RLAIF: P(response_pos) from the two answer tokens, averaged over both orders.
        averaged = (pa1 / (pa1 + pb1) + pb2 / (pa2 + pb2)) / 2
        assert result["labelled"][row] and result["score"][row] == pytest.approx(averaged - 0.5, abs=1e-6)
        context = tokenizer(context_text(tokenizer, TEST_PROMPTS, q, "bare"), add_special_tokens=False)["input_ids"]
        assert result["ref_logp_pos"][row] == pytest.approx(reference_logprob(model, context, encode_response(tokenizer, pos)), rel=1e-4)
    assert result["tokens_pos"].to_list()[0][-1] == tokenizer.eos_token_id  # text pairs: encoded with EOS


def test_the_rlaif_method_runs_through_the_stages(tmp_path, tiny_model_dir, monkeypatch):
    import json

    import yaml
    from typer.testing import CliRunner

    from dlma.cli import app
    from tests.helpers import REPO

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_model_dir)
    params["data"].update({"source": str(REPO / "data" / "prompts.jsonl"), "limit": 10})
    params["generate"].update({"max_new_tokens": 6, "batch_size": 8, "pairs_from": "bare"})
    params["score"].update({"labeller": "ab_judge", "ab_rule": "consistent"})
    params["filter"].update({"swap_negative": True, "drop_truncated": "none"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)

    def scripted_judge(model, tokenizer, bare, template, tokens, queries, first, second, *, batch_size):
        # Picks the longer answer in both orders, except on the first row, where it says
        # "A" both times (position bias: no label).
        longer = np.array([len(a) > len(b) for a, b in zip(first, second)])
        swapped = longer.copy()
        swapped[0] = not longer[0]
        return {"picks_chosen_first_order": longer, "picks_chosen_swapped_order": swapped,
                "prob_chosen": longer.astype(float)}

    monkeypatch.setattr("dlma.score.labellers.ab_judge", scripted_judge)
    for args in (["model", "--out", "model.json"],
                 ["prepare", "--train", "train.parquet", "--eval", "eval.parquet", "--report", "prepare.json"],
                 ["generate", "--prompts", "train.parquet", "--model-id", "model.json", "--out", "gen.parquet", "--report", "g.json"],
                 ["score", "--generated", "gen.parquet", "--model-id", "model.json", "--out", "scored.parquet", "--report", "s.json"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (args[0], result.output)
    scored = pl.read_parquet("scored.parquet")
    longer = [len(a) > len(b) for a, b in zip(scored["response_pos"], scored["response_neg"])]
    assert scored["labelled"].to_list() == [False] + [True] * (scored.height - 1)
    assert scored["score"].to_list() == [0.0] + [1.0 if x else -1.0 for x in longer[1:]]
    result = CliRunner().invoke(app, ["filter", "--scored", "scored.parquet", "--out", "prefs.parquet", "--report", "f.json"])
    assert result.exit_code == 0, result.output
    report = json.loads(Path("f.json").read_text())
    prefs = pl.read_parquet("prefs.parquet")
    assert report["dropped"]["unlabelled"] == 1 and prefs.height == scored.height - 1
    # The picked (longer) answer is always the chosen one, with its own tokens.
    assert all(len(c) >= len(r) for c, r in zip(prefs["chosen"], prefs["rejected"]))
    assert (prefs["margin"] == 1.0).all()
    rows = scored.tail(scored.height - 1)
    expected = [p if x else n for p, n, x in zip(rows["tokens_pos"].to_list(), rows["tokens_neg"].to_list(), longer[1:])]
    assert prefs["chosen_ids"].to_list() == expected


def test_dpo_human_reads_hh_pairs_through_the_stages(tmp_path, tiny_model_dir, tiny_lm, monkeypatch):
    """dpo_human: HH-format pairs -> human stage -> generate (no sampling) -> score (human
    labeller: reference log-probs only) -> filter -> train with plain DPO (w = 0)."""
    import json

    import yaml
    from typer.testing import CliRunner

    from dlma.cli import app
    from dlma.lm.prompts import encode_contexts
    from tests.helpers import REPO

    model, tokenizer = tiny_lm
    dialogues = [("How do I bake bread?", "Mix flour, water and yeast, then bake.", "No idea, go away."),
                 ("What is a verb?", "A word for an action.", "Whatever."),
                 ("Hi there", "Hello! How can I help?", "What do you want."),
                 ("Name a colour", "Blue.", "I refuse."),
                 ("Count to three", "One, two, three.", "No.")]
    rows = [{"chosen": f"\n\nHuman: {q}\n\nAssistant: {good}", "rejected": f"\n\nHuman: {q}\n\nAssistant: {bad}"}
            for q, good, bad in dialogues]
    (tmp_path / "hh.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_model_dir)
    params["data"].update({"source": str(REPO / "data" / "prompts.jsonl"), "limit": 4})  # 3 training prompts
    params["human"].update({"source": "hh.jsonl", "format": "hh", "limit": None, "holdout_fraction": 0.2, "optional": False})
    params["generate"]["pairs_from"] = "human"
    params["score"].update({"labeller": "human", "dtype": "float32"})
    params["filter"]["drop_truncated"] = "none"
    params["train"].update({"margin_weight": 0.0, "max_steps": 1, "batch_size": 2})
    params["evaluate"].update({"agreement_sets": [], "prompt_sets": []})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / ".dvc").mkdir()  # the repository root for the MLflow store
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    for args in (["model", "--out", "model.json"],
                 ["prepare", "--train", "train.parquet", "--eval", "eval.parquet", "--report", "prepare.json"],
                 ["human", "--eval-prompts", "eval.parquet", "--train", "human.parquet", "--holdout", "holdout.parquet", "--report", "h.json"],
                 ["generate", "--prompts", "train.parquet", "--human", "human.parquet", "--model-id", "model.json",
                  "--out", "gen.parquet", "--report", "g.json"],
                 ["score", "--generated", "gen.parquet", "--model-id", "model.json", "--out", "scored.parquet", "--report", "s.json"],
                 ["filter", "--scored", "scored.parquet", "--out", "prefs.parquet", "--report", "f.json"],
                 ["train", "--preferences", "prefs.parquet", "--model-id", "model.json", "--out", "models/dlma", "--checkpoints", "models/checkpoints",
                  "--report", "train.json", "--curve", "curve.csv"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (args[0], result.output)
    prefs = pl.read_parquet("prefs.parquet")
    by_query = {q: (good, bad) for q, good, bad in dialogues}
    # 4 human training pairs, but the budget of the other methods is 3 (one per training prompt)
    assert pl.read_parquet("train.parquet").height == 3 and pl.read_parquet("human.parquet").height == 4
    assert prefs.height == 3 and pl.read_parquet("holdout.parquet").height == 1
    assert prefs["id"].to_list() == pl.read_parquet("human.parquet")["id"].head(3).to_list()
    for query, chosen, rejected in zip(prefs["prompt"], prefs["chosen"], prefs["rejected"]):
        assert (chosen, rejected) == by_query[query]  # the human label, never swapped
    assert (prefs["margin"] == 1.0).all()
    bare = encode_contexts(tokenizer, TEST_PROMPTS, prefs["prompt"].to_list(), "bare")
    for row, (context, chosen) in enumerate(zip(bare, prefs["chosen"])):
        expected = reference_logprob(model, context, encode_response(tokenizer, chosen))
        assert prefs["ref_logp_chosen"][row] == pytest.approx(expected, rel=1e-4)
    # Plain DPO (w = 0) from a policy equal to its reference: the first loss is log 2.
    curve = pl.read_csv("curve.csv")
    assert curve["loss"][0] == pytest.approx(np.log(2), abs=1e-3)
    # Asking for dpo_human without pairs is a clear error.
    params["human"].update({"source": "missing.jsonl", "optional": True})
    Path("params.yaml").write_text(yaml.safe_dump(params))
    for args in (["human", "--eval-prompts", "eval.parquet", "--train", "human.parquet", "--holdout", "holdout.parquet", "--report", "h.json"],
                 ["generate", "--prompts", "train.parquet", "--human", "human.parquet", "--model-id", "model.json",
                  "--out", "gen.parquet", "--report", "g.json"]):
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "generate.pairs_from is human but 'human.parquet' has no pairs" in result.output
