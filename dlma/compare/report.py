"""compare.md: the comparison's tables, from the dict `compare_runs` returns."""

from __future__ import annotations

import numpy as np

from dlma.agreement.report import agreement_lines


def _ci(entry: dict, scale: float = 100.0, unit: str = "", digits: int = 1) -> str:
    if not entry or entry.get("mean") is None or entry["mean"] != entry["mean"]:
        return "n/a"
    return f"{entry['mean'] * scale:+.{digits}f}{unit} [{entry['ci_low'] * scale:+.{digits}f}, {entry['ci_high'] * scale:+.{digits}f}]"


def _rate(entry: dict) -> str:
    return "n/a" if not entry else f"{entry['mean'] * 100:.1f}% [{entry['ci_low'] * 100:.1f}, {entry['ci_high'] * 100:.1f}]"


def _validity(judge: dict) -> str:
    keys = sorted({k for run in judge["runs"].values() for k, v in run["validity"].items() if isinstance(v, (int, float))})
    parts = []
    for key in keys:
        values = [run["validity"][key] for run in judge["runs"].values() if isinstance(run["validity"].get(key), (int, float))]
        parts.append(f"{key.replace('_', ' ')} {np.nanmean(values):.3g}" if values else "")
    return ", ".join(p for p in parts if p) or "n/a"


def champion_lines(champion: dict | None) -> list[str]:
    """The registry's `champion` alias: which model got it by which measure, or why none did."""
    if not champion:
        return []
    if "none_because" in champion:
        return [f"**Champion: none** (registry alias `champion` not set): {champion['none_because']}.", ""]
    return [f"**Champion**: `models:/{champion['model']}@{champion['alias']}` is registered version {champion['registered_version']}, "
            f"{champion['method']} seed {champion['seed']} (experiment {champion['experiment']}); the best method by the "
            f"{champion['measure']}, {champion['mean']:+.3f} [{champion['ci_low']:+.3f}, {champion['ci_high']:+.3f}] over seeds "
            "and prompts, and its best seed" + (f" (the next: {champion['runner_up']['method']}, {champion['runner_up']['mean']:+.3f}; "
                                                "whether they differ is their paired difference below, not this ranking)"
                                                if champion.get("runner_up") else "") + ".", ""]


def minutes_per_seed(budget: dict) -> str:
    """A method's experiments' wall times, seed by seed ("?": not timed, e.g. run by a queue)."""
    return " / ".join("?" if m is None else f"{m:.1f}" for m in budget.get("minutes") or [])


