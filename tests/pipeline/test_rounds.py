"""Iterative rounds through the shipped dvc.yaml on the tiny model: round 2 samples with round
1's weights, the reference option is honoured, DVC reruns exactly the rounds a change
touches, a killed round resumes, and MLflow groups the rounds under one parent run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import polars as pl
import pytest
import torch

from tests.dvcrepo import DvcRepo
from tests.helpers import reference_logprob
from tests.pipeline.test_kill import SMALL, store

pytestmark = pytest.mark.slow
ALWAYS = {"model", "recover", "sets", "sources"}  # re-checked on every repro (cheap)
# A high learning rate: each round's model must answer visibly otherwise than the one before.
ROUNDS = SMALL | {"train": SMALL["train"] | {"max_steps": 3, "learning_rate": 0.05}, "rounds": {"count": 3},
                  "evaluate": SMALL["evaluate"] | {"judges": ["self_contrast", "refusal"]}}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_model_dir):
    repo = DvcRepo(tmp_path_factory.mktemp("rounds") / "project", tiny_model_dir, ROUNDS)
    ran = repo.repro()
    assert {"train", "round@2", "round@3"} <= set(ran) and ran.index("round@2") < ran.index("round@3")
    repo.commit("three rounds")
    return repo


def direct_generation(repo, model_dir):
    """Round 2's sampling done here, independently of the round stage: the generate step's
    function with the model read from `model_dir` (None: the base model)."""
    from dlma.core.config import load_section
    from dlma.generate.pairs import generate_pairs
    from dlma.generate.params import GenerateParams
    from dlma.lm.params import PromptsParams
    from dlma.model import load_aligned, load_causal_lm, load_tokenizer

    params_file = repo.root / "params.yaml"
    base = repo.params()["model"]["base"]
    if model_dir is None:
        model, tokenizer = load_causal_lm(base, dtype=torch.float32, device=torch.device("cpu")), load_tokenizer(base)
    else:
        model, tokenizer, _ = load_aligned(model_dir)
    generated, _ = generate_pairs(model, tokenizer, pl.read_parquet(repo.root / "data/prompts_train.parquet"),
                                  load_section(PromptsParams, "prompts", params_file),
                                  load_section(GenerateParams, "generate", params_file))
    return generated


def test_round_two_samples_with_round_one_weights(repo):
    round2 = pl.read_parquet(repo.root / "rounds/2/generated.parquet")
    by_round1 = direct_generation(repo, repo.root / "models/dlma")
    by_base = direct_generation(repo, None)
    for side in ("pos", "neg"):
        assert round2[f"response_{side}_ids"].to_list() == by_round1[f"response_{side}_ids"].to_list()
    # The same per-row seeds: round 1's own pairs (the base model's) are what the base gives here ...
    assert pl.read_parquet(repo.root / "data/generated.parquet")["response_pos_ids"].to_list() == by_base["response_pos_ids"].to_list()
    # ... and round 2's differ from them: another model answered.
    assert round2["response_pos_ids"].to_list() != by_base["response_pos_ids"].to_list()
    # Round 3 sampled with round 2's model.
    round3 = pl.read_parquet(repo.root / "rounds/3/generated.parquet")
    assert round3["response_pos_ids"].to_list() == direct_generation(repo, repo.root / "rounds/2/model")["response_pos_ids"].to_list()


def score_under(model_dir, frame: pl.DataFrame, repo, ids: str) -> np.ndarray:
    """Summed log-probs of each pair's `ids` answer given the bare prompt, one sequence at a time."""
    from dlma.core.config import load_section
    from dlma.lm.params import PromptsParams
    from dlma.lm.prompts import context_ids
    from dlma.model import load_aligned, load_causal_lm, load_tokenizer

    base = repo.params()["model"]["base"]
    if model_dir is None:
        model, tokenizer = load_causal_lm(base, dtype=torch.float32, device=torch.device("cpu"), attn_implementation="eager"), load_tokenizer(base)
    else:
        model, tokenizer, _ = load_aligned(model_dir, attn_implementation="eager")
    prompts = load_section(PromptsParams, "prompts", repo.root / "params.yaml")
    return np.array([reference_logprob(model, context_ids(tokenizer, prompts, q, "bare"), list(answer))
                     for q, answer in zip(frame["prompt"], frame[ids])])


def test_the_reference_is_the_base_model_by_default_and_the_previous_round_on_request(repo):
    preferences = pl.read_parquet(repo.root / "rounds/2/preferences.parquet")
    under_base = score_under(None, preferences, repo, "chosen_ids")
    np.testing.assert_allclose(preferences["ref_logp_chosen"].to_numpy(), under_base, rtol=1e-5, atol=1e-4)
    under_round1 = score_under(repo.root / "models/dlma", preferences, repo, "chosen_ids")
    assert np.abs(under_round1 - under_base).max() > 1e-3  # the test can tell the two references apart
    train = json.loads((repo.root / "rounds/2/train.json").read_text())
    assert train["round"] == 2 and train["steps"] == 3

    # A param of the later rounds only: rounds 2 and 3 rerun, round 1 does not.
    repo.set_param("rounds", "reference", "previous")
    ran = set(repo.repro())
    assert ran - ALWAYS == {"round@2", "round@3", "rounds_report"}, ran
    preferences = pl.read_parquet(repo.root / "rounds/2/preferences.parquet")
    np.testing.assert_allclose(preferences["ref_logp_chosen"].to_numpy(),
                               score_under(repo.root / "models/dlma", preferences, repo, "chosen_ids"),
                               rtol=1e-5, atol=1e-4)
    assert set(repo.repro()) - ALWAYS == set()  # a second repro runs nothing
    repo.run("git", "checkout", "params.yaml", "dvc.lock")  # back to the committed three rounds
    repo.run("dvc", "checkout")


