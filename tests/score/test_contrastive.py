"""The contrastive score: hand arithmetic, and a table scored in batches against one
sequence at a time."""

from __future__ import annotations

import numpy as np
import polars as pl

from dlma.lm.params import PromptsParams
from dlma.lm.prompts import context_text, encode_response
from dlma.score.contrastive import contrastive_score, score_table
from dlma.score.params import ScoreParams
from tests.helpers import reference_logprob, shipped


def test_contrastive_score_hand_arithmetic():
    # (-10 - -12) - (-20 - -15) = 2 - (-5) = 7 ; (-5 - -5) - (-1 - -3) = 0 - 2 = -2
    score = contrastive_score(np.array([-10.0, -5.0]), np.array([-12.0, -5.0]), np.array([-20.0, -1.0]), np.array([-15.0, -3.0]))
    np.testing.assert_allclose(score, [7.0, -2.0])


def test_score_table_matches_independent_sequences(tiny_lm):
    model, tokenizer = tiny_lm
    pair = {"tag_pos": "P+ {q}\n", "tag_neg": "P- {q}\n", "system_pos": "Be good.", "system_neg": "Be bad."}
    prompts = shipped(PromptsParams, "prompts", pair="x", category_pairs={}, style="system", pairs={"x": pair})
    frame = pl.DataFrame({
        "id": ["a", "b", "c"],
        "prompt": ["How do I make coffee?", "Tell me about the fox.", "Why?"],
        "response_pos": ["Use fresh beans.", "The quick brown fox jumps over the lazy dog.", ""],
        "response_neg": ["I cannot help.", "No.", "Paris is the capital."],
    })
    scored = score_table(model, tokenizer, frame, prompts, shipped(ScoreParams, "score", batch_size=2))

    def independent(query, role, response):
        text = context_text(tokenizer, prompts, query, role)
        return reference_logprob(model, tokenizer(text, add_special_tokens=False)["input_ids"], encode_response(tokenizer, response))

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



def test_a_second_eos_id_is_scored_as_the_model_sampled_it(tiny_lm):
    """A model with several EOS ids (Llama-3: <|eot_id|> and <|end_of_text|>): generation
    stops at any of them, and the scored (and so trained) tokens end with the one the model
    sampled, not with tokenizer.eos_token_id."""
    import copy

    from dlma.generate.pairs import generate_pairs
    from dlma.generate.params import GenerateParams
    from dlma.lm.prompts import context_ids
    from tests.helpers import TEST_PROMPTS

    model, tokenizer = tiny_lm
    frame = pl.DataFrame({"id": ["a", "b"], "prompt": ["How do I make coffee?", "Why?"], "category": ["", ""]})
    greedy = shipped(GenerateParams, "generate", max_new_tokens=8, batch_size=2, top_k=1, dtype="float32")
    plain, _ = generate_pairs(model, tokenizer, frame, TEST_PROMPTS, greedy)
    # A second EOS id: the 4th token that greedy decoding gives row a's positive answer.
    greedy_ids = plain["response_pos_ids"][0].to_list()
    second_eos = greedy_ids[3]
    kept = greedy_ids[:greedy_ids.index(second_eos)]  # cut where that id is first sampled
    assert second_eos != tokenizer.eos_token_id
    saved = copy.deepcopy(model.generation_config)
    try:
        model.generation_config.eos_token_id = [tokenizer.eos_token_id, second_eos]
        generated, _ = generate_pairs(model, tokenizer, frame, TEST_PROMPTS, greedy)
    finally:
        model.generation_config = saved
    first = generated.row(0, named=True)
    assert first["finish_pos"] == "eos" and first["eos_pos"] == second_eos
    assert first["response_pos_ids"] == kept
    scored = score_table(model, tokenizer, generated, TEST_PROMPTS, shipped(ScoreParams, "score", batch_size=2))
    tokens = scored["tokens_pos"][0].to_list()
    assert tokens == kept + [second_eos]
    bare = context_ids(tokenizer, TEST_PROMPTS, "How do I make coffee?", "bare")
    np.testing.assert_allclose(scored["ref_logp_pos"][0], reference_logprob(model, bare, tokens), rtol=1e-5)
    # The tokenizer's EOS in its place gives another log-prob: the test can tell them apart.
    assert abs(reference_logprob(model, bare, tokens[:-1] + [tokenizer.eos_token_id]) - scored["ref_logp_pos"][0]) > 1e-3
    # A table written before the column existed still scores, with the tokenizer's EOS.
    legacy = score_table(model, tokenizer, generated.drop("eos_pos", "eos_neg"), TEST_PROMPTS, shipped(ScoreParams, "score", batch_size=2))
    assert legacy["tokens_pos"][0].to_list()[-1] == tokenizer.eos_token_id


def count_scored_rows(model):
    """A forward pre-hook counting the sequences `model` is run on (its batch rows)."""
    counted = {"rows": 0}

    def hook(module, args, kwargs):
        counted["rows"] += kwargs["input_ids"].shape[0] if "input_ids" in kwargs else args[0].shape[0]

    return counted, model.register_forward_pre_hook(hook, with_kwargs=True)


