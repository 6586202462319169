"""`dlma.core.launch.die_with_dvc`: a stage started under DVC dies with the dvc process, even
when the parent's own parent handed it an ignored SIGTERM (which survives exec), and even when
the shell DVC runs the command through forks instead of exec'ing (Debian's dash, DVC's shell
when SHELL is unset): that shell outlives dvc, so the parent-death signal alone never comes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")

# The "dvc" stand-in starts the stage's command and waits on it.
PARENT = textwrap.dedent("""
    import json, subprocess, sys
    subprocess.Popen(json.loads(sys.argv[1])).wait()
""")
# The stage calls die_with_dvc, prints its pid (on the parent's stdout, which it shares) and
# execs into a sleep of argv[1] seconds, as the launcher execs into the stage.
STAGE = textwrap.dedent("""
    import os, sys
    from dlma.core.launch import die_with_dvc
    assert die_with_dvc()
    print(os.getpid(), flush=True)
    os.execv(sys.executable, [sys.executable, "-c", f"import time; time.sleep({sys.argv[1]})"])
""")


def stage_command(through: str, seconds: int) -> list[str]:
    direct = [sys.executable, "-c", STAGE, str(seconds)]
    if through == "direct":  # dvc -> stage (bash -c execs a single command)
        return direct
    # dvc -> sh -c -> stage: `; exit $?` keeps any shell from exec'ing, as dash never does
    return ["/bin/sh", "-c", '"$0" -c "$1" "$2"; exit $?', *direct[:1], *direct[2:]]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def wait_gone(pids: list[int], what: str, seconds: float = 10) -> None:
    deadline = time.time() + seconds
    while any(alive(pid) for pid in pids):
        assert time.time() < deadline, f"{what} ({[p for p in pids if alive(p)]}) still runs"
        time.sleep(0.05)


def start_parent(through: str, seconds: int, sigterm: str = "default") -> tuple[subprocess.Popen, int]:
    def start():
        os.setsid()  # its own group: killing the parent must not reach the stage through the group
        if sigterm == "ignored":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    env = os.environ | {"PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, json.dumps(stage_command(through, seconds))],
                              stdout=subprocess.PIPE, text=True, env=env, preexec_fn=start)
    return parent, int(parent.stdout.readline())


@pytest.mark.parametrize("through", ["direct", "forking shell"])
@pytest.mark.parametrize("sigterm", ["default", "ignored"])
def test_stage_dies_with_dvc(sigterm, through):
    """SIGKILL of the parent alone stops the stage within seconds, and with it the watchdog.
    `ignored`: the parent was started with SIGTERM ignored (as some CI runners and job wrappers
    do); without restoring the default action the stage would run on. `forking shell`: the
    parent runs the stage through `sh -c` that forks and outlives the parent."""
    parent, stage = start_parent(through, 120, sigterm)
    watchdogs = children(stage)
    try:
        time.sleep(0.5)  # into the exec
        assert alive(stage)
        assert len(watchdogs) == (1 if through == "forking shell" else 0)
        parent.kill()
        parent.wait()
        wait_gone([stage], "the stage, after its parent was killed,")
        wait_gone(watchdogs, "the watchdog, after the stage ended,")
    finally:
        for pid in [stage, *watchdogs]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_watchdog_ends_with_the_stage():
    """A stage that ends by itself takes its watchdog with it, and the parent lives on: the
    watchdog never outlives the process it watches for (it could signal a reused pid)."""
    parent, stage = start_parent("forking shell", 1)
    (watchdog,) = children(stage)
    try:
        assert parent.wait(timeout=30) == 0
        wait_gone([watchdog], "the watchdog, after the stage ended,")
    finally:
        for pid in [stage, watchdog]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_dvc_process_skips_the_shells_in_between():
    """From a process run by `sh -c` under `bash -c` under this test, the dvc process found is
    this test's (the nearest ancestor that is not a shell running a command)."""
    script = "from dlma.core.launch import dvc_process; print(dvc_process())"
    inner = f'"{sys.executable}" -c "{script}"; exit $?'
    out = subprocess.run(["/bin/bash", "-c", f"/bin/sh -c '{inner}'; exit $?"], capture_output=True, text=True,
                         check=True, env=os.environ | {"PYTHONPATH": str(REPO)})
    assert int(out.stdout) == os.getpid()
