"""Figures (PNG via matplotlib) and the Markdown report a person opens first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from dlma.agreement.report import agreement_lines
from dlma.core.io import atomic_path


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # no display: render to files
    import matplotlib.pyplot as plt

    return plt


def score_histogram(scores: np.ndarray, bins: int = 30) -> pl.DataFrame:
    counts, edges = np.histogram(scores, bins=bins)
    return pl.DataFrame({"score": (edges[:-1] + edges[1:]) / 2, "count": counts.astype(np.int64)})


def save_score_histogram(histogram: pl.DataFrame, path: Path) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = float(histogram["score"][1] - histogram["score"][0]) if histogram.height > 1 else 1.0
    ax.bar(histogram["score"].to_numpy(), histogram["count"].to_numpy(), width=width * 0.9, color="#4c72b0")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("self-rewarding score R (nats)")
    ax.set_ylabel("pairs")
    ax.set_title("Score of the generated pairs (R > 0: p+ sample rated better)")
    _save(fig, plt, path)


def save_win_rates(win_rates: dict, path: Path) -> None:
    plt = _figure()
    judges = list(win_rates)
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.5 * max(len(judges), 1)))
    left = np.zeros(len(judges))
    for outcome, colour in (("win", "#55a868"), ("tie", "#cccccc"), ("lose", "#c44e52")):
        values = np.array([win_rates[j][outcome] for j in judges])
        ax.barh(judges, values, left=left, color=colour, label=outcome)
        left += values
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of prompts (aligned vs base)")
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, plt, path)


def save_train_curve(curve: pl.DataFrame, path: Path) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for column in ("loss", "rewards/accuracies", "rewards/margins"):
        if column in curve.columns:
            ax.plot(curve["step"].to_numpy(), curve[column].to_numpy(), label=column)
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    ax.set_title("Training curve (each batch measured before its update)")
    _save(fig, plt, path)


def _save(fig, plt, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _interval(summary: dict) -> str:
    return f"{_pct(summary['accuracy'])} [{_pct(summary['ci_low'])}, {_pct(summary['ci_high'])}]"


def _signed(value: float) -> str:
    return f"{100 * value:+.1f}pp"


def _difference(summary: dict) -> str:
    return f"{_signed(summary['difference'])} [{_signed(summary['ci_low'])}, {_signed(summary['ci_high'])}]"


def headline_lines(headline: dict) -> list[str]:
    """The verdict a reader takes away: only informative judges that are not the base model."""
    if not headline["judges"]:
        excluded = "; ".join(f"{name}: {why}" for name, why in headline.get("excluded", {}).items()) or "no comparing judge ran"
        return [f"**Headline: none.** {headline['none_because']}. Excluded: {excluded}.", ""]
    cells = [f"{name} net win {_difference({'difference': r['net'], 'ci_low': r['net_ci_low'], 'ci_high': r['net_ci_high']})} over {r['n']} prompts"
             for name, r in headline["judges"].items()]
    return ["**Headline (informative, independent judges; 95% bootstrap over prompts):** " + "; ".join(cells) + ".", ""]


def _value(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return _pct(value) if 0.0 <= value <= 1.0 else f"{value:.3f}"
    return str(value)


def _section_table(name: str, section) -> list[str]:
    """A judge's metrics section as a table: rows = first-level keys, columns = second-level."""
    if not isinstance(section, dict) or not section:
        return [f"- {name}: {_value(section)}", ""]
    if all(isinstance(v, dict) for v in section.values()):
        columns = list(dict.fromkeys(k for v in section.values() for k in v))
        lines = [f"| {name} | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        lines += [f"| {row} | " + " | ".join(_value(v.get(c)) for c in columns) + " |" for row, v in section.items()]
        return lines + [""]
    return [f"| {name} | value |", "|---|---|", *[f"| {k} | {_value(v)} |" for k, v in section.items()], ""]


def markdown_report(metrics: dict, agreement: dict, details: dict, judges: dict, samples: pl.DataFrame, figures: dict[str, str]) -> str:
    """The report; `judges` maps each judge that ran to its JudgeResult, rendered whatever it holds."""
    lines = ["# DLMA evaluation report", ""]
    lines += [f"Model: `{details['base']}` aligned with `{details['model_dir']}` (pipeline version `{details['version']}`).", ""]
    data = metrics["training_data"]
    by_pair = ", ".join(f"{name} {count}" for name, count in data["pairs_by_contrastive_pair"].items())
    lines += ["## What it was trained from", "",
              f"Prompt format: `{data['style']}` for p+ / p-, bare prompt x `{data['bare']}`. Generated pairs: {data['pairs']} "
              f"({by_pair}). Answers the model ended itself (EOS; the others were cut at generate.max_new_tokens and are "
              f"trained without an EOS): {_pct(data['complete_responses_share'])} of all, {_pct(data['complete_pos_share'])} "
              f"under p+, {_pct(data['complete_neg_share'])} under p-; pairs complete on both sides: {_pct(data['complete_pairs_share'])}.", ""]
    lines += ["## Does the self-rewarding score agree with human labels?", "",
              "Measured by the agreement stage (reports/agreement.json) on the human-labelled sets.", ""]
    lines += agreement_lines(agreement)
    lines += ["## Aligned versus base", "", f"Prompts: {details['eval_prompts']} (held-out split and extra sets; skipped sets: {details['skipped_prompt_sets'] or 'none'}; "
              f"prompts over generate.max_prompt_tokens skipped: {details.get('skipped_long_prompts', 0)}).", ""]
    lines += headline_lines(metrics["headline"])
    lines += ["| judge | what it is | win [95% CI] | tie | lose | net win (win - lose) [95% CI] | n | validity | informative |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, result in judges.items():
        if result.verdicts is None:
            continue
        r = metrics["win_rate"][name]
        validity = ", ".join(f"{k.replace('_', ' ')} {_value(v)}" for k, v in result.validity.items()) or "n/a"
        status = ("yes" if r["independent"] else "self-judge: never the headline") if r["informative"] else \
            "**not informative**: " + "; ".join(r["not_informative_because"])
        lines.append(f"| {name} | {details['judges'][name]} | {_pct(r['win'])} [{_pct(r['win_ci_low'])}, {_pct(r['win_ci_high'])}] "
                     f"| {_pct(r['tie'])} | {_pct(r['lose'])} | {_signed(r['net'])} [{_signed(r['net_ci_low'])}, {_signed(r['net_ci_high'])}] "
                     f"| {r['n']} | {validity} | {status} |")
    lines += [""]
    for name, result in judges.items():
        for section, values in result.metrics.items():
            lines += [f"### {name}: {section.replace('_', ' ')} ({details['judges'][name]})", ""]
            if section == "refusal_rule":  # the rule's check on its labelled sample
                lines += [f"On {values['n']} hand-labelled answers ({values['refusals']} refusals; `{values['sample']}`): accuracy "
                          f"{_interval(values['accuracy'])}, refusals caught {_interval(values['recall'])}, answers wrongly "
                          f"counted as refusals {_interval(values['false_refusal_rate'])}.", ""]
                continue
            lines += _section_table("model" if isinstance(values, dict) else section, values)
    lines += ["### Quality guards", "", "| model | perplexity under base | mean tokens | distinct-1 | distinct-2 |", "|---|---|---|---|---|"]
    for who in ("base", "aligned"):
        text = metrics["text"][who]
        lines.append(f"| {who} | {metrics['perplexity'][who]:.2f} | {text['mean_tokens']:.1f} | {text['distinct_1']:.3f} | {text['distinct_2']:.3f} |")
    kl = metrics.get("kl_to_base")
    if kl:
        lines += ["", f"KL(aligned || base), estimated on the aligned model's answers (mean summed log-ratio per answer): "
                  f"{kl['mean']:.3f} nats [{kl['ci_low']:.3f}, {kl['ci_high']:.3f}] over {kl['n']} prompts."]
    lines += [""]
    for title, path in figures.items():
        lines += [f"### {title}", "", f"![{title}]({path})", ""]
    lines += ["## Sample answers", ""]
    for row in samples.iter_rows(named=True):
        lines += [f"**[{row['set']}/{row['category']}] {row['prompt']}**", "",
                  "| base | aligned |", "|---|---|",
                  f"| {_cell(row['answer_base'])} | {_cell(row['answer_aligned'])} |", ""]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return (text or "(empty)").replace("|", "\\|").replace("\n", "<br>")[:600]
