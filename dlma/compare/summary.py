"""The comparison's numbers from each run's evaluation: pure functions of the runs' sample
tables and metrics, so they are tested without running any pipeline.

A run is one trained method with one seed. Its samples hold, per evaluation prompt, the
aligned and the base answer (same sampling seed, so a paired draw) and each judge's
verdict or value. Every interval is a crossed bootstrap over prompts and seeds
(`crossed_bootstrap`) of a paired quantity: method minus base, or method minus method,
on the same seed and prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from dlma.core.errors import DlmaError
from dlma.evaluate.stats import cluster_bootstrap, crossed_bootstrap
from dlma.truth import TRUE_REWARDS

SIGNED = {"win": 1.0, "tie": 0.0, "lose": -1.0}
KEY = ["set", "id"]


@dataclass(frozen=True)
class RunResult:
    method: str  # the variant: the method, with its grid point when the comparison has a grid ("dlma beta=0.1")
    seed: int
    name: str  # the DVC experiment
    samples: pl.DataFrame
    metrics: dict  # reports/metrics.json of the run
    agreement: dict = field(default_factory=dict)  # reports/agreement.json (the same in every run of a comparison)
    train: dict = field(default_factory=dict)  # reports/train.json: the pairs and steps it trained on
    truth: dict = field(default_factory=dict)  # reports/truth.json: label agreement with the true reward, or why skipped
    truth_rows: pl.DataFrame | None = None  # reports/truth_samples.parquet, where not skipped
    point: dict = field(default_factory=dict)  # the grid point
    base_method: str = ""  # the method without its grid point


def _aligned_rows(runs: list[RunResult]) -> dict[tuple[str, int], pl.DataFrame]:
    """Each run's samples sorted by (set, id); every run must have judged the same prompts."""
    tables = {(r.method, r.seed): r.samples.sort(KEY) for r in runs}
    reference = next(iter(tables.values())).select(KEY)
    for (method, seed), table in tables.items():
        if not table.select(KEY).equals(reference):
            raise DlmaError(f"run {method} seed {seed} judged other prompts than the first run; the comparison needs the same "
                            "evaluation prompts in every run (same data, data.seed and evaluate sets)")
    return tables


def _matrix(tables, method: str, seeds: list[int], column_of) -> np.ndarray:
    return np.stack([column_of(tables[(method, seed)]) for seed in seeds])


def _by_set(values: np.ndarray, sets: np.ndarray, *, samples: int, seed: int) -> dict:
    out = {"all": crossed_bootstrap(values, samples=samples, seed=seed)}
    for name in sorted(set(sets.tolist())):
        out[name] = crossed_bootstrap(values[:, sets == name], samples=samples, seed=seed)
    return out


def _signed(judge: str):
    return lambda t: t[f"verdict_{judge}"].replace_strict(SIGNED, return_dtype=pl.Float64).to_numpy()


def _rates(verdicts: np.ndarray) -> dict:
    return {"win": float((verdicts == 1).mean()), "tie": float((verdicts == 0).mean()), "lose": float((verdicts == -1).mean())}


def judge_table(runs: list[RunResult]) -> dict:
    """Per judge: independent or not, and informative only if it passed its validity
    checks in every run (with each run's reasons and validity numbers)."""
    judges: dict[str, dict] = {}
    for run in runs:
        for name, entry in run.metrics.get("win_rate", {}).items():
            judge = judges.setdefault(name, {"independent": entry["independent"], "informative": True, "runs": {}})
            judge["informative"] &= bool(entry["informative"])
            judge["runs"][run.name] = {"validity": entry.get("validity", {}), "not_informative_because": entry["not_informative_because"]}
    for judge in judges.values():
        judge["not_informative_because"] = sorted({r for run in judge["runs"].values() for r in run["not_informative_because"]})
    return judges


TRUTH_LABELLERS = ("contrastive", "likelihood", "ab_judge", "reward_model")


