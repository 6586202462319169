"""The rounds over several seeds: does round k add to round k-1, pooled over seeds and
prompts, on a true reward (the controlled task).

Each seed's multi-round pipeline leaves one evaluation table per round and baseline:
round 1's `reports/eval_samples.parquet` (against the base model, which is also the round
before it) and, for k > 1, `rounds/<k>/eval_samples_vs_base.parquet` and
`..._vs_previous.parquet`. Every measure here is a paired per-prompt quantity (the same
prompts and sampling streams for both models), pooled into a seeds x prompts table and
given a 95% interval by the crossed bootstrap over seeds and prompts
(dlma.evaluate.stats.crossed_bootstrap), as `dlma compare` pools its seeds.

`collect` copies those tables (and each round's metrics) out of the seeds' workspaces into
one folder, so the study is recomputed from committed files: `summarize` and `markdown` read
only that folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl

from dlma.core.errors import DlmaError
from dlma.compare.summary import KEY, SIGNED  # the comparison's prompt key and verdict signs
from dlma.core.io import atomic_path
from dlma.evaluate.stats import crossed_bootstrap
from dlma.truth import TRUE_REWARDS

BASELINES = ("vs_base", "vs_previous")


def sample_paths(workspace: Path, round_number: int) -> dict[str, Path]:
    """Where a seed's workspace keeps round `round_number`'s evaluation tables."""
    if round_number == 1:
        first = workspace / "reports" / "eval_samples.parquet"
        return {"vs_base": first, "vs_previous": first}
    folder = workspace / "rounds" / str(round_number)
    return {against: folder / f"eval_samples_{against}.parquet" for against in BASELINES}


def collect(workspaces: dict[int, Path], rounds: int, out: Path) -> list[Path]:
    """Copy each seed's per-round evaluation tables and metrics into `out/seed<s>/`:
    `round<k>_vs_base.parquet`, `round<k>_vs_previous.parquet`, `round<k>.json` (round 1:
    reports/train.json; later rounds: reports/rounds/<k>.json)."""
    written = []
    for seed, workspace in sorted(workspaces.items()):
        target = out / f"seed{seed}"
        target.mkdir(parents=True, exist_ok=True)
        for k in range(1, rounds + 1):
            for against, source in sample_paths(workspace, k).items():
                if not source.is_file():
                    raise DlmaError(f"seed {seed}: '{source}' does not exist; run the pipeline with rounds.count >= {k} "
                                    "there (and `dvc exp apply` the experiment, so its outputs are in the workspace)")
                destination = target / f"round{k}_{against}.parquet"
                with atomic_path(destination) as tmp:
                    shutil.copyfile(source, tmp)
                written.append(destination)
            # round 1's training budget is in reports/train.json; a later round's in its metrics
            metrics = workspace / "reports" / ("train.json" if k == 1 else f"rounds/{k}.json")
            if metrics.is_file():
                destination = target / f"round{k}.json"
                with atomic_path(destination) as tmp:
                    shutil.copyfile(metrics, tmp)
                written.append(destination)
    return written


def collect_control(name: str, seed: int, workspace: Path, out: Path) -> list[Path]:
    """Copy a one-round control run of seed `seed` (e.g. one round trained as many steps as
    the rounds together: `-S train.epochs=3`) into `out/seed<s>/control_<name>.parquet` (its
    evaluation table) and `control_<name>.json` (its training report)."""
    _check_name("control", name)
    target = out / f"seed{seed}"
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for source, destination in ((workspace / "reports" / "eval_samples.parquet", target / f"control_{name}.parquet"),
                                (workspace / "reports" / "train.json", target / f"control_{name}.json")):
        if not source.is_file():
            raise DlmaError(f"control {name}, seed {seed}: '{source}' does not exist; run that pipeline there first")
        with atomic_path(destination) as tmp:
            shutil.copyfile(source, tmp)
        written.append(destination)
    return written


def _check_name(kind: str, name: str) -> None:
    if not name.replace("-", "").replace("_", "").isalnum():
        raise DlmaError(f"{kind} name '{name}': use letters, digits, '-' and '_'")


def collect_variant(name: str, seed: int, workspace: Path, rounds: int, out: Path) -> list[Path]:
    """Copy a variant of seed `seed`'s rounds (the same round 1, then other `rounds.*` settings:
    `-S rounds.reference=previous`, `-S rounds.keep_pairs=true`) into `out/seed<s>/`:
    `variant_<name>_round<k>_vs_{base,previous}.parquet` and `variant_<name>_round<k>.json`,
    k = 1..rounds (round 1's table only, to check that the variant forks from the same round 1)."""
    _check_name("variant", name)
    target = out / f"seed{seed}"
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for k in range(1, rounds + 1):
        sources = sample_paths(workspace, k)
        copies = [(sources["vs_base"], target / f"variant_{name}_round1_vs_base.parquet")] if k == 1 else [
            (sources[against], target / f"variant_{name}_round{k}_{against}.parquet") for against in BASELINES]
        if k > 1:
            copies.append((workspace / "reports" / "rounds" / f"{k}.json", target / f"variant_{name}_round{k}.json"))
        for source, destination in copies:
            if not source.is_file():
                raise DlmaError(f"variant {name}, seed {seed}: '{source}' does not exist; run the variant's rounds there "
                                f"(rounds.count >= {k}) and `dvc exp apply` it first")
            with atomic_path(destination) as tmp:
                shutil.copyfile(source, tmp)
            written.append(destination)
    return written


def _tables(folder: Path) -> dict[tuple[int, int, str], pl.DataFrame]:
    """{(seed, round, against): table sorted by (set, id)} of a collected folder."""
    tables = {}
    for path in sorted(folder.glob("seed*/round*_vs_*.parquet")):
        seed = int(path.parent.name.removeprefix("seed"))
        stem, against = path.stem.split("_", 1)
        tables[(seed, int(stem.removeprefix("round")), against)] = pl.read_parquet(path).sort(KEY)
    if not tables:
        raise DlmaError(f"'{folder}' holds no seed*/round*_vs_*.parquet; collect the seeds' rounds first")
    return tables


def _matrix(tables, seeds, round_number, against, column_of) -> np.ndarray:
    rows = [tables[(s, round_number, against)] for s in seeds]
    reference = rows[0].select(KEY)
    for seed, table in zip(seeds, rows):
        if not table.select(KEY).equals(reference):
            raise DlmaError(f"seed {seed}, round {round_number} ({against}) judged other prompts than seed {seeds[0]}; the study "
                            "needs the same evaluation prompts in every seed (same data, data.seed and evaluate sets)")
    return np.stack([column_of(t) for t in rows])


def summarize(folder: Path, *, samples: int = 2000, seed: int = 0) -> dict:
    """Per round, pooled over the seeds: for each true reward in the tables, the round's mean
    true reward, its paired gain over the base model and over the round before, its net win
    rate over the round before (true-reward verdicts); the KL to the base model; and the check
    that round k's evaluation against round k-1 drew round k-1's own answers."""
    tables = _tables(folder)
    seeds = sorted({s for s, _, _ in tables})
    rounds = sorted({k for _, k, _ in tables})
    for s in seeds:
        missing = [k for k in rounds if (s, k, "vs_base") not in tables or (s, k, "vs_previous") not in tables]
        if missing:
            raise DlmaError(f"seed {s} lacks round(s) {missing} in '{folder}'; every seed needs every round")
    first = tables[(seeds[0], 1, "vs_base")]
    rewards = [name for name in TRUE_REWARDS if f"{name}_aligned" in first.columns]
    if not rewards:
        raise DlmaError(f"the tables in '{folder}' hold no true reward column (<name>_aligned for one of {sorted(TRUE_REWARDS)}); "
                        "the study answers on the controlled task (truth.reward)")
    boot = {"samples": samples, "seed": seed}
    out: dict = {"seeds": seeds, "rounds": rounds, "prompts": first.height, "true_rewards": rewards, "by_round": {}}
    for k in rounds:
        entry: dict = {}
        for name in rewards:
            def column(suffix, name=name):
                return lambda t: t[f"{name}_{suffix}"].to_numpy().astype(np.float64)

            aligned = _matrix(tables, seeds, k, "vs_base", column("aligned"))
            over_previous = (_matrix(tables, seeds, k, "vs_previous", column("aligned"))
                             - _matrix(tables, seeds, k, "vs_previous", column("base")))
            entry[name] = {
                "mean": crossed_bootstrap(aligned, **boot),
                "gain_vs_base": crossed_bootstrap(aligned - _matrix(tables, seeds, k, "vs_base", column("base")), **boot),
                "gain_vs_previous": crossed_bootstrap(over_previous, **boot),
                "gain_vs_previous_by_seed": {str(s): float(row.mean()) for s, row in zip(seeds, over_previous)},
            }
            verdict = f"verdict_{name}"
            if verdict in first.columns:
                signed = _matrix(tables, seeds, k, "vs_previous",
                                 lambda t: t[verdict].replace_strict(SIGNED, return_dtype=pl.Float64).to_numpy())
                entry[name]["net_win_vs_previous"] = crossed_bootstrap(signed, **boot)
        if "kl_aligned" in first.columns:
            entry["kl_to_base"] = crossed_bootstrap(
                _matrix(tables, seeds, k, "vs_base", lambda t: t["kl_aligned"].to_numpy().astype(np.float64)), **boot)
        if k > 1:
            # Round k's baseline answers against round k-1 are round k-1's model sampled with the
            # same streams: they must be round k-1's own answers (else the pairing is broken).
            same = [float((tables[(s, k, "vs_previous")]["answer_base"] == tables[(s, k - 1, "vs_base")]["answer_aligned"]).mean())
                    for s in seeds]
            entry["previous_answers_identical"] = min(same)
        out["by_round"][str(k)] = entry
    out["settings"] = _settings(folder, seeds, rounds)
    out["controls"] = _controls(folder, tables, seeds, rounds, rewards, out["settings"], boot)
    out["variants"] = _variants(folder, tables, seeds, rounds, rewards, boot)
    return out


def _variants(folder: Path, tables, seeds, rounds, rewards, boot) -> dict:
    """Each variant's rounds against the study's own, on the seeds that ran it: its round k's
    true reward minus the study's round k on the same prompts and base answers, its gain over
    its own round before, and its KL to the base model. The variant must fork from the same
    round 1 (its round-1 answers identical to the study's: checked)."""
    found: dict[str, dict[tuple[int, int, str], pl.DataFrame]] = {}
    for path in sorted(folder.glob("seed*/variant_*_round*_vs_*.parquet")):
        seed = int(path.parent.name.removeprefix("seed"))
        name, _, rest = path.stem.removeprefix("variant_").rpartition("_round")
        number, against = rest.split("_", 1)
        if seed in seeds:
            found.setdefault(name, {})[(seed, int(number), against)] = pl.read_parquet(path).sort(KEY)
    variants = {}
    for name, own in found.items():
        variant_seeds = sorted({s for s, _, _ in own})
        variant_rounds = [k for k in rounds if k > 1 and all((s, k, a) in own for s in variant_seeds for a in BASELINES)]
        for s in variant_seeds:
            first, study_first = own.get((s, 1, "vs_base")), tables[(s, 1, "vs_base")]
            if first is None or not first.select(KEY, "answer_aligned").equals(study_first.select(KEY, "answer_aligned")):
                raise DlmaError(f"variant {name}, seed {s}: its round 1 is not the study's (other prompts or answers); a "
                                "variant changes rounds.* only, so its round 1 must be the same run")
        entry: dict = {"seeds": variant_seeds, "rounds": variant_rounds, "settings": {}, "budget": {}, "by_round": {}}
        for k in variant_rounds:
            budget, settings = {}, {}
            for s in variant_seeds:
                report = folder / f"seed{s}" / f"variant_{name}_round{k}.json"
                data = json.loads(report.read_text()) if report.is_file() else {}
                settings = {key: data.get(key) for key in ("start", "reference", "keep_pairs")}  # one variant: the same in every seed
                budget[str(s)] = {"pairs": data.get("train", {}).get("pairs"), "steps": data.get("train", {}).get("steps")}
            entry["settings"][str(k)], entry["budget"][str(k)] = settings, budget
            for s in variant_seeds:
                if not (own[(s, k, "vs_base")]["answer_base"] == tables[(s, k, "vs_base")]["answer_base"]).all():
                    raise DlmaError(f"variant {name}, seed {s}, round {k}: its base answers differ from the study's; "
                                    "run it with the same data, evaluate and generate params and seed")

            def matrix(source, against, column):
                return np.stack([source[(s, k, against)][column].to_numpy().astype(np.float64) for s in variant_seeds])

            row: dict = {}
            for reward in rewards:
                aligned = matrix(own, "vs_base", f"{reward}_aligned")
                row[reward] = {
                    "mean": crossed_bootstrap(aligned, **boot),
                    "gain_vs_base": crossed_bootstrap(aligned - matrix(own, "vs_base", f"{reward}_base"), **boot),
                    "gain_vs_previous": crossed_bootstrap(matrix(own, "vs_previous", f"{reward}_aligned")
                                                          - matrix(own, "vs_previous", f"{reward}_base"), **boot),
                    "variant_minus_study": crossed_bootstrap(aligned - matrix(tables, "vs_base", f"{reward}_aligned"), **boot),
                }
            if all("kl_aligned" in own[(s, k, "vs_base")].columns for s in variant_seeds):
                kl = matrix(own, "vs_base", "kl_aligned")
                row["kl_to_base"] = crossed_bootstrap(kl, **boot)
                row["kl_minus_study"] = crossed_bootstrap(kl - matrix(tables, "vs_base", "kl_aligned"), **boot)
            entry["by_round"][str(k)] = row
        variants[name] = entry
    return variants


def _controls(folder: Path, tables, seeds, rounds, rewards, settings, boot) -> dict:
    """Each control against each round, paired on the seeds that ran it: round k's true
    reward minus the control's on the same prompts, where both answered with the same
    sampling streams against the same base answers (checked)."""
    found: dict[str, dict[int, pl.DataFrame]] = {}
    for path in sorted(folder.glob("seed*/control_*.parquet")):
        seed = int(path.parent.name.removeprefix("seed"))
        if seed in seeds:
            found.setdefault(path.stem.removeprefix("control_"), {})[seed] = pl.read_parquet(path).sort(KEY)
    controls = {}
    for name, by_seed in found.items():
        control_seeds = sorted(by_seed)
        budget = {}
        for s in control_seeds:
            report = folder / f"seed{s}" / f"control_{name}.json"
            trained = json.loads(report.read_text()) if report.is_file() else {}
            budget[str(s)] = {"pairs": trained.get("pairs"), "steps": trained.get("steps")}
        for s in control_seeds:
            own = tables[(s, 1, "vs_base")]
            if not by_seed[s].select(KEY).equals(own.select(KEY)) or not (by_seed[s]["answer_base"] == own["answer_base"]).all():
                raise DlmaError(f"control {name}, seed {s}: its evaluation is not paired with round 1's (other prompts, or other "
                                "base answers): run it with the same data, evaluate and generate params and seed")
        entry: dict = {"seeds": control_seeds, "budget": budget, "by_reward": {}}
        if all("kl_aligned" in by_seed[s].columns for s in control_seeds):
            entry["kl_to_base"] = crossed_bootstrap(
                np.stack([by_seed[s]["kl_aligned"].to_numpy().astype(np.float64) for s in control_seeds]), **boot)
        for reward in rewards:
            control = np.stack([by_seed[s][f"{reward}_aligned"].to_numpy().astype(np.float64) for s in control_seeds])
            base = np.stack([by_seed[s][f"{reward}_base"].to_numpy().astype(np.float64) for s in control_seeds])
            per_round = {}
            for k in rounds:
                aligned = np.stack([tables[(s, k, "vs_base")][f"{reward}_aligned"].to_numpy().astype(np.float64)
                                    for s in control_seeds])
                steps = [sum((settings.get(str(j), {}).get("budget", {}).get(str(s), {}).get("steps") or 0)
                             for j in rounds if j <= k) for s in control_seeds]
                per_round[str(k)] = {"round_minus_control": crossed_bootstrap(aligned - control, **boot),
                                     "steps_so_far": {str(s): n for s, n in zip(control_seeds, steps)}}
            entry["by_reward"][reward] = {"mean": crossed_bootstrap(control, **boot),
                                          "gain_vs_base": crossed_bootstrap(control - base, **boot), "by_round": per_round}
        controls[name] = entry
    return controls


def _settings(folder: Path, seeds: list[int], rounds: list[int]) -> dict:
    """Each round's settings and training budget (pairs, steps) per seed, from the copies."""
    settings: dict = {}
    for k in rounds:
        for s in seeds:
            path = folder / f"seed{s}" / f"round{k}.json"
            if not path.is_file():
                continue
            entry = json.loads(path.read_text())
            train = entry if k == 1 else entry["train"]
            settings.setdefault(str(k), {"start": entry.get("start", "base"), "reference": entry.get("reference", "base"),
                                         "keep_pairs": entry.get("keep_pairs", False), "budget": {}})
            settings[str(k)]["budget"][str(s)] = {"pairs": train.get("pairs"), "steps": train.get("steps")}
    return settings


def _ci(entry: dict, digits: int = 3) -> str:
    if entry is None or entry["mean"] is None or np.isnan(entry["mean"]):
        return "-"
    fmt = "{:+.%df}" % digits
    return f"{fmt.format(entry['mean'])} [{fmt.format(entry['ci_low'])}, {fmt.format(entry['ci_high'])}]"


def side(entry: dict) -> str:
    """Where the interval lies: above 0, below 0, or across it."""
    return "above 0" if entry["ci_low"] > 0 else "below 0" if entry["ci_high"] < 0 else "covers 0"


def verdict(entry: dict) -> str:
    """In words, for a gain over the round before: whether the round adds."""
    return {"above 0": "adds (interval above 0)", "below 0": "loses (interval below 0)",
            "covers 0": "not shown (interval covers 0)"}[side(entry)]


def markdown(summary: dict, *, title: str, figure: str | None = None) -> str:
    seeds, rounds = summary["seeds"], summary["rounds"]
    lines = [f"# {title}", "",
             f"Seeds {', '.join(map(str, seeds))} ({len(seeds)}), {summary['prompts']} evaluation prompts per seed, "
             f"rounds 1 to {rounds[-1]}. Every number is a paired per-prompt quantity pooled over seeds and prompts, "
             "with a 95% crossed bootstrap interval over seeds and prompts.", ""]
    for k, setting in summary.get("settings", {}).items():
        budget = "; ".join(f"seed {s}: {b['pairs']} pairs, {b['steps']} steps" for s, b in setting["budget"].items())
        lines.append(f"- round {k}: start `{setting['start']}`, reference `{setting['reference']}`, "
                     f"earlier pairs kept: {setting['keep_pairs']} ({budget})")
    lines.append("")
    for name in summary["true_rewards"]:
        lines += [f"## True reward: {name}", "",
                  "| round | mean | gain vs base | gain vs round before | net win vs round before | round before's answers identical | does it add to the round before? |",
                  "|---|---|---|---|---|---|---|"]
        for k in rounds:
            entry = summary["by_round"][str(k)]
            reward = entry[name]
            identical = entry.get("previous_answers_identical")
            added = verdict(reward["gain_vs_previous"]) if k > 1 else "(round 1: against the base model)"
            lines.append(f"| {k} | {reward['mean']['mean']:.3f} [{reward['mean']['ci_low']:.3f}, {reward['mean']['ci_high']:.3f}] "
                         f"| {_ci(reward['gain_vs_base'])} | {_ci(reward['gain_vs_previous'])} "
                         f"| {_ci(reward.get('net_win_vs_previous'))} | {'-' if identical is None else f'{identical:.0%}'} | {added} |")
        lines.append("")
        by_seed = "; ".join(f"round {k}: " + ", ".join(f"{v:+.3f}" for v in summary["by_round"][str(k)][name]["gain_vs_previous_by_seed"].values())
                            for k in rounds[1:])
        if by_seed:
            lines += [f"Gain vs round before, each seed ({', '.join(map(str, seeds))}): {by_seed}.", ""]
    for name, control in summary.get("controls", {}).items():
        budget = "; ".join(f"seed {s}: {b['pairs']} pairs, {b['steps']} steps" for s, b in control["budget"].items())
        lines += [f"## Against the control `{name}`", "",
                  f"One round trained longer, seeds {', '.join(map(str, control['seeds']))} ({budget}). Round k minus the control, "
                  "paired on the same prompts and base answers (those seeds only; rounds 2 and on train from the round before, "
                  "so `steps so far` is their training budget).", ""]
        for reward, entry in control["by_reward"].items():
            kl = f", KL to base {_ci(control['kl_to_base'], 2)} nats" if "kl_to_base" in control else ""
            lines += [f"Control's {reward}: mean {_ci(entry['mean'])}, gain vs base {_ci(entry['gain_vs_base'])}{kl}.", "",
                      f"| round | steps so far | {reward}: round minus control | |", "|---|---|---|---|"]
            for k, row in entry["by_round"].items():
                steps = ", ".join(sorted(set(map(str, row["steps_so_far"].values()))))
                lines.append(f"| {k} | {steps} | {_ci(row['round_minus_control'])} | interval {side(row['round_minus_control'])} |")
            lines.append("")
    for name, variant in summary.get("variants", {}).items():
        lines += [f"## Variant `{name}`", "",
                  f"The same round 1, then other round settings; seeds {', '.join(map(str, variant['seeds']))}. "
                  "`variant minus study`: its round k's true reward minus the study's round k, paired on the same prompts "
                  "and base answers (those seeds only).", ""]
        for k, setting in variant["settings"].items():
            budget = "; ".join(f"seed {s}: {b['pairs']} pairs, {b['steps']} steps" for s, b in variant["budget"][k].items())
            lines.append(f"- round {k}: start `{setting['start']}`, reference `{setting['reference']}`, "
                         f"earlier pairs kept: {setting['keep_pairs']} ({budget})")
        lines.append("")
        for reward in summary["true_rewards"]:
            lines += [f"| round | {reward}: mean | gain vs base | gain vs its round before | variant minus study | KL to base "
                      "| KL minus study |", "|---|---|---|---|---|---|---|"]
            for k, row in variant["by_round"].items():
                lines.append(f"| {k} | {_ci(row[reward]['mean'])} | {_ci(row[reward]['gain_vs_base'])} "
                             f"| {_ci(row[reward]['gain_vs_previous'])} | {_ci(row[reward]['variant_minus_study'])} "
                             f"| {_ci(row.get('kl_to_base'), 2)} | {_ci(row.get('kl_minus_study'), 2)} |")
            lines.append("")
    if any("kl_to_base" in summary["by_round"][str(k)] for k in rounds):
        lines += ["## KL to the base model (nats per answer)", "", "| round | KL |", "|---|---|"]
        lines += [f"| {k} | {_ci(summary['by_round'][str(k)].get('kl_to_base'), 2)} |" for k in rounds]
        lines.append("")
    if figure:
        lines += [f"![each round, pooled over seeds]({figure})", ""]
    return "\n".join(lines)


def figure(summary: dict, path: Path) -> None:
    """Mean true reward and KL to the base model by round (pooled, with intervals)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = summary["rounds"]
    panels = [(name, lambda e, name=name: e[name]["mean"]) for name in summary["true_rewards"]]
    panels += [(f"{name} gain vs round before", lambda e, name=name: e[name]["gain_vs_previous"]) for name in summary["true_rewards"]]
    if all("kl_to_base" in summary["by_round"][str(k)] for k in rounds):
        panels.append(("KL to base (nats)", lambda e: e["kl_to_base"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.2), squeeze=False)
    for ax, (title, pick) in zip(axes[0], panels):
        points = [pick(summary["by_round"][str(k)]) for k in rounds]
        ax.errorbar(rounds, [p["mean"] for p in points],
                    yerr=[[p["mean"] - p["ci_low"] for p in points], [p["ci_high"] - p["mean"] for p in points]],
                    fmt="o-", capsize=3)
        if "gain" in title:
            ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("round")
        ax.set_xticks(rounds)
    fig.suptitle(f"seeds {', '.join(map(str, summary['seeds']))}; 95% intervals over seeds and prompts", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
