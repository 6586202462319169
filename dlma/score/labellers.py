"""Labellers of preference pairs: the registry `score.labeller` picks from.

A labeller takes the generated table (id, prompt, response_pos, response_neg, ...) and
returns it with at least a float column `score` (> 0: response_pos is the better answer;
the filter stage turns it into the pair's `margin`) and the reference log-probs
`ref_logp_pos` / `ref_logp_neg` (each response given the bare query, which training uses).
Adding a labeller is one function here (or in its own module) plus its `register` line.
"""

from __future__ import annotations

from typing import Callable, Protocol

import polars as pl

from dlma.core.tables import require_table
from dlma.lm.prompts import PromptsParams
from dlma.score.contrastive import score_table
from dlma.score.params import ScoreParams

GENERATED_COLUMNS = ("id", "prompt", "response_pos", "response_neg")
LABELLED_COLUMNS = ("score", "ref_logp_pos", "ref_logp_neg")


class Labeller(Protocol):
    def __call__(self, model, tokenizer, frame: pl.DataFrame, prompts: PromptsParams, params: ScoreParams) -> pl.DataFrame: ...


LABELLERS: dict[str, Labeller] = {}


def register(name: str) -> Callable[[Labeller], Labeller]:
    def add(labeller: Labeller) -> Labeller:
        LABELLERS[name] = labeller
        return labeller

    return add


def check_generated(frame: pl.DataFrame, source: str) -> None:
    require_table(frame, GENERATED_COLUMNS, source, producer="generate")


def label(name: str, model, tokenizer, frame: pl.DataFrame, prompts: PromptsParams, params: ScoreParams) -> pl.DataFrame:
    labelled = LABELLERS[name](model, tokenizer, frame, prompts, params)
    missing = [c for c in LABELLED_COLUMNS if c not in labelled.columns]
    if missing:  # a labeller's bug, not the user's: say which one
        raise AssertionError(f"labeller '{name}' did not write column(s) {missing}")
    return labelled


@register("contrastive")
def contrastive(model, tokenizer, frame, prompts, params):
    """DLMA's self-rewarding score: the model's own log-probs under p+ and p-."""
    return score_table(model, tokenizer, frame, prompts, params)
