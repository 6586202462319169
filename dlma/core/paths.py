"""Where the repository is, and what a relative data path in params means.

DVC runs queued experiments in copies of the repository under `.dvc/tmp/exps`. A relative
path that stays inside the repository means the experiment's own copy of that file; one
that leaves it (`../shared/data/...`) means the same file as in the user's repository, so
it is resolved against the repository the experiment came from, not against the copy
(where it would not exist, and a set would silently be "not found").
"""

from __future__ import annotations

import os
from pathlib import Path

_EXPERIMENT_COPY = os.sep.join(["", ".dvc", "tmp", "exps", ""])
_PATH_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".gz", ".gguf")


def workspace_root(start: Path | None = None) -> Path:
    """The directory DVC runs this stage in: the repository, or an experiment's copy of it."""
    root = os.environ.get("DVC_ROOT")
    if not root:
        here = (start or Path.cwd()).resolve()
        root = next((str(p) for p in (here, *here.parents) if (p / ".dvc").is_dir()), str(here))
    return Path(root).resolve()


def repository_root(start: Path | None = None) -> Path:
    """The user's repository, also when DVC runs the stage in a temporary copy of it."""
    root = str(workspace_root(start))
    if _EXPERIMENT_COPY in root + os.sep:
        root = (root + os.sep).split(_EXPERIMENT_COPY)[0]
    return Path(root)


def looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.lower().endswith(_PATH_SUFFIXES) or Path(source).exists()


def resolve_source(source: str) -> str:
    """A data path from params, made to mean the same file in an experiment's copy as in
    the repository (see the module doc). Hub ids and absolute paths pass through."""
    if not looks_like_path(source):
        return source  # a hub id
    path = Path(source).expanduser()
    if path.is_absolute():
        return str(path)
    workspace = workspace_root()
    if (workspace / path).resolve().is_relative_to(workspace):
        return source
    return str((repository_root() / path).resolve())


def _pipeline_vars(root: Path | None) -> list:
    """The `vars` entries of the repository's dvc.yaml."""
    import yaml

    from dlma.core.errors import DlmaError

    dvc_file = (root or repository_root()) / "dvc.yaml"
    try:
        pipeline = yaml.safe_load(dvc_file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DlmaError(f"cannot read '{dvc_file}' ({exc}); run this command in the project's repository") from None
    return [entry for entry in pipeline.get("vars") or [] if isinstance(entry, dict)]


def pipeline_path(name: str, root: Path | None = None) -> Path:
    """A pipeline file as dvc.yaml names it (`vars: paths: <name>`), relative to the
    repository root: dvc.yaml is the one place a path is written, and commands that read the
    pipeline's outputs (`dlma compare`, `dlma export`) take it from there."""
    from dlma.core.errors import DlmaError

    for entry in _pipeline_vars(root):
        if name in (entry.get("paths") or {}):
            return Path(entry["paths"][name])
    raise DlmaError(f"'{(root or repository_root()) / 'dvc.yaml'}' names no path '{name}' under vars: paths")


def pipeline_rounds(root: Path | None = None) -> dict:
    """The later rounds dvc.yaml has stages for (`vars: rounds_later`): {round: its paths}."""
    for entry in _pipeline_vars(root):
        if "rounds_later" in entry:
            return dict(entry["rounds_later"])
    return {}