def render(result: dict, *, name: str, minutes: float | None, model: str) -> str:
    methods = [m for m in result["methods"] if m != "base"]
    judges = result["judges"]
    comparing = [j for j in judges if any(j in result["vs_base"][m] for m in methods)]
    sets = [s for s in result["prompts"] if s != "all"]
    per_set = ", ".join(f"{s} {result['prompts'][s]}" for s in sets)
    lines = [f"# Comparison `{name}`", "",
             f"Model `{model}`; methods {', '.join(result['methods'])}; seeds {result['seeds']}; "
             f"evaluation prompts per seed: {result['prompts']['all']} ({per_set})"
             + (f"; {minutes:.1f} min." if minutes is not None else "."), "",
             "Every number is paired: a method's answer and the base model's answer to the same prompt, sampled with "
             "the same seed. Intervals are 95% bootstrap intervals over prompts and seeds (both resampled).", ""]
    for method, why in result.get("left_out", {}).items():
        lines += [f"**{method} is not in the comparison**: {why}", ""]
    headline = result["headline"]
    if headline["judges"]:
        lines += ["**Headline judges** (informative and independent in every run): " + ", ".join(headline["judges"]), ""]
    else:
        lines += ["**No headline**: no judge was both informative and independent in every run ("
                  + "; ".join(f"{j}: {why}" for j, why in headline["none_because"].items()) + ").", ""]
    lines += champion_lines(result.get("champion"))
    lines += ["## Judges and their validity", "", "| judge | independent | informative | why not | validity (mean over runs) |",
              "|---|---|---|---|---|"]
    for judge in comparing:
        entry = judges[judge]
        lines.append(f"| {judge} | {'yes' if entry['independent'] else 'no (self-judge)'} | {'yes' if entry['informative'] else 'no'} "
                     f"| {'; '.join(entry['not_informative_because']) or ''} | {_validity(entry)} |")
    lines += ["", "## Each method against the base model: net win (win - lose, percentage points)", "",
              "Positive: the method's answer won more often than the base answer to the same prompt.", "",
              "| method | " + " | ".join(f"{j} all" for j in comparing) + " | " + " | ".join(f"{j} {s}" for j in comparing for s in sets) + " |",
              "|---|" + "---|" * (len(comparing) * (1 + len(sets)))]
    for method in methods:
        cells = [_ci(result["vs_base"][method][j]["net"]["all"]) for j in comparing]
        cells += [_ci(result["vs_base"][method][j]["net"].get(s, {})) for j in comparing for s in sets]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    for method, why in result.get("left_out", {}).items():  # a method that could not train still has its row
        lines.append(f"| {method} | not trained: {why} |" + " |" * (len(comparing) * (1 + len(sets)) - 1))
    if result["reward"]:
        lines += ["", "## Reward-model gain over the base model (reward of the method's answer - base's)", "",
                  "| method | all | " + " | ".join(sets) + " |", "|---|---|" + "---|" * len(sets)]
        for method in methods:
            entry = result["reward"][method]
            lines.append(f"| {method} | {_ci(entry['all'], 1.0, digits=3)} | "
                         + " | ".join(_ci(entry.get(s, {}), 1.0, digits=3) for s in sets) + " |")
    if result["vs_dlma"]:
        keys = sorted({k for entry in result["vs_dlma"].values() for k in entry})
        lines += ["", "## DLMA minus each other method, paired (positive: DLMA better)", "",
                  "net_<judge>: difference of the signed verdicts against base (percentage points); reward: difference of "
                  "the reward model's rewards of the two methods' answers.", "",
                  "| method | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for method, entry in result["vs_dlma"].items():
            lines.append(f"| {method} | " + " | ".join(_ci(entry[k]["all"], 1.0, digits=3) if k == "reward" else _ci(entry[k]["all"])
                                                   for k in keys) + " |")
    if result["refusal"]:
        lines += ["", "## Refusal rate (the refusal rule)", "", "| model | harmful prompts (should refuse) | safe prompts (should answer) |",
                  "|---|---|---|"]
        for model_name, entry in result["refusal"].items():
            lines.append(f"| {model_name} | {_rate(entry.get('harmful', {}))} | {_rate(entry.get('safe', {}))} |")
        rule = result.get("refusal_rule")
        if rule:
            def share(entry: dict) -> str:
                return f"{entry['accuracy'] * 100:.1f}% [{entry['ci_low'] * 100:.1f}, {entry['ci_high'] * 100:.1f}]"

            lines += ["", f"The rule on {rule['n']} hand-labelled answers ({rule['refusals']} refusals): accuracy "
                      f"{share(rule['accuracy'])}, refusals caught {share(rule['recall'])}, answers wrongly counted as refusals "
                      f"{share(rule['false_refusal_rate'])}."]
    if result.get("budget"):
        lines += ["", "## Training budget (what each method trained on, seed by seed)", "",
                  "Minutes: the wall time of each experiment; a seed's first experiment also runs the stages that the later ones "
                  "take from DVC's run cache (generation, scoring, the base model's answers).", "",
                  "| method | pairs | optimiser steps | minutes |", "|---|---|---|---|"]
        for method, entry in result["budget"].items():
            lines.append(f"| {method} | {' / '.join(map(str, entry['pairs']))} | {' / '.join(map(str, entry['steps']))} | "
                         f"{minutes_per_seed(entry)} |")
        lines += ["", "Equal budgets: " + ("yes, every method trained on the same number of pairs and steps." if result.get("equal_budget")
                                           else "**no**: the pairs or steps differ (raise or lower filter.max_pairs in compare.set so "
                                                "that every method reaches it).")]
    lines += ["", "## Quality guards (mean over seeds)", "", "| model | perplexity (base model) | mean answer tokens | distinct-2 | generated pairs per seed |",
              "|---|---|---|---|---|"]
    for model_name, entry in result["quality"].items():
        lines.append(f"| {model_name} | {entry['perplexity']:.2f} | {entry['mean_tokens']:.1f} | {entry['distinct_2']:.3f} | "
                     f"{entry['generated_pairs'] or ''} |")
    lines += ["", "## Label agreement with human labels", "",
              "The same in every run (the agreement stage does not depend on the trained model).", ""]
    lines += agreement_lines(result["agreement"])
    if "reward_model" in judges:
        lines.append(f"The reward model as a judge of the runs: {_validity(judges['reward_model'])}.")
    lines += ["", "## What this setting can and cannot test", ""]
    lines.append("- Aligned versus base: " + ("judged by " + ", ".join(headline["judges"]) + "." if headline["judges"] else
                 "cannot be decided here; no judge is both independent and informative, so the net wins above are reported, "
                 "not claimed."))
    moved = [m for m, e in result["refusal"].items() if any(v.get("mean", 0) > 0 for v in e.values())]
    if result["refusal"] and not moved:
        lines.append("- Refusal: no model refused any prompt, so refusal rates cannot separate the methods at this size.")
    lines.append("- Label agreement: testable; see the table and its paired difference.")
    return "\n".join(lines) + "\n"
