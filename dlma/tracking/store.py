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
import re
import subprocess
import time
from pathlib import Path

from dlma.core.paths import repository_root
from dlma.tracking.params import TrackingParams

log = logging.getLogger(__name__)

VERSION_TAG = "dlma.version"
COMPARISON_TAG = "dlma.comparison"


def tracking_uri(params: TrackingParams, root: Path) -> str:
    """The store's URI. A relative SQLite path (`sqlite:///mlflow.db`) means the one at the
    repository root, as the default does: under `dvc exp run --temp` the working directory
    is a copy that DVC deletes afterwards, with every run written into it."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.uri or f"sqlite:///{root / 'mlflow.db'}"
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and not uri.startswith(prefix + ":memory:"):
        uri = f"{prefix}{(root / uri[len(prefix):]).resolve()}"
    return uri


def _store_lock(uri: str):
    """A lock held while the store is created or its experiment looked up: two queued
    experiments starting at once on a repository with no store yet both ran MLflow's schema
    migration, and one failed (`index index_params_run_uuid already exists`)."""
    import contextlib

    from filelock import FileLock

    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()  # a server or another database serialises itself
    database = Path(uri[len("sqlite:///"):])
    database.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(database) + ".lock", timeout=600)


def configure(params: TrackingParams, root: Path | None = None) -> str:
    """Point MLflow at the repository's store and experiment; return the experiment id."""
    import mlflow

    root = root or repository_root()
    uri = tracking_uri(params, root)
    # MLflow exports what it is set to as MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI; that
    # would read as a user's override in a later call of this process, or in a child it
    # starts. Set, then leave the environment as the user had it.
    before = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    with _store_lock(uri):
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


def version_runs(experiment_id: str, version: str) -> list:
    import mlflow

    return mlflow.search_runs(
        experiment_ids=[experiment_id], filter_string=f"tags.`{VERSION_TAG}` = '{version}'",
        order_by=["attributes.start_time DESC"], output_format="list",
    )


def start_version_run(experiment_id: str, version: str, run_name: str, tags: dict[str, str]):
    """Start (or resume) the run of this pipeline version.

    An unfinished run of the same version (a killed stage) is resumed, as its checkpoints
    are. A finished one (a forced rerun) is left alone until the new run has finished
    (`replace_version_runs`): a run killed midway never leaves the registry worse off.
    """
    import mlflow

    for run in version_runs(experiment_id, version):
        if run.info.status in ("RUNNING", "FAILED", "KILLED") and run.info.lifecycle_stage == "active":
            log.info("resuming MLflow run %s of version %s", run.info.run_id, version)
            return mlflow.start_run(run_id=run.info.run_id, log_system_metrics=True)
    return mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, tags={VERSION_TAG: version, **tags}, log_system_metrics=True
    )


def log_run_params(run_id: str, params: dict[str, str]) -> None:
    """Log the params into the (active) run. A resumed run (a killed stage run again) has
    them already, and MLflow refuses to change a logged param: log the new keys only, keep
    the values the run started with, and name the keys whose values differ in a tag and the
    log. Those can only be params outside the pipeline version (a changed training param
    is another version, so another run), e.g. the `compare` or `evaluate` sections."""
    import mlflow

    logged = mlflow.MlflowClient().get_run(run_id).data.params
    changed = sorted(key for key, value in params.items() if key in logged and logged[key] != value)
    if changed:
        log.warning("resumed MLflow run %s keeps the params it started with; changed since, outside the pipeline version: %s",
                    run_id, ", ".join(changed))
        mlflow.set_tag("dlma.params_changed_on_resume", ",".join(changed)[:5000])
    mlflow.log_params({key: value for key, value in params.items() if key not in logged})


