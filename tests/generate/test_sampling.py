"""Sampling that does not depend on batching: each response has its own random stream,
so the same row gets the same tokens whatever the batch size, the order or the other rows."""

from __future__ import annotations

import copy

import polars as pl
import pytest
import torch

from dlma.generate.pairs import generate_pairs
from dlma.generate.params import GenerateParams
from dlma.generate.sampling import row_seed, sample_responses
from tests.helpers import TEST_PROMPTS, reference_logprob, shipped

QUERIES = ["How do I make coffee?", "Tell me about the fox.", "Why?", "Explain photosynthesis.", "Hi", "What is the capital of France?"]


def contexts(tokenizer):
    return [tokenizer(q)["input_ids"] for q in QUERIES]


def test_a_row_samples_the_same_whatever_its_batch(tiny_lm):
    model, tokenizer = tiny_lm
    params = shipped(GenerateParams, "generate", max_new_tokens=12, batch_size=4, dtype="float32")
    seeds = [row_seed(0, str(i), "pos") for i in range(len(QUERIES))]
    everything = sample_responses(model, tokenizer, contexts(tokenizer), params, seeds=seeds)
    # Other rows, another batch size, another order.
    picked = [4, 1, 2]
    small = shipped(GenerateParams, "generate", max_new_tokens=12, batch_size=2, dtype="float32")
    some = sample_responses(model, tokenizer, [contexts(tokenizer)[i] for i in picked], small, seeds=[seeds[i] for i in picked])
    assert [s.token_ids for s in some] == [everything[i].token_ids for i in picked]
    # A different stream gives a different sample (the seeds matter).
    other = sample_responses(model, tokenizer, contexts(tokenizer), params, seeds=[s + 1 for s in seeds])
    assert [s.token_ids for s in other] != [s.token_ids for s in everything]


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "lora-adapter"])
def test_logprobs_recorded_while_sampling_are_a_scoring_pass(tiny_lm, wrapped):
    """Each answer's `logp` (with_logprobs) against the answer scored alone in float64: its
    sampled tokens and, where the model ended it, that EOS; in padded batches, under a PEFT
    wrapper too (the adapter's effect is in it). The answers are those sampled without."""
    from peft import LoraConfig, get_peft_model

    base, tokenizer = tiny_lm
    model = copy.deepcopy(base)
    params = shipped(GenerateParams, "generate", max_new_tokens=10, batch_size=4, dtype="float32")
    seeds = [row_seed(0, str(i), "bare") for i in range(len(QUERIES))]
    plain = sample_responses(model, tokenizer, contexts(tokenizer), params, seeds=seeds)
    # A frequent token made an EOS too, so that some answers end (the tiny model seldom samples its own).
    frequent = max({t for s in plain for t in s.token_ids}, key=lambda t: sum(s.token_ids.count(t) for s in plain))
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, frequent]
    if wrapped:
        torch.manual_seed(0)
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    sampled = sample_responses(model, tokenizer, contexts(tokenizer), params, seeds=seeds, with_logprobs=True)
    assert {s.finish for s in sampled} == {"eos", "length"}
    for sample, context in zip(sampled, contexts(tokenizer)):
        response = list(sample.token_ids) + ([sample.eos_id] if sample.finish == "eos" else [])
        assert sample.logp == pytest.approx(reference_logprob(model, context, response), abs=1e-4)
        if wrapped:  # the adapter is in the recorded log-probs
            assert abs(sample.logp - reference_logprob(base, context, response)) > 1e-3
    # Recording changes nothing sampled.
    again = sample_responses(model, tokenizer, contexts(tokenizer), params, seeds=seeds)
    assert [s.token_ids for s in again] == [s.token_ids for s in sampled] and all(s.logp is None for s in again)


