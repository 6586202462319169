"""The true reward of the controlled task (VADER sentiment) as judge, labeller and the
reference of label agreement, against values computed here by hand from VADER's lexicon."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from dlma.cli import app
from dlma.evaluate.judges import run_judges
from dlma.lm.prompts import context_text, encode_response
from dlma.score.labellers import label
from dlma.score.params import ScoreParams
from dlma.truth import true_reward
from dlma.truth.agreement import fold_of
from tests.evaluate.test_agreement import independent_ab
from tests.evaluate.test_judges import context
from tests.helpers import REPO, TEST_PROMPTS, reference_logprob, shipped

# Valences in vaderSentiment's vader_lexicon.txt; VADER's compound is sum / sqrt(sum^2 + 15)
# for a sentence of plain lexicon words (no negation, booster, "but" or punctuation rule).
VALENCE = {"good": 1.9, "great": 3.1, "bad": -2.5, "terrible": -2.1, "happy": 2.7}


def by_hand(*words: str) -> float:
    total = sum(VALENCE[w] for w in words)
    return round(total / math.sqrt(total * total + 15), 4)  # VADER rounds the compound to 4 places


def test_vader_compound_by_hand():
    score = true_reward("sentiment").score
    texts = ["good", "The food was good and the staff were great", "bad", "It was terrible", "a table", ""]
    expected = [by_hand("good"), by_hand("good", "great"), by_hand("bad"), by_hand("terrible"), 0.0, 0.0]
    np.testing.assert_allclose(score(texts), expected, atol=1e-4)


def test_the_check_reports_its_accuracy_on_the_labelled_sentences(tmp_path):
    from dlma.truth.sentiment import check

    sample = tmp_path / "labels.jsonl"
    rows = [{"text": "good", "label": "positive"}, {"text": "bad", "label": "negative"},
            {"text": "a table", "label": "neutral"}, {"text": "It was terrible", "label": "positive"}]  # the last: wrong
    sample.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = check(samples=100, seed=0, path=sample)
    assert result["n"] == 4 and result["accuracy"]["accuracy"] == 0.75
    assert result["sign_accuracy_polar"]["accuracy"] == pytest.approx(2 / 3)
    assert [m["text"] for m in result["mistakes"]] == ["It was terrible"]
    shipped_check = check(samples=100, seed=0)  # the 48 shipped sentences: reported, whatever it is
    assert shipped_check["n"] == 48 and 0.5 < shipped_check["accuracy"]["accuracy"] <= 1.0


def test_the_sentiment_judge_against_hand_computed_rewards(tiny_lm):
    ctx = context(tiny_lm, judges=["sentiment"])
    ctx.aligned = ["good"] * len(ctx.queries)
    ctx.base = (["bad", "good", "good and great"] * len(ctx.queries))[: len(ctx.queries)]
    result = run_judges(["sentiment"], ctx)["sentiment"]
    aligned = np.full(len(ctx.queries), by_hand("good"))
    base = np.array([{"bad": by_hand("bad"), "good": by_hand("good"), "good and great": by_hand("good", "great")}[b]
                     for b in ctx.base])
    assert result.verdicts == ["win" if a > b else "lose" if a < b else "tie" for a, b in zip(aligned, base)]
    gain = result.metrics["sentiment"]["gain"]
    assert gain["difference"] == pytest.approx((aligned - base).mean(), abs=1e-4) and gain["n"] == len(ctx.queries)
    assert gain["ci_low"] <= gain["difference"] <= gain["ci_high"]
    assert result.metrics["sentiment"]["aligned"]["mean"] == pytest.approx(by_hand("good"), abs=1e-4)
    np.testing.assert_allclose(result.columns["sentiment_base"], base, atol=1e-4)
    # Its validity is its accuracy on its own labelled sample: an independent judge that can make the headline.
    assert result.validity["labelled_accuracy"] == result.metrics["sentiment"]["check"]["accuracy"]["accuracy"]


def test_the_sentiment_labeller_orders_pairs_by_the_true_reward(tiny_lm):
    model, tokenizer = tiny_lm
    frame = pl.DataFrame({"id": ["a", "b", "c"], "prompt": ["Review a cafe.", "Describe a day.", "Tell a story."],
                          "response_pos": ["good", "bad", "a table"], "response_neg": ["bad", "good and great", "a chair"]})
    result = label("sentiment", model, tokenizer, frame, TEST_PROMPTS, shipped(ScoreParams, "score", labeller="sentiment"))
    expected = [by_hand("good") - by_hand("bad"), by_hand("bad") - by_hand("good", "great"), 0.0]
    np.testing.assert_allclose(result["score"].to_numpy(), expected, atol=1e-4)
    for row, (q, pos) in enumerate(zip(frame["prompt"], frame["response_pos"])):  # reference log-probs, as every labeller
        bare = tokenizer(context_text(tokenizer, TEST_PROMPTS, q, "bare"), add_special_tokens=False)["input_ids"]
        assert result["ref_logp_pos"][row] == pytest.approx(reference_logprob(model, bare, encode_response(tokenizer, pos)), rel=1e-4)


def test_folds_depend_on_the_prompt_only():
    folds = [fold_of(f"p{i}", 2, 0) for i in range(200)]
    assert set(folds) == {0, 1} and 60 < sum(folds) < 140
    assert folds[:10] == [fold_of(f"p{i}", 2, 0) for i in range(10)]  # the same prompt, the same fold


GOOD = ["What a wonderful, happy day!", "I love it, it is great.", "Good food and great friends.", "A lovely, happy story.",
        "Excellent and kind staff.", "So good, I am delighted.", "The best trip, truly great.", "Nice and warm, I love it."]
BAD = ["A terrible, sad day.", "I hate it, it is awful.", "Bad food and rude people.", "A horrible, ugly story.",
       "Dreadful and cruel staff.", "So bad, I am furious.", "The worst trip, truly awful.", "Cold and bitter, I hate it."]


def test_the_truth_stage_measures_every_labeller_against_the_true_order(tmp_path, tiny_model_dir, tiny_lm, monkeypatch):
    """Generated pairs written here (p+ answers positive on rows 0-5, negative on rows 6-7,
    so both true orders occur), scored by the score stage, then the truth stage; every
    labeller's verdict is recomputed here: the contrastive sign from the scores, the true
    order from VADER, the A/B judge from the probabilities in both orders."""
    model, tokenizer = tiny_lm
    pos = GOOD[:6] + BAD[6:]
    neg = BAD[:6] + GOOD[6:]
    prompts = [f"Tell me about thing {i}." for i in range(8)]
    pl.DataFrame({"id": [f"r{i}" for i in range(8)], "prompt": prompts, "category": ["x"] * 8, "response_pos": pos,
                  "response_neg": neg, "finish_pos": ["eos"] * 8, "finish_neg": ["eos"] * 8}).write_parquet(tmp_path / "gen.parquet")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_model_dir)
    params["prompts"] = TEST_PROMPTS.__dict__ | {"pairs": {k: v.__dict__ for k, v in TEST_PROMPTS.pairs.items()}}
    params["score"].update({"batch_size": 4, "judge_prompt": "Which is better?\nQ: {q}\nA: {a}\nB: {b}\nAnswer A or B."})
    params["truth"].update({"reward": "sentiment", "folds": 2, "bootstrap": 100})
    params["reward"].update({"peft": "none", "batch_size": 2, "micro_batch_size": 2, "epochs": 1.0, "bootstrap": 50})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    for args in (["model", "--out", "model.json"],
                 ["score", "--generated", "gen.parquet", "--model-id", "model.json", "--out", "scored.parquet", "--report", "s.json"],
                 ["truth", "--scored", "scored.parquet", "--model-id", "model.json", "--metrics", "truth.json",
                  "--samples", "truth.parquet"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (args[0], result.output)
    summary, rows, scored = json.loads(Path("truth.json").read_text()), pl.read_parquet("truth.parquet"), pl.read_parquet("scored.parquet")
    reward = true_reward("sentiment").score
    truth = np.sign(reward(pos) - reward(neg))
    assert truth.tolist() == [1.0] * 6 + [-1.0] * 2 and summary["ties_dropped"] == 0 and summary["pairs"] == 8
    contrastive_right = np.sign(scored["score"].to_numpy()) == truth
    assert rows["contrastive_right"].to_list() == contrastive_right.astype(float).tolist()
    assert summary["contrastive"]["accuracy"] == pytest.approx(contrastive_right.mean())
    likelihood_right = np.sign(scored["logp_pos_given_pos"].to_numpy() - scored["logp_neg_given_pos"].to_numpy()) == truth
    assert summary["likelihood"]["accuracy"] == pytest.approx(likelihood_right.mean())
    template = params["score"]["judge_prompt"]
    averaged = []
    for q, a, b in zip(prompts, pos, neg):  # the paper's RLAIF: P(a) averaged over both orders
        pa1, pb1 = independent_ab(model, tokenizer, q, a, b, template)
        pa2, pb2 = independent_ab(model, tokenizer, q, b, a, template)
        averaged.append((pa1 / (pa1 + pb1) + pb2 / (pa2 + pb2)) / 2)
    np.testing.assert_allclose(rows["ab_prob_pos"].to_numpy(), averaged, rtol=1e-5)
    assert summary["ab_judge"]["accuracy"] == pytest.approx(np.mean(np.sign(np.array(averaged) - 0.5) == truth))
    assert summary["ab_rule"] == "average" and summary["ab_judge"]["counted"] == 8
    # The reward model: cross-fitted, every fold labelled by a model fitted on the other's pairs.
    folds = summary["reward_model"]["folds"]
    assert sum(f["labelled_pairs"] for f in folds) == 8 and all(f["fitted_on_pairs"] == 8 - f["labelled_pairs"] for f in folds)
    assert rows["reward_model_right"].null_count() == 0 and not rows["reward_model_right"].is_nan().any()
    difference = summary["contrastive_minus_reward_model"]
    assert difference["difference"] == pytest.approx((rows["contrastive_right"] - rows["reward_model_right"]).mean())


def test_the_truth_stage_skips_without_a_true_reward(tmp_path, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["truth", "--scored", "none.parquet", "--model-id", "none.json", "--metrics", "t.json",
                                      "--samples", "t.parquet"])
    assert result.exit_code == 0, result.output
    assert "no true reward" in json.loads(Path("t.json").read_text())["skipped"]
    assert pl.read_parquet("t.parquet").height == 0