def truth_agreement(runs: list[RunResult], seeds: list[int], *, samples: int, seed: int) -> dict:
    """Experiment 1 pooled over the seeds: every labeller's agreement with the true reward on
    the generated pairs of each seed (from the first run of that seed that measured it: the
    runs that share the pairs share the measurement), with 95% intervals that resample
    prompts (a prompt's pairs of several seeds are not independent), and the paired
    differences contrastive minus each labeller on the same pairs."""
    tables = []
    for s in seeds:
        measured = [r for r in runs if r.seed == s and r.truth_rows is not None and r.truth_rows.height]
        if measured:
            tables.append(measured[0].truth_rows.with_columns(pl.lit(s).alias("seed"), pl.lit(measured[0].method).alias("run")))
    if not tables:
        reasons = sorted({r.truth.get("skipped", "no truth stage output") for r in runs})
        return {"skipped": "; ".join(reasons)}
    rows = pl.concat(tables, how="diagonal")
    prompts = rows["id"].to_numpy()
    out: dict = {"pairs": rows.height, "seeds": sorted(set(rows["seed"].to_list())), "prompts": int(np.unique(prompts).size),
                 "from_runs": sorted(set(rows["run"].to_list())),
                 "ties_dropped": int((rows["true_order"] == 0).sum()),
                 "true_reward_pos": cluster_bootstrap(rows["true_pos"].to_numpy(), prompts, samples=samples, seed=seed),
                 "true_reward_neg": cluster_bootstrap(rows["true_neg"].to_numpy(), prompts, samples=samples, seed=seed)}
    right = {name: rows[f"{name}_right"].cast(pl.Float64).fill_null(np.nan).to_numpy()
             for name in TRUTH_LABELLERS if f"{name}_right" in rows.columns}
    for name, values in right.items():
        out[name] = cluster_bootstrap(values, prompts, samples=samples, seed=seed)
        if name != "contrastive":
            out[f"contrastive_minus_{name}"] = cluster_bootstrap(right["contrastive"] - values, prompts, samples=samples, seed=seed)
    first = next(r.truth for s in seeds for r in runs if r.seed == s and r.truth_rows is not None and r.truth_rows.height)
    out |= {"ab_rule": first.get("ab_rule"), "check": first.get("check"),
            "judge_validity": first.get("judge_validity"),
            "reward_model_folds": {int(s): r.truth.get("reward_model", {}).get("folds") for s in seeds for r in runs
                                   if r.seed == s and r.truth_rows is not None and r.truth_rows.height}}
    return out


