"""A real `dvc repro` of model -> filter on a tiny model in a temporary git repository."""

from __future__ import annotations

import json

import polars as pl
import pytest

from tests.dvcrepo import DvcRepo

pytestmark = pytest.mark.slow

OUTPUTS = ["data/prompts_train.parquet", "data/generated.parquet", "data/scored.parquet", "data/preferences.parquet"]
SMALL = {
    "data": {"limit": 8},
    "generate": {"max_new_tokens": 6, "batch_size": 4},
    "score": {"batch_size": 4},
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_model_dir):
    repo = DvcRepo(tmp_path_factory.mktemp("dvc-project"), tiny_model_dir, SMALL)
    ran = repo.repro()
    assert ran == ["model", "prepare", "generate", "score", "filter"]
    repo.commit("first run")
    return repo


def test_outputs_and_reports(repo):
    preferences = pl.read_parquet(repo.root / "data/preferences.parquet")
    assert preferences.columns == ["id", "prompt", "chosen", "rejected", "margin", "ref_logp_chosen", "ref_logp_rejected"]
    scored = pl.read_parquet(repo.root / "data/scored.parquet")
    assert preferences.height == scored.height == 6  # 8 prompts, 2 held out for evaluation
    report = json.loads((repo.root / "reports/filter.json").read_text())
    assert report["rows_in"] == 6 and report["rows_out"] == 6
    metrics = repo.run("dvc", "metrics", "show", "--json").stdout
    assert "positive_fraction" in metrics and "rows_out" in metrics
    evaluation = pl.read_parquet(repo.root / "data/prompts_eval.parquet")
    assert set(evaluation["prompt"]).isdisjoint(scored["prompt"])


def test_second_repro_reruns_nothing(repo):
    before = {path: repo.sha(path) for path in OUTPUTS}
    assert repo.repro() == ["model"]  # the identity check only; its output did not change
    assert {path: repo.sha(path) for path in OUTPUTS} == before


def test_score_param_reruns_score_and_filter_only(repo):
    generated = repo.sha("data/generated.parquet")
    repo.set_param("score", "dtype", "bfloat16")  # changes the scores, so filter must rerun too
    assert repo.repro() == ["model", "score", "filter"]
    assert repo.sha("data/generated.parquet") == generated
    repo.run("git", "checkout", "params.yaml")
    repo.repro()


def test_generate_param_reruns_from_generate(repo):
    generated = repo.sha("data/generated.parquet")
    repo.set_param("generate", "seed", 1)
    assert repo.repro() == ["model", "generate", "score", "filter"]
    assert repo.sha("data/generated.parquet") != generated
    repo.run("git", "checkout", "params.yaml")
    repo.repro()


def test_same_params_give_identical_bytes(repo):
    before = {path: repo.sha(path) for path in OUTPUTS}
    for path in OUTPUTS:
        (repo.root / path).unlink()
    repo.repro("--force")
    assert {path: repo.sha(path) for path in OUTPUTS} == before
