"""The label-agreement table of the reports (evaluate's report.md and compare.md)."""

from __future__ import annotations

# labeller key in reports/agreement.json -> how the table names it
LABELLERS = {
    "contrastive": "contrastive score (DLMA, base model)",
    "likelihood": "likelihood under p+ (base model)",
    "ab_judge": "A/B judge (RLAIF, base model)",
    "reward_model": "reward model (evaluate.reward_model)",
    "judge_model": "second judge model (evaluate.judge_model)",
}


def _pct(value) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.1f}%"


def _pp(value) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:+.1f} pp"


def _note(entry: dict) -> str:
    if "order_consistency" in entry and "counted" in entry:  # an A/B judge: is it judging?
        rule = ("only those counted" if entry.get("rule") == "consistent" else
                "every pair counted by P(A), P(B) averaged over both orders")
        return (f"both orders agree on {_pct(entry['order_consistency'])} ({rule}); says \"A\" in both orders "
                f"{_pct(entry['prefers_a_both_orders'])}; mass on A/B {_pct(entry['answer_token_mass'])}")
    return ""


def agreement_lines(agreement: dict) -> list[str]:
    """One table: per set, every labeller's accuracy on the human labels with its 95% interval,
    and contrastive minus that labeller, paired on the same pairs, with the interval of the
    difference."""
    lines = ["| set | labeller | accuracy [95% CI] | pairs counted | contrastive - labeller, paired [95% CI] | is it judging? |",
             "|---|---|---|---|---|---|"]
    for set_name, summary in agreement.items():
        if "skipped" in summary:
            lines.append(f"| {set_name} | skipped: {summary['skipped']} | | | | |")
            continue
        for key, label in LABELLERS.items():
            entry = summary.get(key)
            if entry is None:
                continue
            if "skipped" in entry:
                lines.append(f"| {set_name} | {label} | skipped: {entry['skipped']} | | | |")
                continue
            difference = summary.get(f"contrastive_minus_{key}")
            diff_text = ("" if not difference else "n/a" if not difference["n"] else
                         f"{_pp(difference['difference'])} [{_pp(difference['ci_low'])}, {_pp(difference['ci_high'])}]")
            accuracy = _pct(entry["accuracy"])
            if accuracy != "n/a":
                accuracy += f" [{_pct(entry['ci_low'])}, {_pct(entry['ci_high'])}]"
            lines.append(f"| {set_name} | {label} | {accuracy} "
                         f"| {entry.get('counted', summary['rows'])} of {summary['rows']} | {diff_text} | {_note(entry)} |")
        extra = [f"chosen answer is the shorter one in {_pct(summary['chosen_is_shorter'])} of pairs"]
        if summary.get("dropped_identical_pairs"):
            extra.append(f"{summary['dropped_identical_pairs']} pair(s) with chosen = rejected dropped")
        lines.append(f"| {set_name} | ({'; '.join(extra)}) | | | | |")
    return lines + ["", "Chance is 50%. An A/B judge labels by score.ab_rule: `average` (the paper's RLAIF) every pair by "
                    "the probabilities of A and B averaged over both orders, `consistent` only the pairs where both orders "
                    "pick the same answer. One that rarely agrees with itself, says \"A\" whatever the order or puts little mass on A/B is not "
                    "judging. A likelihood accuracy near the \"chosen is shorter\" share mostly rewards length.", ""]