def compare_runs(runs: list[RunResult], methods: list[str], seeds: list[int], *, samples: int, seed: int) -> dict:
    trained = [m for m in methods if m != "base"]
    missing = [(m, s) for m in trained for s in seeds if not any(r.method == m and r.seed == s for r in runs)]
    if missing:
        raise DlmaError(f"the comparison lacks runs {missing}; run them (dlma compare) before collecting")
    tables = _aligned_rows(runs)
    first = tables[(trained[0], seeds[0])]
    sets = first["set"].to_numpy()
    judges = judge_table(runs)
    comparing = [j for j in judges if f"verdict_{j}" in first.columns]

    def base_consistent(column: str) -> None:  # the base answers of one seed are the same draw in every run
        for s in seeds:
            reference = tables[(trained[0], s)][column]
            for m in trained[1:]:
                if not tables[(m, s)][column].equals(reference):
                    raise DlmaError(f"base answers of seed {s} differ between {trained[0]} and {m}: the runs did not share the "
                                    "evaluation sampling (generate.* and evaluate params must be the same)")

    base_consistent("answer_base")
    out: dict = {"methods": methods, "seeds": seeds, "prompts": {"all": int(first.height),
                 **{k: int(v) for k, v in first.group_by("set").len().sort("set").iter_rows()}},
                 "judges": judges, "vs_base": {}, "vs_dlma": {}, "reward": {}, "refusal": {}, "quality": {},
                 "true_reward": {}, "kl": {}, "budget": {}}
    true_rewards = [name for name in TRUE_REWARDS if f"{name}_aligned" in first.columns]
    for name in true_rewards:  # the base model's true reward: the same draws in every run of a seed
        out["true_reward"][name] = {"base": _by_set(_matrix(tables, trained[0], seeds, lambda t: t[f"{name}_base"].to_numpy()),
                                                    sets, samples=samples, seed=seed)}
    by_variant = {(r.method, r.seed): r for r in runs}
    for method in trained:
        out["vs_base"][method] = {}
        for judge in comparing:
            signed = _matrix(tables, method, seeds, _signed(judge))
            out["vs_base"][method][judge] = {"net": _by_set(signed, sets, samples=samples, seed=seed), **_rates(signed)}
        if "reward_aligned" in first.columns:
            gain = _matrix(tables, method, seeds, lambda t: (t["reward_aligned"] - t["reward_base"]).to_numpy())
            out["reward"][method] = _by_set(gain, sets, samples=samples, seed=seed)
        for name in true_rewards:
            aligned = _matrix(tables, method, seeds, lambda t: t[f"{name}_aligned"].to_numpy())
            base = _matrix(tables, method, seeds, lambda t: t[f"{name}_base"].to_numpy())
            out["true_reward"][name][method] = {"mean": _by_set(aligned, sets, samples=samples, seed=seed),
                                                "gain": _by_set(aligned - base, sets, samples=samples, seed=seed),
                                                "per_seed": {int(s): crossed_bootstrap((aligned - base)[i:i + 1], samples=samples, seed=seed)
                                                             for i, s in enumerate(seeds)}}
        if "kl_aligned" in first.columns:
            kl = _matrix(tables, method, seeds, lambda t: t["kl_aligned"].to_numpy())
            out["kl"][method] = _by_set(kl, sets, samples=samples, seed=seed) | {
                "per_seed": {int(s): crossed_bootstrap(kl[i:i + 1], samples=samples, seed=seed) for i, s in enumerate(seeds)}}
        trained_on = [by_variant[(method, s)].train for s in seeds]
        out["budget"][method] = {"pairs": [t.get("pairs") for t in trained_on], "steps": [t.get("steps") for t in trained_on],
                                 "point": by_variant[(method, seeds[0])].point, "method": by_variant[(method, seeds[0])].base_method}
    if "dlma" in trained:  # DLMA against each other method, paired by seed and prompt
        for method in (m for m in trained if m != "dlma"):
            entry = {}
            for judge in comparing:
                difference = _matrix(tables, "dlma", seeds, _signed(judge)) - _matrix(tables, method, seeds, _signed(judge))
                entry[f"net_{judge}"] = _by_set(difference, sets, samples=samples, seed=seed)
            if "reward_aligned" in first.columns:
                difference = (_matrix(tables, "dlma", seeds, lambda t: t["reward_aligned"].to_numpy())
                              - _matrix(tables, method, seeds, lambda t: t["reward_aligned"].to_numpy()))
                entry["reward"] = _by_set(difference, sets, samples=samples, seed=seed)
            for name in true_rewards:
                difference = (_matrix(tables, "dlma", seeds, lambda t: t[f"{name}_aligned"].to_numpy())
                              - _matrix(tables, method, seeds, lambda t: t[f"{name}_aligned"].to_numpy()))
                entry[f"true_{name}"] = _by_set(difference, sets, samples=samples, seed=seed)
            out["vs_dlma"][method] = entry
    if "refusal_aligned" in first.columns:
        harm = first["harm"].to_numpy()

        def refusal(column: str, method: str) -> dict:
            matrix = _matrix(tables, method, seeds, lambda t: t[column].cast(pl.Float64).to_numpy())
            return {kind: crossed_bootstrap(matrix[:, harm == kind], samples=samples, seed=seed)
                    for kind in ("harmful", "safe") if (harm == kind).any()}

        out["refusal"] = {"base": refusal("refusal_base", trained[0])} | {m: refusal("refusal_aligned", m) for m in trained}
    by_run = {(r.method, r.seed): r.metrics for r in runs}
    for method in ["base", *trained]:
        source, side = (trained[0], "base") if method == "base" else (method, "aligned")
        rows = [by_run[(source, s)] for s in seeds]
        out["quality"][method] = {
            "perplexity": float(np.mean([m["perplexity"][side] for m in rows])),
            "mean_tokens": float(np.mean([m["text"][side]["mean_tokens"] for m in rows])),
            "distinct_2": float(np.mean([m["text"][side]["distinct_2"] for m in rows])),
            "generated_pairs": None if method == "base" else [m["training_data"]["pairs"] for m in rows],
        }
    pairs = {tuple(entry["pairs"]) for entry in out["budget"].values()}
    steps = {tuple(entry["steps"]) for entry in out["budget"].values()}
    out["equal_budget"] = len(pairs) == 1 and len(steps) == 1  # every variant trained on the same pairs and steps, seed by seed
    out["truth_agreement"] = truth_agreement(runs, seeds, samples=samples, seed=seed)
    out["agreement"] = runs[0].agreement
    out["refusal_rule"] = runs[0].metrics.get("refusal_rule")  # the rule's accuracy on its labelled sample
    headline = [j for j in comparing if judges[j]["informative"] and judges[j]["independent"]]
    out["headline"] = {"judges": headline} if headline else {
        "judges": [], "none_because": {j: ("self-judge" if not judges[j]["independent"] else "; ".join(judges[j]["not_informative_because"]))
                                       for j in comparing}}
    return out
