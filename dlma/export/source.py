"""Where an export starts: the train stage's model folder, or a registered model version
(by number or alias) in the repository's MLflow store, with what the store knows of it
(the run's params and its evaluation)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dlma.core.errors import DlmaError
from dlma.model import read_card
from dlma.tracking import store
from dlma.tracking.params import TrackingParams

log = logging.getLogger(__name__)


@dataclass
class ExportSource:
    model_dir: Path  # a folder written by the train stage (adapter or full weights, tokenizer, card)
    card: dict
    described_as: str  # how the user named it: a folder, models:/dlma/3, models:/dlma@champion
    registered: dict = field(default_factory=dict)  # name, version, aliases, run id (a registry source)
    params: dict = field(default_factory=dict)  # the pipeline's params, as its MLflow run logged them (flat)
    evaluation: dict | None = None  # the evaluate stage's metrics.json of this model, when one ran


def model_uri(name: str, *, version: int | None, alias: str | None) -> str:
    """`models:/name/N` or `models:/name@alias`; `latest` is MLflow's own `models:/name/latest`
    (the newest version: MLflow reserves it as an alias name)."""
    if version is not None:
        return f"models:/{name}/{version}"
    if alias.lower() == "latest":
        return f"models:/{name}/latest"
    return f"models:/{name}@{alias}"


def _version_of(client, name: str, version: int | None, alias: str | None):
    from mlflow.exceptions import MlflowException

    try:
        if version is not None:
            return client.get_model_version(name, str(version))
        if alias.lower() == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise DlmaError(f"the registry has no version of model '{name}'; run `dvc repro` (the train stage registers it)")
            return max(versions, key=lambda v: int(v.version))
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        known = sorted(client.get_registered_model(name).aliases) if client.search_registered_models(f"name = '{name}'") else []
        raise DlmaError(f"{model_uri(name, version=version, alias=alias)} is not in the registry ({exc.message.splitlines()[0]}); "
                        f"aliases there: {', '.join(known) or 'none'}") from None


def _run_evaluation(run_id: str) -> dict | None:
    import mlflow

    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation/metrics.json")
    except Exception:  # noqa: BLE001 - no evaluation logged (evaluate has not run for this version)
        return None
    return json.loads(Path(path).read_text())


def from_registry(tracking: TrackingParams, root: Path, *, version: int | None, alias: str | None) -> ExportSource:
    """Download a registered version's model folder and read its run's params and evaluation."""
    import mlflow

    store.configure(tracking, root)
    client = mlflow.MlflowClient()
    found = _version_of(client, tracking.model_name, version, alias)
    found = client.get_model_version(found.name, found.version)  # a search result leaves its aliases out
    uri = model_uri(tracking.model_name, version=int(found.version), alias=None)
    local = Path(mlflow.artifacts.download_artifacts(uri))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    relative = mlmodel["flavors"]["python_function"]["artifacts"]["model"]["path"]
    model_dir = local / relative
    run = client.get_run(found.run_id)
    log.info("exporting %s: version %s of run %s", model_uri(tracking.model_name, version=version, alias=alias), found.version, found.run_id)
    return ExportSource(
        model_dir=model_dir, card=read_card(model_dir), described_as=model_uri(tracking.model_name, version=version, alias=alias),
        registered={"name": tracking.model_name, "version": int(found.version), "aliases": sorted(found.aliases),
                    "run_id": found.run_id, "run_name": run.info.run_name},
        params=dict(run.data.params), evaluation=_run_evaluation(found.run_id),
    )


def from_folder(model_dir: Path, tracking: TrackingParams, root: Path) -> ExportSource:
    """A folder the train stage wrote; its params and evaluation come from the run of its
    pipeline version in the repository's store, when the store holds one."""
    import mlflow

    card = read_card(model_dir)
    source = ExportSource(model_dir=model_dir, card=card, described_as=str(model_dir))
    experiment_id = store.configure(tracking, root)
    runs = [r for r in store.version_runs(experiment_id, card["version"]) if r.info.status == "FINISHED"]
    if not runs:
        log.warning("no finished MLflow run of version %s in the store: the card gives the model's own record only", card["version"])
        return source
    run = runs[0]
    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"run_id = '{run.info.run_id}'")
    if versions:
        found = client.get_model_version(versions[0].name, versions[0].version)  # a search result leaves its aliases out
        source.registered = {"name": found.name, "version": int(found.version), "aliases": sorted(found.aliases),
                             "run_id": run.info.run_id, "run_name": run.info.run_name}
    source.params = dict(run.data.params)
    source.evaluation = _run_evaluation(run.info.run_id)
    return source
