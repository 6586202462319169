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
