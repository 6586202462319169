"""What every stage shares: logging and turning DlmaError into a clear exit code 2."""

from __future__ import annotations

import functools
import logging
import os
import resource
import sys
import time

import typer

from dlma.core.errors import DlmaError


def setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("DLMA_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,  # a fresh handler per stage call (tests call several in one process)
    )
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def disk_full(exc: BaseException) -> str | None:
    """What said the disk is full, anywhere in the exception's chain (an OSError ENOSPC, or
    SQLite's "database or disk is full" wrapped by SQLAlchemy and MLflow), else None."""
    import errno

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return f"{type(exc).__name__}: {exc.strerror or exc}"
        if "database or disk is full" in str(exc):
            return "SQLite: database or disk is full"
        exc = exc.__cause__ or exc.__context__
    return None


def stage_entry(func):
    """Wrap a stage's main(): log its time, and print DlmaError as one line, exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        setup_logging()
        log = logging.getLogger(func.__module__)
        started = time.perf_counter()
        try:
            result = func(*args, **kwargs)
        except DlmaError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(code=2) from None
        except Exception as exc:
            full = disk_full(exc)
            if full is None:
                raise
            print(f"error: the disk is full ({full}); free space, then run the stage again: its outputs are written "
                  "atomically, so nothing half-written was left", file=sys.stderr)
            raise typer.Exit(code=2) from None
        # Peak resident memory of this process (ru_maxrss is in KiB on Linux).
        log.info("done in %.1f s, peak RSS %.2f GiB", time.perf_counter() - started,
                 resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        return result

    return wrapper
