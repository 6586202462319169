"""A study: the comparisons that answer one question together (the controlled task's
`controlled`, `frontier` and `margin` presets), read back from reports/<study>/<preset>.json
and written as one report, reports/<study>.md and reports/<study>.json, plus the
reward-vs-KL figure reports/figures/<study>_frontier.png.

Each row of the study's table is a (preset, variant, seed) or its pooled row (seed "all"):
the true reward of the variant's answers, its gain over the base model's answers to the
same prompts (paired), and KL(policy || base) estimated on the same answers, each with its
95% interval (over prompts; pooled: over prompts and seeds), with the beta and margin weight
the variant trained with and the pairs and steps it trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

from dlma.agreement.report import LABELLERS
from dlma.compare.methods import METHODS
from dlma.compare.report import minutes_per_seed
from dlma.core.io import atomic_path, write_json

PRESET_ORDER = ("controlled", "frontier", "margin")  # the shipped presets' order in the report; others follow by name


def presets_by_role(results: dict[str, dict]) -> dict[str, list[str]]:
    """Which preset answers which part of the report: the comparison without a grid
    (experiments 1 and 2), the grids over beta (the frontier) and over the margin weight."""
    return {"experiments": [n for n, r in results.items() if not r.get("grid")],
            "frontier": [n for n, r in results.items() if "train.beta" in (r.get("grid") or {})],
            "margin": [n for n, r in results.items() if "train.margin_weight" in (r.get("grid") or {})]}
TRUTH_LABELLERS = {**{k: LABELLERS[k] for k in ("contrastive", "likelihood", "ab_judge")},
                   "reward_model": "reward model fitted on true labels of other prompts' pairs (cross-fitted)"}


def _ci(entry: dict | None, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    if not entry or entry.get("mean") is None or entry["mean"] != entry["mean"]:
        return "n/a"
    return (f"{entry['mean'] * scale:+.{digits}f}{unit} [{entry['ci_low'] * scale:+.{digits}f}, "
            f"{entry['ci_high'] * scale:+.{digits}f}]")


def train_setting(result: dict, variant: str, defaults: dict) -> dict:
    """The beta and margin weight (and loss) a variant trained with: params.yaml's, then
    the comparison's `set`, the method's params and the grid point."""
    budget = result["budget"][variant]
    values = {"train.beta": defaults.get("beta"), "train.margin_weight": defaults.get("margin_weight"),
              "train.loss": defaults.get("loss")}
    for layer in (result.get("set", {}), METHODS.get(budget["method"]) or {}, budget.get("point", {})):
        values.update({k: v for k, v in layer.items() if k in values})
    sft = values["train.loss"] == "sft"
    return {"beta": None if sft else values["train.beta"], "w": None if sft else values["train.margin_weight"],
            "loss": values["train.loss"]}


def study_rows(results: dict[str, dict], defaults: dict) -> list[dict]:
    rows = []
    for preset, result in results.items():
        for name, by_variant in result.get("true_reward", {}).items():
            for variant, entry in by_variant.items():
                if variant == "base":
                    rows.append({"preset": preset, "method": "base", "seed": "all", "beta": None, "w": None,
                                 "n": entry["all"].get("seeds", 0) * entry["all"].get("prompts", 0), "true_reward": entry["all"],
                                 "gain": {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}, "kl": {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0},
                                 "true_reward_name": name})
                    continue
                setting = train_setting(result, variant, defaults)
                budget, kl = result["budget"][variant], result["kl"].get(variant, {})
                common = {"preset": preset, "method": budget["method"], "variant": variant, **setting, "true_reward_name": name,
                          "pairs": budget["pairs"], "steps": budget["steps"]}
                rows.append(common | {"seed": "all", "n": entry["gain"]["all"]["seeds"] * entry["gain"]["all"]["prompts"],
                                      "true_reward": entry["mean"]["all"], "gain": entry["gain"]["all"], "kl": kl.get("all")})
                for seed, gain in entry["per_seed"].items():
                    rows.append(common | {"seed": int(seed), "n": gain["prompts"], "gain": gain,
                                          "kl": kl.get("per_seed", {}).get(str(seed), kl.get("per_seed", {}).get(seed))})
    return rows


def frontier_figure(rows: list[dict], presets: list[str], path: Path, title: str) -> Path:
    """True reward against KL(policy || base), one line per method over its betas (pooled
    rows, 95% intervals on both axes), the base model at KL 0: the DPO paper's Figure 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    pooled = [r for r in rows if r["seed"] == "all" and r.get("kl") and r["method"] != "base" and r["preset"] in presets]
    for method in dict.fromkeys(r["method"] for r in pooled):
        points = sorted((r for r in pooled if r["method"] == method), key=lambda r: r["kl"]["mean"])
        x = [r["kl"]["mean"] for r in points]
        y = [r["true_reward"]["mean"] for r in points]
        xerr = [[r["kl"]["mean"] - r["kl"]["ci_low"] for r in points], [r["kl"]["ci_high"] - r["kl"]["mean"] for r in points]]
        yerr = [[r["true_reward"]["mean"] - r["true_reward"]["ci_low"] for r in points],
                [r["true_reward"]["ci_high"] - r["true_reward"]["mean"] for r in points]]
        line = axes.errorbar(x, y, xerr=xerr, yerr=yerr, marker="o", capsize=3, label=method)
        for r in points:
            axes.annotate(f"β={r['beta']}", (r["kl"]["mean"], r["true_reward"]["mean"]), textcoords="offset points",
                          xytext=(4, 4), fontsize=7, color=line[0].get_color())
    base = [r for r in rows if r["method"] == "base" and r["preset"] in presets]
    if base:
        entry = base[0]["true_reward"]
        axes.errorbar([0.0], [entry["mean"]], yerr=[[entry["mean"] - entry["ci_low"]], [entry["ci_high"] - entry["mean"]]],
                      marker="s", color="black", capsize=3, label="base")
    axes.set_xlabel("KL(policy || base), nats per answer (estimated on its answers)")
    axes.set_ylabel(f"true reward ({pooled[0]['true_reward_name'] if pooled else 'mean'})")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)
    return path


