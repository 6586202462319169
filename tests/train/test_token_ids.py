"""The response is a record of what the model sampled: the ids scored and trained are the
ids generated (no decode / re-encode), with EOS only where the model produced it."""

from __future__ import annotations

import polars as pl

from dlma.filter.params import FilterParams
from dlma.filter.preferences import build_preferences
from dlma.generate.pairs import generate_pairs
from dlma.generate.params import GenerateParams
from dlma.score.contrastive import score_table
from dlma.score.params import ScoreParams
from dlma.train.data import tokenise_preferences
from tests.helpers import TEST_PROMPTS, shipped

QUERIES = ["How do I make coffee?", "Tell me about the fox.", "Why?", "Explain photosynthesis.", "Hi",
           "What is the capital of France?", "Paris?", "Coffee?"]


def test_sampled_ids_are_the_scored_ids_are_the_trained_ids(tiny_lm):
    import copy

    base, tokenizer = tiny_lm
    eos = tokenizer.eos_token_id
    # The tiny model rarely ends an answer: raise its EOS logit so that some answers end
    # (EOS) and others are cut at the limit (length).
    model = copy.deepcopy(base)

    def more_eos(module, args, output):
        output.logits[..., eos] += 2.0
        return output

    model.register_forward_hook(more_eos)
    frame = pl.DataFrame({"id": [f"r{i}" for i in range(len(QUERIES))], "prompt": QUERIES, "category": [""] * len(QUERIES)})
    # Short answers: some end with EOS, some are cut at the limit.
    generated, report = generate_pairs(model, tokenizer, frame, TEST_PROMPTS,
                                       shipped(GenerateParams, "generate", max_new_tokens=6, batch_size=4, dtype="float32"))
    finishes = generated["finish_pos"].to_list() + generated["finish_neg"].to_list()
    assert "length" in finishes and "eos" in finishes, finishes
    scored = score_table(model, tokenizer, generated, TEST_PROMPTS, shipped(ScoreParams, "score", batch_size=4))
    preferences, _ = build_preferences(scored, shipped(FilterParams, "filter", drop_truncated="none"))
    rows, _ = tokenise_preferences(preferences, tokenizer, TEST_PROMPTS, max_length=512)
    trained = {r["id"]: r for r in rows}
    for record in scored.iter_rows(named=True):
        for side, trained_key in (("pos", "chosen_ids"), ("neg", "rejected_ids")):
            sampled = list(record[f"response_{side}_ids"])
            expected = sampled + [eos] if record[f"finish_{side}"] == "eos" else sampled
            assert list(record[f"tokens_{side}"]) == expected  # scored
            assert trained[record["id"]][trained_key] == expected  # trained
            if record[f"finish_{side}"] == "length":
                assert eos not in expected and len(sampled) == 6
    assert report["complete_share"] == finishes.count("eos") / len(finishes)
