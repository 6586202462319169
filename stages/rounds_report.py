"""Stage `rounds_report`: every round side by side (reports/rounds.md, reports/figures/rounds.png).

    python -m stages.rounds_report --first reports/metrics.json --first-train reports/train.json \
        --rounds reports/rounds --report reports/rounds.md --figure reports/figures/rounds.png
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from dlma.core.config import load_section
from dlma.core.errors import DlmaError
from dlma.core.io import atomic_path
from dlma.core.stage import stage_entry
from dlma.rounds.params import RoundsParams
from dlma.rounds.report import figure, markdown, round_rows

log = logging.getLogger(__name__)


@stage_entry
def main(
    first: Path = typer.Option(..., help="input: round 1's evaluation (the evaluate stage's metrics, JSON)"),
    first_train: Path = typer.Option(None, help="input: round 1's training report (pairs and steps it trained on, JSON)"),
    rounds: Path = typer.Option(..., help="input: the folder of the later rounds' metrics (<k>.json)"),
    report: Path = typer.Option(..., help="output: the rounds side by side (Markdown)"),
    figure_path: Path = typer.Option(..., "--figure", help="output: each measure by round (PNG)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Tabulate and plot each round's measures against the base model and the round before."""
    count = load_section(RoundsParams, "rounds", params_file).count
    if not first.is_file():
        raise DlmaError(f"'{first}' does not exist; run the evaluate stage first")
    later = [json.loads(path.read_text()) for path in sorted(rounds.glob("*.json"))] if rounds.is_dir() else []
    if first_train is not None and not first_train.is_file():
        raise DlmaError(f"'{first_train}' does not exist; run the train stage first")
    trained = json.loads(first_train.read_text()) if first_train is not None else None
    rows = round_rows(json.loads(first.read_text()), later, trained)
    with atomic_path(report) as tmp:
        tmp.write_text(markdown(rows, count))
    figure(rows, figure_path)
    log.info("rounds report: %d round(s) in %s", len(rows), report)


if __name__ == "__main__":
    typer.run(main)
