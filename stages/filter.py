"""Stage `filter`: scored samples -> preference pairs (chosen, rejected, margin).

    python -m stages.filter --scored data/scored.parquet --out data/preferences.parquet --report reports/filter.json
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
import typer

from dlma.core.config import load_section
from dlma.core.errors import DlmaError
from dlma.core.io import write_json, write_parquet
from dlma.core.stage import stage_entry
from dlma.filter.params import FilterParams
from dlma.filter.preferences import build_preferences

log = logging.getLogger(__name__)


@stage_entry
def main(
    scored: Path = typer.Option(..., help="input: scored rows (Parquet)"),
    out: Path = typer.Option(..., help="output: preference pairs (Parquet)"),
    report: Path = typer.Option(..., help="output: what was dropped or swapped, by reason (JSON metrics)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Build (chosen, rejected, margin) pairs; count every dropped or swapped row."""
    params = load_section(FilterParams, "filter", params_file)
    if not scored.is_file():
        raise DlmaError(f"scored table '{scored}' does not exist; run the score stage first")
    preferences, summary = build_preferences(pl.read_parquet(scored), params, str(scored))
    write_parquet(preferences, out)
    write_json(summary, report)
    log.info("filter: %s", summary)


if __name__ == "__main__":
    typer.run(main)
