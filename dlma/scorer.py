"""Compute the four contrastive log-probs, the score and the reference log-probs of a table."""

from __future__ import annotations

import numpy as np
import polars as pl

from dlma.errors import DlmaError
from dlma.logprobs import response_logprobs
from dlma.params import PromptsParams, ScoreParams
from dlma.prompts import encode_contexts, encode_response
from dlma.scoring import contrastive_score
from dlma.tables import require_table

GENERATED_COLUMNS = ("id", "prompt", "response_pos", "response_neg")


def check_generated(frame: pl.DataFrame, source: str) -> None:
    require_table(frame, GENERATED_COLUMNS, source, producer="generate")


def score_table(
    model, tokenizer, frame: pl.DataFrame, prompts: PromptsParams, params: ScoreParams, *, with_reference: bool = True
) -> pl.DataFrame:
    """Add logp_{pos,neg}_given_{pos,neg}, score, n_tokens_{pos,neg} and, unless
    with_reference is False, ref_logp_{pos,neg} (each response given the bare query)."""
    queries = frame["prompt"].to_list()
    context_pos = encode_contexts(tokenizer, prompts, queries, "pos")
    context_neg = encode_contexts(tokenizer, prompts, queries, "neg")
    response_pos = [encode_response(tokenizer, text) for text in frame["response_pos"].to_list()]
    response_neg = [encode_response(tokenizer, text) for text in frame["response_neg"].to_list()]

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
    pairs: list[tuple[list[int], list[int]]] = []
    for name, items in jobs.items():
        for row, (context, response) in enumerate(items):
            if len(context) + len(response) > params.max_length:
                raise DlmaError(
                    f"row id={frame['id'][row]!r}: {name} needs {len(context) + len(response)} tokens, "
                    f"over score.max_length={params.max_length}; raise it or cap prompts (filter.max_prompt_words, data.limit)"
                )
            pairs.append((context, response))
    # One pass over all kinds of sequence: sorting them together by length packs
    # batches better than six separate passes would.
    logps = response_logprobs(
        model, pairs, pad_id=tokenizer.pad_token_id, batch_size=params.batch_size,
        padding_side=params.padding_side,
    ).reshape(len(jobs), frame.height)
    columns = dict(zip(jobs, logps))
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
    )


def score_summary(scores: np.ndarray) -> dict:
    scores = np.asarray(scores, dtype=np.float64)
    quantiles = np.quantile(scores, [0.1, 0.25, 0.5, 0.75, 0.9])
    return {
        "rows": int(scores.size),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "positive_fraction": float((scores > 0).mean()),
        "abs_mean": float(np.abs(scores).mean()),
        **{f"q{int(q * 100):02d}": float(v) for q, v in zip([0.1, 0.25, 0.5, 0.75, 0.9], quantiles)},
    }
