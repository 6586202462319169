"""Stage `sources`: record the identity of `data.source` and `human.source` (a file's content
hash, or a hub data set's fingerprint and revision).

    python -m stages.sources --out data/sources.json

`prepare` and `human` depend on that file instead of on the sources themselves, so a hub id
works as a source with the shipped dvc.yaml (DVC can only track paths), and a file outside
the repository is tracked too. Always run (a hash, or one cached load), like the `model`
stage: the stages downstream rerun only when an identity changed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from dlma.core.config import load_section
from dlma.core.io import write_json
from dlma.core.stage import stage_entry
from dlma.data.identity import source_identity
from dlma.data.params import DataParams, HumanParams

log = logging.getLogger(__name__)


@stage_entry
def main(
    out: Path = typer.Option(..., help="output: the identity of each data source (JSON)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Record the identity of the prompt source and of the human-labelled pairs."""
    data, human = load_section(DataParams, "data", params_file), load_section(HumanParams, "human", params_file)
    found = {"data": source_identity(data.source, key="data.source", split=data.split),
             "human": source_identity(human.source, key="human.source", optional=human.optional)}
    write_json(found, out)
    log.info("sources: %s", found)


if __name__ == "__main__":
    typer.run(main)
