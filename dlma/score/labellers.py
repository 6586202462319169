"""Labellers of preference pairs: the registry `score.labeller` picks from.

A labeller takes the generated table (id, prompt, response_pos, response_neg, ...) and
returns it with at least a float column `score` (> 0: response_pos is the better answer;
the filter stage turns it into the pair's `margin`) and the reference log-probs
`ref_logp_pos` / `ref_logp_neg` (each response given the bare query, which training uses).
Each labeller also gets `recorded`: the log-probs the generate step recorded while sampling
that stand for a scoring pass (`recorded_logprobs`; empty where they do not), which it
passes on to `score_table` / `with_reference` so that they are not computed again.
Adding a labeller is one function here (or in its own module) plus its `register` line.
A labeller may also write a boolean `labelled`: rows where it is False carry no preference
(an A/B judge whose pick flips with the order) and the filter drops and counts them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np
import polars as pl

from dlma.core.tables import require_table
from dlma.lm.ab_judge import ab_judge
from dlma.lm.params import PromptsParams
from dlma.lm.prompts import encode_contexts
from dlma.score.contrastive import check_recorded, score_table, scored_responses, summed_logprobs
from dlma.truth import TRUE_REWARDS, TrueReward

if TYPE_CHECKING:  # annotations only: params imports this registry to check score.labeller
    from dlma.score.params import ScoreParams

GENERATED_COLUMNS = ("id", "prompt", "response_pos", "response_neg")
LABELLED_COLUMNS = ("score", "ref_logp_pos", "ref_logp_neg")


class Labeller(Protocol):
    def __call__(self, model, tokenizer, frame: pl.DataFrame, prompts: PromptsParams, params: ScoreParams,
                 recorded: dict[str, np.ndarray]) -> pl.DataFrame: ...


LABELLERS: dict[str, Labeller] = {}


def register(name: str) -> Callable[[Labeller], Labeller]:
    def add(labeller: Labeller) -> Labeller:
        LABELLERS[name] = labeller
        return labeller

    return add


def check_generated(frame: pl.DataFrame, source: str) -> None:
    require_table(frame, GENERATED_COLUMNS, source, producer="generate")
    check_recorded(frame, source)


def label(name: str, model, tokenizer, frame: pl.DataFrame, prompts: PromptsParams, params: ScoreParams,
          recorded: dict[str, np.ndarray] | None = None) -> pl.DataFrame:
    labelled = LABELLERS[name](model, tokenizer, frame, prompts, params, recorded or {})
    missing = [c for c in LABELLED_COLUMNS if c not in labelled.columns]
    if missing:  # a labeller's bug, not the user's: say which one
        raise AssertionError(f"labeller '{name}' did not write column(s) {missing}")
    return labelled


@register("contrastive")
def contrastive(model, tokenizer, frame, prompts, params, recorded):
    """DLMA's self-rewarding score: the model's own log-probs under p+ and p-."""
    return score_table(model, tokenizer, frame, prompts, params, recorded=recorded)


def two_order_labels(judged: dict, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """(score, labelled) of an A/B judge asked in both orders about (response_pos, response_neg).

    average (the paper's RLAIF, METHOD.md): P(response_pos is better) from the two answer
    tokens, averaged over both orders; score = that probability - 0.5, so every pair is
    labelled (> 0: response_pos preferred), and a judge with a position bias still labels by
    how much more it leans to one answer in one order than to the other in the other.
    consistent: +1 / -1 only when both orders pick the same answer; a pick that flips with
    the order is no label (0, False), which the filter drops and counts."""
    if rule == "average":
        probability = np.asarray(judged["prob_chosen"], dtype=np.float64)
        return probability - 0.5, np.ones(probability.size, dtype=bool)
    first = np.asarray(judged["picks_chosen_first_order"], dtype=bool)
    swapped = np.asarray(judged["picks_chosen_swapped_order"], dtype=bool)
    labelled = first == swapped
    return np.where(labelled, np.where(first, 1.0, -1.0), 0.0), labelled


@register("ab_judge")
def rlaif(model, tokenizer, frame, prompts, params, recorded):
    """RLAIF: the model itself asked which answer is better (score.judge_prompt), in both
    orders, labelled by score.ab_rule (two_order_labels); filter.swap_negative makes the
    preferred answer the chosen one. Reference log-probs as for every labeller."""
    queries = frame["prompt"].to_list()
    judged = ab_judge(model, tokenizer, prompts.bare, params.judge_prompt, params.judge_tokens, queries,
                      frame["response_pos"].to_list(), frame["response_neg"].to_list(), batch_size=params.batch_size)
    score, labelled = two_order_labels(judged, params.ab_rule)
    return with_reference(model, tokenizer, frame, prompts, params, recorded).with_columns(
        pl.Series("score", score, dtype=pl.Float64), pl.Series("labelled", labelled, dtype=pl.Boolean),
        pl.Series("judge_prob_pos", judged["prob_chosen"], dtype=pl.Float64),
    )


@register("human")
def human(model, tokenizer, frame, prompts, params, recorded):
    """dpo_human: the pairs carry a human label already (response_pos is the preferred
    answer), so score is +1 for every row and no self-reward enters the loss (train with
    train.margin_weight 0: plain DPO). Only the reference log-probs are computed."""
    return with_reference(model, tokenizer, frame, prompts, params, recorded).with_columns(pl.lit(1.0).alias("score"))


def true_reward_labeller(reward: TrueReward) -> Labeller:
    def labeller(model, tokenizer, frame, prompts, params, recorded):
        """The oracle: each pair labelled by the true reward (score = reward(response_pos) -
        reward(response_neg); with filter.swap_negative the truly better answer is the
        chosen one; a tie keeps the p+ answer chosen, as DLMA's default). No model judges."""
        true_pos, true_neg = reward.score(frame["response_pos"].to_list()), reward.score(frame["response_neg"].to_list())
        return with_reference(model, tokenizer, frame, prompts, params, recorded).with_columns(
            pl.Series("score", true_pos - true_neg, dtype=pl.Float64),
            pl.Series("true_pos", true_pos, dtype=pl.Float64), pl.Series("true_neg", true_neg, dtype=pl.Float64))

    return labeller


for _reward in TRUE_REWARDS.values():
    register(_reward.name)(true_reward_labeller(_reward))


def with_reference(model, tokenizer, frame: pl.DataFrame, prompts: PromptsParams, params: ScoreParams,
                   recorded: dict[str, np.ndarray] | None = None) -> pl.DataFrame:
    """The columns every labeller adds besides its label: the scored tokens of each
    response and its reference log-prob given the bare query (what training uses)."""
    response_pos, response_neg = scored_responses(tokenizer, frame, "pos"), scored_responses(tokenizer, frame, "neg")
    bare = encode_contexts(tokenizer, prompts, frame["prompt"].to_list(), "bare")
    reference = summed_logprobs(model, tokenizer, frame, params,
                                {"ref_logp_pos": zip(bare, response_pos), "ref_logp_neg": zip(bare, response_neg)}, recorded)
    return frame.with_columns(
        *[pl.Series(name, values, dtype=pl.Float64) for name, values in reference.items()],
        pl.Series("n_tokens_pos", [len(r) for r in response_pos], dtype=pl.Int32),
        pl.Series("n_tokens_neg", [len(r) for r in response_neg], dtype=pl.Int32),
        pl.Series("tokens_pos", response_pos, dtype=pl.List(pl.Int32)),
        pl.Series("tokens_neg", response_neg, dtype=pl.List(pl.Int32)),
    )