def test_a_higher_count_runs_only_the_new_round(repo):
    repo.set_param("rounds", "count", 2)
    ran = set(repo.repro())
    assert ran - ALWAYS == {"round_plan@2", "round_plan@3", "round@3", "rounds_report"}, ran  # round 3 now writes its note only
    assert json.loads((repo.root / "reports/rounds/3.json").read_text()) == {"round": 3, "active": False, "reason": "rounds.count is 2"}
    assert not (repo.root / "rounds/3/model").exists()
    repo.set_param("rounds", "count", 3)
    ran = set(repo.repro())
    assert ran - ALWAYS == {"round_plan@2", "round_plan@3", "rounds_report"}, ran  # round 3 is back from DVC's run cache, round 2 untouched
    assert json.loads((repo.root / "reports/rounds/3.json").read_text())["active"]
    repo.run("git", "checkout", "params.yaml", "dvc.lock")
    repo.run("dvc", "checkout")


def test_mlflow_groups_the_rounds_and_registers_each_round(repo):
    client = store(repo)
    experiment = client.get_experiment_by_name("dlma")
    runs = client.search_runs([experiment.experiment_id])
    # One parent per multi-round pipeline version: the committed rounds' (reference: base) and
    # the one the reference test made (reference: previous).
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("dlma.role") == "rounds"}
    assert len(parents) == 2
    round2 = json.loads((repo.root / "reports/rounds/2.json").read_text())["train"]["version"]
    (run2,) = [r for r in runs if r.data.tags.get("dlma.version") == round2]
    parent = parents[run2.data.tags["mlflow.parentRunId"]]
    nested = {r.data.tags.get("dlma.round"): r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert {"2", "3"} <= set(nested) and nested["2"].data.tags["dlma.stage"] == "round"
    # Round 1 (the train stage's run) is nested too, under the rounds that last built on it.
    (first,) = [r for r in runs if r.data.tags.get("dlma.round") == "1"]
    assert first.data.tags["dlma.stage"] == "train" and first.data.tags["mlflow.parentRunId"] in parents
    versions = client.search_model_versions("name='dlma'")
    rounds = {v.tags.get("dlma.round"): v for v in versions if v.tags.get("dlma.round")}
    assert {"2", "3"} <= set(rounds)
    assert rounds["2"].run_id == nested["2"].info.run_id
    # `dvc exp show` lists each round's metrics.
    shown = repo.run("dvc", "exp", "show", "--json").stdout
    assert "reports/rounds/2.json" in shown and "reports/rounds/3.json" in shown


def test_round_metrics_compare_with_the_base_model_and_the_previous_round(repo):
    metrics = json.loads((repo.root / "reports/rounds/2.json").read_text())
    assert metrics["active"] and metrics["round"] == 2 and metrics["start"] == "previous" and metrics["reference"] == "base"
    for against in ("vs_base", "vs_previous"):
        assert set(metrics[against]["win_rate"]) >= {"self_contrast"}
        kl = metrics[against]["kl_to_base"]
        assert kl["ci_low"] <= kl["mean"] <= kl["ci_high"]
    samples = {a: pl.read_parquet(repo.root / f"rounds/2/eval_samples_{a}.parquet") for a in ("vs_base", "vs_previous")}
    # Paired: the same prompts and round 2's same answers; the other side is the base model's, then round 1's.
    assert samples["vs_base"]["answer_aligned"].to_list() == samples["vs_previous"]["answer_aligned"].to_list()
    assert samples["vs_base"]["answer_base"].to_list() == pl.read_parquet(repo.root / "reports/eval_samples.parquet")["answer_base"].to_list()
    assert samples["vs_previous"]["answer_base"].to_list() == pl.read_parquet(repo.root / "reports/eval_samples.parquet")["answer_aligned"].to_list()


def test_a_killed_round_resumes_there(tmp_path, tiny_model_dir):
    repo = DvcRepo(tmp_path, tiny_model_dir, ROUNDS | {"rounds": {"count": 2}, "train": ROUNDS["train"] | {"max_steps": 60, "save_steps": 5}})
    process = subprocess.Popen(["dvc", "repro"], cwd=repo.root, env=repo.env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 900
    while not list(repo.root.glob("models/checkpoints/*/checkpoint-10/trainer_state.json")) or not (repo.root / "rounds/.2.partial/preferences.parquet").exists():
        assert process.poll() is None, "the pipeline ended before round 2 could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    ran = repo.repro()
    # Round 1 stays (it had finished); round 2 runs again, round 3 (past the count) writes its note.
    assert set(ran) - ALWAYS == {"round@2", "round@3", "rounds_report"}, ran
    train = json.loads((repo.root / "rounds/2/train.json").read_text())
    assert train["steps"] == 60
    client = store(repo)
    rounds = [v for v in client.search_model_versions("name='dlma'") if v.tags.get("dlma.round") == "2"]
    assert len(rounds) == 1
    run = client.get_run(rounds[0].run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["timing/resumed_from_step"] >= 10
