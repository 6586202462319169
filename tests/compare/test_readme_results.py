"""The README's account of the controlled task matches the committed results
(reports/controlled.json and .md): its tables are the report's, and the numbers its plain
conclusions quote are the study's. A rerun that moves a number fails here until the README
says what the new results say."""

from __future__ import annotations

import json

from tests.dvcrepo import REPO

README = (REPO / "README.md").read_text()
STUDY = json.loads((REPO / "reports" / "controlled.json").read_text())


def conclusions() -> str:
    start = README.index("**What it says, plainly:**")
    return " ".join(README[start:README.index("#### Experiment 1", start)].split())  # as read, line breaks aside


def row(preset: str, method: str, seed="all") -> dict:
    return next(r for r in STUDY["rows"] if r["preset"] == preset and r["method"] == method and r["seed"] == seed)


def interval(entry: dict) -> str:
    return f"{entry['mean']:+.3f} [{entry['ci_low']:+.3f}, {entry['ci_high']:+.3f}]"


def test_every_table_row_of_the_committed_report_is_in_the_readme():
    rows = [line for line in (REPO / "reports" / "controlled.md").read_text().splitlines() if line.startswith("| ")]
    assert len(rows) > 20  # experiment 1, experiment 2, the frontier and the margin tables
    assert [line for line in rows if line not in README] == []


def test_the_conclusions_quote_the_study():
    text = conclusions()
    one = STUDY["experiment_1"]
    contrastive, fitted = one["contrastive"], one["reward_model"]
    assert f"{contrastive['mean'] * 100:.1f}% [{contrastive['ci_low'] * 100:.1f}, {contrastive['ci_high'] * 100:.1f}]" in text
    assert f"{fitted['mean'] * 100:.1f}%" in text and f"On {contrastive['n']} generated pairs" in text
    dlma, base = row("controlled", "dlma"), row("controlled", "base")
    assert f"**{interval(dlma['gain'])}**" in text  # DLMA's gain over base, the headline
    assert interval(dlma["true_reward"]) in text and interval(base["true_reward"]) in text
    per_seed = ", ".join(f"{row('controlled', 'dlma', seed)['gain']['mean']:+.3f}" for seed in STUDY["presets"]["controlled"]["seeds"])
    assert f"positive in every seed ({per_seed})" in text
    half_width = (dlma["gain"]["ci_high"] - dlma["gain"]["ci_low"]) / 2
    assert f"+-{half_width:.3f}" in text  # the size the interval reached, against the +-0.05 asked for
