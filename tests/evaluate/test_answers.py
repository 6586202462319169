"""The base_answers stage samples what an evaluation would have sampled, with the log-probs an
evaluation would compute; an evaluation refuses answers that are not for its prompts; the KL
estimate and the perplexity guard against one sequence at a time."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from typer.testing import CliRunner

from dlma.cli import app
from dlma.core.errors import DlmaError
from dlma.evaluate.answers import ANSWER_COLUMNS, answers_table, read_answers
from dlma.evaluate.quality import quality_guards
from dlma.evaluate.run import kl_terms
from dlma.generate.params import GenerateParams
from dlma.generate.sampling import row_seed, sample_responses
from dlma.lm.prompts import encode_contexts
from dlma.model import load_causal_lm, load_tokenizer
from dlma.score.params import ScoreParams
from tests.helpers import REPO, TEST_PROMPTS, reference_logprob, shipped

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
    params["score"].update({"batch_size": 3})  # the log-probs in padded batches
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
    to share), in the sampling dtype; the table holds those very tokens and texts, and each
    answer's log-prob under the base model: its sampled tokens and, where the model ended
    it, that EOS, one sequence alone in float64."""
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
        response = list(alone.token_ids) + ([alone.eos_id] if alone.finish == "eos" else [])
        assert row["logp_base"] == pytest.approx(reference_logprob(model, context[0], response), abs=1e-4)
    # Read back for an evaluation of the same prompts: the same samples, in its order.
    samples, logp_base = read_answers(project / "answers.parquet", table.select("set", "id", "prompt"))
    assert answers_table(table.select("set", "id", "prompt"), samples, logp_base).equals(table)


def test_kl_and_perplexity_against_one_sequence_at_a_time(project, tiny_model_dir):
    """The evaluation's KL terms (policy and base log-probs of the policy's answers, in padded
    batches) and the perplexity guard built from them, against each answer scored alone in
    float64 and the textbook formula exp(-sum log-prob / tokens scored)."""
    table = pl.read_parquet(project / "answers.parquet")
    samples, logp_base = read_answers(project / "answers.parquet", table.select("set", "id", "prompt"))
    tokenizer = load_tokenizer(tiny_model_dir)
    # Two of the answers as if the model had ended them (the tiny model seldom does): their EOS is scored too.
    samples = [dataclasses.replace(s, token_ids=s.token_ids[:3], n_tokens=3, finish="eos", eos_id=tokenizer.eos_token_id)
               if i % 2 else s for i, s in enumerate(samples)]
    base = load_causal_lm(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"), attn_implementation="eager")
    policy = load_causal_lm(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"), attn_implementation="eager")
    with torch.no_grad():
        policy.model.layers[0].mlp.down_proj.weight.mul_(1.5)  # another model, so the log-ratio is not 0
    contexts = encode_contexts(tokenizer, TEST_PROMPTS, table["prompt"].to_list(), "bare")
    logp_policy, logp_base_of_policy = kl_terms(policy, base, tokenizer, contexts, samples,
                                                shipped(ScoreParams, "score", batch_size=3))
    responses = [list(s.token_ids) + ([s.eos_id] if s.finish == "eos" else []) for s in samples]
    expected_policy = [reference_logprob(policy, c, r) for c, r in zip(contexts, responses)]
    expected_base = [reference_logprob(base, c, r) for c, r in zip(contexts, responses)]
    np.testing.assert_allclose(logp_policy, expected_policy, atol=1e-4)
    np.testing.assert_allclose(logp_base_of_policy, expected_base, atol=1e-4)
    assert np.abs(logp_policy - logp_base_of_policy).max() > 0.01
    # Answers that come with their log-probs recorded while sampling: those are the first term, no pass runs.
    recorded = [dataclasses.replace(s, logp=v) for s, v in zip(samples, expected_policy)]
    first, second = kl_terms(None, base, tokenizer, contexts, recorded, shipped(ScoreParams, "score", batch_size=3))
    assert first.tolist() == expected_policy and second.tolist() == logp_base_of_policy.tolist()
    # The perplexity guard: the policy's answers from the KL pass, the base answers from the table.
    other = [s.__class__(text=s.text + " x", finish="length", n_tokens=s.n_tokens + 1, token_ids=s.token_ids + (5,))
             for s in samples]
    ppl, text = quality_guards({"base": samples, "aligned": other}, {"base": logp_base_of_policy, "aligned": logp_base_of_policy})
    assert ppl["base"] == pytest.approx(np.exp(-sum(expected_base) / sum(len(r) for r in responses)), rel=1e-5)
    assert ppl["aligned"] == pytest.approx(np.exp(-sum(expected_base) / sum(s.n_tokens + 1 for s in samples)), rel=1e-5)
    assert text["base"]["mean_tokens"] == pytest.approx(np.mean([len(s.token_ids) for s in samples]))
    assert text["aligned"]["mean_tokens"] == pytest.approx(text["base"]["mean_tokens"] + 1)


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
    table.with_columns(pl.when(pl.col("id") == "e3").then(float("nan")).otherwise(pl.col("logp_base")).alias("logp_base")
                       ).write_parquet(project / "bad.parquet")
    with pytest.raises(DlmaError, match=r"row id='e3': field 'logp_base' is nan, not a log-prob"):
        read_answers(project / "bad.parquet", prompts)
    table.drop("token_ids").write_parquet(project / "bad.parquet")
    with pytest.raises(DlmaError, match=r"lacks column\(s\) \['token_ids'\]; it must come from the base_answers stage"):
        read_answers(project / "bad.parquet", prompts)
    table.with_columns(pl.when(pl.col("id") == "e1").then(None).otherwise(pl.col("answer")).alias("answer")
                       ).write_parquet(project / "bad.parquet")
    with pytest.raises(DlmaError, match=r"field 'answer' is null in row id='e1'"):
        read_answers(project / "bad.parquet", prompts)
