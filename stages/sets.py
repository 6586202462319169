"""Stage `sets`: locate every evaluation set named in params and record its content hash.

    python -m stages.sets --out data/eval_sets.json

`evaluate` depends on that file, so editing a set (even one outside the repository)
reruns the evaluation. Always run (cheap), like the `model` stage: downstream reruns only
when an identity changed. A missing set is an error unless marked `optional: true`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from dlma.core.io import write_json
from dlma.core.stage import stage_entry
from dlma.data.sets import EvalSets, identity

log = logging.getLogger(__name__)


@stage_entry
def main(
    out: Path = typer.Option(..., help="output: identity of each evaluation set (JSON)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Locate the evaluation sets and record their content hashes."""
    found = identity(EvalSets.load(params_file))
    write_json(found, out)
    log.info("evaluation sets: %s", {name: entry.get("skipped", "ok") for name, entry in found.items()})


if __name__ == "__main__":
    typer.run(main)
