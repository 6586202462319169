"""The data of round k > 1: pairs sampled and scored by round k-1's model (its own judge),
with the reference log-probs of the round's chosen reference, and the earlier rounds' pairs
where `rounds.keep_pairs` asks for them."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from dlma.core.errors import DlmaError
from dlma.generate.pairs import generate_pairs
from dlma.generate.params import GenerateParams
from dlma.lm.logprobs import response_logprobs
from dlma.lm.params import PromptsParams
from dlma.lm.prompts import encode_contexts
from dlma.score.contrastive import recorded_logprobs, score_table
from dlma.score.params import ScoreParams

log = logging.getLogger(__name__)


def check_round_method(generate: GenerateParams, score: ScoreParams) -> None:
    """Rounds are DLMA's: contrastive pairs from p+ / p-, labelled by the self-rewarding score
    of the model that wrote them."""
    if generate.pairs_from != "contrastive" or score.labeller != "contrastive":
        raise DlmaError("rounds.count > 1 needs generate.pairs_from: contrastive and score.labeller: contrastive "
                        f"(got {generate.pairs_from!r} and {score.labeller!r}): each round's model labels its own pairs")
    if generate.engine != "hf":
        raise DlmaError("rounds.count > 1 samples with the previous round's model in this process: set generate.engine: hf")


def bare_logps(model, tokenizer, queries: list[str], responses: list[list[int]], prompts: PromptsParams,
               score: ScoreParams, desc: str = "reference") -> np.ndarray:
    """Summed log p(response | bare query) under `model`: the DPO reference's log-probs."""
    contexts = encode_contexts(tokenizer, prompts, queries, "bare")
    return response_logprobs(model, list(zip(contexts, responses)), pad_id=tokenizer.pad_token_id,
                             batch_size=score.batch_size, padding_side=score.padding_side, desc=desc)


def round_pairs(previous, reference, tokenizer, prompts_frame: pl.DataFrame, prompts: PromptsParams,
                generate: GenerateParams, score: ScoreParams, *, use_recorded: bool) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """(generated, scored, generate report): the previous round's model answers every
    training prompt under p+ and p- (the same per-row seeds as round 1) and scores the pairs
    (R under that model); the reference log-probs come from `reference` (the base model, or
    `previous` itself). `use_recorded`: the log-probs recorded while sampling stand for two
    of the score's passes (float32: `same_numerics`)."""
    generated, report = generate_pairs(previous, tokenizer, prompts_frame, prompts, generate)
    own_reference = reference is previous
    scored = score_table(previous, tokenizer, generated, prompts, score, with_reference=own_reference,
                         recorded=recorded_logprobs(generated) if use_recorded else None)
    if not own_reference:
        queries = scored["prompt"].to_list()
        scored = scored.with_columns(
            pl.Series("ref_logp_pos", bare_logps(reference, tokenizer, queries, scored["tokens_pos"].to_list(), prompts, score),
                      dtype=pl.Float64),
            pl.Series("ref_logp_neg", bare_logps(reference, tokenizer, queries, scored["tokens_neg"].to_list(), prompts, score),
                      dtype=pl.Float64),
        )
    return generated, scored, report


def with_earlier_pairs(preferences: pl.DataFrame, earlier: pl.DataFrame, round_number: int) -> pl.DataFrame:
    """This round's pairs, then the earlier rounds' (rounds.keep_pairs), every id prefixed by
    the round that made it (the same prompt gives a pair in every round)."""
    def tagged(frame: pl.DataFrame, number: int) -> pl.DataFrame:
        if "round" in frame.columns:  # pairs an earlier round kept already carry their round
            return frame
        return frame.with_columns(pl.lit(number, dtype=pl.Int32).alias("round"),
                                  (pl.lit(f"r{number}-") + pl.col("id")).alias("id"))

    current = tagged(preferences, round_number)
    if earlier.height == 0:
        return current
    previous = tagged(earlier, round_number - 1).select(current.columns)
    return pl.concat([current, previous], how="vertical")


def refresh_reference(preferences: pl.DataFrame, reference, tokenizer, prompts: PromptsParams, score: ScoreParams) -> pl.DataFrame:
    """Every pair's reference log-probs under `reference` (pairs kept from earlier rounds were
    scored against an older reference when the reference moves with the rounds)."""
    queries = preferences["prompt"].to_list()
    chosen = bare_logps(reference, tokenizer, queries, preferences["chosen_ids"].to_list(), prompts, score)
    rejected = bare_logps(reference, tokenizer, queries, preferences["rejected_ids"].to_list(), prompts, score)
    return preferences.with_columns(pl.Series("ref_logp_chosen", chosen, dtype=pl.Float64),
                                    pl.Series("ref_logp_rejected", rejected, dtype=pl.Float64))
