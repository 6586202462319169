"""Stage `model`: resolve `model.base` and write its identity (content hash) to a file.

    python -m stages.model --out data/model.json

Every stage that loads the model depends on that file, so changing the model (its
param, or the content of a local directory) reruns them. The stage is always run
(cheap: hashes are cached by size and mtime) and downstream stages rerun only when the
identity changed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from dlma.core.config import load_section
from dlma.core.io import write_json
from dlma.core.stage import stage_entry
from dlma.model import ModelParams, resolve_model

log = logging.getLogger(__name__)


@stage_entry
def main(
    out: Path = typer.Option(..., help="where to write the model identity (JSON)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Resolve the base model (materialising a GGUF once) and record its identity."""
    params = load_section(ModelParams, "model", params_file)
    resolved = resolve_model(params.base)
    log.info("model %s -> %s (%s, sha256 %s)", params.base, resolved.path, resolved.source, resolved.sha256[:12])
    write_json(resolved.identity(), out)


if __name__ == "__main__":
    typer.run(main)
