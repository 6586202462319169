"""Label agreement on real HH-RLHF rows with a tiny model, against an independent count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dlma.data import load_records
from dlma.errors import DlmaError
from dlma.evaluation import label_agreement
from dlma.modelio import load_causal_lm, load_tokenizer
from dlma.params import EvaluateParams, PromptPair, PromptsParams, ScoreParams, load_section
from dlma.prompts import context_text, encode_context, encode_response
from tests.test_logprobs import reference_logprob

REPO = Path(__file__).resolve().parents[1]
PROMPTS = PromptsParams(
    pair="x", style="system",
    pairs={"x": PromptPair(tag_pos="+ {q}", tag_neg="- {q}", system_pos="Be good.", system_neg="Be bad.")},
)
TEMPLATE = "Which is better?\nQ: {q}\nA: {a}\nB: {b}\nAnswer A or B."


@pytest.fixture(scope="module")
def judge(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"), attn_implementation="eager")
    return model, load_tokenizer(tiny_model_dir)


def independent_ab(model, tokenizer, q, a, b):
    text = tokenizer.apply_chat_template([{"role": "user", "content": TEMPLATE.format(q=q, a=a, b=b)}], tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids).logits[0, -1].double(), -1)
    token_a = tokenizer("A", add_special_tokens=False)["input_ids"][0]
    token_b = tokenizer("B", add_special_tokens=False)["input_ids"][0]
    return float(probs[token_a]), float(probs[token_b])


def test_agreement_counts_match_independent_count(judge, shared_data):
    model, tokenizer = judge
    frame, _ = load_records(str(shared_data / "hh-rlhf" / "harmless-base-test-dev.jsonl.gz"))
    frame = frame.head(8)
    summary, rows = label_agreement(model, tokenizer, frame, PROMPTS, ScoreParams(batch_size=3), TEMPLATE, ["A", "B"], samples=200, seed=0)

    contrastive = likelihood = ab_right = consistent = 0
    for row in frame.iter_rows(named=True):
        def ll(response, role):
            context = encode_context(tokenizer, context_text(tokenizer, PROMPTS, row["prompt"], role), chat=True)
            return reference_logprob(model, context, encode_response(tokenizer, response))
        c_pos, c_neg, r_pos, r_neg = ll(row["chosen"], "pos"), ll(row["chosen"], "neg"), ll(row["rejected"], "pos"), ll(row["rejected"], "neg")
        contrastive += ((c_pos - c_neg) - (r_pos - r_neg)) > 0
        likelihood += c_pos > r_pos
        pa1, pb1 = independent_ab(model, tokenizer, row["prompt"], row["chosen"], row["rejected"])
        pa2, pb2 = independent_ab(model, tokenizer, row["prompt"], row["rejected"], row["chosen"])
        first, swapped = pa1 / (pa1 + pb1), pb2 / (pa2 + pb2)
        ab_right += (first + swapped) / 2 > 0.5
        consistent += (first > 0.5) == (swapped > 0.5)

    assert summary["rows"] == 8 and rows.height == 8
    assert summary["contrastive"]["accuracy"] == contrastive / 8
    assert summary["likelihood"]["accuracy"] == likelihood / 8
    assert summary["ab_judge"]["accuracy"] == ab_right / 8
    assert summary["ab_judge"]["order_consistency"] == consistent / 8
    for method in ("contrastive", "likelihood", "ab_judge"):
        assert summary[method]["ci_low"] <= summary[method]["accuracy"] <= summary[method]["ci_high"]


def write_evaluate(tmp_path, **changes) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["evaluate"].update(changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_unknown_judge(tmp_path):
    with pytest.raises(DlmaError, match=r"evaluate.judges: unknown judge\(s\) \['gpt4'\]; known judges"):
        load_section(EvaluateParams, "evaluate", write_evaluate(tmp_path, judges=["self_contrast", "gpt4"]))
    with pytest.raises(DlmaError, match="reward_model is empty"):
        load_section(EvaluateParams, "evaluate", write_evaluate(tmp_path, judges=["reward_model"]))


def test_agreement_set_with_missing_fields(tmp_path, judge, monkeypatch):
    from stages.evaluate import agreement

    model, tokenizer = judge
    bad = tmp_path / "pairs.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n" + json.dumps({"prompt": "q2", "chosen": "a"}) + "\n")
    params = load_section(EvaluateParams, "evaluate", write_evaluate(tmp_path, agreement_sets=[{"name": "mine", "source": str(bad)}]))
    with pytest.raises(DlmaError, match=r"pairs.jsonl, line 2: no field 'rejected'"):
        agreement(model, tokenizer, params, PROMPTS, ScoreParams())
    only_prompts = tmp_path / "prompts.jsonl"
    only_prompts.write_text(json.dumps({"prompt": "q"}) + "\n")
    params = load_section(EvaluateParams, "evaluate", write_evaluate(tmp_path, agreement_sets=[{"name": "p", "source": str(only_prompts)}]))
    with pytest.raises(DlmaError, match="agreement set 'p' .* has no chosen/rejected fields"):
        agreement(model, tokenizer, params, PROMPTS, ScoreParams())
    missing = load_section(EvaluateParams, "evaluate", write_evaluate(tmp_path, agreement_sets=[{"name": "gone", "source": "nowhere/x.jsonl"}]))
    results, _ = agreement(model, tokenizer, missing, PROMPTS, ScoreParams())
    assert results == {"gone": {"skipped": "nowhere/x.jsonl not found"}}


def test_reward_model_judge(tmp_path, tiny_model_dir):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from dlma.evalstats import verdict_from_margin
    from dlma.evaluation import reward_model_scores

    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.num_labels = 1
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    load_tokenizer(tiny_model_dir).save_pretrained(tmp_path / "rm")
    queries, answers = ["How do I make coffee?", "Hi"], ["Use fresh beans.", "I cannot help."]
    scores = reward_model_scores(str(tmp_path / "rm"), queries, answers, batch_size=1)
    batched = reward_model_scores(str(tmp_path / "rm"), queries, answers, batch_size=2)
    assert scores.shape == (2,) and np.all(np.isfinite(scores))
    np.testing.assert_allclose(batched, scores, rtol=1e-4, atol=1e-5)  # padding does not change a reward
    assert [verdict_from_margin(a - b, 0.0) for a, b in [(scores[0], scores[1]), (scores[1], scores[0])]] in (
        [["win", "lose"], ["lose", "win"]]
    )
    with pytest.raises(DlmaError, match="cannot load"):
        reward_model_scores(str(tmp_path / "missing"), queries, answers)


def test_self_contrast_reference_columns_are_the_perplexity_inputs(judge):
    from dlma.evaluation import answer_logps, self_contrast
    from dlma.scorer import score_table
    import polars as pl

    model, tokenizer = judge
    queries, ours, theirs = ["How do I make coffee?", "Hi", "Why?"], ["Use fresh beans.", "Hello!", ""], ["No.", "Go away.", "Because."]
    contrast = self_contrast(model, tokenizer, PROMPTS, ScoreParams(batch_size=2), queries, ours, theirs)
    logps_ours, tokens_ours = answer_logps(model, tokenizer, PROMPTS, queries, ours, batch_size=2)
    logps_theirs, tokens_theirs = answer_logps(model, tokenizer, PROMPTS, queries, theirs, batch_size=2)
    np.testing.assert_allclose(contrast["ref_logp_pos"].to_numpy(), logps_ours, rtol=1e-5)
    np.testing.assert_allclose(contrast["ref_logp_neg"].to_numpy(), logps_theirs, rtol=1e-5)
    assert contrast["n_tokens_pos"].to_list() == tokens_ours.tolist() and contrast["n_tokens_neg"].to_list() == tokens_theirs.tolist()
    frame = pl.DataFrame({"id": ["0", "1", "2"], "prompt": queries, "response_pos": ours, "response_neg": theirs})
    lean = score_table(model, tokenizer, frame, PROMPTS, ScoreParams(batch_size=2), with_reference=False)
    assert "ref_logp_pos" not in lean.columns
    np.testing.assert_allclose(lean["score"].to_numpy(), contrast["score"].to_numpy(), rtol=1e-5, atol=1e-6)
