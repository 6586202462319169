"""A killed train stage resumes its MLflow run: the params it logs again must not break it
(MLflow refuses to change a logged param), even when a section outside the pipeline
version changed in between (an edited `compare` preset did exactly that)."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from dlma.tracking import store


@pytest.fixture
def local_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield
    mlflow.set_tracking_uri(previous)


def test_a_resumed_run_keeps_its_params_and_logs_the_new_ones(tmp_path, local_store):
    experiment = mlflow.create_experiment("resume", artifact_location=str(tmp_path / "artifacts"))
    with mlflow.start_run(experiment_id=experiment) as run:
        store.log_run_params(run.info.run_id, {"train.beta": "0.1", "compare.presets.margin.grid": "[0.0, 0.2]"})
    mlflow.MlflowClient().set_terminated(run.info.run_id, status="KILLED")
    edited = {"train.beta": "0.1", "compare.presets.margin.grid": "[0.1, 0.5]", "evaluate.limit": "16"}
    with mlflow.start_run(run_id=run.info.run_id):
        with pytest.raises(MlflowException, match="Changing param values is not allowed"):
            mlflow.log_params(edited)  # what the stage did before: the resumed stage failed here
    with mlflow.start_run(run_id=run.info.run_id):
        store.log_run_params(run.info.run_id, edited)
    logged = mlflow.MlflowClient().get_run(run.info.run_id).data
    assert logged.params == {"train.beta": "0.1", "compare.presets.margin.grid": "[0.0, 0.2]", "evaluate.limit": "16"}
    assert logged.tags["dlma.params_changed_on_resume"] == "compare.presets.margin.grid"


def test_a_relative_sqlite_uri_means_the_store_at_the_repository_root(tmp_path, monkeypatch):
    from dlma.tracking.params import TrackingParams

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = TrackingParams(**{**shipped_tracking(), "uri": "sqlite:///mlflow.db"})
    # from an experiment's temporary copy too: the copy is deleted, the root's store stays
    assert store.tracking_uri(params, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    absolute = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert store.tracking_uri(TrackingParams(**{**shipped_tracking(), "uri": absolute}), tmp_path) == absolute
    assert store.tracking_uri(TrackingParams(**{**shipped_tracking(), "uri": "http://127.0.0.1:5000"}), tmp_path) == \
        "http://127.0.0.1:5000"


CONFIGURE = """
import sys, time
from pathlib import Path
from dlma.tracking import store
from dlma.tracking.params import TrackingParams
import yaml
params = TrackingParams(**yaml.safe_load(open(sys.argv[2]))["tracking"])
start = float(sys.argv[3])
while time.time() < start:  # every process asks for the store at the same moment
    time.sleep(0.001)
print(store.configure(params, Path(sys.argv[1])))
"""


def test_processes_creating_the_store_at_once_all_get_the_same_experiment(tmp_path, monkeypatch):
    """Three stages of queued experiments starting together on a repository with no store
    yet (`dvc queue start -j 2` did this): each must get the one experiment, none fail."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = Path(__file__).resolve().parents[2]
    start = time.time() + 15  # after the imports of all three
    processes = [subprocess.Popen([sys.executable, "-c", CONFIGURE, str(tmp_path), str(repo / "params.yaml"), str(start)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=repo) for _ in range(3)]
    results = [process.communicate(timeout=300) for process in processes]
    for process, (out, err) in zip(processes, results):
        assert process.returncode == 0, err[-2000:]
    ids = {out.strip().splitlines()[-1] for out, _ in results}
    assert len(ids) == 1 and (tmp_path / "mlflow.db").is_file()


def shipped_tracking() -> dict:
    from pathlib import Path

    import yaml

    return yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())["tracking"]


def test_replacing_a_version_run_spares_other_comparisons_and_carries_the_evaluation(tmp_path, local_store):
    """A second run of the same pipeline version replaces the earlier runs of the same
    comparison and experiment, never one that another comparison or experiment refers to; the
    replaced run's evaluation (and its evaluations' own runs) move to the new run."""
    client = mlflow.MlflowClient()
    experiment = mlflow.create_experiment("replace", artifact_location=str(tmp_path / "artifacts"))
    version = "0123456789abcdef"

    def version_run(**tags) -> str:
        with store.start_version_run(experiment, version, "dlma-01234567", tags) as run:
            pass
        return run.info.run_id

    cmpa = version_run(**{store.COMPARISON_TAG: "cmpa", "dvc.experiment": "cmpa-dlma-s0"})
    mine = version_run(**{store.COMPARISON_TAG: "cmpb", "dvc.experiment": "cmpb-dlma-s0"})
    (tmp_path / "report.md").write_text("# evaluation")
    version_run_id, evaluation_run = store.log_evaluation_run(experiment, version, "e" * 16, {"evaluate.limit": "4"},
                                                              {"eval/win_rate/x/net": 0.25}, [str(tmp_path / "report.md")])
    assert version_run_id == mine and client.get_run(evaluation_run).data.tags["mlflow.parentRunId"] == mine
    again = version_run(**{store.COMPARISON_TAG: "cmpb", "dvc.experiment": "cmpb-dlma-s0"})  # cmpb trained again: same version
    store.replace_version_runs(experiment, version, keep_run_id=again)
    assert client.get_run(cmpa).info.lifecycle_stage == "active"  # cmpa's run stays
    assert client.get_run(mine).info.lifecycle_stage == "deleted"  # cmpb's earlier run is replaced ...
    assert client.get_run(again).data.metrics["eval/win_rate/x/net"] == 0.25  # ... its evaluation carried over
    assert [a.path for a in client.list_artifacts(again, "evaluation")] == ["evaluation/report.md"]
    assert client.get_run(evaluation_run).data.tags["mlflow.parentRunId"] == again
    # The same evaluation logged again reuses its run; another evaluation gets a run of its own.
    _, same = store.log_evaluation_run(experiment, version, "e" * 16, {"evaluate.limit": "4"}, {"eval/win_rate/x/net": 0.25}, [])
    _, other = store.log_evaluation_run(experiment, version, "f" * 16, {"evaluate.limit": "2"}, {"eval/win_rate/x/net": 0.5}, [])
    assert same == evaluation_run and other != evaluation_run
    assert client.get_run(evaluation_run).data.metrics["eval/win_rate/x/net"] == 0.25