def _budget(entry: dict) -> str:
    pairs, steps = entry.get("pairs") or [], entry.get("steps") or []
    return f"{'/'.join(str(p) for p in pairs)} | {'/'.join(str(s) for s in steps)}"


def experiment_one_lines(truth: dict) -> list[str]:
    if not truth or "skipped" in truth:
        return [f"Not measured: {truth.get('skipped') if truth else 'no run'}.", ""]
    lines = [f"{truth['pairs']} generated pairs ({len(truth['seeds'])} seeds x {truth['prompts']} prompts; "
             f"{truth['ties_dropped']} with equal true rewards have no true order and are left out). True reward of the p+ "
             f"answers {_ci(truth['true_reward_pos'])}, of the p- answers {_ci(truth['true_reward_neg'])}. "
             f"A/B judge rule: {truth.get('ab_rule')}. Intervals resample prompts.", "",
             "| labeller | agrees with the true reward [95% CI] | pairs counted | contrastive - labeller, paired [95% CI] |",
             "|---|---|---|---|"]
    for key, label in TRUTH_LABELLERS.items():
        entry = truth.get(key)
        if not entry:
            continue
        difference = truth.get(f"contrastive_minus_{key}")
        lines.append(f"| {label} | {_ci(entry, 1, 100, '%').replace('+', '')} | {entry['n']} | "
                     f"{_ci(difference, 1, 100, ' pp') if difference else ''} |")
    validity = truth.get("judge_validity") or {}
    if validity:
        lines += ["", f"The A/B judge: both orders agree on {validity['order_consistency'] * 100:.1f}% of pairs, it says \"A\" in "
                  f"both orders on {validity['prefers_a_both_orders'] * 100:.1f}%, mass on the two answer tokens "
                  f"{validity['answer_token_mass'] * 100:.1f}%."]
    check = truth.get("check") or {}
    if check:
        lines += ["", f"The true reward itself on {check['n']} hand-labelled sentences ({check['sample']}): accuracy "
                  f"{_ci(check['accuracy'] | {'mean': check['accuracy']['accuracy']}, 1, 100, '%').replace('+', '')}."]
    return lines + [""]


def experiment_two_lines(result: dict, defaults: dict) -> list[str]:
    name = next(iter(result.get("true_reward", {})), None)
    if name is None:
        return ["No true reward in these runs.", ""]
    entries = result["true_reward"][name]
    lines = [f"Seeds {result['seeds']}, {entries['base']['all']['prompts']} evaluation prompts per seed. True reward "
             f"({name}) of each model's answers, its gain over the base model's answer to the same prompt (paired), KL to the "
             "base model on the same answers, and the true-reward judge's net win; 95% intervals over prompts and seeds.", "",
             "| method | pairs per seed | steps per seed | true reward | gain over base | KL (nats) | net win (pp) |",
             "|---|---|---|---|---|---|---|",
             f"| base | | | {_ci(entries['base']['all'])} | | | |"]
    for variant in (v for v in result["methods"] if v != "base"):
        if variant not in entries:
            continue
        net = result["vs_base"].get(variant, {}).get(name, {}).get("net", {}).get("all")
        lines.append(f"| {variant} | {_budget(result['budget'][variant])} | {_ci(entries[variant]['mean']['all'])} | "
                     f"{_ci(entries[variant]['gain']['all'])} | {_ci(result['kl'].get(variant, {}).get('all'), 2)} | "
                     f"{_ci(net, 1, 100)} |")
    for variant, why in result.get("left_out", {}).items():
        lines.append(f"| {variant} | not trained: {why} | | | | | |")
    lines += ["", "Equal budgets: " + ("every method trained on the same number of pairs and optimiser steps, seed by seed."
                                       if result.get("equal_budget") else "NO: the pairs or steps differ (see the table).")]
    timed = {v: minutes_per_seed(b) for v, b in result["budget"].items() if any(m is not None for m in b.get("minutes") or [])}
    if timed:
        lines += ["", "Wall time of each experiment, minutes, seed by seed (a seed's first experiment also runs the stages the "
                  "others take from DVC's run cache: generation, scoring, truth, the base model's answers): "
                  + "; ".join(f"{v} {t}" for v, t in timed.items()) + "."]
    if result.get("vs_dlma"):
        lines += ["", "DLMA minus each other method, paired by prompt and seed (true reward of the answers):", "",
                  "| method | DLMA - method |", "|---|---|"]
        for variant, entry in result["vs_dlma"].items():
            lines.append(f"| {variant} | {_ci(entry.get(f'true_{name}', {}).get('all'))} |")
    return lines + [""]


