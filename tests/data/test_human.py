"""The human-labelled pairs: split into training and held-out parts without the prompts
that evaluation judges, on the real HH-RLHF file and on rows written here."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from dlma.cli import app
from dlma.core.errors import DlmaError
from dlma.data.human import shuffle_key, split_human_pairs
from dlma.data.params import HumanParams
from dlma.data.loaders import load_records
from tests.helpers import REPO, shipped


def frame(n: int) -> pl.DataFrame:
    return pl.DataFrame({"id": [f"row{i}" for i in range(n)], "prompt": [f"q{i}" for i in range(n)], "category": ["hh"] * n,
                         "chosen": [f"good {i}" for i in range(n)], "rejected": [f"bad {i}" if i != 3 else "good 3" for i in range(n)]})


def test_split_drops_evaluation_prompts_and_identical_answers_and_is_seeded():
    params = shipped(HumanParams, "human", limit=None, holdout_fraction=0.25, seed=7)
    train, holdout, report = split_human_pairs(frame(20), {"q0", "q1", "q5"}, params, "x.jsonl")
    assert report["skipped"] == {"identical_answers": 1, "prompt_in_evaluation_sets": 3, "prompt_in_heldout_prompts": 0}
    kept = set(train["prompt"]) | set(holdout["prompt"])
    assert kept == {f"q{i}" for i in range(20)} - {"q0", "q1", "q5", "q3"}
    assert not set(train["id"]) & set(holdout["id"]) and holdout.height == round(16 * 0.25) == 4
    # The draw: ids ordered by the seeded hash, the first quarter held out (computed here on its own).
    order = sorted((r for r in frame(20)["id"] if r not in {"row0", "row1", "row5", "row3"}), key=lambda r: shuffle_key(7, r))
    assert holdout["id"].to_list() == order[:4] and train["id"].to_list() == order[4:]
    assert (train["pair"] == params.pair).all()
    again = split_human_pairs(frame(20), {"q0", "q1", "q5"}, params, "x.jsonl")
    assert again[0].equals(train) and again[1].equals(holdout)
    other = split_human_pairs(frame(20), {"q0", "q1", "q5"}, shipped(HumanParams, "human", limit=None, seed=8), "x.jsonl")
    assert other[1]["id"].to_list() != holdout["id"].to_list()
    limited = split_human_pairs(frame(20), set(), shipped(HumanParams, "human", limit=8, holdout_fraction=0.25, seed=7), "x")
    assert limited[0].height + limited[1].height == 8
    with pytest.raises(DlmaError, match="x.jsonl': 1 usable pair"):
        split_human_pairs(frame(2), {"q0"}, params, "x.jsonl")
    # The pipeline's own held-out prompts go too (data.source is the HH file: the paper's setup), counted apart.
    train, holdout, report = split_human_pairs(frame(20), {"q0", "q1", "q5"}, params, "x.jsonl", heldout_prompts={"q1", "q7", "q9"})
    assert report["skipped"] == {"identical_answers": 1, "prompt_in_evaluation_sets": 3, "prompt_in_heldout_prompts": 2}
    assert not {"q7", "q9"} & (set(train["prompt"]) | set(holdout["prompt"])) and train.height + holdout.height == 14


def test_the_human_stage_on_the_real_hh_file_leaves_out_the_agreement_rows(tmp_path, shared_data, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    hh = shared_data / "hh-rlhf" / "harmless-base-test-dev.jsonl.gz"
    params["human"].update({"source": str(hh), "limit": 60})
    params["evaluate"].update({"limit": 10, "prompt_sets": []})
    params["evaluate"]["agreement_sets"] = [s for s in params["evaluate"]["agreement_sets"] if s["name"] == "hh_harmless"]
    params["evaluate"]["agreement_sets"][0]["source"] = str(hh)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    # The paper's setup: the prompts are the HH file's too, and prepare held some out for evaluation.
    records = load_records(str(hh), format="hh")[0]
    heldout = records.slice(300, 400)
    heldout.write_parquet(tmp_path / "e.parquet")
    result = CliRunner().invoke(app, ["human", "--eval-prompts", "e.parquet", "--train", "t.parquet", "--holdout", "h.parquet",
                                      "--report", "r.json"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    evaluated = set(records.head(10)["prompt"])
    train, holdout = pl.read_parquet(tmp_path / "t.parquet"), pl.read_parquet(tmp_path / "h.parquet")
    assert report["skipped"]["prompt_in_evaluation_sets"] >= 10 and report["rows_read"] == 1541
    assert report["skipped"]["prompt_in_heldout_prompts"] >= 400  # every row whose prompt is a held-out one
    assert train.height + holdout.height == 60 and holdout.height == 15
    kept = set(train["prompt"]) | set(holdout["prompt"])
    assert not kept & evaluated and not kept & set(heldout["prompt"])


def test_a_missing_optional_source_gives_empty_tables_and_says_why(tmp_path, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["human"].update({"source": "missing/hh.jsonl", "optional": True})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["human", "--eval-prompts", "e.parquet", "--train", "t.parquet", "--holdout", "h.parquet",
                                      "--report", "r.json"])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(tmp_path / "t.parquet").height == 0
    assert "not found" in json.loads((tmp_path / "r.json").read_text())["skipped"]
    params["human"]["optional"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(app, ["human", "--eval-prompts", "e.parquet", "--train", "t.parquet", "--holdout", "h.parquet",
                                      "--report", "r.json"])
    assert result.exit_code == 2 and "human.source missing/hh.jsonl not found" in result.output
