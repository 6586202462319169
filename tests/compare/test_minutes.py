"""Each experiment's wall time, recorded by the commit it ran on (dlma/compare/runner.py):
what `dlma compare --resume` adds for the experiments it keeps."""

from __future__ import annotations

import logging
import subprocess

from dlma.compare.runner import MINUTES_LEDGER, record_minutes, recorded_minutes


def git(root, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=root, check=True, capture_output=True)


def test_times_are_kept_by_commit_and_a_rerun_replaces_its_own(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("a")
    git(tmp_path, "add", "a.txt")
    git(tmp_path, "commit", "-qm", "one")
    assert recorded_minutes(tmp_path) == {}  # nothing recorded yet, no ledger file
    record_minutes(tmp_path, "c-dlma-s0", 12.3456)
    record_minutes(tmp_path, "c-rlcd-s0", 4.5)
    record_minutes(tmp_path, "c-dlma-s0", 11.0)  # the experiment ran again: its last time counts
    assert recorded_minutes(tmp_path) == {"c-dlma-s0": 11.0, "c-rlcd-s0": 4.5}
    (tmp_path / "a.txt").write_text("b")
    git(tmp_path, "commit", "-qam", "two")
    assert recorded_minutes(tmp_path) == {}  # another commit: its experiments are other experiments
    record_minutes(tmp_path, "c-dlma-s0", 2.0)
    git(tmp_path, "checkout", "-q", "HEAD~1")
    assert recorded_minutes(tmp_path) == {"c-dlma-s0": 11.0, "c-rlcd-s0": 4.5}  # the first commit's are still there


def test_an_unreadable_ledger_is_said_and_started_again(tmp_path, caplog):
    git(tmp_path, "init", "-q")
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "one")
    (tmp_path / MINUTES_LEDGER).parent.mkdir(parents=True)
    (tmp_path / MINUTES_LEDGER).write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert recorded_minutes(tmp_path) == {}
    assert "unreadable" in caplog.text and str(MINUTES_LEDGER) in caplog.text
    record_minutes(tmp_path, "x-dlma-s0", 1.0)
    assert recorded_minutes(tmp_path) == {"x-dlma-s0": 1.0}
