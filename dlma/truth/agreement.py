"""Label agreement against the true reward (the paper's first experiment, on a controlled
task): on the pipeline's own generated pairs (a1 under p+, a2 under p-), how often each
labeller orders the two answers as the true reward does.

Labellers, each a sign per pair (> 0: a1 is the better answer):
- contrastive: DLMA's self-rewarding score R (the score stage's);
- likelihood: log p(a1 | p+, q) > log p(a2 | p+, q), plain likelihood under the positive prompt;
- ab_judge: the base model asked A or B in both orders (RLAIF), by score.ab_rule: `average`
  labels every pair by P(a1 better) averaged over both orders; `consistent` only the pairs
  where both orders agree (the share so counted is reported);
- reward_model: a reward model fitted on the true labels of other generated pairs: the
  pairs are split into folds by prompt and each fold is labelled by a model fitted on the
  other folds (cross-fitting), so no pair is labelled by a model that saw its prompt. It is
  what a labelled budget buys against zero labels.
Pairs whose two answers get the same true reward have no true order: dropped and counted.
Every accuracy has a 95% bootstrap interval over pairs, and each labeller's difference from
the contrastive score is paired (the same pairs).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from dlma.evaluate.stats import accuracy_summary, paired_difference
from dlma.lm.ab_judge import ab_judge
from dlma.lm.params import PromptsParams
from dlma.reward.params import RewardParams
from dlma.score.labellers import two_order_labels
from dlma.score.params import ScoreParams
from dlma.truth import TrueReward
from dlma.truth.params import TruthParams

log = logging.getLogger(__name__)


def fold_of(row_id: str, folds: int, seed: int) -> int:
    """A prompt's fold: a hash of (seed, id), so it does not depend on the other rows."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{row_id}".encode()).digest()[:8], "little") % folds


def true_order(reward: TrueReward, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true reward of a1, of a2, sign of the difference: +1 a1 better, -1 a2, 0 a tie)."""
    true_pos, true_neg = reward.score(frame["response_pos"].to_list()), reward.score(frame["response_neg"].to_list())
    return true_pos, true_neg, np.sign(true_pos - true_neg)


def cross_fitted_rewards(frame: pl.DataFrame, truth: np.ndarray, params: RewardParams, truth_params: TruthParams,
                         base_path: Path, numerics) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Reward-model rewards of a1 and a2 for every pair, each fold's from a model fitted on
    the other folds' pairs with a true order (chosen = the truly better answer)."""
    from dlma.agreement.labellers import reward_function
    from dlma.reward.run import train_reward

    folds = np.array([fold_of(i, truth_params.folds, truth_params.seed) for i in frame["id"].to_list()])
    reward_pos, reward_neg = np.full(frame.height, np.nan), np.full(frame.height, np.nan)
    reports = []
    for fold in range(truth_params.folds):
        fit = (folds != fold) & (truth != 0)
        better_first = truth[fit] > 0
        rows = frame.filter(pl.Series(fit))
        pairs = pl.DataFrame({
            "prompt": rows["prompt"],
            "chosen": np.where(better_first, rows["response_pos"].to_numpy(), rows["response_neg"].to_numpy()),
            "rejected": np.where(better_first, rows["response_neg"].to_numpy(), rows["response_pos"].to_numpy()),
        })
        held = frame.filter(pl.Series(folds == fold))
        if pairs.height < 2:  # nothing to fit on: this fold's pairs get no reward-model label (NaN), counted below
            log.warning("truth: fold %d has %d pair(s) with a true order in the other folds to fit on: no reward model",
                        fold, pairs.height)
            reports.append({"fold": fold, "fitted_on_pairs": pairs.height, "labelled_pairs": 0,
                            "skipped": "fewer than 2 pairs with a true order in the other folds"})
            continue
        log.info("truth: fold %d/%d: fitting the reward model on %d pairs of the other folds", fold + 1, truth_params.folds,
                 pairs.height)
        with tempfile.TemporaryDirectory(prefix="dlma-truth-rm-") as scratch:
            out = Path(scratch) / "reward"
            report = train_reward(params, base_path, pairs, pairs.head(0), out, {"objective": "true-reward labels"}, numerics)
            rewards = reward_function(str(out), batch_size=params.batch_size)
            queries = held["prompt"].to_list()
            reward_pos[folds == fold] = rewards(queries, held["response_pos"].to_list())
            reward_neg[folds == fold] = rewards(queries, held["response_neg"].to_list())
        reports.append({"fold": fold, "fitted_on_pairs": report["train_pairs"], "skipped_too_long": report["skipped_too_long"],
                        "steps": report["steps"], "labelled_pairs": int((folds == fold).sum())})
    return reward_pos, reward_neg, reports


