"""Start a model stage on one process or many: `run.processes` and `run.launcher` in
params.yaml decide, so `dvc exp run -S run.processes=8` is all a user changes on an
8-GPU machine.

    python -m dlma.core.launch --params params.yaml -- stages.generate --prompts ...

- 1 process: `python -m <stage> ...`, as before;
- torchrun: `torchrun --standalone --nproc_per_node N -m <stage> ...` (gloo on CPU, NCCL on
  GPU; works everywhere, and is what the tests use);
- accelerate: `accelerate launch --num_processes N [--config_file run.accelerate_config]
  -m <stage> ...`, for the FSDP / DeepSpeed configs in configs/accelerate/ (GPU).
The stages deal their batches over the processes (dlma.core.parallel).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dlma.core.config import load_section
from dlma.core.errors import DlmaError
from dlma.core.params import RunParams

# The shells DVC may run a stage's command through (`$SHELL -c`, /bin/sh when unset).
SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh", "mksh", "ash", "busybox", "fish"})


def command(params: RunParams, module: str, args: list[str]) -> list[str]:
    """The command line that runs `module` with `args` as `params` say."""
    if params.processes == 1:
        return [sys.executable, "-m", module, *args]
    if params.launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={params.processes}",
                "-m", module, *args]
    config = ["--config_file", params.accelerate_config] if params.accelerate_config else ["--multi_gpu"]
    return [sys.executable, "-m", "accelerate.commands.launch", *config, f"--num_processes={params.processes}",
            "-m", module, *args]


def main(argv: list[str]) -> None:
    usage = "usage: python -m dlma.core.launch [--params params.yaml] -- <stage module> [args...]"
    params_file = Path("params.yaml")
    if argv[:1] == ["--params"]:
        params_file, argv = Path(argv[1]), argv[2:]
    if argv[:1] != ["--"] or len(argv) < 2:
        sys.exit(usage)
    try:
        params = load_section(RunParams, "run", params_file)
    except DlmaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    cmd = command(params, argv[1], argv[2:])
    if os.environ.get("DVC_STAGE"):
        die_with_dvc()
    os.execv(cmd[0], cmd)  # the stage's exit code is this command's


def die_with_dvc() -> bool:
    """Under DVC: stop this process (SIGTERM) when the `dvc` process that started it dies, so a
    killed `dvc` leaves no stage running on (an orphaned train went on to register its model
    while the rerun registered it again). Called before the exec into the stage, or into
    torchrun / accelerate, which stop their workers on SIGTERM. Linux only; elsewhere a no-op.
    Returns whether it was set.

    DVC runs the command as `$SHELL -c "<cmd>"`. bash execs a single command, so dvc is the
    parent and the kernel's parent-death signal (PR_SET_PDEATHSIG, which survives exec) is
    enough. Debian's dash (/bin/sh, what DVC uses when SHELL is unset, as under some CI
    runners) forks instead: the shell outlives dvc, the signal never comes. Then a watchdog
    process waits on dvc itself (`watch_process`)."""
    if not sys.platform.startswith("linux"):
        return False
    import signal

    # An ignored or blocked SIGTERM survives exec: under a parent that ignores it (a CI runner,
    # `nohup`-style job wrappers) the death signal would be dropped and the orphan would train
    # on. A stage under DVC is meant to die with it, so take the default action back.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    if not _set_parent_death_signal(signal.SIGTERM):
        return False
    dvc = dvc_process()
    if dvc <= 1:  # dvc died before we looked: no signal will come
        os.kill(os.getpid(), signal.SIGTERM)
    elif dvc != os.getppid():
        return watch_process(dvc)
    return True


def dvc_process() -> int:
    """The pid of the process that started this one's command: the nearest ancestor that is
    not a `<shell> -c` it ran through. 1 when that process is gone (the orphan was adopted)."""
    pid = os.getppid()
    while pid > 1 and _runs_shell_command(pid):
        pid = _parent_pid(pid)
    return pid


def watch_process(pid: int) -> bool:
    """Fork a watchdog that sends SIGTERM to this process (or what it execs into) when the
    process `pid` exits. The watchdog dies with this process, so it never signals a reused pid.
    Written by hand: nothing in the standard library or our dependencies ties one process's
    life to a non-parent's."""
    import select
    import signal

    watched = os.getpid()
    try:
        pidfd = os.pidfd_open(pid)  # a handle on that very process: immune to pid reuse
    except ProcessLookupError:  # already gone
        os.kill(watched, signal.SIGTERM)
        return True
    except OSError as exc:  # Linux < 5.3
        print(f"warning: cannot watch the dvc process ({exc}); killing dvc alone may leave this stage running",
              file=sys.stderr)
        return False
    if os.fork() == 0:  # the watchdog: no Python cleanup, no exceptions past this frame
        try:
            _set_parent_death_signal(signal.SIGKILL)
            if os.getppid() == watched:  # else the stage already ended
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):  # hold no pipe of the stage's open (readers wait for EOF)
                    os.dup2(devnull, fd)
                os.closerange(3, pidfd)
                os.closerange(pidfd + 1, 1 << 16)
                select.select([pidfd], [], [])  # readable when the process exits
                os.kill(watched, signal.SIGTERM)
        finally:
            os._exit(0)
    os.close(pidfd)
    return True


def _set_parent_death_signal(signum: int) -> bool:
    import ctypes

    PR_SET_PDEATHSIG = 1
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0


def _runs_shell_command(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    name = os.path.basename(argv[0].decode(errors="replace")).lstrip("-")
    return name in SHELLS and b"-c" in argv[1:]


def _parent_pid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 1
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "(comm)": state, ppid


if __name__ == "__main__":
    main(sys.argv[1:])
