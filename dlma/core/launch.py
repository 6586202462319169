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
        die_with_parent()
    os.execv(cmd[0], cmd)  # the stage's exit code is this command's


def die_with_parent() -> bool:
    """Under DVC: have the kernel send this process SIGTERM when its parent (the `dvc`
    process: DVC runs the stage's command through `$SHELL -c`, which execs it) dies, so a
    killed `dvc` leaves no stage running on (an orphaned train went on to register its model
    while the rerun registered it again). It survives the exec into the stage, or into
    torchrun / accelerate, which stop their workers on SIGTERM. Linux only (prctl); elsewhere
    a no-op. Returns whether it was set."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    # An ignored or blocked SIGTERM survives exec: under a parent that ignores it (a CI runner,
    # `nohup`-style job wrappers) the death signal would be dropped and the orphan would train
    # on. A stage under DVC is meant to die with it, so take the default action back.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return False
    if os.getppid() == 1:  # the parent died before prctl: no signal will come
        os.kill(os.getpid(), signal.SIGTERM)
    return True


if __name__ == "__main__":
    main(sys.argv[1:])
