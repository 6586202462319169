"""`dlma export`: the aligned model as a standalone, merged Hugging Face model folder.

    dlma export --out exported                   # the workspace's model, models/dlma
    dlma export --alias champion --out exported  # a registered version, by alias (latest: the newest)
    dlma export --version 3 --out exported       # ... or by number
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from dlma.core.config import load_section
from dlma.core.errors import DlmaError
from dlma.core.paths import pipeline_path, repository_root
from dlma.core.stage import stage_entry
from dlma.export.merge import write_export
from dlma.export.source import from_folder, from_registry
from dlma.tracking.params import TrackingParams

log = logging.getLogger(__name__)


@stage_entry
def main(
    out: Path = typer.Option(..., help="output: the exported model folder"),
    from_dir: Path = typer.Option(None, "--from", help="a model folder the train stage wrote (default: the pipeline's, models/dlma)"),
    version: int = typer.Option(None, help="a registered version of tracking.model_name"),
    alias: str = typer.Option(None, help="a registry alias (champion, an experiment's name; latest = the newest version)"),
    dtype: str = typer.Option("float32", help="dtype of the saved weights: float32 (as trained) | bfloat16 | float16"),
    overwrite: bool = typer.Option(False, help="replace --out if it exists"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file (its tracking section)"),
) -> None:
    """Merge the aligned model into a standalone Hugging Face folder that plain transformers loads."""
    if sum(x is not None for x in (from_dir, version, alias)) > 1:
        raise DlmaError("give one of --from, --version and --alias")
    tracking = load_section(TrackingParams, "tracking", params_file)
    root = repository_root()
    if version is not None or alias is not None:
        source = from_registry(tracking, root, version=version, alias=alias)
    else:
        source = from_folder(from_dir or root / pipeline_path("model_dir", root), tracking, root)
    write_export(source, out, dtype=dtype, overwrite=overwrite)
    print(f"exported {source.described_as} to {out}")


if __name__ == "__main__":
    typer.run(main)