def replace_version_runs(experiment_id: str, version: str, keep_run_id: str) -> None:
    """After `keep_run_id` has finished: delete every other run of the version, and their
    registered model versions (the registry must not list a model of a deleted run)."""
    import mlflow

    client = mlflow.MlflowClient()
    kept = client.get_run(keep_run_id).data.tags
    older, others = [], []
    for run in version_runs(experiment_id, version):
        if run.info.run_id == keep_run_id:
            continue
        # A run that another comparison or DVC experiment refers to is theirs: never deleted
        # (the same pipeline version trained again under another comparison's name, say).
        theirs = any(run.data.tags.get(tag) and run.data.tags.get(tag) != kept.get(tag) for tag in (COMPARISON_TAG, "dvc.experiment"))
        (others if theirs else older).append(run)
    if others:
        log.info("keeping MLflow run(s) %s of version %s: another comparison or experiment refers to them",
                 ", ".join(r.info.run_id for r in others), version)
    evaluated = [run for run in older if run.info.status == "FINISHED" and any(k.startswith("eval/") for k in run.data.metrics)]
    if evaluated:
        carry_evaluation(evaluated[0], keep_run_id)
    # The version's evaluations (their own runs) now belong under the run that replaces it.
    for evaluation in mlflow.search_runs(experiment_ids=[experiment_id], output_format="list",
                                         filter_string=f"tags.`{EVALUATES_TAG}` = '{version}'"):
        client.set_tag(evaluation.info.run_id, "mlflow.parentRunId", keep_run_id)
    for run in older:
        log.info("replacing MLflow run %s of the same version %s", run.info.run_id, version)
        for model_version in client.search_model_versions(f"run_id = '{run.info.run_id}'"):
            client.delete_model_version(model_version.name, model_version.version)
        client.delete_run(run.info.run_id)


def carry_evaluation(old_run, new_run_id: str) -> None:
    """Copy an evaluation (the `eval/*` metrics and the `evaluation/` artifacts) from a run
    about to be replaced into the new run of the same pipeline version. A forced train rerun
    that DVC finds gives the same model does not rerun `evaluate`: without this, the
    version's evaluation would go with the deleted run. Where the model did change, evaluate
    reruns and logs over these."""
    import tempfile

    import mlflow

    client = mlflow.MlflowClient()
    metrics = {k: v for k, v in old_run.data.metrics.items() if k.startswith("eval/")}
    client.log_batch(new_run_id, metrics=[mlflow.entities.Metric(k, v, int(time.time() * 1000), 0) for k, v in metrics.items()])
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=old_run.info.run_id, artifact_path="evaluation", dst_path=folder)
        except Exception:  # noqa: BLE001 - no evaluation artifacts: the metrics alone
            local = None
        if local:
            client.log_artifacts(new_run_id, local, artifact_path="evaluation")
    log.info("carried the evaluation of run %s (%d metrics) into run %s of the same version", old_run.info.run_id, len(metrics),
             new_run_id)


EVALUATES_TAG = "dlma.evaluates"  # on an evaluation's own run: the pipeline version it evaluated
EVALUATION_TAG = "dlma.evaluation"  # ... and the id of the evaluation (a hash of what it depends on besides the model)


def log_evaluation_run(experiment_id: str, version: str, evaluation: str, params: dict[str, str],
                       metrics: dict[str, float], artifacts: list[str]) -> tuple[str, str]:
    """Log an evaluation twice: into the run of the model's pipeline version (its latest
    evaluation, what the UI shows on the model's row and `dlma export` reads) and into a run
    of its own, nested under that one and keyed by `evaluation` (a hash of the evaluation's
    params and inputs). An experiment that changes only `evaluate.*` params is a second
    evaluation of the same model: it gets its own nested run, and the first one's numbers stay.
    Returns (version run id, evaluation run id)."""
    import mlflow

    version_run_id = log_to_version_run(experiment_id, version, metrics, artifacts)
    found = mlflow.search_runs(experiment_ids=[experiment_id], output_format="list",
                               filter_string=f"tags.`{EVALUATES_TAG}` = '{version}' and tags.`{EVALUATION_TAG}` = '{evaluation}'")
    context = (mlflow.start_run(run_id=found[0].info.run_id) if found else
               mlflow.start_run(experiment_id=experiment_id, run_name=f"eval-{evaluation[:8]}",
                                tags={EVALUATES_TAG: version, EVALUATION_TAG: evaluation, "dlma.role": "evaluation",
                                      "mlflow.parentRunId": version_run_id}))
    with context as run:
        logged = mlflow.MlflowClient().get_run(run.info.run_id).data.params
        mlflow.log_params({k: v for k, v in params.items() if k not in logged})  # the same evaluation: the same params
        mlflow.log_metrics(metrics)
        for path in artifacts:
            mlflow.log_artifact(path, artifact_path="evaluation")
        return version_run_id, run.info.run_id


