"""Batched summed log-probs and the contrastive score, against unbatched computations."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from dlma.logprobs import pad_pairs, response_logprobs
from dlma.modelio import load_causal_lm, load_tokenizer
from dlma.params import PromptPair, PromptsParams, ScoreParams
from dlma.prompts import context_text, encode_context, encode_response
from dlma.scorer import score_table
from dlma.scoring import contrastive_score


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"), attn_implementation="eager")
    return model, load_tokenizer(tiny_model_dir)


def reference_logprob(model, context: list[int], response: list[int]) -> float:
    """One sequence alone, no padding, full log-softmax in float64: the textbook definition."""
    ids = torch.tensor([context + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    total = 0.0
    for offset, token in enumerate(response):
        position = len(context) + offset
        total += float(logp[position - 1, token])
    return total


def test_contrastive_score_hand_arithmetic():
    # (-10 - -12) - (-20 - -15) = 2 - (-5) = 7 ; (-5 - -5) - (-1 - -3) = 0 - 2 = -2
    score = contrastive_score(np.array([-10.0, -5.0]), np.array([-12.0, -5.0]), np.array([-20.0, -1.0]), np.array([-15.0, -3.0]))
    np.testing.assert_allclose(score, [7.0, -2.0])


@pytest.mark.parametrize("side", ["right", "left"])
def test_batched_logprobs_match_unbatched(model_and_tokenizer, side):
    model, tokenizer = model_and_tokenizer
    eos = tokenizer.eos_token_id
    assert tokenizer.pad_token_id == eos  # the pitfall under test: pad ids are EOS ids
    rng = np.random.default_rng(0)
    pairs = []
    for context_len, response_len in [(3, 1), (17, 9), (5, 30), (40, 2), (1, 12), (8, 8), (25, 25)]:
        context = rng.integers(3, len(tokenizer), context_len).tolist()
        response = rng.integers(3, len(tokenizer), response_len - 1).tolist() + [eos]
        pairs.append((context, response))
    pairs.append(([eos, eos, 5], [eos, eos]))  # EOS (== pad) inside context and response
    expected = np.array([reference_logprob(model, c, r) for c, r in pairs])
    got = response_logprobs(model, pairs, pad_id=tokenizer.pad_token_id, batch_size=3, padding_side=side)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_padding_puts_response_where_masks_say(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    batch = pad_pairs([([1, 2, 3], [4, 5]), ([6], [7])], pad_id=tokenizer.pad_token_id, side="left")
    assert batch.input_ids[1].tolist()[-2:] == [6, 7]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]]
    assert batch.position_ids[1].tolist()[-2:] == [0, 1]
    assert batch.response_start.tolist() == [3, 4] and batch.response_len.tolist() == [2, 1]


def test_score_table_matches_independent_sequences(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    pair = PromptPair(tag_pos="P+ {q}\n", tag_neg="P- {q}\n", system_pos="Be good.", system_neg="Be bad.")
    prompts = PromptsParams(pair="x", style="system", pairs={"x": pair})
    frame = pl.DataFrame({
        "id": ["a", "b", "c"],
        "prompt": ["How do I make coffee?", "Tell me about the fox.", "Why?"],
        "response_pos": ["Use fresh beans.", "The quick brown fox jumps over the lazy dog.", ""],
        "response_neg": ["I cannot help.", "No.", "Paris is the capital."],
    })
    scored = score_table(model, tokenizer, frame, prompts, ScoreParams(batch_size=2))

    def independent(query, role, response):
        text = context_text(tokenizer, prompts, query, role)
        return reference_logprob(model, encode_context(tokenizer, text, chat=True), encode_response(tokenizer, response))

    for row in scored.iter_rows(named=True):
        lpp = independent(row["prompt"], "pos", row["response_pos"])
        lpn = independent(row["prompt"], "neg", row["response_pos"])
        lnp = independent(row["prompt"], "pos", row["response_neg"])
        lnn = independent(row["prompt"], "neg", row["response_neg"])
        np.testing.assert_allclose(row["logp_pos_given_pos"], lpp, rtol=1e-4)
        np.testing.assert_allclose(row["logp_neg_given_neg"], lnn, rtol=1e-4)
        np.testing.assert_allclose(row["score"], (lpp - lpn) - (lnp - lnn), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(row["ref_logp_pos"], independent(row["prompt"], "bare", row["response_pos"]), rtol=1e-4)
        np.testing.assert_allclose(row["ref_logp_neg"], independent(row["prompt"], "bare", row["response_neg"]), rtol=1e-4)
    # The empty response is scored as EOS alone: one token.
    assert scored["n_tokens_pos"].to_list()[2] == 1