def true_agreement(model, tokenizer, scored: pl.DataFrame, reward: TrueReward, prompts: PromptsParams, score: ScoreParams,
                   reward_params: RewardParams, truth_params: TruthParams, base_path: Path, numerics) -> tuple[dict, pl.DataFrame]:
    """Every labeller's agreement with the true order of the generated pairs (see the module
    docstring). Returns the summary (reports/truth.json) and one row per pair."""
    samples, seed = truth_params.bootstrap, truth_params.seed
    true_pos, true_neg, truth = true_order(reward, scored)
    signs = {
        "contrastive": np.sign(scored["score"].to_numpy()),
        "likelihood": np.sign(scored["logp_pos_given_pos"].to_numpy() - scored["logp_neg_given_pos"].to_numpy()),
    }
    queries, first, second = scored["prompt"].to_list(), scored["response_pos"].to_list(), scored["response_neg"].to_list()
    judged = ab_judge(model, tokenizer, prompts.bare, score.judge_prompt, score.judge_tokens, queries, first, second,
                      batch_size=score.batch_size)
    ab_score, ab_labelled = two_order_labels(judged, score.ab_rule)
    signs["ab_judge"] = np.where(ab_labelled, np.sign(ab_score), np.nan)  # NaN: no label (consistent rule only)
    fold_reports = None
    if truth_params.folds:
        reward_pos, reward_neg, fold_reports = cross_fitted_rewards(scored, truth, reward_params, truth_params, base_path,
                                                                    numerics)
        signs["reward_model"] = np.sign(reward_pos - reward_neg)
    ordered = truth != 0
    summary: dict = {
        "true_reward": reward.name, "pairs": int(scored.height), "ties_dropped": int((~ordered).sum()),
        "true_reward_pos": accuracy_summary(true_pos, samples=samples, seed=seed),
        "true_reward_neg": accuracy_summary(true_neg, samples=samples, seed=seed),
        "pos_better_share": accuracy_summary((truth[ordered] > 0).astype(float), samples=samples, seed=seed),
        "ab_rule": score.ab_rule,
        "judge_validity": {"order_consistency": float(np.mean(judged["consistent"])),
                           "prefers_a_both_orders": float(np.mean(judged["prefers_a_both"])),
                           "answer_token_mass": float(np.mean(judged["answer_mass"]))},
        "check": reward.check(samples=samples, seed=seed),
    }
    right = {}
    for name, sign in signs.items():
        counted = ordered & ~np.isnan(sign)
        right[name] = np.where(counted, sign == truth, np.nan)
        summary[name] = accuracy_summary(right[name][counted], samples=samples, seed=seed) | {
            "counted": int(counted.sum()), "counted_share": float(counted.sum() / max(ordered.sum(), 1))}
    for name in signs:
        if name != "contrastive":
            both = ordered & ~np.isnan(right[name])
            summary[f"contrastive_minus_{name}"] = paired_difference(right["contrastive"][both], right[name][both],
                                                                     samples=samples, seed=seed)
    if fold_reports is not None:
        summary["reward_model"]["folds"] = fold_reports
    rows = scored.select("id", "prompt", "response_pos", "response_neg").with_columns(
        pl.Series("true_pos", true_pos), pl.Series("true_neg", true_neg), pl.Series("true_order", truth),
        pl.Series("ab_prob_pos", np.asarray(judged["prob_chosen"], dtype=np.float64)),
        *[pl.Series(f"{name}_sign", sign) for name, sign in signs.items()],
        *[pl.Series(f"{name}_right", values) for name, values in right.items()],
    )
    return summary, rows
