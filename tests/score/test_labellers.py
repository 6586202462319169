"""Labellers other than the contrastive score: RLAIF's A/B judge, in both orders, against a
scripted judge and against an independent computation on the tiny model."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from dlma.lm.prompts import context_text, encode_response
from dlma.score.labellers import label, two_order_labels
from dlma.score.params import ScoreParams
from tests.evaluate.test_agreement import TEMPLATE, independent_ab
from tests.helpers import TEST_PROMPTS, reference_logprob, shipped


def test_two_order_labels_with_a_scripted_judge():
    # Scripted verdicts: picks response_pos with it shown first / with it shown second.
    first = [True, False, True, False]
    swapped = [True, False, False, True]
    score, labelled = two_order_labels(np.array(first), np.array(swapped))
    assert score.tolist() == [1.0, -1.0, 0.0, 0.0] and labelled.tolist() == [True, True, False, False]


def test_rlaif_labeller_on_the_tiny_model(tiny_lm):
    model, tokenizer = tiny_lm
    frame = pl.DataFrame({"id": ["a", "b", "c"], "prompt": ["How do I make coffee?", "Hi", "Why?"],
                          "response_pos": ["Use fresh beans.", "Hello there!", "Because."],
                          "response_neg": ["No.", "Go away.", "I will not say."]})
    params = shipped(ScoreParams, "score", labeller="ab_judge", judge_prompt=TEMPLATE, batch_size=2)
    result = label("ab_judge", model, tokenizer, frame, TEST_PROMPTS, params)
    for row, (q, pos, neg) in enumerate(zip(frame["prompt"], frame["response_pos"], frame["response_neg"])):
        pa1, pb1 = independent_ab(model, tokenizer, q, pos, neg)
        pa2, pb2 = independent_ab(model, tokenizer, q, neg, pos)
        first, swapped = pa1 > pb1, pb2 > pa2  # response_pos picked when shown first / second
        assert result["labelled"][row] == (first == swapped)
        assert result["score"][row] == (0.0 if first != swapped else 1.0 if first else -1.0)
        context = tokenizer(context_text(tokenizer, TEST_PROMPTS, q, "bare"), add_special_tokens=False)["input_ids"]
        assert result["ref_logp_pos"][row] == pytest.approx(reference_logprob(model, context, encode_response(tokenizer, pos)), rel=1e-4)
    assert result["tokens_pos"].to_list()[0][-1] == tokenizer.eos_token_id  # text pairs: encoded with EOS
