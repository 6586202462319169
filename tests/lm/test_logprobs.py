"""Batched summed log-probs and padding, against unbatched computations."""

from __future__ import annotations

import numpy as np
import pytest

from dlma.lm.logprobs import pad_pairs, response_logprobs
from tests.helpers import reference_logprob


@pytest.mark.parametrize("side", ["right", "left"])
def test_batched_logprobs_match_unbatched(tiny_lm, side):
    model, tokenizer = tiny_lm
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


def test_padding_puts_response_where_masks_say(tiny_lm):
    _, tokenizer = tiny_lm
    batch = pad_pairs([([1, 2, 3], [4, 5]), ([6], [7])], pad_id=tokenizer.pad_token_id, side="left")
    assert batch.input_ids[1].tolist()[-2:] == [6, 7]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]]
    assert batch.position_ids[1].tolist()[-2:] == [0, 1]
    assert batch.response_start.tolist() == [3, 4] and batch.response_len.tolist() == [2, 1]
