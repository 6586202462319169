"""Stage `round_plan@k`: whether round k runs (k <= rounds.count), as a file of its own.

    python -m stages.round_plan --round 2 --out data/rounds/2.json

Round k's stage depends on this file, not on rounds.count: raising the count from 2 to 3
changes only round 3's plan, so only round 3 runs (rounds 2 and 1 stay as they are).
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from dlma.core.config import load_section
from dlma.core.errors import DlmaError
from dlma.core.io import write_json
from dlma.core.paths import pipeline_rounds
from dlma.core.stage import stage_entry
from dlma.rounds.params import RoundsParams

log = logging.getLogger(__name__)


@stage_entry
def main(
    round_number: int = typer.Option(..., "--round", help="the round this plan is for (2, 3, ...)"),
    out: Path = typer.Option(..., help="output: {round, active} (JSON)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Write whether round k runs."""
    rounds = load_section(RoundsParams, "rounds", params_file)
    most = 1 + len(pipeline_rounds())
    if rounds.count > most:
        raise DlmaError(f"rounds.count is {rounds.count}, but dvc.yaml has stages for {most} rounds; add entries to "
                        "`rounds_later` under its vars (each names the previous round's model and pairs)")
    write_json({"round": round_number, "active": round_number <= rounds.count}, out)
    log.info("round %d %s (rounds.count %d)", round_number, "runs" if round_number <= rounds.count else "does not run", rounds.count)


if __name__ == "__main__":
    typer.run(main)