def log_to_version_run(experiment_id: str, version: str, metrics: dict[str, float], artifacts: list[str]) -> str:
    """Log metrics and artifacts into the existing run of a pipeline version (the one that
    holds its trained model); create a run for that version if there is none."""
    import mlflow

    runs = version_runs(experiment_id, version)
    runs = [r for r in runs if r.info.status == "FINISHED"] or runs
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


def log_trained_model(model_dir: Path, *, model_name: str, version: str, signature, aliases: list[str],
                      tags: dict[str, str] | None = None) -> str:
    """Log the model directory as the run's pyfunc model, register it under `model_name`
    and point `aliases` at the new version (an alias moves: it names one version at a time).
    Returns the registered version number.

    The model is logged as code (MLflow's models-from-code: `pyfunc_entry.py`), so loading
    it runs that file instead of unpickling an object."""
    import mlflow

    from dlma.tracking import pyfunc_entry

    client = mlflow.MlflowClient()
    run_id = mlflow.active_run().info.run_id
    # A resumed run that had registered its model before it was killed: that version is
    # replaced by this one, so a run has one registered version.
    earlier = [v.version for v in client.search_model_versions(f"name='{model_name}' and run_id='{run_id}'")]
    info = mlflow.pyfunc.log_model(
        name="model", python_model=pyfunc_entry.__file__, artifacts={"model": str(model_dir)}, signature=signature,
        registered_model_name=model_name, pip_requirements=["dlma"], tags={VERSION_TAG: version, **(tags or {})},
    )
    registered = str(info.registered_model_version)
    for key, value in (tags or {}).items():  # on the registered version too: `tags.dlma.round = '2'` finds it
        client.set_model_version_tag(model_name, registered, key, value)
    for alias in aliases:
        client.set_registered_model_alias(model_name, alias, registered)
    for number in earlier:
        client.delete_model_version(model_name, number)
    log.info("registered model %s version %s, aliases: %s (and MLflow's own `models:/%s/latest`)",
             model_name, registered, ", ".join(aliases) or "none", model_name)
    return registered


_RESERVED_ALIAS = re.compile(r"^(latest|[vV]\d+)$")  # MLflow keeps these: `latest` is the newest version, v3 is version 3


def run_aliases(run_name: str, experiment_name: str | None) -> list[str]:
    """The aliases of a run's model: the run's name (one per pipeline version: `dlma-<version>`)
    and, under `dvc exp run`, the DVC experiment's name (`models:/dlma@beta02`). MLflow
    allows letters, digits, `_` and `-` and reserves `latest` and `v<N>`: other characters
    become `-`, and a reserved name gets the prefix `exp-`."""
    aliases = []
    for name in (run_name, experiment_name):
        if not name:
            continue
        alias = re.sub(r"[^\w\-]", "-", name)[:255]
        alias = f"exp-{alias}" if _RESERVED_ALIAS.match(alias) else alias
        if alias not in aliases:
            aliases.append(alias)
    return aliases



def run_tags(root: Path, group: str = "") -> dict[str, str]:
    """The git commit, under `dvc exp run` the DVC experiment name, and the comparison
    the run belongs to (tracking.group, set by `dlma compare`)."""
    tags = {"mlflow.source.git.commit": git_commit(root) or "unknown"}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.experiment"] = os.environ["DVC_EXP_NAME"]
    if group:
        tags[COMPARISON_TAG] = group
    return tags