def margin_rows(rows: list[dict], roles: dict[str, list[str]]) -> list[dict]:
    """The margin presets' rows, plus the frontier's dlma and rlcd rows at the same beta and
    seeds: w = 0.2 (dlma's default) and w = 0 (RLCD) are the same training there, so the
    margin preset does not run them twice. Those rows name the preset they come from."""
    own = [r for r in rows if r["preset"] in roles["margin"]]
    settings = {(r["beta"], r["seed"]) for r in own if r["method"] != "base"}
    weights = {r["w"] for r in own if r["method"] != "base"}
    borrowed = [r | {"method": f"{r['method']} (from {r['preset']})"} for r in rows
                if r["preset"] in roles["frontier"] and r["method"] in ("dlma", "rlcd") and (r["beta"], r["seed"]) in settings
                and r["w"] not in weights]
    return own + borrowed


def frontier_lines(rows: list[dict], presets: list[str], key: str, header: str, missing: str) -> list[str]:
    pooled = [r for r in rows if r["preset"] in presets and r["seed"] == "all"]
    if not pooled:
        return [f"Not run yet: `dlma compare --preset {missing}`.", ""]
    lines = [f"| method | {header} | pairs | steps | true reward | gain over base | KL (nats) |", "|---|---|---|---|---|---|---|"]
    order = (lambda r: (r["method"] != "base", r.get(key) or 0)) if key == "w" else \
        (lambda r: (r["method"] != "base", r["method"], r.get(key) or 0))
    for r in sorted(pooled, key=order):
        if r["method"] == "base":
            lines.append(f"| base | | | | {_ci(r['true_reward'])} | | 0 |")
            continue
        lines.append(f"| {r['method']} | {r.get(key)} | {'/'.join(map(str, r['pairs']))} | {'/'.join(map(str, r['steps']))} | "
                     f"{_ci(r['true_reward'])} | {_ci(r['gain'])} | {_ci(r['kl'], 2)} |")
    return lines + [""]


def write_study(study: Path, *, model: str, defaults: dict | None = None) -> list[Path]:
    """Rebuild reports/<study>.{md,json} (and the frontier figure) from reports/<study>/*.json."""
    if defaults is None:
        from dlma.core.config import read_params_file

        defaults = read_params_file("params.yaml").get("train", {})
    found = {p.stem: json.loads(p.read_text()) for p in sorted(study.glob("*.json"))}
    results = {name: found[name] for name in [*PRESET_ORDER, *sorted(set(found) - set(PRESET_ORDER))] if name in found}
    rows = study_rows(results, defaults)
    roles = presets_by_role(results)
    experiments = results[roles["experiments"][0]] if roles["experiments"] else None
    written = []
    figure = None
    if roles["frontier"]:
        figure = frontier_figure(rows, roles["frontier"], study.parent / "figures" / f"{study.name}_frontier.png",
                                 f"{model}: true reward vs KL over beta")
        written.append(figure)
    summary = {"presets": {name: {k: r.get(k) for k in ("name", "seeds", "methods", "set", "grid", "minutes", "left_out",
                                                           "equal_budget")} for name, r in results.items()},
               "experiment_1": experiments.get("truth_agreement") if experiments else None,
               "rows": rows}
    out_json = study.parent / f"{study.name}.json"
    write_json(summary, out_json)
    lines = [f"# Study `{study.name}`", "", f"Model `{model}`. Presets run: "
             + ", ".join(f"`{n}` ({r['minutes']:.1f} min)" if r.get("minutes") else f"`{n}`" for n, r in results.items()) + ".", "",
             "## Experiment 1: which labeller orders generated pairs as the true reward does", ""]
    lines += experiment_one_lines(experiments.get("truth_agreement") if experiments else None)
    lines += ["## Experiment 2: aligned against base, and against the baselines", ""]
    lines += experiment_two_lines(experiments, defaults) if experiments else ["Not run yet: `dlma compare --preset controlled`.", ""]
    lines += ["## Reward against KL over beta (the DPO paper's frontier)", ""]
    if figure is not None:
        lines += [f"![frontier](figures/{figure.name})", ""]
    lines += frontier_lines(rows, roles["frontier"], "beta", "beta", "frontier")
    lines += ["## The margin weight w at the paper's beta (w = 0 is RLCD: plain DPO on the same pairs)", ""]
    lines += frontier_lines(margin_rows(rows, roles) if roles["margin"] else [], roles["margin"] + roles["frontier"], "w", "w",
                            "margin")
    out_md = study.parent / f"{study.name}.md"
    with atomic_path(out_md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return [out_json, out_md, *written]
