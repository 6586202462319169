"""The guard against pygit2's lost wake-up (dlma/compare/gitblob.py), on pygit2's own reader."""

from __future__ import annotations

import io
import subprocess
import threading
from queue import Queue

import pytest

pygit2 = pytest.importorskip("pygit2")
from pygit2.blob import _BlobIO  # noqa: E402  (the private class the guard patches: pinned here)

from dlma.compare.gitblob import guard_blob_reads  # noqa: E402


def stalled_reader() -> _BlobIO:
    """A reader in the state the race leaves: a chunk in the one-slot queue, the event
    cleared after it was set, the writer not finished (its thread would wait on the full queue)."""
    reader = _BlobIO.__new__(_BlobIO)
    io.RawIOBase.__init__(reader)
    reader._queue, reader._ready, reader._writer_closed, reader._chunk = Queue(maxsize=1), threading.Event(), threading.Event(), None
    reader._queue.put(b"chunk")
    reader._thread = threading.Thread(target=lambda: None)  # what close() joins: a writer that has ended
    reader._thread.start()
    return reader


def read_in_thread(readinto, reader) -> tuple[threading.Thread, dict]:
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("n", readinto(reader, bytearray(16))), daemon=True)
    thread.start()
    return thread, result


def test_the_guarded_reader_survives_a_lost_wake_up():
    assert guard_blob_reads() and guard_blob_reads()  # idempotent: one wrapper, around pygit2's method
    original = _BlobIO.readinto.__wrapped__
    assert not getattr(original, "dlma_nudged", False)
    # pygit2's own reader waits for good in that state: the race hangs it.
    reader = stalled_reader()
    thread, result = read_in_thread(original, reader)
    thread.join(0.5)
    assert thread.is_alive() and not result
    reader._ready.set()  # the wake-up it lost: it then reads the chunk and returns
    thread.join(5)
    assert result == {"n": 5}
    # The guarded reader wakes itself and reads the chunk.
    guarded = stalled_reader()
    thread, result = read_in_thread(_BlobIO.readinto, guarded)
    thread.join(5)
    assert not thread.is_alive() and result == {"n": 5}
    for stalled in (reader, guarded):  # the writer ends: their close() (guarded too) can return
        stalled._writer_closed.set()
        stalled.close()


def test_guarded_reads_return_a_committed_blob_whole(tmp_path):
    guard_blob_reads()
    content = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and more: many chunks through the queue
    (tmp_path / "big.bin").write_bytes(content)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "big.bin"], check=True)
    subprocess.run([*git, "commit", "-qm", "blob"], check=True)
    blob = pygit2.Repository(str(tmp_path)).revparse_single("HEAD:big.bin")
    for _ in range(20):  # the race is rare: read it many times
        with pygit2.BlobIO(blob) as handle:
            assert handle.read() == content
    with pygit2.BlobIO(blob) as handle:  # a partial read, then close: the writer is drained
        assert handle.read(10) == content[:10]
