"""One MLflow store per repository, and a stable id for each pipeline version.

MLflow 3's default store is `sqlite:///mlflow.db` relative to the working directory, so
queued DVC experiments (which run in copies under `.dvc/tmp/exps`) would each write their
own. Here the store is resolved to the repository root: MLFLOW_TRACKING_URI if set, else
the `tracking.uri` param, else `<root>/mlflow.db` with artifacts in `<root>/mlartifacts`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path

from dlma.tracking.params import TrackingParams

log = logging.getLogger(__name__)

_EXPERIMENT_COPY = os.sep.join(["", ".dvc", "tmp", "exps", ""])
VERSION_TAG = "dlma.version"


def repository_root(start: Path | None = None) -> Path:
    """The user's repository, also when DVC runs the stage in a temporary copy of it."""
    root = os.environ.get("DVC_ROOT")
    if not root:
        here = (start or Path.cwd()).resolve()
        root = next((str(p) for p in (here, *here.parents) if (p / ".dvc").is_dir()), str(here))
    root = str(Path(root).resolve())
    if _EXPERIMENT_COPY in root + os.sep:
        root = (root + os.sep).split(_EXPERIMENT_COPY)[0]
    return Path(root)


def tracking_uri(params: TrackingParams, root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or params.uri or f"sqlite:///{root / 'mlflow.db'}"


def configure(params: TrackingParams, root: Path | None = None) -> str:
    """Point MLflow at the repository's store and experiment; return the experiment id."""
    import mlflow

    root = root or repository_root()
    uri = tracking_uri(params, root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.get_experiment_by_name(params.experiment)
    if experiment is None:
        location = (root / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
        return mlflow.create_experiment(params.experiment, artifact_location=location)
    return experiment.experiment_id


def version_id(parts: dict) -> str:
    """A stable id for what went into a pipeline version (content hashes and params)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def start_version_run(experiment_id: str, version: str, run_name: str, tags: dict[str, str]):
    """Start (or resume) the run of this pipeline version.

    An unfinished run of the same version (a killed stage) is resumed; a finished one
    (a forced rerun) is deleted first, so each version has exactly one run.
    """
    import mlflow

    previous = mlflow.search_runs(
        experiment_ids=[experiment_id], filter_string=f"tags.`{VERSION_TAG}` = '{version}'", output_format="list"
    )
    for run in previous:
        if run.info.status in ("RUNNING", "FAILED", "KILLED") and run.info.lifecycle_stage == "active":
            log.info("resuming MLflow run %s of version %s", run.info.run_id, version)
            return mlflow.start_run(run_id=run.info.run_id, log_system_metrics=True)
    client = mlflow.MlflowClient()
    for run in previous:
        log.info("replacing MLflow run %s of the same version %s", run.info.run_id, version)
        # Its registered model versions go too, or the registry would list a model of a deleted run.
        for model_version in client.search_model_versions(f"run_id = '{run.info.run_id}'"):
            client.delete_model_version(model_version.name, model_version.version)
        mlflow.delete_run(run.info.run_id)
    return mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, tags={VERSION_TAG: version, **tags}, log_system_metrics=True
    )


def log_to_version_run(experiment_id: str, version: str, metrics: dict[str, float], artifacts: list[str]) -> str:
    """Log metrics and artifacts into the existing run of a pipeline version (the one that
    holds its trained model); create a run for that version if there is none."""
    import mlflow

    runs = mlflow.search_runs(
        experiment_ids=[experiment_id], filter_string=f"tags.`{VERSION_TAG}` = '{version}'",
        order_by=["attributes.start_time DESC"], output_format="list",
    )
    if runs:
        context = mlflow.start_run(run_id=runs[0].info.run_id)
    else:
        log.warning("no MLflow run of version %s in this store: creating one for the evaluation", version)
        context = mlflow.start_run(experiment_id=experiment_id, run_name=f"dlma-{version[:8]}", tags={VERSION_TAG: version})
    with context as run:
        mlflow.log_metrics(metrics)
        for path in artifacts:
            mlflow.log_artifact(path, artifact_path="evaluation")
        return run.info.run_id


def log_trained_model(model_dir: Path, *, model_name: str, version: str, signature) -> None:
    """Log the model directory as the run's pyfunc model and register it under `model_name`."""
    import mlflow

    from dlma.tracking.pyfunc import AlignedModel

    mlflow.pyfunc.log_model(
        name="model", python_model=AlignedModel(), artifacts={"model": str(model_dir)}, signature=signature,
        registered_model_name=model_name, pip_requirements=["dlma"], tags={VERSION_TAG: version},
    )


def run_tags(root: Path) -> dict[str, str]:
    """The git commit and, under `dvc exp run`, the DVC experiment name."""
    tags = {"mlflow.source.git.commit": git_commit(root) or "unknown"}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.experiment"] = os.environ["DVC_EXP_NAME"]
    return tags
