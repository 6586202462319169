"""Which model of a comparison becomes the registry's `champion`, and why (or why none).

The rule: the headline judge decides (an informative judge independent of the models under
test; with a true reward, its gain over the base model). The best method is the one with the
highest mean over seeds and prompts, and only if its interval lies above zero: a method not
shown to beat the base model is no champion. Of that method's seeds, the model of the seed
that scored highest gets the alias.
"""

from __future__ import annotations

from dlma.compare.summary import RunResult

ALIAS = "champion"


def _per_seed_judge(run: RunResult, judge: str) -> float:
    return float(run.metrics["win_rate"][judge]["net"])


def choose_champion(result: dict, runs: list[RunResult]) -> dict:
    """The choice and its numbers: {method, seed, experiment, pipeline_version, measure, mean,
    ci_low, ci_high, per_seed}, or {"none_because": why}."""
    judges = result["headline"]["judges"]
    if not judges:
        reasons = "; ".join(f"{j}: {why}" for j, why in result["headline"]["none_because"].items())
        return {"none_because": f"no informative headline judge ({reasons})"}
    judge = judges[0]
    # the trained methods' entries (the base model's has its mean only)
    true_reward = {m: entry for m, entry in result.get("true_reward", {}).get(judge, {}).items() if "gain" in entry}
    if true_reward:
        measure = f"true reward `{judge}`: gain over base"
        overall = {m: entry["gain"]["all"] for m, entry in true_reward.items()}
        per_seed = {m: {int(s): v["mean"] for s, v in entry["per_seed"].items()} for m, entry in true_reward.items()}
    else:
        measure = f"`{judge}` net win rate over base"
        overall = {m: entry[judge]["net"]["all"] for m, entry in result["vs_base"].items()}
        per_seed = {m: {r.seed: _per_seed_judge(r, judge) for r in runs if r.method == m} for m in overall}
    if not overall:
        return {"none_because": "no trained method in the comparison"}
    ranked = sorted(overall, key=lambda m: overall[m]["mean"], reverse=True)
    best = ranked[0]
    numbers = {"method": best, "measure": measure, "mean": overall[best]["mean"], "ci_low": overall[best]["ci_low"],
               "ci_high": overall[best]["ci_high"], "per_seed": per_seed[best],
               # the best by its mean: whether it is separated from the next is the paired difference (vs_dlma), not this
               "runner_up": {"method": ranked[1], "mean": overall[ranked[1]]["mean"]} if len(ranked) > 1 else None}
    if not overall[best]["ci_low"] > 0:
        return numbers | {"none_because": f"the best method, {best}, is not shown to beat the base model by the {measure} "
                                           f"(95% interval [{overall[best]['ci_low']:+.3f}, {overall[best]['ci_high']:+.3f}] includes 0)"}
    seed = max(per_seed[best], key=lambda s: per_seed[best][s])
    run = next(r for r in runs if r.method == best and r.seed == seed)
    return numbers | {"seed": seed, "experiment": run.name, "pipeline_version": run.train.get("version")}
