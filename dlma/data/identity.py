"""The identity of a data source (`data.source`, `human.source`): what DVC needs to rerun the
stages that read it exactly when it changed, for a local file or a `datasets` hub id alike.

A file is named by its content hash. A hub data set (which DVC cannot track as a path) is
loaded once through `datasets` (from the hub, or from the local datasets cache offline) and
named by the content hash of its Arrow files, its row count and, where the hub answers, its revision: the same role
the `model` stage plays for models.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from dlma.core.errors import DlmaError
from dlma.core.hashing import file_sha256
from dlma.core.paths import looks_like_path, resolve_source

log = logging.getLogger(__name__)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def hub_dataset(source: str, split: str, key: str):
    """Load a hub data set (or its cached copy); one clear line when neither is there."""
    try:
        import datasets

        return datasets.load_dataset(source, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for "not reachable / not cached"
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0") else ""
        raise DlmaError(
            f"{key} '{source}' split '{split}': not reachable on the hub{offline} and not in the local datasets cache "
            f"({_first_line(exc)}). Load it once where the hub is reachable (it is then cached), or give a local "
            "JSONL / CSV / Parquet file"
        ) from None


def _hub_revision(source: str) -> str | None:
    if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0"):
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(source, timeout=10).sha
    except Exception:  # noqa: BLE001 - the hub not reachable: the fingerprint of the cached copy stands alone
        return None


def source_identity(source: str, *, key: str, split: str = "train", optional: bool = False) -> dict:
    """{source, kind: file, sha256} | {source, kind: hub, split, sha256, rows, fingerprint, revision}
    | {source, skipped} (empty, or a missing file that is optional)."""
    if not source:
        return {"source": "", "skipped": f"{key} is empty"}
    if looks_like_path(source):
        path = Path(resolve_source(source))
        if not path.is_file():
            if optional:
                return {"source": source, "skipped": "file not found"}
            raise DlmaError(f"{key}: file '{source}' does not exist (resolved to '{path}')")
        return {"source": source, "kind": "file", "sha256": file_sha256(path)}
    dataset = hub_dataset(source, split, key)
    revision = _hub_revision(source)
    # The content hash of the Arrow files the data set was loaded from: datasets' own
    # fingerprint names the cache entry, and stays the same when a copy is replaced in place.
    content = hashlib.sha256()
    for entry in dataset.cache_files:
        content.update(file_sha256(entry["filename"]).encode())
    log.info("%s: hub data set %s[%s], %d rows, revision %s", key, source, split, dataset.num_rows,
             revision or "unknown (hub not reached: the cached copy)")
    return {"source": source, "kind": "hub", "split": split, "sha256": content.hexdigest(), "rows": dataset.num_rows,
            "fingerprint": dataset._fingerprint, "revision": revision}