def test_top_k_one_is_greedy_decoding(tiny_lm):
    # The warpers shape the distribution before the per-row draw: top_k=1 leaves one token.
    model, tokenizer = tiny_lm
    params = shipped(GenerateParams, "generate", max_new_tokens=8, batch_size=3, top_k=1, dtype="float32")
    sampled = sample_responses(model, tokenizer, contexts(tokenizer)[:3], params, seeds=[1, 2, 3])
    for sample, ids in zip(sampled, contexts(tokenizer)[:3]):
        greedy = model.generate(input_ids=torch.tensor([ids]), do_sample=False, temperature=None, top_p=None, top_k=None,
                                max_new_tokens=8, pad_token_id=tokenizer.pad_token_id)
        tokens = greedy[0, len(ids):].tolist()
        expected = tokens[: tokens.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in tokens else tokens
        assert list(sample.token_ids) == expected


def test_row_seed_depends_on_seed_row_and_side():
    assert row_seed(0, "a", "pos") == row_seed(0, "a", "pos")
    assert len({row_seed(0, "a", "pos"), row_seed(0, "a", "neg"), row_seed(0, "b", "pos"), row_seed(1, "a", "pos")}) == 4


def test_a_smaller_data_limit_keeps_the_common_rows_responses(tiny_lm):
    model, tokenizer = tiny_lm
    frame = pl.DataFrame({"id": [f"r{i}" for i in range(6)], "prompt": QUERIES, "category": [""] * 6})
    params = shipped(GenerateParams, "generate", max_new_tokens=10, batch_size=4, dtype="float32")
    full, report = generate_pairs(model, tokenizer, frame, TEST_PROMPTS, params)
    fewer, _ = generate_pairs(model, tokenizer, frame.head(4).reverse(), TEST_PROMPTS,
                              shipped(GenerateParams, "generate", max_new_tokens=10, batch_size=3, dtype="float32"))
    joined = fewer.join(full, on="id", suffix="_full")
    assert joined.height == 4
    for side in ("pos", "neg"):
        assert joined[f"response_{side}_ids"].to_list() == joined[f"response_{side}_ids_full"].to_list()
    assert report["rows_out"] == 6 and 0.0 <= report["complete_share"] <= 1.0


def test_rlaif_pairs_are_two_samples_from_the_bare_prompt(tiny_lm):
    from dlma.lm.prompts import encode_contexts

    model, tokenizer = tiny_lm
    frame = pl.DataFrame({"id": [f"r{i}" for i in range(4)], "prompt": QUERIES[:4], "category": [""] * 4})
    params = shipped(GenerateParams, "generate", max_new_tokens=8, batch_size=4, dtype="float32", pairs_from="bare")
    result, _ = generate_pairs(model, tokenizer, frame, TEST_PROMPTS, params)
    bare = encode_contexts(tokenizer, TEST_PROMPTS, QUERIES[:4], "bare")
    for side in ("pos", "neg"):  # each side: the bare context, its own stream
        expected = sample_responses(model, tokenizer, bare, params, seeds=[row_seed(params.seed, f"r{i}", side) for i in range(4)])
        assert result[f"response_{side}_ids"].to_list() == [list(s.token_ids) for s in expected]
    assert result["response_pos_ids"].to_list() != result["response_neg_ids"].to_list()


def test_draw_samples_the_distribution_over_its_support_only():
    from dlma.generate.sampling import draw

    probs = torch.zeros(5000)
    probs[[7, 1200, 4999]] = torch.tensor([0.5, 0.3, 0.2])
    generator = torch.Generator().manual_seed(0)
    picks = torch.stack([draw(probs, generator) for _ in range(20000)])
    assert set(picks.tolist()) == {7, 1200, 4999}  # never a token of probability 0
    shares = [(picks == token).float().mean().item() for token in (7, 1200, 4999)]
    # 20,000 draws: the standard error of each share is under 0.004.
    assert all(abs(share - p) < 0.015 for share, p in zip(shares, (0.5, 0.3, 0.2)))
    again = torch.Generator().manual_seed(0)
    assert [draw(probs, again).item() for _ in range(50)] == picks[:50].tolist()  # the seed fixes the draws


def test_temperature_and_top_p_sample_as_written_out_by_hand(tiny_lm):
    """Non-default temperature and top-p: each step's token is the one drawn (same stream)
    from softmax(logits / T), cut to the top-k, then to the smallest set of tokens whose
    probability reaches top_p, renormalised: written out here without transformers' warpers."""
    from dlma.generate.sampling import draw

    model, tokenizer = tiny_lm
    temperature, top_p, top_k, steps = 0.7, 0.8, 50, 8
    params = shipped(GenerateParams, "generate", max_new_tokens=steps, batch_size=2, temperature=temperature, top_p=top_p,
                     top_k=top_k, dtype="float32")
    seeds = [row_seed(0, str(i), "pos") for i in range(3)]
    sampled = sample_responses(model, tokenizer, contexts(tokenizer)[:3], params, seeds=seeds)

    def by_hand(context: list[int], seed: int) -> list[int]:
        generator, ids = torch.Generator().manual_seed(seed), list(context)
        for _ in range(steps):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float() / temperature
            probs = torch.softmax(logits, -1)
            probs[probs < torch.topk(probs, top_k).values[-1]] = 0.0  # top-k
            ordered, order = torch.sort(probs / probs.sum(), descending=True)
            before = torch.cumsum(ordered, 0) - ordered  # mass of the more likely tokens
            cut = torch.zeros_like(probs)
            cut[order[before < top_p]] = probs[order[before < top_p]]  # keep until top_p is reached
            token = int(draw(cut / cut.sum(), generator))
            if token == tokenizer.eos_token_id:
                break
            ids.append(token)
        return ids[len(context):]

    for sample, context, seed in zip(sampled, contexts(tokenizer)[:3], seeds):
        assert list(sample.token_ids) == by_hand(context, seed)
    plain = sample_responses(model, tokenizer, contexts(tokenizer)[:3], shipped(GenerateParams, "generate", max_new_tokens=steps,
                             batch_size=2, dtype="float32"), seeds=seeds)
    assert [s.token_ids for s in plain] != [s.token_ids for s in sampled]  # the params change the answers
