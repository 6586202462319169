"""A real `dvc repro` of the pipeline on a tiny model in a temporary git repository, with
the MLflow store it writes and DVC experiments (run now and queued) recording into it."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from tests.dvcrepo import REPO, DvcRepo
from tests.export.test_export import PROMPTS, standalone_answers

pytestmark = pytest.mark.slow

OUTPUTS = ["data/prompts_train.parquet", "data/generated.parquet", "data/scored.parquet", "data/preferences.parquet"]
SMALL = {
    "data": {"limit": 8},
    "generate": {"max_new_tokens": 6, "batch_size": 4},
    "filter": {"drop_truncated": "none"},  # a tiny random model rarely ends an answer in 6 tokens
    "score": {"batch_size": 4},
    "train": {"max_steps": 3, "batch_size": 2, "save_steps": 2},
    # ab_judge is out of the default judges (it does not judge at 135M); it stays wired in here.
    "evaluate": {"limit": 4, "bootstrap": 100, "judges": ["self_contrast", "ab_judge", "refusal", "reward_model"]},
}
# A labelled set beside the repository, named by a relative path (as ../shared/... is).
OUTSIDE_SET = {"name": "outside", "source": "../outside/pairs.jsonl", "format": "auto", "columns": {},
               "pku_label": "safer", "pair": "", "optional": False}
ALL_STAGES = {"model", "sources", "sets", "prepare", "human", "reward", "generate", "score", "filter", "train", "recover", "agreement", "truth",
              "base_answers", "evaluate"}
ALWAYS = ["model", "recover", "sets", "sources"]  # re-checked on every repro (cheap)
# The later rounds (rounds.count is 1 here): each writes a note that it did not run, and runs
# again (seconds) when anything a round reads changes.
LATER_ROUNDS = {"round@2", "round@3"}
ALL_STAGES |= LATER_ROUNDS | {"round_plan@2", "round_plan@3", "rounds_report"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_model_dir):
    base = tmp_path_factory.mktemp("dvc-project")
    (base / "outside").mkdir()
    (base / "outside" / "pairs.jsonl").write_text((REPO / "data" / "labelled_pairs.jsonl").read_text())
    (base / "project").mkdir()
    repo = DvcRepo(base / "project", tiny_model_dir, SMALL)
    params = repo.params()
    params["evaluate"]["agreement_sets"].append(OUTSIDE_SET)
    repo.write_params(params)
    repo.commit("outside set")
    ran = repo.repro()
    assert set(ran) == ALL_STAGES and ran.index("train") < ran.index("evaluate") and ran.index("agreement") < ran.index("evaluate")
    assert ran.index("base_answers") < ran.index("evaluate")
    repo.commit("first run")
    return repo


def test_outputs_and_reports(repo):
    preferences = pl.read_parquet(repo.root / "data/preferences.parquet")
    assert preferences.columns[:7] == ["id", "prompt", "chosen", "rejected", "margin", "ref_logp_chosen", "ref_logp_rejected"]
    assert {"chosen_ids", "rejected_ids", "chosen_complete"} <= set(preferences.columns)
    scored = pl.read_parquet(repo.root / "data/scored.parquet")
    assert preferences.height == scored.height == 6  # 8 prompts, 2 held out for evaluation
    report = json.loads((repo.root / "reports/filter.json").read_text())
    assert report["rows_in"] == 6 and report["rows_out"] == 6
    metrics = repo.run("dvc", "metrics", "show", "--json").stdout
    assert "positive_fraction" in metrics and "rows_out" in metrics
    evaluation = pl.read_parquet(repo.root / "data/prompts_eval.parquet")
    assert set(evaluation["prompt"]).isdisjoint(scored["prompt"])
    # generate and score both in float32: two of the score's passes come from the generate table
    assert json.loads((repo.root / "reports/score.json").read_text())["recorded_while_sampling"] == [
        "logp_neg_given_neg", "logp_pos_given_pos"]
    np.testing.assert_array_equal(scored["logp_pos_given_pos"].to_numpy(), scored["sampled_logp_pos"].to_numpy())
    # rounds.count: 1, the one-round pipeline: the later rounds wrote a note only.
    for number in (2, 3):
        assert json.loads((repo.root / f"reports/rounds/{number}.json").read_text())["active"] is False
        assert [p.name for p in (repo.root / f"rounds/{number}").iterdir()] == ["inactive.json"]
    assert "One round (rounds.count is 1)" in (repo.root / "reports/rounds.md").read_text()


def test_evaluation_outputs(repo):
    metrics = json.loads((repo.root / "reports/metrics.json").read_text())
    agreement = json.loads((repo.root / "reports/agreement.json").read_text())
    assert {"win_rate", "refusal_rate", "perplexity"} <= set(metrics) and "agreement" not in metrics
    assert agreement["shipped"]["rows"] == 4
    # The HH set is optional and not beside this repository: reported as skipped, with the reason.
    assert "not found" in agreement["hh_harmless"]["skipped"]
    assert metrics["skipped_prompt_sets"]["xstest"].startswith("../shared/data/xstest/xstest_prompts.csv not found")
    assert agreement["outside"]["rows"] == 4  # the set outside the repository, found
    # No human pairs beside this repository: the reward model is reported skipped as a labeller.
    assert "no human-labelled pairs" in agreement["shipped"]["reward_model"]["skipped"]
    rows = pl.read_parquet(repo.root / "reports/agreement_samples.parquet")
    assert rows.height == 8 and set(rows["set"]) == {"shipped", "outside"}
    assert set(metrics["win_rate"]) == {"self_contrast", "ab_judge"}
    for judge in metrics["win_rate"].values():
        assert judge["win"] + judge["tie"] + judge["lose"] == pytest.approx(1.0) and judge["n"] == 2
    report = (repo.root / "reports/report.md").read_text()
    assert "## Aligned versus base" in report and "figures/win_rate.png" in report
    for figure in ("score_hist.png", "win_rate.png", "train_curve.png"):
        assert (repo.root / "reports/figures" / figure).read_bytes()[:4] == b"\x89PNG"
    samples = pl.read_parquet(repo.root / "reports/eval_samples.parquet")
    assert {"answer_base", "answer_aligned", "verdict_self_contrast", "verdict_ab_judge", "refusal_base"} <= set(samples.columns)
    # The base model's answers are the base_answers stage's, row for row.
    base_answers = pl.read_parquet(repo.root / "data/base_answers.parquet")
    assert base_answers.select("set", "id").equals(samples.select("set", "id"))
    assert base_answers["answer"].to_list() == samples["answer_base"].to_list()
    shown = repo.run("dvc", "exp", "show", "--json").stdout
    assert "win_rate" in shown and "perplexity" in shown and "contrastive_minus_likelihood" in shown
    plots = repo.run("dvc", "plots", "show", "--json").stdout
    assert "win_rate.csv" in plots and "score_hist.csv" in plots


ALL_MODEL_STAGES = {"model", "generate", "score", "train", "base_answers", "evaluate"}
# One module of each step (and of the shared folders) -> the stages that run it. The human
# stage reads evaluate's params, whose checks import the judge registry (and so most steps):
# it reruns on their edits (a few seconds).
EDITS = {
    "dlma/core/io.py": ALL_STAGES,
    "dlma/model.py": ALL_MODEL_STAGES | {"recover", "reward", "agreement", "truth", "human", "sets"} | LATER_ROUNDS,
    "dlma/lm/prompts.py": {"generate", "score", "train", "agreement", "base_answers", "evaluate", "reward", "truth", "human",
                           "recover"} | LATER_ROUNDS,
    "dlma/data/loaders.py": {"sources", "sets", "prepare", "human", "agreement", "base_answers", "evaluate"} | LATER_ROUNDS,
    # evaluate's params are checked against the judge registry, which imports the reward,
    # score and truth code: base_answers reruns on their edits (its answers do not change).
    "dlma/reward/run.py": {"reward", "agreement", "base_answers", "evaluate", "truth", "human"} | LATER_ROUNDS,
    "dlma/agreement/measure.py": {"agreement", "evaluate", "human"} | LATER_ROUNDS,
    "dlma/generate/sampling.py": {"generate", "base_answers", "evaluate", "train", "recover"} | LATER_ROUNDS,
    # score reads generate.dtype: log-probs recorded while sampling stand for its passes in the same numerics
    "dlma/generate/params.py": {"generate", "score", "base_answers", "train", "evaluate", "recover"} | LATER_ROUNDS,
    "dlma/score/contrastive.py": {"score", "agreement", "base_answers", "evaluate", "truth", "human"} | LATER_ROUNDS,
    "dlma/truth/sentiment.py": {"score", "agreement", "base_answers", "evaluate", "truth", "human"} | LATER_ROUNDS,
    "dlma/filter/preferences.py": {"filter"} | LATER_ROUNDS,
    "dlma/train/loss.py": {"train"} | LATER_ROUNDS,
    "dlma/tracking/store.py": {"train", "recover", "evaluate"} | LATER_ROUNDS,
    "dlma/evaluate/report.py": {"evaluate", "base_answers", "agreement", "human"} | LATER_ROUNDS,
    "dlma/rounds/report.py": {"rounds_report"},
    "dlma/rounds/run.py": LATER_ROUNDS,
    "dlma/rounds/study.py": set(),  # the seeds' study (`dlma rounds-study`) is no stage's code
    "stages/filter.py": {"filter"},
}


def stages_with_changed_code(repo) -> set[str]:
    status = json.loads(repo.run("dvc", "status", "--json").stdout)
    return {stage for stage, changes in status.items() if any(isinstance(c, dict) and "changed deps" in c for c in changes)}


def test_an_edit_reruns_exactly_the_stages_that_run_the_module(repo):
    assert stages_with_changed_code(repo) == set()
    for module, expected in EDITS.items():
        path = repo.root / module
        original = path.read_text()
        path.write_text(original + "\n# an edit\n")
        try:
            assert stages_with_changed_code(repo) == expected, module
        finally:
            path.write_text(original)
    # Running the code writes bytecode caches into those folders: they must not count.
    cache = repo.root / "dlma" / "lm" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "prompts.cpython-3x.pyc").write_bytes(b"bytecode")
    assert stages_with_changed_code(repo) == set()


def test_second_repro_reruns_nothing(repo):
    before = {path: repo.sha(path) for path in OUTPUTS}
    assert sorted(repo.repro()) == ALWAYS  # the checks only; their outputs did not change
    assert {path: repo.sha(path) for path in OUTPUTS} == before


def test_score_param_reruns_score_and_filter_only(repo):
    generated = repo.sha("data/generated.parquet")
    repo.set_param("score", "dtype", "bfloat16")  # changes the scores, so filter must rerun too
    # bf16 references are not the float32 policy's: train refuses them unless told not to check.
    repo.set_param("train", "reference_tolerance", None)
    # score.dtype is also the numerics of label agreement and of the base answers' log-probs: they rerun too.
    assert set(repo.repro()) == {"score", "filter", "train", "agreement", "truth", "base_answers", "evaluate", "rounds_report",
                                 *LATER_ROUNDS, *ALWAYS}
    assert repo.sha("data/generated.parquet") == generated
    # sampled in float32, scored in bf16: nothing recorded stands for a bf16 pass
    assert json.loads((repo.root / "reports/score.json").read_text())["recorded_while_sampling"] == []
    repo.run("git", "checkout", "params.yaml")
    repo.repro()


def test_generate_param_reruns_from_generate(repo):
    generated = repo.sha("data/generated.parquet")
    repo.set_param("generate", "seed", 1)
    # Label agreement does not depend on the trained model: it does not rerun.
    assert set(repo.repro()) == {"generate", "score", "filter", "train", "truth", "base_answers", "evaluate", "rounds_report",
                                 *LATER_ROUNDS, *ALWAYS}
    assert repo.sha("data/generated.parquet") != generated
    repo.run("git", "checkout", "params.yaml")
    repo.repro()


def version_outputs(repo) -> dict[str, str]:
    """Content hash of every file DVC tracks as an output of the pipeline version (dvc.lock)."""
    lock = yaml.safe_load((repo.root / "dvc.lock").read_text())
    files = {}
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            path = repo.root / out["path"]
            for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if file.is_file():
                    files[str(file.relative_to(repo.root))] = repo.sha(str(file.relative_to(repo.root)))
    return files


def test_same_params_give_identical_bytes(repo):
    before = version_outputs(repo)
    assert {"models/dlma/adapter_config.json", "reports/metrics.json", "reports/train.json", "reports/report.md",
            "reports/eval_samples.parquet", "data/generated.parquet"} <= set(before)
    for path in OUTPUTS:
        (repo.root / path).unlink()
    repo.repro("--force")
    assert version_outputs(repo) == before
    # Training again with nothing changed gives the same model folder: evaluate does not rerun.
    repo.repro("--force", "-s", "train")
    assert version_outputs(repo) == before
    assert sorted(repo.repro()) == ALWAYS


def mlflow_runs(repo, *, evaluations: bool = False):
    """The training runs (one per pipeline version) of the repository's store; with
    evaluations=True, the evaluations' own runs instead."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo.root / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{repo.root / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["dlma"], output_format="list")
    return [r for r in runs if (r.data.tags.get("dlma.role") == "evaluation") == evaluations]


