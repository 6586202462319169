"""Stage `recover`: clear what a killed `train` rerun left behind when the model it was
retraining is still in place.

    python -m stages.recover --model models/dlma --out reports/recover.json

A forced `train` rerun killed midway leaves an unfinished MLflow run and checkpoints; when
DVC then finds the model folder up to date (or restores it from its run cache), train does
not run again to resume them. This stage, always run and cheap, deletes those leftovers,
so the store keeps exactly one FINISHED run per version. A killed run of a *new* version
(no finished run yet) is left to resume on the next train.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from dlma.core.config import load_section
from dlma.core.io import write_json
from dlma.core.paths import repository_root
from dlma.core.stage import stage_entry
from dlma.model import read_card
from dlma.tracking import store
from dlma.tracking.params import TrackingParams

log = logging.getLogger(__name__)


@stage_entry
def main(
    model: Path = typer.Option(..., help="input: the trained model directory (its card names the version)"),
    out: Path = typer.Option(..., help="output: what was cleared (JSON)"),
    checkpoints: Path = typer.Option(..., help="where resumable checkpoints live (one folder per pipeline version)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Delete the unfinished run and checkpoints of a version whose model is in place."""
    version = read_card(model)["version"]
    experiment_id = store.configure(load_section(TrackingParams, "tracking", params_file), repository_root())
    cleared = store.clear_interrupted(experiment_id, version, checkpoints / version)
    write_json({"version": version, "cleared": cleared}, out)
    log.info("recover: %s", cleared or "nothing to clear")


if __name__ == "__main__":
    typer.run(main)
