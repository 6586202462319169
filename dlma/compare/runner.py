"""Running the comparison as DVC experiments and reading their results back.

Each (method, seed) is one `dvc exp run` named `<compare.name>-<method>-s<seed>` with the
method's params, the seed and the comparison's size (compare.set) on top of params.yaml.
They run one after the other in temporary copies (`--temp`), or are only queued
(`--queue`) for `dvc queue start -j N` on a bigger machine. Stages whose inputs and
params a run shares with an earlier one (the human and reward stages, and generate /
score for methods that train on the same pairs) come from DVC's run cache. The results
are read back from each experiment's commit: metrics from git, the samples table from
the DVC cache.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import polars as pl

from dataclasses import dataclass
from typing import Any

from dlma.compare.methods import METHODS, as_set_params, grid_points, variant_label, with_true_reward
from dlma.compare.params import CompareParams
from dlma.compare.summary import RunResult
from dlma.core.errors import DlmaError
from dlma.core.io import write_json
from dlma.core.paths import pipeline_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedRun:
    method: str
    point: dict[str, Any]  # the grid point ({} without a grid)
    seed: int
    name: str  # the DVC experiment
    values: list[str]  # its `-S` params

    @property
    def variant(self) -> str:
        return variant_label(self.method, self.point)


def experiment_name(group: str, method: str, seed: int, point: dict[str, Any] | None = None) -> str:
    grid = "".join(f"-{key.rsplit('.', 1)[-1].replace('_', '')}{value}" for key, value in (point or {}).items())
    return f"{group}-{method.replace('_', '-')}{grid}-s{seed}"


def planned_runs(params: CompareParams, true_reward: str = "") -> list[PlannedRun]:
    """Every trained method at every grid point with every seed. `true_reward` is the
    truth.reward of params.yaml (compare.set may replace it)."""
    true_reward = str(params.set.get("truth.reward", true_reward))
    runs = []
    for method in params.methods:
        if METHODS[method] is None:
            continue
        for point in grid_points(params.grid):
            for seed in params.seeds:
                values = {**params.set, **with_true_reward(METHODS[method], true_reward, method), **point,
                          "generate.seed": seed, "train.seed": seed, "tracking.group": params.name}
                runs.append(PlannedRun(method, point, seed, experiment_name(params.name, method, seed, point),
                                       as_set_params(values)))
    return runs


def _env() -> dict[str, str]:
    return os.environ | {"DVC_NO_ANALYTICS": "1"}


def _dvc(root: Path, *args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=root, env=_env(), check=check, text=True, capture_output=capture)


def _dvc_streamed(root: Path, args: list[str], keep: int = 25) -> tuple[int, list[str]]:
    """Run dvc with its output shown as it comes; return the exit code and the last lines."""
    tail: deque[str] = deque(maxlen=keep)
    with subprocess.Popen(["dvc", *args], cwd=root, env=_env(), text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as process:
        for line in process.stdout:
            sys.stderr.write(line)
            tail.append(line.rstrip())
    return process.returncode, list(tail)


def run_experiments(params: CompareParams, root: Path, *, queue: bool, true_reward: str = "",
                    resume: bool = False) -> dict[str, str]:
    """Run (or queue) every planned experiment; an earlier experiment of the same name is
    replaced once the new one has finished (a failed rerun keeps it; a queued one replaces it
    when queued). With `resume`, the experiments
    already finished on this commit are kept and only the others run (a comparison cut
    short, by a reboot say, goes on where it stopped). A run that fails (a method that
    cannot train at this size, say RLAIF with no pair labelled) does not stop the others:
    returns {experiment: why it failed}, which the report shows."""
    runs = planned_runs(params, true_reward)
    if resume:
        kept = finished_runs(params, root, true_reward)
        runs = [run for run in runs if run.name not in kept]
        log.info("compare --resume: %d of %d experiments already finished on this commit, %d to run",
                 len(kept), len(kept) + len(runs), len(runs))
    if runs and queue:
        _dvc(root, "exp", "remove", *[run.name for run in runs], check=False, capture=True)  # absent names are not an error here
    existing = experiment_commits(root) if runs and not queue else {}
    failed = {}
    for index, run in enumerate(runs, 1):
        log.info("compare: %s %d/%d (%s, seed %d)", "queueing" if queue else "running", index, len(runs), run.variant, run.seed)
        # An earlier experiment of this name is set aside (renamed), not removed, until the new
        # one has finished: a rerun that fails gives it back its name.
        previous = f"{run.name}-previous" if run.name in existing else None
        if previous:
            _dvc(root, "exp", "remove", previous, check=False, capture=True)
            _dvc(root, "exp", "rename", run.name, previous, capture=True)
        args = ["exp", "run", "--queue" if queue else "--temp", "-n", run.name]
        for value in run.values:
            args += ["-S", value]
        started = time.perf_counter()
        code, tail = _dvc_streamed(root, args)
        if not code and not queue:
            record_minutes(root, run.name, (time.perf_counter() - started) / 60)
        if code:
            errors = [line for line in tail if line.startswith(("error:", "ERROR"))]
            failed[run.name] = (errors or tail[-1:] or [f"exit {code}"])[0]
            log.error("compare: %s failed: %s", run.name, failed[run.name])
            if previous:
                _dvc(root, "exp", "rename", previous, run.name, capture=True)
                log.info("compare: kept the earlier finished %s", run.name)
        elif previous:
            _dvc(root, "exp", "remove", previous, capture=True)
    return failed


# Each experiment's wall time, by the commit it ran on, in DVC's untracked scratch folder: a
# comparison cut short before its report (a reboot, a hang) still knows, on --resume, how long
# the experiments it keeps took. DVC records no durations, and MLflow only the train stage's.
MINUTES_LEDGER = Path(".dvc") / "tmp" / "dlma-compare-minutes.json"


def head_commit(root: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True, text=True, capture_output=True).stdout.strip()


def _read_ledger(root: Path) -> dict[str, dict[str, float]]:
    path = root / MINUTES_LEDGER
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        log.warning("compare: %s is unreadable; the experiments' times start again", path)
        return {}


def record_minutes(root: Path, name: str, minutes: float) -> None:
    """Record that experiment `name` ran for `minutes` on the current commit."""
    ledger = _read_ledger(root)
    ledger.setdefault(head_commit(root), {})[name] = round(minutes, 3)
    write_json(ledger, root / MINUTES_LEDGER)


def recorded_minutes(root: Path) -> dict[str, float]:
    """Experiment name -> the minutes its last run on the current commit took (none for
    experiments run by a queue's workers, which this process does not time)."""
    return _read_ledger(root).get(head_commit(root), {})


def finished_runs(params: CompareParams, root: Path, true_reward: str = "") -> list[str]:
    """The planned experiments already finished on the current commit (what --resume keeps)."""
    finished = experiment_commits(root)
    return [run.name for run in planned_runs(params, true_reward) if run.name in finished]


def experiment_commits(root: Path) -> dict[str, str]:
    """Experiment name -> commit, for experiments based on the current HEAD."""
    head = head_commit(root)
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"], cwd=root, check=True,
                          text=True, capture_output=True).stdout.split("\n")
    found = {}
    for line in filter(None, refs):
        ref, commit = line.split()
        parts = ref.split("/")  # refs/exps/<2>/<38>/<name>
        if len(parts) >= 5 and parts[2] + parts[3] == head:
            found[parts[-1]] = commit
    return found