def test_mlflow_run_has_curves_and_a_model_that_generates(repo):
    import mlflow

    runs = mlflow_runs(repo)
    versions = {r.data.tags["dlma.version"] for r in runs}
    # One run per pipeline version: the reruns above restored earlier versions without
    # duplicating their runs.
    assert len(runs) == len(versions)
    report = json.loads((repo.root / "reports/train.json").read_text())
    run = next(r for r in runs if r.data.tags["dlma.version"] == report["version"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.beta"] == "0.1" and run.data.params["model.base"]
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert {"rewards/accuracies", "rewards/margins", "learning_rate"} <= set(run.data.metrics)
    assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.name == "preferences"
    assert run.data.tags["mlflow.source.git.commit"] == repo.run("git", "rev-parse", "HEAD").stdout.strip()
    # The forced rerun above replaced a version's run: no registered model may point at a deleted run.
    client = mlflow.MlflowClient()
    for model_version in client.search_model_versions("name='dlma'"):
        assert client.get_run(model_version.run_id).info.lifecycle_stage == "active"
    # Logged as code: nothing in the logged model is a pickle.
    local = Path(mlflow.artifacts.download_artifacts("models:/dlma/latest"))
    assert (local / "MLmodel").is_file() and not [p for p in local.rglob("*") if p.suffix in (".pkl", ".pickle")]
    model = mlflow.pyfunc.load_model("models:/dlma/latest")
    answers = model.predict(["How do I make coffee?", "Hi"], params={"max_new_tokens": 5})
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert not list((repo.root / ".dvc").rglob("mlflow.db"))


def test_export_of_the_latest_version_loads_without_dlma(repo, tmp_path):
    """README: after `dvc repro`, `dlma export --alias latest --out exported`, then a Python
    without dlma loads the folder and generates (tests/export has the equality with the pipeline's model)."""
    import mlflow

    repo.run(sys.executable, "-c", "from dlma.cli import main; main()", "export", "--alias", "latest", "--out", str(tmp_path / "exported"))
    got = standalone_answers(tmp_path / "exported", tmp_path)
    assert len(got["answers"]) == len(PROMPTS) and all(a["answer_ids"] for a in got["answers"])
    record = json.loads((tmp_path / "exported" / "dlma_export.json").read_text())
    mlflow_runs(repo)  # points MLflow at the repository's store
    newest = max(int(v.version) for v in mlflow.MlflowClient().search_model_versions("name='dlma'"))
    assert record["registered"]["version"] == newest and record["evaluation_headline"] is not None
    assert "**Headline" in (tmp_path / "exported" / "README.md").read_text()


def test_after_a_failed_train_rerun_checkout_restores_the_model_and_its_reports(repo):
    """DVC deletes a stage's outputs before running it: a train rerun that fails must leave
    nothing that `dvc checkout` cannot restore (the report and curve are cached, as the model)."""
    outputs = ["reports/train.json", "reports/plots/train.csv", "models/dlma/adapter_model.safetensors"]
    before = {name: repo.sha(name) for name in outputs}
    repo.set_param("train", "lora_target_modules", ["no_such_module"])
    failed = repo.run("dvc", "repro", "train", check=False)
    assert failed.returncode != 0 and "train.lora_target_modules: 'no_such_module' not in the model" in failed.stderr
    repo.run("git", "checkout", "params.yaml")
    repo.run("dvc", "checkout")
    assert {name: repo.sha(name) for name in outputs} == before
    assert sorted(repo.repro()) == ALWAYS


def test_an_evaluation_only_experiment_keeps_the_first_evaluation(repo):
    """`dvc exp run -S evaluate.limit=2` evaluates the same model again: its numbers go to a
    run of their own, nested under the model's run, and the first evaluation's run keeps its own."""
    version = json.loads((repo.root / "reports/train.json").read_text())["version"]
    mine = [r for r in mlflow_runs(repo, evaluations=True) if r.data.tags["dlma.evaluates"] == version]
    assert len(mine) == 1 and mine[0].data.params["evaluate.limit"] == "4"
    first = dict(mine[0].data.metrics)
    parent = mine[0].data.tags["mlflow.parentRunId"]
    result = repo.run("dvc", "exp", "run", "--temp", "-n", "evalonly", "-S", "evaluate.limit=2")  # the workspace stays as it is
    ran = re.findall(r"Running stage '([^']+)'", result.stdout + result.stderr)
    assert "train" not in ran and "evaluate" in ran
    after = {r.data.params["evaluate.limit"]: r for r in mlflow_runs(repo, evaluations=True) if r.data.tags["dlma.evaluates"] == version}
    assert set(after) == {"4", "2"} and dict(after["4"].data.metrics) == first
    assert after["2"].data.tags["mlflow.parentRunId"] == parent
    assert after["2"].data.metrics["eval/agreement/outside/rows"] == 2 and first["eval/agreement/outside/rows"] == 4


def test_queued_experiments_record_into_the_same_store_and_see_the_same_sets(repo):
    before = {r.info.run_id for r in mlflow_runs(repo)}
    repo.run("dvc", "exp", "run", "-n", "beta02", "-S", "train.beta=0.2")
    repo.run("dvc", "exp", "run", "--queue", "-n", "beta03", "-S", "train.beta=0.3")
    repo.run("dvc", "exp", "run", "--queue", "-n", "beta04", "-S", "train.beta=0.4")
    repo.start_queue(2)
    status = repo.wait_for_queue()
    assert "Failed" not in status, status + repo.run("dvc", "queue", "logs", "beta03", check=False).stdout
    new = [r for r in mlflow_runs(repo) if r.info.run_id not in before]
    assert sorted(r.data.tags.get("dvc.experiment") for r in new) == ["beta02", "beta03", "beta04"]
    assert sorted(r.data.params["train.beta"] for r in new) == ["0.2", "0.3", "0.4"]
    # Each experiment's model is registered under its name as an alias: models:/dlma@beta03.
    import mlflow

    client = mlflow.MlflowClient()
    aliases = client.get_registered_model("dlma").aliases
    for run in new:
        version = client.get_model_version("dlma", aliases[run.data.tags["dvc.experiment"]])
        assert version.run_id == run.info.run_id and aliases[run.info.run_name] == version.version
    # The queued runs worked in copies under .dvc/tmp/exps but wrote to the repository's store...
    assert not list((repo.root / ".dvc").rglob("mlflow.db"))
    # ... and evaluated the set outside the repository, as the workspace run did.
    shown = json.loads(repo.run("dvc", "exp", "show", "--json").stdout)
    rows = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for revision in exp.get("revs") or []:
                metrics = (revision.get("data") or {}).get("metrics") or {}
                found = (metrics.get("reports/agreement.json") or {}).get("data") or {}
                if revision.get("name") in ("beta03", "beta04"):
                    rows[revision["name"]] = found.get("outside", {}).get("rows")
    assert rows == {"beta03": 4, "beta04": 4}, rows
