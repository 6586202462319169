"""Turn scored samples into preference pairs (METHOD.md section 3).

The default is the paper's: chosen is always the p+ sample and rejected the p- sample,
even when the score is negative; prompts over 600 words are dropped, and (a departure,
measured in the README) pairs where neither answer ended before generate.max_new_tokens.
Every other rule is opt-in, and every dropped or swapped row is counted by reason.
"""

from __future__ import annotations

import polars as pl

from dlma.core.errors import DlmaError
from dlma.core.tables import require_table
from dlma.filter.params import FilterParams

SCORED_COLUMNS = (
    "id", "prompt", "response_pos", "response_neg", "finish_pos", "finish_neg",
    "score", "ref_logp_pos", "ref_logp_neg", "tokens_pos", "tokens_neg",
)


def build_preferences(scored: pl.DataFrame, params: FilterParams, source: str = "scored table") -> tuple[pl.DataFrame, dict]:
    require_table(scored, SCORED_COLUMNS, source, producer="score", empty_hint="; check data.source and data.limit")
    nan_rows = scored.filter(pl.col("score").is_nan())
    if nan_rows.height:
        raise DlmaError(f"'{source}': field 'score' is NaN in row id={nan_rows['id'][0]!r} ({nan_rows.height} rows)")

    rules: list[tuple[str, pl.Expr]] = []
    if "labelled" in scored.columns:  # a labeller that could not label a pair (RLAIF: the orders disagree)
        rules.append(("unlabelled", ~pl.col("labelled")))
    if params.max_prompt_words is not None:
        rules.append(("long_prompt", pl.col("prompt").str.split(" ").list.len() > params.max_prompt_words))
    if params.drop_empty:
        rules.append(("empty_response", (pl.col("response_pos").str.strip_chars() == "") | (pl.col("response_neg").str.strip_chars() == "")))
    if params.drop_identical:
        rules.append(("identical_responses", pl.col("response_pos") == pl.col("response_neg")))
    cut_pos, cut_neg = pl.col("finish_pos") == "length", pl.col("finish_neg") == "length"
    if params.drop_truncated == "both":  # two fragments, neither of which the model ended
        rules.append(("both_truncated", cut_pos & cut_neg))
    elif params.drop_truncated == "either":
        rules.append(("truncated_response", cut_pos | cut_neg))
    if params.min_abs_score > 0:
        rules.append(("low_abs_score", pl.col("score").abs() < params.min_abs_score))

    dropped: dict[str, int] = {}
    kept = scored
    for reason, condition in rules:  # first matching rule is the reason a row is counted under
        dropped[reason] = kept.filter(condition).height
        kept = kept.filter(~condition)

    # The budget: the first max_pairs kept rows, in the table's order (the prepare stage's
    # seeded order of the prompts), so methods that keep more pairs train on the same count,
    # and on the same prompts where their pairs come from the same prompts.
    over_budget = max(kept.height - params.max_pairs, 0) if params.max_pairs is not None else 0
    kept = kept.head(kept.height - over_budget)

    swap = (pl.col("score") < 0) if params.swap_negative else pl.lit(False)
    n_swapped = kept.filter(swap).height
    preferences = kept.select(
        "id",
        "prompt",
        pl.when(swap).then(pl.col("response_neg")).otherwise(pl.col("response_pos")).alias("chosen"),
        pl.when(swap).then(pl.col("response_pos")).otherwise(pl.col("response_neg")).alias("rejected"),
        # The margin is the score of (chosen, rejected): swapping a pair negates it.
        pl.when(swap).then(-pl.col("score")).otherwise(pl.col("score")).alias("margin"),
        pl.when(swap).then(pl.col("ref_logp_neg")).otherwise(pl.col("ref_logp_pos")).alias("ref_logp_chosen"),
        pl.when(swap).then(pl.col("ref_logp_pos")).otherwise(pl.col("ref_logp_neg")).alias("ref_logp_rejected"),
        # The exact tokens scored (EOS only where the model ended the answer): train uses them.
        pl.when(swap).then(pl.col("tokens_neg")).otherwise(pl.col("tokens_pos")).alias("chosen_ids"),
        pl.when(swap).then(pl.col("tokens_pos")).otherwise(pl.col("tokens_neg")).alias("rejected_ids"),
        (pl.when(swap).then(pl.col("finish_neg")).otherwise(pl.col("finish_pos")) == "eos").alias("chosen_complete"),
        (pl.when(swap).then(pl.col("finish_pos")).otherwise(pl.col("finish_neg")) == "eos").alias("rejected_complete"),
    )
    report = {
        "rows_in": scored.height,
        "rows_out": preferences.height,
        "dropped": dropped,
        "dropped_total": sum(dropped.values()),
        "over_budget": over_budget,  # kept rows past filter.max_pairs, not trained on
        "swapped": n_swapped,
        "margin_mean": float(preferences["margin"].mean()) if preferences.height else None,
        "margin_positive_fraction": float((preferences["margin"] > 0).mean()) if preferences.height else None,
        # Share of pairs whose two answers the model ended itself (the rest were cut at
        # generate.max_new_tokens and are trained without an EOS).
        "complete_pairs_share": float((preferences["chosen_complete"] & preferences["rejected_complete"]).mean())
        if preferences.height else None,
        "complete_chosen_share": float(preferences["chosen_complete"].mean()) if preferences.height else None,
        # Share of all trained answers (chosen and rejected) that the model ended itself.
        "complete_answers_share": float((preferences["chosen_complete"].sum() + preferences["rejected_complete"].sum())
                                        / (2 * preferences.height)) if preferences.height else None,
    }
    if preferences.height == 0:
        raise DlmaError(f"filter dropped every row ({dropped}); relax the filter.* params")
    return preferences, report