def read_run(root: Path, run: PlannedRun, commit: str) -> RunResult:
    """An experiment's outputs at its commit, each where dvc.yaml puts it: through DVC's file
    system, which reads files in git and outputs in DVC's cache alike."""
    from dvc.api import DVCFileSystem

    from dlma.compare.gitblob import guard_blob_reads

    guard_blob_reads()  # pygit2's blob reader can hang for good on a lost wake-up (dlma/compare/gitblob.py)

    def path(name: str) -> str:  # the output as dvc.yaml names it
        return pipeline_path(name, root).as_posix()

    try:
        fs = DVCFileSystem(str(root), rev=commit)

        def committed(name: str) -> dict:
            with fs.open(path(name), mode="r") as handle:
                return json.loads(handle.read())

        def table(name: str) -> pl.DataFrame:
            with fs.open(path(name), mode="rb") as handle:
                return pl.read_parquet(io.BytesIO(handle.read()))

        metrics, agreement, train = committed("metrics"), committed("agreement"), committed("train_report")
        samples = table("eval_samples")
        truth = committed("truth")
        truth_rows = None if "skipped" in truth else table("truth_samples")
    except (OSError, ValueError) as exc:
        raise DlmaError(f"cannot read the results of experiment {run.name} ({commit[:8]}): {exc}") from exc
    return RunResult(method=run.variant, seed=run.seed, name=run.name, samples=samples, metrics=metrics, agreement=agreement,
                     train=train, truth=truth, truth_rows=truth_rows, point=run.point, base_method=run.method)


def collect(params: CompareParams, root: Path, failed: dict[str, str] | None = None,
            true_reward: str = "") -> tuple[list[RunResult], dict[str, str]]:
    """The finished runs, and the variants left out with why: a variant enters the
    comparison only with every seed (else its intervals would mix seeds)."""
    commits = experiment_commits(root)
    failed = dict(failed or {})
    plan = planned_runs(params, true_reward)
    left_out = {}
    for variant in {run.variant for run in plan}:
        missing = [run.name for run in plan if run.variant == variant and run.name not in commits]
        if missing:
            left_out[variant] = "; ".join(f"{name}: {failed.get(name, 'no finished experiment on this commit')}" for name in missing)
    runs = [read_run(root, run, commits[run.name]) for run in plan if run.variant not in left_out]
    if not runs:
        raise DlmaError(f"no method has a finished experiment for every seed on this commit ({left_out}); run `dlma compare` "
                        "(or `dvc queue start` after `dlma compare --queue`) first")
    return runs, left_out
