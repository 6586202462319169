"""The self-rewarding contrastive score (METHOD.md section 2): the maths, and the four
log-probs of a table of pairs that it needs (plus the reference log-probs, in one pass;
those the generate step recorded while sampling are taken from its table)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from dlma.core.errors import DlmaError
from dlma.lm.logprobs import response_logprobs
from dlma.lm.params import PromptsParams
from dlma.lm.prompts import encode_contexts, encode_response, pairs_of, response_tokens

if TYPE_CHECKING:  # annotations only: params imports the labellers, which import this module
    from dlma.score.params import ScoreParams


def contrastive_score(
    logp_pos_given_pos: np.ndarray,
    logp_pos_given_neg: np.ndarray,
    logp_neg_given_pos: np.ndarray,
    logp_neg_given_neg: np.ndarray,
) -> np.ndarray:
    """R = [LL(a1|p+,q) - LL(a1|p-,q)] - [LL(a2|p+,q) - LL(a2|p-,q)].

    a1 (the "pos" response) was sampled under p+, a2 (the "neg" response) under p-; each
    LL is a response's summed token log-prob. All arguments are float arrays of shape
    [N]; R > 0 means the model itself rates a1 as the better answer.
    """
    return (np.asarray(logp_pos_given_pos, dtype=np.float64) - logp_pos_given_neg) - (
        np.asarray(logp_neg_given_pos, dtype=np.float64) - logp_neg_given_neg
    )


def scored_responses(tokenizer, frame: pl.DataFrame, side: str) -> list[list[int]]:
    """The tokens of each response: the sampled ids (from the generate stage), never a
    decode / re-encode of its text; a table of texts only (human-labelled pairs, answers
    judged in evaluate) is encoded, with EOS, as the official code does."""
    if f"response_{side}_ids" in frame.columns:
        eos = frame[f"eos_{side}"].to_list() if f"eos_{side}" in frame.columns else [None] * frame.height
        return [response_tokens(tokenizer, ids, finish, eos_id)
                for ids, finish, eos_id in zip(frame[f"response_{side}_ids"].to_list(), frame[f"finish_{side}"].to_list(), eos)]
    return [encode_response(tokenizer, text) for text in frame[f"response_{side}"].to_list()]


# The log-probs a generated table recorded while sampling (generate_pairs), by what they
# are: the answers' own sampling contexts are p+ / p- for contrastive pairs, x for bare ones.
RECORDED_JOBS = {
    "contrastive": {"logp_pos_given_pos": "sampled_logp_pos", "logp_neg_given_neg": "sampled_logp_neg"},
    "bare": {"ref_logp_pos": "sampled_logp_pos", "ref_logp_neg": "sampled_logp_neg"},
}


def recorded_logprobs(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    """The scoring jobs a generated table already holds, as {job: summed log-probs}: a job
    whose column has a value in every row (the vLLM engine records none). The caller decides
    whether they stand for a scoring pass (`same_numerics`: float32 on both sides)."""
    if "sampled_from" not in frame.columns or frame.height == 0:
        return {}
    kinds = frame["sampled_from"].unique().to_list()
    if len(kinds) != 1 or kinds[0] not in RECORDED_JOBS:
        return {}
    return {job: frame[column].to_numpy() for job, column in RECORDED_JOBS[kinds[0]].items()
            if column in frame.columns and frame[column].null_count() == 0}


def check_recorded(frame: pl.DataFrame, source: str) -> None:
    """A recorded log-prob is a finite number <= 0 (null: none recorded)."""
    for column in ("sampled_logp_pos", "sampled_logp_neg"):
        if column in frame.columns:
            bad = frame.filter(pl.col(column).is_not_null() & (~pl.col(column).is_finite() | (pl.col(column) > 0)))
            if bad.height:
                raise DlmaError(f"'{source}': row id={bad['id'][0]!r}: field '{column}' is {bad[column][0]!r}, not a log-prob; "
                                "rerun the generate stage")


def summed_logprobs(model, tokenizer, frame: pl.DataFrame, params: ScoreParams,
                    jobs: dict[str, object], recorded: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Each job's (context, response) pairs, one per row, as summed log-probs. One pass
    over all kinds of sequence: sorting them together by length packs batches better than
    a pass per kind would. A job in `recorded` (`recorded_logprobs`) takes its values from
    there and is not run (its lengths are still checked)."""
    recorded = {job: values for job, values in (recorded or {}).items() if job in jobs}
    pairs: list[tuple[list[int], list[int]]] = []
    for name, items in jobs.items():
        for row, (context, response) in enumerate(items):
            if len(context) + len(response) > params.max_length:
                raise DlmaError(
                    f"row id={frame['id'][row]!r}: {name} needs {len(context) + len(response)} tokens, "
                    f"over score.max_length={params.max_length}; raise it or cap prompts (filter.max_prompt_words, data.limit)"
                )
            if name not in recorded:
                pairs.append((context, response))
    computed = [name for name in jobs if name not in recorded]
    logps = response_logprobs(
        model, pairs, pad_id=tokenizer.pad_token_id, batch_size=params.batch_size,
        padding_side=params.padding_side,
    ).reshape(len(computed), frame.height) if computed else []
    values = dict(zip(computed, logps)) | {name: np.asarray(column, dtype=np.float64) for name, column in recorded.items()}
    return {name: values[name] for name in jobs}


