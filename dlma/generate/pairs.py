"""One response under p+ and one under p- for every prompt: the generate step's table."""

from __future__ import annotations

import logging
from typing import Callable

import polars as pl

from dlma.core.errors import DlmaError
from dlma.generate.params import GenerateParams
from dlma.generate.sampling import Sample, row_seed, sample_responses
from dlma.lm.params import PromptsParams
from dlma.lm.prompts import encode_contexts, pairs_of

log = logging.getLogger(__name__)


def within_prompt_limit(contexts: list[list[int]], limit: int) -> list[bool]:
    return [len(ids) <= limit for ids in contexts]


def generate_pairs(model, tokenizer, frame: pl.DataFrame, prompts: PromptsParams, params: GenerateParams, *,
                   sampler: Callable[[list[list[int]], list[int]], list[Sample]] | None = None) -> tuple[pl.DataFrame, dict]:
    """Sample the pair of every prompt: under p+ and p- (generate.pairs_from: contrastive),
    or twice from the bare prompt (bare, for RLAIF), each answer from its own seeded
    stream. Prompts whose context is over generate.max_prompt_tokens
    are skipped and counted (one 100 KB prompt would otherwise take gigabytes of memory).
    `sampler(contexts, seeds)` replaces the HF engine on `model` (generate.engine: vllm).

    Each answer's summed log-prob under the sampling model and context is recorded while
    sampling (`sampled_logp_pos` / `_neg`, null where the engine gives none; no pass of its
    own): the score stage takes the log-probs it would otherwise compute again from them
    (`recorded_logprobs`: under p+ / p- for contrastive pairs, under x for bare ones)."""
    queries = frame["prompt"].to_list()
    pairs = pairs_of(prompts, frame["category"].to_list(), frame.height)  # each prompt's category picks its pair
    if params.pairs_from == "bare":  # RLAIF: two independent samples from x, labelled later by a judge
        context_pos = context_neg = encode_contexts(tokenizer, prompts, queries, "bare")
    else:
        context_pos = encode_contexts(tokenizer, prompts, queries, "pos", pairs)
        context_neg = encode_contexts(tokenizer, prompts, queries, "neg", pairs)
    keep = [a and b for a, b in zip(within_prompt_limit(context_pos, params.max_prompt_tokens),
                                     within_prompt_limit(context_neg, params.max_prompt_tokens))]
    skipped = len(keep) - sum(keep)
    if skipped:
        log.warning("skipped %d prompt(s) longer than generate.max_prompt_tokens=%d", skipped, params.max_prompt_tokens)
    if not any(keep):
        raise DlmaError(f"every prompt is longer than generate.max_prompt_tokens={params.max_prompt_tokens} tokens; raise it")
    kept = frame.with_columns(pl.Series("pair", pairs, dtype=pl.String)).filter(pl.Series(keep))
    context_pos = [c for c, k in zip(context_pos, keep) if k]
    context_neg = [c for c, k in zip(context_neg, keep) if k]
    ids = kept["id"].to_list()
    seeds = [row_seed(params.seed, i, "pos") for i in ids] + [row_seed(params.seed, i, "neg") for i in ids]
    if sampler is None:
        samples = sample_responses(model, tokenizer, context_pos + context_neg, params, seeds=seeds, with_logprobs=True)
    else:
        samples = sampler(context_pos + context_neg, seeds)
    pos, neg = samples[: kept.height], samples[kept.height:]
    result = kept.select("id", "prompt", "category", "pair").with_columns(
        pl.Series("response_pos", [s.text for s in pos], dtype=pl.String),
        pl.Series("response_neg", [s.text for s in neg], dtype=pl.String),
        pl.Series("finish_pos", [s.finish for s in pos], dtype=pl.String),
        pl.Series("finish_neg", [s.finish for s in neg], dtype=pl.String),
        pl.Series("new_tokens_pos", [s.n_tokens for s in pos], dtype=pl.Int32),
        pl.Series("new_tokens_neg", [s.n_tokens for s in neg], dtype=pl.Int32),
        pl.Series("response_pos_ids", [list(s.token_ids) for s in pos], dtype=pl.List(pl.Int32)),
        pl.Series("response_neg_ids", [list(s.token_ids) for s in neg], dtype=pl.List(pl.Int32)),
        pl.Series("eos_pos", [s.eos_id for s in pos], dtype=pl.Int32),  # the EOS id sampled (null: cut at max_new_tokens)
        pl.Series("eos_neg", [s.eos_id for s in neg], dtype=pl.Int32),
        pl.Series("sampled_logp_pos", [s.logp for s in pos], dtype=pl.Float64),
        pl.Series("sampled_logp_neg", [s.logp for s in neg], dtype=pl.Float64),
        pl.lit(params.pairs_from, dtype=pl.String).alias("sampled_from"),  # the contexts the answers were sampled in
    )
    complete = sum(s.finish == "eos" for s in samples)
    report = {
        "rows_in": frame.height, "rows_out": result.height, "skipped": {"prompt_too_long": skipped},
        "responses": len(samples), "complete_responses": complete, "complete_share": complete / len(samples),
        "complete_pairs_share": float(((result["finish_pos"] == "eos") & (result["finish_neg"] == "eos")).mean()),
        "rows_per_pair": dict(sorted(result.group_by("pair").len().iter_rows())),
    }
    return result, report


def human_pairs(frame: pl.DataFrame, source: str, budget: int) -> tuple[pl.DataFrame, dict]:
    """The generate table of the dpo_human method: human-labelled pairs as they are, the
    human-preferred answer on the positive side. Nothing is sampled; the answers are
    complete texts (scored and trained with EOS, as the official code encodes text).
    At most `budget` pairs (the number of training prompts the other methods get, one
    pair each), so every method trains on the same number of pairs; the human table is
    a seeded random draw, so its first rows are a random subset."""
    if frame.height == 0:
        raise DlmaError(f"generate.pairs_from is human but '{source}' has no pairs; check human.source (reports/human.json says why)")
    frame = frame.head(budget)
    result = frame.select("id", "prompt", "category", "pair").with_columns(
        frame["chosen"].alias("response_pos"), frame["rejected"].alias("response_neg"),
        pl.lit("eos").alias("finish_pos"), pl.lit("eos").alias("finish_neg"),
    )
    report = {"rows_in": frame.height, "rows_out": result.height, "skipped": {"prompt_too_long": 0}, "source": "human",
              "budget": budget,
              "responses": 2 * result.height, "complete_responses": 2 * result.height, "complete_share": 1.0,
              "complete_pairs_share": 1.0, "rows_per_pair": dict(sorted(result.group_by("pair").len().iter_rows()))}
    return result, report

