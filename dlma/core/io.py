"""Atomic writes of Parquet, JSON and CSV outputs.

DVC caches whatever sits at an output path when a stage ends, so a crash must never leave
a half-written file there: everything is written to a hidden temporary file in the same
folder and moved into place with os.replace (atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import polars as pl

from dlma.core.parallel import is_main_process


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success move it onto `path`, else delete it.

    In a multi-process run (dlma.core.parallel) only the main process writes: every
    process holds the gathered results, the others' copies are written to a scratch file
    and dropped, so no two processes race for one output."""
    if not is_main_process():
        with tempfile.TemporaryDirectory(prefix="dlma-not-main-") as scratch:
            yield Path(scratch) / Path(path).name
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_parquet(frame: pl.DataFrame, path: str | os.PathLike) -> None:
    # Fixed compression settings: the same frame always gives the same bytes (tested).
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp, compression="zstd", compression_level=3, statistics=True)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; DVC metrics readers choke on them
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(data: dict, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(data), indent=2, sort_keys=False) + "\n")


def write_csv(frame: pl.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        frame.write_csv(tmp)
