"""A forced `train` rerun SIGKILLed after its first checkpoint leaves the registry as good
as before, and the next plain `dvc repro` finishes the version: one FINISHED run, a
registered model version that points at it, no RUNNING run, no stale checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.dvcrepo import DvcRepo

pytestmark = pytest.mark.slow
SMALL = {
    "data": {"limit": 8},
    "generate": {"max_new_tokens": 6, "batch_size": 4},
    "filter": {"drop_truncated": "none"},  # a tiny random model rarely ends an answer in 6 tokens
    "train": {"max_steps": 40, "batch_size": 2, "save_steps": 5},
    "evaluate": {"limit": 2, "bootstrap": 20, "judges": ["refusal"]},
}


def store(repo):
    import mlflow

    uri = f"sqlite:///{repo.root / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def version_runs(client, version: str):
    experiment = client.get_experiment_by_name("dlma")
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`dlma.version` = '{version}'")


def test_killed_forced_train_then_repro(tmp_path, tiny_model_dir):
    repo = DvcRepo(tmp_path, tiny_model_dir, SMALL)
    repo.repro()
    repo.commit("first run")
    version = json.loads((repo.root / "reports/train.json").read_text())["version"]
    client = store(repo)
    (first,) = version_runs(client, version)
    assert first.info.status == "FINISHED"

    process = subprocess.Popen(["dvc", "repro", "--force", "-s", "train"], cwd=repo.root, env=repo.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not list(repo.root.glob("models/checkpoints/*/checkpoint-5/trainer_state.json")):
        assert process.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    # Killed midway: the finished run and its registered model are still there.
    runs = {r.info.run_id: r.info.status for r in version_runs(client, version)}
    assert runs[first.info.run_id] == "FINISHED" and "RUNNING" in runs.values()
    assert [v.run_id for v in client.search_model_versions("name='dlma'")] == [first.info.run_id]

    # Whether DVC reruns train (it resumes the killed run and replaces the old one) or finds
    # the model folder up to date (the recover stage clears the killed run's leftovers), the
    # version ends with exactly one finished run and a registered model that points at it.
    ran = repo.repro()
    assert "recover" in ran, ran
    runs = version_runs(client, version)
    assert [r.info.status for r in runs] == ["FINISHED"]
    registered = client.search_model_versions("name='dlma'")
    assert [v.run_id for v in registered] == [runs[0].info.run_id]
    assert not list((repo.root / "models" / "checkpoints").glob("*/checkpoint-*"))
    if "train" in ran:
        assert runs[0].data.metrics["timing/resumed_from_step"] >= 5
    else:
        assert runs[0].info.run_id == first.info.run_id
        assert json.loads((repo.root / "reports/recover.json").read_text())["cleared"]["runs"]


def stage_processes(root, module: str) -> list[int]:
    """Pids of the processes running `python -m <module>` in the repository `root`."""
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if module.encode() in cmdline and cwd == str(root):
            found.append(int(proc.name))
    return found


def test_killing_only_dvc_stops_the_stage(tmp_path, tiny_model_dir):
    """`kill -9` of the dvc process alone (not its process group) during train: the stage
    stops too (dlma.core.launch.die_with_dvc), instead of training on and registering its
    model while the rerun registers it again. The rerun then ends with one finished run and one
    registered version."""
    repo = DvcRepo(tmp_path, tiny_model_dir, SMALL | {"train": SMALL["train"] | {"max_steps": 200}})
    # As some CI runners start their jobs: SIGTERM ignored (the ignored disposition survives
    # exec into dvc and the stage, and must not keep the stage alive) and SHELL unset, so DVC
    # runs the command through /bin/sh, which on Debian (dash) forks and outlives dvc.
    env = {key: value for key, value in repo.env.items() if key != "SHELL"}
    process = subprocess.Popen(["dvc", "repro"], cwd=repo.root, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
    deadline = time.time() + 600
    while not list(repo.root.glob("models/checkpoints/*/checkpoint-5/trainer_state.json")):
        assert process.poll() is None, "the pipeline ended before train could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    stage = stage_processes(repo.root, "stages.train")  # the stage, and the watchdog that /bin/sh's fork needs
    assert stage
    os.kill(process.pid, signal.SIGKILL)  # dvc only: the stage is not in its process group's kill
    process.wait()
    deadline = time.time() + 20
    while stage_processes(repo.root, "stages.train"):
        assert time.time() < deadline, f"the stage (pids {stage}) still runs after dvc was killed"
        time.sleep(0.1)
    client = store(repo)
    assert client.search_model_versions("name='dlma'") == []  # it stopped before registering

    repo.repro()
    version = json.loads((repo.root / "reports/train.json").read_text())["version"]
    runs = version_runs(client, version)
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert [v.run_id for v in client.search_model_versions("name='dlma'")] == [runs[0].info.run_id]
    assert runs[0].data.metrics["timing/resumed_from_step"] >= 5
