"""A guard against a lost wake-up in pygit2's blob reader, which DVC uses to read files of
a git revision (`DVCFileSystem(rev=...)`: each experiment's dvc.lock and reports).

pygit2's `_BlobIO` (1.21) streams a blob through a writer thread and a one-slot queue. Its
`readinto` and `close` wait on an event with no timeout after clearing it; when the writer
puts a chunk and sets the event between the reader's "queue empty?" check and its clear(),
the wake-up is lost: the reader waits forever while the writer waits on the full queue.
Measured here: `dlma compare --preset controlled` hung for good (0% CPU) reading the fifth
experiment's dvc.lock, after 50 minutes of runs. pygit2's fix of #1488 (close draining the
queue) does not cover it.

The guard wakes the waiting reader every `NUDGE_SECONDS` while a read or close is under
way. A spurious wake-up is harmless: both loops check the queue again and wait on; a lost
one now costs at most that long. Patched once per process, without changing pygit2's code.
"""

from __future__ import annotations

import functools
import threading

NUDGE_SECONDS = 0.05


def _nudged(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        done = threading.Event()
        ready = self._ready

        def nudge() -> None:
            while not done.wait(NUDGE_SECONDS):
                ready.set()

        thread = threading.Thread(target=nudge, name="dlma-blobio-nudge", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no new threads at interpreter shutdown (a close from a finaliser)
            return method(self, *args, **kwargs)
        try:
            return method(self, *args, **kwargs)
        finally:
            done.set()
            thread.join()

    wrapper.dlma_nudged = True
    return wrapper


def guard_blob_reads() -> bool:
    """Patch pygit2's blob reader (idempotent). Returns whether it is patched; False where
    pygit2 is absent or its reader no longer has the parts the guard relies on."""
    try:
        from pygit2.blob import _BlobIO
    except ImportError:
        return False
    if getattr(_BlobIO.readinto, "dlma_nudged", False):
        return True
    if not all(hasattr(_BlobIO, name) for name in ("readinto", "close")):
        return False
    _BlobIO.readinto = _nudged(_BlobIO.readinto)
    _BlobIO.close = _nudged(_BlobIO.close)
    return True
