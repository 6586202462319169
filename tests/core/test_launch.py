"""`dlma.core.launch.die_with_parent`: a stage started under DVC dies with its parent, even
when the parent's own parent handed it an ignored SIGTERM (which survives exec)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")

# The "dvc" stand-in starts the "stage" and waits. The stage calls die_with_parent, prints its
# pid (on the parent's stdout, which it shares) and execs into a long sleep, as the launcher
# execs into the stage.
PARENT = textwrap.dedent("""
    import subprocess, sys
    subprocess.Popen([sys.executable, "-c", sys.argv[1]]).wait()
""")
STAGE = textwrap.dedent("""
    import os, sys
    from dlma.core.launch import die_with_parent
    assert die_with_parent()
    print(os.getpid(), flush=True)
    os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(120)"])
""")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sigterm", ["default", "ignored"])
def test_stage_dies_with_its_parent(sigterm):
    """SIGKILL of the parent alone stops the stage within seconds. `ignored`: the parent was
    started with SIGTERM ignored (as some CI runners and job wrappers do); without restoring
    the default action the death signal would be dropped and the stage would run on."""

    def start():
        os.setsid()  # its own group: killing the parent must not reach the stage through the group
        if sigterm == "ignored":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    env = os.environ | {"PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, STAGE], stdout=subprocess.PIPE, text=True, env=env,
                              preexec_fn=start)
    stage = int(parent.stdout.readline())
    try:
        time.sleep(0.5)  # into the exec
        assert alive(stage)
        parent.kill()
        parent.wait()
        deadline = time.time() + 10
        while alive(stage):
            assert time.time() < deadline, f"the stage (pid {stage}) runs on after its parent was killed"
            time.sleep(0.05)
    finally:
        if alive(stage):
            os.kill(stage, signal.SIGKILL)
