"""Three queued experiments run two at a time on a repository that has no MLflow store yet
(what `dlma compare --queue` does on a fresh clone): the store is created once, safely, and
every experiment records into it."""

from __future__ import annotations


import pytest

from tests.dvcrepo import DvcRepo
from tests.pipeline.test_kill import SMALL

pytestmark = pytest.mark.slow


def test_three_queued_experiments_two_at_a_time_on_a_fresh_repository(tmp_path, tiny_model_dir):
    repo = DvcRepo(tmp_path, tiny_model_dir, SMALL | {"train": SMALL["train"] | {"max_steps": 2}})
    assert not (repo.root / "mlflow.db").exists()
    for beta in ("0.2", "0.3", "0.4"):
        repo.run("dvc", "exp", "run", "--queue", "-n", f"q{beta[-1]}", "-S", f"train.beta={beta}")
    repo.start_queue(2)
    status = repo.wait_for_queue()
    logs = "".join(repo.run("dvc", "queue", "logs", f"q{n}", check=False).stdout for n in (2, 3, 4))
    assert "Failed" not in status and status.count("Success") == 3, status + logs
    import mlflow

    uri = f"sqlite:///{repo.root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "dlma"]
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`dlma.stage` = 'train'")
    assert sorted(r.data.tags["dvc.experiment"] for r in runs) == ["q2", "q3", "q4"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {"q2", "q3", "q4"} <= set(client.get_registered_model("dlma").aliases)
    assert not list((repo.root / ".dvc").rglob("mlflow.db"))  # the copies wrote to the repository's store
