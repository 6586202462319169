"""The base_answers stage samples what an evaluation would have sampled, and an evaluation
refuses answers that are not for its prompts."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch
import yaml
from typer.testing import CliRunner

from dlma.cli import app
from dlma.core.errors import DlmaError
from dlma.evaluate.answers import ANSWER_COLUMNS, answers_table, read_answers
from dlma.generate.params import GenerateParams
from dlma.generate.sampling import row_seed, sample_responses
from dlma.lm.prompts import encode_contexts
from dlma.model import load_causal_lm, load_tokenizer
from tests.helpers import REPO, TEST_PROMPTS, shipped

PROMPTS = ["Tell me about the sea.", "Describe a cat.", "What do you think of rain?", "Write a short story.",
           "Give me advice on cooking."]


def eval_prompts(path: Path) -> Path:
    pl.DataFrame({"id": [f"e{i}" for i in range(len(PROMPTS))], "prompt": PROMPTS, "category": ["x"] * len(PROMPTS)}
                 ).write_parquet(path)
    return path


@pytest.fixture
def project(tmp_path, tiny_model_dir, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_model_dir)
    params["prompts"] = TEST_PROMPTS.__dict__ | {"pairs": {k: v.__dict__ for k, v in TEST_PROMPTS.pairs.items()}}
    params["generate"].update({"max_new_tokens": 8, "batch_size": 2, "seed": 3})
    params["evaluate"].update({"limit": 4, "prompt_sets": [], "agreement_sets": [], "judges": ["self_contrast"]})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    eval_prompts(tmp_path / "eval.parquet")
    monkeypatch.chdir(tmp_path)
    for args in (["model", "--out", "model.json"],
                 ["base_answers", "--eval-prompts", "eval.parquet", "--model-id", "model.json", "--out", "answers.parquet"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (args[0], result.output)
    return tmp_path


def test_the_stage_samples_each_prompt_from_its_own_stream(project, tiny_model_dir):
    """Recomputed here: the first evaluate.limit prompts, each answered by the base model
    from the seed of (generate.seed, "heldout/<id>", "bare"), one prompt at a time (no batch
    to share), in the sampling dtype; the table holds those very tokens and texts."""
    table = pl.read_parquet(project / "answers.parquet")
    assert table.columns == ["set", "id", "prompt", *ANSWER_COLUMNS[2:]]
    assert table["id"].to_list() == ["e0", "e1", "e2", "e3"] and set(table["set"]) == {"heldout"}
    generate = shipped(GenerateParams, "generate", max_new_tokens=8, batch_size=1, seed=3)
    model = load_causal_lm(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"))
    tokenizer = load_tokenizer(tiny_model_dir)
    for row in table.iter_rows(named=True):
        context = encode_contexts(tokenizer, TEST_PROMPTS, [row["prompt"]], "bare")
        alone = sample_responses(model, tokenizer, context, generate, seeds=[row_seed(3, f"heldout/{row['id']}", "bare")])[0]
        assert (row["answer"], row["finish"], tuple(row["token_ids"]), row["eos_id"]) == (
            alone.text, alone.finish, alone.token_ids, alone.eos_id)
        assert row["n_tokens"] == len(alone.token_ids)
    # Read back for an evaluation of the same prompts: the same samples, in its order.
    samples = read_answers(project / "answers.parquet", table.select("set", "id", "prompt"))
    assert answers_table(table.select("set", "id", "prompt"), samples).equals(table)


def test_answers_for_other_prompts_or_malformed_are_refused(project):
    table = pl.read_parquet(project / "answers.parquet")
    prompts = table.select("set", "id", "prompt")
    with pytest.raises(DlmaError, match=r"answers.parquet': its 4 answers are not for the 3 evaluation prompts"):
        read_answers(project / "answers.parquet", prompts.head(3))  # another evaluate.limit
    with pytest.raises(DlmaError, match=r"row 1: \('heldout', 'e1'\) where the evaluation has \('heldout', 'e2'\)"):
        read_answers(project / "answers.parquet", prompts[[0, 2, 1, 3]])  # other prompts, or another order
    with pytest.raises(DlmaError, match="does not exist; run the base_answers stage"):
        read_answers(project / "missing.parquet", prompts)
    table.with_columns(pl.when(pl.col("id") == "e2").then(pl.lit("stop")).otherwise(pl.col("finish")).alias("finish")
                       ).write_parquet(project / "bad.parquet")
    with pytest.raises(DlmaError, match=r"row id='e2': field 'finish' is 'stop'"):
        read_answers(project / "bad.parquet", prompts)
    table.drop("token_ids").write_parquet(project / "bad.parquet")
    with pytest.raises(DlmaError, match=r"lacks column\(s\) \['token_ids'\]; it must come from the base_answers stage"):
        read_answers(project / "bad.parquet", prompts)
    table.with_columns(pl.when(pl.col("id") == "e1").then(None).otherwise(pl.col("answer")).alias("answer")
                       ).write_parquet(project / "bad.parquet")
    with pytest.raises(DlmaError, match=r"field 'answer' is null in row id='e1'"):
        read_answers(project / "bad.parquet", prompts)