def group_comparison(experiment_id: str, group: str, metrics: dict[str, float], artifacts: list[str]) -> str:
    """One parent run per comparison: it holds the comparison's numbers and report, and
    every run tagged with the comparison is nested under it (mlflow.parentRunId), so
    the MLflow UI shows the comparison as one expandable row. Rerunning replaces the
    parent's numbers."""
    import mlflow

    client = mlflow.MlflowClient()
    found = mlflow.search_runs(experiment_ids=[experiment_id], output_format="list",
                               filter_string=f"tags.`{COMPARISON_TAG}` = '{group}'")
    parents = [r for r in found if r.data.tags.get("dlma.role") == "comparison"]
    context = (mlflow.start_run(run_id=parents[0].info.run_id) if parents else
               mlflow.start_run(experiment_id=experiment_id, run_name=f"compare-{group}",
                                tags={COMPARISON_TAG: group, "dlma.role": "comparison"}))
    with context as parent:
        mlflow.log_metrics(metrics)
        for path in artifacts:
            mlflow.log_artifact(path, artifact_path="comparison")
    for run in found:
        if run.info.run_id != parent.info.run_id:
            client.set_tag(run.info.run_id, "mlflow.parentRunId", parent.info.run_id)
    return parent.info.run_id


ROUNDS_TAG = "dlma.rounds"  # the multi-round pipeline version a run belongs to


def rounds_parent(experiment_id: str, rounds_version: str, first_round_version: str) -> str:
    """The parent run of a multi-round pipeline version (one per version, made once): round
    1's training run (the pipeline's own) and each later round's run are nested under it,
    so the MLflow UI shows the rounds as one expandable row. Returns its run id."""
    import mlflow

    client = mlflow.MlflowClient()
    found = mlflow.search_runs(experiment_ids=[experiment_id], output_format="list",
                               filter_string=f"tags.`{ROUNDS_TAG}` = '{rounds_version}' and tags.`dlma.role` = 'rounds'")
    if found:
        parent_id = found[0].info.run_id
    else:
        parent = client.create_run(experiment_id, run_name=f"rounds-{rounds_version[:8]}",
                                   tags={ROUNDS_TAG: rounds_version, "dlma.role": "rounds"})
        client.set_terminated(parent.info.run_id)
        parent_id = parent.info.run_id
    for run in version_runs(experiment_id, first_round_version):
        if run.info.status == "FINISHED":
            client.set_tag(run.info.run_id, "mlflow.parentRunId", parent_id)
            client.set_tag(run.info.run_id, "dlma.round", "1")
    return parent_id


def clear_interrupted(experiment_id: str, version: str, checkpoint_dir: Path) -> dict:
    """When the version's model is in place (its FINISHED run exists), a killed rerun of
    the same version left only leftovers: its unfinished run and its checkpoints. Delete
    them, so the store holds exactly one run per version. Returns what was cleared."""
    import shutil

    import mlflow

    runs = version_runs(experiment_id, version)
    if not any(r.info.status == "FINISHED" for r in runs):
        return {}  # nothing finished: the next train run resumes instead
    client = mlflow.MlflowClient()
    cleared = [r.info.run_id for r in runs if r.info.status != "FINISHED"]
    for run_id in cleared:
        log.info("clearing the interrupted MLflow run %s of version %s", run_id, version)
        client.set_terminated(run_id, status="KILLED")
        client.delete_run(run_id)
    stale = checkpoint_dir.is_dir()
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return {"runs": cleared, "checkpoints": str(checkpoint_dir) if stale else None} if cleared or stale else {}


def set_version_alias(experiment_id: str, model_name: str, version: str, alias: str) -> str | None:
    """Point `alias` at the registered model of pipeline version `version` (its finished
    run's model). Returns the registered version number, or None where none is registered."""
    import mlflow

    client = mlflow.MlflowClient()
    for run in version_runs(experiment_id, version):
        if run.info.status != "FINISHED":
            continue
        for model_version in client.search_model_versions(f"run_id = '{run.info.run_id}'"):
            if model_version.name == model_name:
                client.set_registered_model_alias(model_name, alias, model_version.version)
                return str(model_version.version)
    return None
