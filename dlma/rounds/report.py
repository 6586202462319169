"""The rounds side by side: per round, each judge's measure against the base model and
against the round before, with intervals, the KL to the base model, as a Markdown table
(reports/rounds.md) and a figure of each measure by round (reports/figures/rounds.png).

Round 1 is the pipeline's own evaluation (reports/metrics.json): against the base model,
which is also the round before it.
"""

from __future__ import annotations

import math
from pathlib import Path

from dlma.core.io import atomic_path

TRUE_REWARD_KEYS = ("sentiment",)  # judges whose metrics carry a paired `gain` (dlma/truth)


def measures(metrics: dict) -> dict[str, dict]:
    """{measure: {mean, ci_low, ci_high}} of one evaluation: each true reward's paired gain,
    each comparing judge's net win rate, the KL to the base model."""
    out = {}
    for name in TRUE_REWARD_KEYS:
        gain = (metrics.get(name) or {}).get("gain")
        if gain:
            out[f"{name} gain"] = {"mean": gain["difference"], "ci_low": gain["ci_low"], "ci_high": gain["ci_high"]}
    for judge, entry in sorted((metrics.get("win_rate") or {}).items()):
        flag = "" if entry.get("informative") and entry.get("independent") else " (not a headline judge)"
        out[f"{judge} net win{flag}"] = {"mean": entry["net"], "ci_low": entry["net_ci_low"], "ci_high": entry["net_ci_high"]}
    kl = metrics.get("kl_to_base")
    if kl:
        out["KL to base (nats)"] = {"mean": kl["mean"], "ci_low": kl["ci_low"], "ci_high": kl["ci_high"]}
    return out


def round_rows(first: dict, later: list[dict], first_train: dict | None = None) -> list[dict]:
    """One row per round that ran: its measures against the base model and the round before,
    and the pairs and steps it trained on (round 1's from its training report `first_train`;
    without it, the pairs generated, as the evaluation records them)."""
    def against_previous(metrics: dict) -> dict:  # the KL is always to the base model: shown against the base only
        return {name: value for name, value in measures(metrics).items() if not name.startswith("KL")}

    trained = first_train or {"pairs": (first.get("training_data") or {}).get("pairs")}
    rows = [{"round": 1, "vs_base": measures(first), "vs_previous": against_previous(first),
             "pairs": trained.get("pairs"), "steps": trained.get("steps")}]
    for entry in sorted(later, key=lambda e: e["round"]):
        if not entry.get("active"):
            continue
        rows.append({"round": entry["round"], "vs_base": measures(entry["vs_base"]), "vs_previous": against_previous(entry["vs_previous"]),
                     "pairs": entry["train"].get("pairs"), "steps": entry["train"].get("steps"),
                     "settings": {k: entry[k] for k in ("start", "reference", "keep_pairs")}})
    return rows


def _cell(value: dict | None, kl: bool) -> str:
    if not value or value["mean"] is None or math.isnan(value["mean"]):
        return "-"
    digits = "{:+.2f}" if kl else "{:+.3f}"
    return f"{digits.format(value['mean'])} [{digits.format(value['ci_low'])}, {digits.format(value['ci_high'])}]"


def markdown(rows: list[dict], count: int) -> str:
    lines = ["# Rounds", ""]
    if len(rows) == 1:
        lines += [f"One round (rounds.count is {count}): the pipeline as published. `dvc exp run -S rounds.count=3` runs two more; "
                  "see README \"Iterative rounds\".", ""]
    settings = rows[-1].get("settings")
    if settings:
        lines += [f"Rounds 2 and on: start from `{settings['start']}`, reference `{settings['reference']}`, "
                  f"earlier pairs kept: {settings['keep_pairs']}. Intervals: 95% bootstrap over the evaluation prompts, "
                  "paired (the same prompts and sampling streams for both models).", ""]
    for against, title in (("vs_base", "against the base model"), ("vs_previous", "against the round before")):
        names = list(dict.fromkeys(name for row in rows for name in row[against]))
        if not names:
            lines += [f"## Each round {title}", "", "No measure: no judge in evaluate.judges compares two models' answers.", ""]
            continue
        lines += [f"## Each round {title}", "", "| round | pairs | steps | " + " | ".join(names) + " |",
                  "|---|---|---|" + "---|" * len(names)]
        for row in rows:
            cells = [_cell(row[against].get(name), name.startswith("KL")) for name in names]
            lines.append(f"| {row['round']} | {row.get('pairs') or '-'} | {row.get('steps') or '-'} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["![each measure by round](figures/rounds.png)", ""]
    return "\n".join(lines)


def figure(rows: list[dict], path: Path) -> None:
    """One panel per measure: its value by round against the base model (points with
    intervals), and against the round before (open markers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(name for row in rows for name in row["vs_base"]))
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4 * max(len(names), 1), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for against, marker, shift in (("vs_base", "o", -0.06), ("vs_previous", "s", 0.06)):
            points = [(row["round"] + shift, row[against][name]) for row in rows if name in row[against]]
            if not points:
                continue
            xs = [x for x, _ in points]
            ys = [p["mean"] for _, p in points]
            errors = [[p["mean"] - p["ci_low"] for _, p in points], [p["ci_high"] - p["mean"] for _, p in points]]
            ax.errorbar(xs, ys, yerr=errors, fmt=marker + ("-" if against == "vs_base" else "--"), capsize=3,
                        mfc="white" if against == "vs_previous" else None,
                        label="vs base" if against == "vs_base" else "vs round before")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("round")
        ax.set_xticks([row["round"] for row in rows])
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
