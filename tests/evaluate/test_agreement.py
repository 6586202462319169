"""Label agreement on real HH-RLHF rows with a tiny model, against an independent count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dlma.agreement.measure import agreement_results, label_agreement
from dlma.core.config import load_section
from dlma.core.errors import DlmaError
from dlma.data.loaders import load_records
from dlma.evaluate.params import EvaluateParams
from dlma.lm.prompts import context_text, encode_response
from dlma.model import load_causal_lm, load_tokenizer
from dlma.score.params import ScoreParams
from tests.helpers import TEST_PROMPTS as PROMPTS
from tests.helpers import reference_logprob, shipped

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = "Which is better?\nQ: {q}\nA: {a}\nB: {b}\nAnswer A or B."


@pytest.fixture(scope="module")
def judge(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"), attn_implementation="eager")
    return model, load_tokenizer(tiny_model_dir)


def independent_ab(model, tokenizer, q, a, b, template=TEMPLATE):
    # The question as the user turn with an empty system turn, written out here: the tiny
    # template, like SmolLM2's, would otherwise inject its own default system prompt.
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": template.format(q=q, a=a, b=b)}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "tiny test model" not in text
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
    summary, rows = label_agreement(model, tokenizer, frame, PROMPTS, shipped(ScoreParams, "score", batch_size=3, ab_rule="consistent"),
                                    TEMPLATE, ["A", "B"], samples=200, seed=0)
    averaged, _ = label_agreement(model, tokenizer, frame, PROMPTS, shipped(ScoreParams, "score", batch_size=3, ab_rule="average"),
                                  TEMPLATE, ["A", "B"], samples=200, seed=0)

    contrastive = likelihood = ab_right = consistent = 0
    prob_chosen = []
    for row in frame.iter_rows(named=True):
        def ll(response, role):
            context = tokenizer(context_text(tokenizer, PROMPTS, row["prompt"], role), add_special_tokens=False)["input_ids"]
            return reference_logprob(model, context, encode_response(tokenizer, response))
        c_pos, c_neg, r_pos, r_neg = ll(row["chosen"], "pos"), ll(row["chosen"], "neg"), ll(row["rejected"], "pos"), ll(row["rejected"], "neg")
        contrastive += ((c_pos - c_neg) - (r_pos - r_neg)) > 0
        likelihood += c_pos > r_pos
        pa1, pb1 = independent_ab(model, tokenizer, row["prompt"], row["chosen"], row["rejected"])
        pa2, pb2 = independent_ab(model, tokenizer, row["prompt"], row["rejected"], row["chosen"])
        first, swapped = pa1 / (pa1 + pb1), pb2 / (pa2 + pb2)
        prob_chosen.append((first + swapped) / 2)  # the paper's RLAIF: averaged over both orders
        # Counted only where both orders pick the same answer.
        agrees = (first > 0.5) == (swapped > 0.5)
        consistent += agrees
        ab_right += agrees and first > 0.5

    assert summary["rows"] == 8 and rows.height == 8
    assert summary["contrastive"]["accuracy"] == contrastive / 8
    assert summary["likelihood"]["accuracy"] == likelihood / 8
    assert summary["ab_judge"]["counted"] == consistent
    assert summary["ab_judge"]["order_consistency"] == consistent / 8
    if consistent:
        assert summary["ab_judge"]["accuracy"] == ab_right / consistent
    else:
        assert np.isnan(summary["ab_judge"]["accuracy"])
    # The production prompt, probability for probability, and the averaged rule on every pair.
    np.testing.assert_allclose(rows["ab_prob_chosen"].to_numpy(), prob_chosen, rtol=1e-5, atol=1e-9)
    assert averaged["ab_judge"]["rule"] == "average" and averaged["ab_judge"]["counted"] == 8
    assert averaged["ab_judge"]["accuracy"] == np.mean(np.array(prob_chosen) > 0.5)
    diff = summary["contrastive_minus_likelihood"]
    assert diff["difference"] == pytest.approx((contrastive - likelihood) / 8) and diff["n"] == 8
    assert diff["ci_low"] <= diff["difference"] <= diff["ci_high"]
    for method in ("contrastive", "likelihood"):
        assert summary[method]["ci_low"] <= summary[method]["accuracy"] <= summary[method]["ci_high"]


def test_reward_model_and_second_judge_as_labellers_paired_with_the_score(judge, shared_data):
    """The outside labellers' rows: accuracy, and contrastive minus labeller on the same
    pairs (for an A/B judge: only the pairs where its two orders agree), counted here."""
    from dlma.lm.ab_judge import ab_judge, ab_judge_summary

    model, tokenizer = judge
    frame, _ = load_records(str(shared_data / "hh-rlhf" / "harmless-base-test-dev.jsonl.gz"))
    frame = frame.head(10)

    def length_reward(queries, answers):  # a scripted reward model: longer is better
        return np.array([float(len(a)) for a in answers])

    question = "Better?\n{q}\nA: {a}\nB: {b}"

    def ask(queries, first, second):  # a second judge: the base model asked another question
        return ab_judge(model, tokenizer, "auto", question, ["A", "B"], queries, first, second, batch_size=4)

    summary, rows = label_agreement(model, tokenizer, frame, PROMPTS, shipped(ScoreParams, "score", batch_size=4, ab_rule="consistent"),
                                    TEMPLATE, ["A", "B"], samples=200, seed=0, reward=length_reward, judge=ask)
    contrastive = rows["contrastive_right"].to_numpy()
    longer = np.array([len(c) > len(r) for c, r in zip(frame["chosen"], frame["rejected"])], dtype=float)
    assert rows["reward_model_right"].to_list() == longer.tolist()
    assert summary["reward_model"]["accuracy"] == pytest.approx(longer.mean())
    assert summary["contrastive_minus_reward_model"]["difference"] == pytest.approx((contrastive - longer).mean())
    assert summary["contrastive_minus_reward_model"]["n"] == 10
    # The second judge, recomputed pair by pair in both orders.
    picks_first, picks_swapped = [], []
    for q, c, r in zip(frame["prompt"], frame["chosen"], frame["rejected"]):
        pa1, pb1 = independent_ab(model, tokenizer, q, c, r, question)
        pa2, pb2 = independent_ab(model, tokenizer, q, r, c, question)
        picks_first.append(pa1 / (pa1 + pb1) > 0.5)  # chosen shown first, picked
        picks_swapped.append(pb2 / (pa2 + pb2) > 0.5)  # chosen shown second, picked
    consistent = np.array([a == b for a, b in zip(picks_first, picks_swapped)])
    right = np.array(picks_first)[consistent].astype(float)
    assert summary["judge_model"]["counted"] == consistent.sum()
    assert summary["judge_model"]["order_consistency"] == pytest.approx(consistent.mean())
    difference = summary["contrastive_minus_judge_model"]
    assert difference["n"] == consistent.sum()
    if consistent.any():
        assert summary["judge_model"]["accuracy"] == pytest.approx(right.mean())
        assert difference["difference"] == pytest.approx((contrastive[consistent] - right).mean())
        assert difference["ci_low"] <= difference["difference"] <= difference["ci_high"]
    assert rows["judge_model_right"].to_list() == (np.array(picks_first) & consistent).tolist()
    # The random tiny model says "A" in both orders (nothing counted), so the counting is
    # also checked with a scripted judge whose picks are set here: chosen picked in the first
    # order on pairs 0-5, in the swapped order on pairs 0-3 and 6-7.
    first_pick = np.arange(10) < 6
    swapped_pick = (np.arange(10) < 4) | ((np.arange(10) >= 6) & (np.arange(10) < 8))

    def scripted(queries, first, second):
        p_first = np.where(first_pick, 0.8, 0.2)
        p_swapped = np.where(swapped_pick, 0.7, 0.3)  # P(B) when the chosen answer is B
        return ab_judge_summary(p_first, 1 - p_first, 1 - p_swapped, p_swapped)

    summary, rows = label_agreement(model, tokenizer, frame, PROMPTS, shipped(ScoreParams, "score", batch_size=4, ab_rule="consistent"),
                                    TEMPLATE, ["A", "B"], samples=200, seed=0, judge=scripted)
    agree = first_pick == swapped_pick  # pairs 0-3 (chosen both times) and 8-9 (rejected both times)
    assert summary["judge_model"]["counted"] == 6 and summary["judge_model"]["order_consistency"] == pytest.approx(0.6)
    assert summary["judge_model"]["accuracy"] == pytest.approx(4 / 6)
    assert summary["contrastive_minus_judge_model"]["difference"] == pytest.approx((contrastive[agree] - first_pick[agree]).mean())
    assert summary["contrastive_minus_judge_model"]["n"] == 6
    assert "reward_model" not in summary and "reward_model_right" not in rows.columns
    # The averaged rule labels all 10: P(chosen) = (0.8 + 0.7) / 2 on pairs 0-3, (0.8 + 0.3) / 2
    # on 4-5 (right), (0.2 + 0.7) / 2 on 6-7 and (0.2 + 0.3) / 2 on 8-9 (wrong).
    summary, rows = label_agreement(model, tokenizer, frame, PROMPTS, shipped(ScoreParams, "score", batch_size=4, ab_rule="average"),
                                    TEMPLATE, ["A", "B"], samples=200, seed=0, judge=scripted)
    assert summary["judge_model"]["counted"] == 10 and summary["judge_model"]["accuracy"] == pytest.approx(0.6)
    assert rows["judge_model_right"].to_list() == [True] * 6 + [False] * 4
    assert summary["contrastive_minus_judge_model"]["difference"] == pytest.approx((contrastive - (np.arange(10) < 6)).mean())


def pair_set(name: str, source: str, optional: bool = False) -> dict:
    return {"name": name, "source": source, "format": "auto", "columns": {}, "pku_label": "safer", "pair": "", "optional": optional}


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
        load_section(EvaluateParams, "evaluate", write_evaluate(tmp_path, judges=["reward_model"], reward_model=""))
    with pytest.raises(DlmaError, match=r"evaluate.judge_prompt must contain the placeholder \{b\}"):
        load_section(EvaluateParams, "evaluate", write_evaluate(tmp_path, judge_prompt="{q} {a}"))
    with pytest.raises(DlmaError, match="evaluate.judge_tokens must name exactly two"):
        load_section(EvaluateParams, "evaluate", write_evaluate(tmp_path, judge_tokens=["A"]))


def test_agreement_set_with_missing_fields(tmp_path, judge, monkeypatch):
    agreement = agreement_results

    model, tokenizer = judge
    bad = tmp_path / "pairs.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n" + json.dumps({"prompt": "q2", "chosen": "a"}) + "\n")
    params = load_section(EvaluateParams, "evaluate", write_evaluate(tmp_path, agreement_sets=[pair_set("mine", str(bad))]))
    with pytest.raises(DlmaError, match=r"pairs.jsonl, line 2: no field 'rejected'.*columns of evaluate.agreement_sets 'mine'"):
        agreement(model, tokenizer, params, PROMPTS, shipped(ScoreParams, "score"))
    only_prompts = tmp_path / "prompts.jsonl"
    only_prompts.write_text(json.dumps({"prompt": "q"}) + "\n")
    params = load_section(EvaluateParams, "evaluate", write_evaluate(tmp_path, agreement_sets=[pair_set("p", str(only_prompts))]))
    with pytest.raises(DlmaError, match="agreement set 'p' .* has no chosen/rejected fields"):
        agreement(model, tokenizer, params, PROMPTS, shipped(ScoreParams, "score"))
    missing = load_section(EvaluateParams, "evaluate", write_evaluate(tmp_path, agreement_sets=[pair_set("gone", "nowhere/x.jsonl", True)]))
    results, _ = agreement(model, tokenizer, missing, PROMPTS, shipped(ScoreParams, "score"))
    assert results == {"gone": {"skipped": "nowhere/x.jsonl not found"}}
    required = load_section(EvaluateParams, "evaluate", write_evaluate(tmp_path, agreement_sets=[pair_set("gone", "nowhere/x.jsonl")]))
    with pytest.raises(DlmaError, match=r"evaluation set 'gone': nowhere/x.jsonl not found.*optional: true"):
        agreement(model, tokenizer, required, PROMPTS, shipped(ScoreParams, "score"))


def test_identical_pairs_carry_no_label(tmp_path, judge):
    model, tokenizer = judge
    same = tmp_path / "same.jsonl"
    rows = [{"prompt": "q", "chosen": "a", "rejected": "a"}, {"prompt": "q2", "chosen": "b", "rejected": "b"}]
    same.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    params = load_section(EvaluateParams, "evaluate", write_evaluate(tmp_path, agreement_sets=[pair_set("same", str(same))]))
    with pytest.raises(DlmaError, match=r"agreement set 'same' .*chosen equals rejected in all 2 rows"):
        agreement_results(model, tokenizer, params, PROMPTS, shipped(ScoreParams, "score"))
    rows.append({"prompt": "q3", "chosen": "good", "rejected": "bad"})
    same.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    results, detail = agreement_results(model, tokenizer, params, PROMPTS, shipped(ScoreParams, "score"))
    assert results["same"]["rows"] == 1 and results["same"]["dropped_identical_pairs"] == 2 and detail.height == 1
    assert detail["chosen"].to_list() == ["good"] and detail["pair"].to_list() == ["x"] and detail["set"].to_list() == ["same"]