def score_table(
    model, tokenizer, frame: pl.DataFrame, prompts: PromptsParams, params: ScoreParams, *, with_reference: bool = True,
    recorded: dict[str, np.ndarray] | None = None,
) -> pl.DataFrame:
    """Add logp_{pos,neg}_given_{pos,neg}, score, n_tokens_{pos,neg}, the scored response
    tokens tokens_{pos,neg} and, unless with_reference is False, ref_logp_{pos,neg} (each
    response given the bare query). `recorded`: log-probs recorded while sampling that
    stand for some of these (`recorded_logprobs`), not computed again."""
    queries = frame["prompt"].to_list()
    # The pair each row was generated (or is to be judged) with; else by its category.
    pairs = frame["pair"].to_list() if "pair" in frame.columns else pairs_of(
        prompts, frame["category"].to_list() if "category" in frame.columns else None, frame.height)
    unknown = sorted(set(pairs) - set(prompts.pairs))
    if unknown:
        raise DlmaError(f"pair(s) {unknown} of the table are not defined under prompts.pairs; defined: {sorted(prompts.pairs)}")
    context_pos = encode_contexts(tokenizer, prompts, queries, "pos", pairs)
    context_neg = encode_contexts(tokenizer, prompts, queries, "neg", pairs)
    response_pos, response_neg = scored_responses(tokenizer, frame, "pos"), scored_responses(tokenizer, frame, "neg")

    jobs = {
        "logp_pos_given_pos": zip(context_pos, response_pos),
        "logp_pos_given_neg": zip(context_neg, response_pos),
        "logp_neg_given_pos": zip(context_pos, response_neg),
        "logp_neg_given_neg": zip(context_neg, response_neg),
    }
    if with_reference:
        context_bare = encode_contexts(tokenizer, prompts, queries, "bare")
        jobs["ref_logp_pos"] = zip(context_bare, response_pos)
        jobs["ref_logp_neg"] = zip(context_bare, response_neg)
    columns = summed_logprobs(model, tokenizer, frame, params, jobs, recorded)
    columns["score"] = contrastive_score(
        columns["logp_pos_given_pos"], columns["logp_pos_given_neg"],
        columns["logp_neg_given_pos"], columns["logp_neg_given_neg"],
    )
    if not np.isfinite(columns["score"]).all():
        bad = frame["id"].filter(pl.Series(~np.isfinite(columns["score"]))).head(5).to_list()
        raise DlmaError(f"score is not finite for id(s) {bad}; try score.dtype=float32")
    return frame.with_columns(
        *[pl.Series(name, values, dtype=pl.Float64) for name, values in columns.items()],
        pl.Series("n_tokens_pos", [len(r) for r in response_pos], dtype=pl.Int32),
        pl.Series("n_tokens_neg", [len(r) for r in response_neg], dtype=pl.Int32),
        pl.Series("tokens_pos", response_pos, dtype=pl.List(pl.Int32)),
        pl.Series("tokens_neg", response_neg, dtype=pl.List(pl.Int32)),
    )