def test_log_probs_recorded_while_sampling_stand_for_two_scoring_passes(tiny_lm):
    """The generate step records each answer's log-prob under its own context (p+ for the
    positive answer, p- for the negative); scoring takes those two of its six jobs from the
    table, runs the other four, and every column equals a full scoring up to float rounding."""
    from dlma.generate.pairs import generate_pairs
    from dlma.generate.params import GenerateParams
    from dlma.score.contrastive import recorded_logprobs
    from tests.helpers import TEST_PROMPTS

    model, tokenizer = tiny_lm
    frame = pl.DataFrame({"id": ["a", "b", "c", "d", "e"], "category": [""] * 5,
                          "prompt": ["How do I make coffee?", "Why?", "Tell me about the fox.", "Name a colour.", "Hi"]})
    params = shipped(GenerateParams, "generate", max_new_tokens=10, batch_size=2, dtype="float32")
    generated, _ = generate_pairs(model, tokenizer, frame, TEST_PROMPTS, params)
    assert generated["sampled_from"].unique().to_list() == ["contrastive"]
    recorded = recorded_logprobs(generated)
    assert sorted(recorded) == ["logp_neg_given_neg", "logp_pos_given_pos"]
    score = shipped(ScoreParams, "score", batch_size=3)
    counted, handle = count_scored_rows(model)
    try:
        full = score_table(model, tokenizer, generated, TEST_PROMPTS, score)
        rows_full = counted["rows"]
        taken = score_table(model, tokenizer, generated, TEST_PROMPTS, score, recorded=recorded)
        rows_taken = counted["rows"] - rows_full
    finally:
        handle.remove()
    assert (rows_full, rows_taken) == (6 * frame.height, 4 * frame.height)
    np.testing.assert_array_equal(taken["logp_pos_given_pos"].to_numpy(), generated["sampled_logp_pos"].to_numpy())
    for column in ("logp_pos_given_pos", "logp_pos_given_neg", "logp_neg_given_pos", "logp_neg_given_neg",
                   "ref_logp_pos", "ref_logp_neg", "score"):
        np.testing.assert_allclose(taken[column].to_numpy(), full[column].to_numpy(), rtol=0, atol=1e-4, err_msg=column)
    # and each recorded one against its answer scored alone (the very tokens, EOS where sampled)
    from dlma.lm.prompts import context_ids
    for row in taken.iter_rows(named=True):
        context = context_ids(tokenizer, TEST_PROMPTS, row["prompt"], "neg", row["pair"])
        np.testing.assert_allclose(row["sampled_logp_neg"], reference_logprob(model, context, row["tokens_neg"]), atol=1e-4)


def test_bare_samples_record_their_reference_log_probs_and_a_missing_value_is_computed(tiny_lm):
    """RLAIF's two bare samples: what was recorded is log p(answer | x), the reference
    log-prob. A column with a null (an engine that records none) is computed instead."""
    from dlma.generate.pairs import generate_pairs
    from dlma.generate.params import GenerateParams
    from dlma.score.contrastive import recorded_logprobs
    from dlma.score.labellers import with_reference
    from tests.helpers import TEST_PROMPTS

    model, tokenizer = tiny_lm
    frame = pl.DataFrame({"id": ["a", "b", "c"], "category": [""] * 3, "prompt": ["How do I make coffee?", "Why?", "Hi"]})
    params = shipped(GenerateParams, "generate", max_new_tokens=8, batch_size=2, dtype="float32", pairs_from="bare")
    generated, _ = generate_pairs(model, tokenizer, frame, TEST_PROMPTS, params)
    recorded = recorded_logprobs(generated)
    assert sorted(recorded) == ["ref_logp_neg", "ref_logp_pos"]
    score = shipped(ScoreParams, "score", batch_size=2)
    full = with_reference(model, tokenizer, generated, TEST_PROMPTS, score)
    taken = with_reference(model, tokenizer, generated, TEST_PROMPTS, score, recorded)
    np.testing.assert_array_equal(taken["ref_logp_neg"].to_numpy(), generated["sampled_logp_neg"].to_numpy())
    np.testing.assert_allclose(taken["ref_logp_pos"].to_numpy(), full["ref_logp_pos"].to_numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(taken["ref_logp_neg"].to_numpy(), full["ref_logp_neg"].to_numpy(), rtol=0, atol=1e-4)
    one_missing = generated.with_columns(pl.when(pl.col("id") == "b").then(None).otherwise(pl.col("sampled_logp_pos"))
                                         .alias("sampled_logp_pos"))
    assert sorted(recorded_logprobs(one_missing)) == ["ref_logp_neg"]


def test_a_recorded_log_prob_that_is_not_one_is_refused_naming_the_row():
    import pytest

    from dlma.core.errors import DlmaError
    from dlma.score.labellers import check_generated

    frame = pl.DataFrame({"id": ["a", "b"], "prompt": ["q", "r"], "response_pos": ["x", "y"], "response_neg": ["z", "w"],
                          "sampled_logp_pos": [-3.0, None], "sampled_logp_neg": [-2.0, 0.5]})
    with pytest.raises(DlmaError, match=r"'gen.parquet': row id='b': field 'sampled_logp_neg' is 0.5"):
        check_generated(frame, "gen.parquet")
    check_generated(frame.with_columns(pl.lit(-1.0).alias("sampled_logp_neg")), "gen.parquet")  # a null is no value: fine
