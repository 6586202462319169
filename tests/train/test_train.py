"""Training on a tiny model: stored reference log-probs, parameter updates, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from dlma.cli import app
from dlma.model import load_causal_lm, load_tokenizer
from dlma.score.contrastive import score_table
from dlma.score.params import ScoreParams
from dlma.train.data import add_reference_logps, tokenise_preferences
from dlma.train.trainer import MarginPreferenceCollator, sequence_logps
from tests.helpers import TEST_PROMPTS, shipped

REPO = Path(__file__).resolve().parents[2]
PROMPTS = TEST_PROMPTS


def preference_frame(model, tokenizer) -> pl.DataFrame:
    generated = pl.DataFrame({
        "id": [f"r{i}" for i in range(6)],
        "prompt": ["How do I make coffee?", "Tell me about the fox.", "Why?", "Explain photosynthesis.", "Hi", "What is the capital of France?"],
        "response_pos": ["Use fresh beans.", "The quick brown fox.", "Because.", "Plants turn light into sugar.", "Hello!", "Paris."],
        "response_neg": ["No.", "I cannot help with that request.", "", "Go away.", "Harm.", "London is the capital."],
    })
    scored = score_table(model, tokenizer, generated, PROMPTS, shipped(ScoreParams, "score", batch_size=4))
    return scored.select(
        "id", "prompt", pl.col("response_pos").alias("chosen"), pl.col("response_neg").alias("rejected"),
        pl.col("score").alias("margin"), pl.col("ref_logp_pos").alias("ref_logp_chosen"),
        pl.col("ref_logp_neg").alias("ref_logp_rejected"),
    )


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"), attn_implementation="eager")
    return model, load_tokenizer(tiny_model_dir)


def test_reference_logps_from_file_equal_a_forward_pass(base):
    model, tokenizer = base
    frame = preference_frame(model, tokenizer)
    rows, report = tokenise_preferences(frame, tokenizer, PROMPTS, max_length=512)
    assert report == {"pairs": 6, "skipped_too_long": 0}
    batch = MarginPreferenceCollator(tokenizer.pad_token_id)(rows)
    with torch.no_grad():
        logps = sequence_logps(model, batch)  # the trainer's own forward, on the base weights
    chosen, rejected = logps.chunk(2)
    np.testing.assert_allclose(chosen.numpy(), frame["ref_logp_chosen"].to_numpy(), rtol=1e-4)
    np.testing.assert_allclose(rejected.numpy(), frame["ref_logp_rejected"].to_numpy(), rtol=1e-4)
    # Computing them in the train stage (table without the columns) gives the same numbers.
    fresh, _ = tokenise_preferences(frame.drop("ref_logp_chosen", "ref_logp_rejected"), tokenizer, PROMPTS, max_length=512)
    add_reference_logps(fresh, model, tokenizer, batch_size=4)
    np.testing.assert_allclose([r["ref_chosen_logps"] for r in fresh], frame["ref_logp_chosen"].to_numpy(), rtol=1e-4)


def test_too_long_pairs_are_skipped_and_counted(base):
    model, tokenizer = base
    frame = preference_frame(model, tokenizer)
    everything, _ = tokenise_preferences(frame, tokenizer, PROMPTS, max_length=10_000)
    lengths = sorted(len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in everything)
    limit = lengths[2]  # the three longest pairs are over it
    expected_kept = sum(length <= limit for length in lengths)
    rows, report = tokenise_preferences(frame, tokenizer, PROMPTS, max_length=limit)
    assert report == {"pairs": expected_kept, "skipped_too_long": 6 - expected_kept} and len(rows) == expected_kept


@pytest.fixture
def project(tmp_path, tiny_model_dir, base, monkeypatch):
    model, tokenizer = base
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_model_dir)
    params["prompts"] = {**params["prompts"], "style": "system"}
    params["train"].update({"max_steps": 4, "save_steps": 2, "batch_size": 2, "learning_rate": 1e-2})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / ".dvc").mkdir()  # marks the repository root for the MLflow store
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert CliRunner().invoke(app, ["model", "--out", "model.json"]).exit_code == 0
    preference_frame(model, tokenizer).write_parquet(tmp_path / "prefs.parquet")
    return tmp_path


def run_train(preferences="prefs.parquet"):
    return CliRunner().invoke(app, [
        "train", "--preferences", preferences, "--model-id", "model.json", "--out", "models/dlma", "--checkpoints", "models/checkpoints",
        "--report", "reports/train.json", "--curve", "reports/plots/train.csv",
    ])


def test_train_updates_adapter_and_writes_reports(project):
    result = run_train()
    assert result.exit_code == 0, result.output
    adapter = load_file(project / "models/dlma/adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # LoRA B starts at zero: it moved
    curve = pl.read_csv(project / "reports/plots/train.csv")
    assert curve["step"].to_list() == [1, 2, 3, 4]
    # Step 1 runs at the base weights (LoRA B = 0), so Delta = 0 and the loss is the
    # margin term alone: mean of -log sigmoid(-beta * w * clamp(R)).
    margins = pl.read_parquet(project / "prefs.parquet")["margin"].to_numpy()
    per_pair = -np.log(1 / (1 + np.exp(0.1 * 0.2 * np.clip(margins, -40, 40))))
    batch_means = [(per_pair[i] + per_pair[j]) / 2 for i in range(6) for j in range(i + 1, 6)]
    assert min(abs(curve["loss"][0] - m) for m in batch_means) < 1e-4
    assert not (project / "models/checkpoints").exists() or not any((project / "models/checkpoints").iterdir())


def test_final_metrics_are_opt_in_and_equal_a_pass_with_the_final_weights(project, monkeypatch):
    import json

    import dlma.train.run

    from dlma.core.config import load_section
    from dlma.lm.params import PromptsParams
    from dlma.model import load_aligned
    from tests.helpers import reference_logprob

    # Off (the default): no pass of its own over the pairs; the report still says what was trained on.
    real_pass = dlma.train.run.final_pass_metrics

    def refused(trainer):
        raise AssertionError("the final pass ran with train.final_metrics false")

    monkeypatch.setattr(dlma.train.run, "final_pass_metrics", refused)
    result = run_train()
    assert result.exit_code == 0, result.output
    report = json.loads((project / "reports/train.json").read_text())
    assert (report["pairs"], report["steps"]) == (6, 4)
    assert not {"final_loss", "reward_accuracy", "reward_margin"} & report.keys()
    # On: loss, reward accuracy and margin over every pair with the trained weights, against
    # each sequence scored alone here with the textbook log-softmax.
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["final_metrics"] = True
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setattr(dlma.train.run, "final_pass_metrics", real_pass)
    result = run_train()
    assert result.exit_code == 0, result.output
    report = json.loads((project / "reports/train.json").read_text())
    model, tokenizer, _ = load_aligned(project / "models/dlma", dtype=torch.float32, attn_implementation="eager")
    frame = pl.read_parquet(project / "prefs.parquet")
    rows, _ = tokenise_preferences(frame, tokenizer, load_section(PromptsParams, "prompts", project / "params.yaml"), max_length=512)
    chosen = np.array([reference_logprob(model, r["prompt_ids"], r["chosen_ids"]) for r in rows])
    rejected = np.array([reference_logprob(model, r["prompt_ids"], r["rejected_ids"]) for r in rows])
    beta, weight = params["train"]["beta"], params["train"]["margin_weight"]
    delta = (chosen - frame["ref_logp_chosen"].to_numpy()) - (rejected - frame["ref_logp_rejected"].to_numpy())
    shift = weight * np.clip(frame["margin"].to_numpy(), params["train"]["margin_min"], params["train"]["margin_max"])
    assert report["pairs"] == 6
    assert report["final_loss"] == pytest.approx(np.mean(np.log1p(np.exp(-beta * (delta - shift)))), abs=1e-4)
    assert report["reward_margin"] == pytest.approx(np.mean(beta * delta), abs=1e-4)
    assert report["reward_accuracy"] == pytest.approx(np.mean(beta * delta > 0))
    assert abs(report["reward_margin"]) > 1e-3  # the adapter moved: the check above is not of the base weights


def test_bad_preference_files_write_no_model(project):
    frame = pl.read_parquet(project / "prefs.parquet")
    cases = {
        "missing.parquet": (frame.drop("margin"), "lacks column(s) ['margin']"),
        "nan.parquet": (frame.with_columns(pl.when(pl.col("id") == "r2").then(float("nan")).otherwise(pl.col("margin")).alias("margin")), "field 'margin' is NaN or missing in row id='r2'"),
        "empty.parquet": (frame.head(0), "has no rows: no preference pairs to train on"),
    }
    for name, (bad, message) in cases.items():
        bad.write_parquet(project / name)
        result = run_train(name)
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert not (project / "models/dlma").exists()


def test_full_fine_tuning_saves_full_weights_and_loads_back(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update({"peft": "none", "max_steps": 2, "learning_rate": 1e-3})
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_train()
    assert result.exit_code == 0, result.output
    saved = load_file(project / "models/dlma/model.safetensors")
    base = load_file(Path(params["model"]["base"]) / "model.safetensors")
    assert not (project / "models/dlma/adapter_model.safetensors").exists()
    assert any(not torch.equal(saved[k], base[k]) for k in base if k in saved)  # every weight trainable: they moved
    from dlma.model import load_aligned

    model, _, card = load_aligned(project / "models/dlma")
    assert card["peft"] == "none" and sum(p.numel() for p in model.parameters()) > 0


def test_numerics_check_refuses_references_scored_in_another_dtype(project, tiny_model_dir):
    # The score stage run in bfloat16, the train stage in float32: the stored reference
    # log-probs are not the policy's at step 0.
    bf16 = load_causal_lm(tiny_model_dir, dtype=torch.bfloat16, device=torch.device("cpu"), attn_implementation="eager")
    frame = preference_frame(bf16, load_tokenizer(tiny_model_dir))
    frame.write_parquet(project / "bf16.parquet")
    result = run_train("bf16.parquet")
    assert result.exit_code == 2, result.output
    assert "differ from the policy's at step 0" in result.output and "score.dtype" in result.output
    assert not (project / "models/dlma").exists()
    # The same pairs scored in float32 pass the check (the other tests train on them).
    assert run_train().exit_code == 0


def test_lora_dropout_is_active_when_set(base, tmp_path):
    from dlma.train.params import TrainParams
    from dlma.train.run import train

    model, tokenizer = base
    rows, _ = tokenise_preferences(preference_frame(model, tokenizer), tokenizer, PROMPTS, max_length=512)
    import copy

    params = shipped(TrainParams, "train", max_steps=1, batch_size=2, lora_dropout=0.3)
    trainer, _, _ = train(copy.deepcopy(model), tokenizer, rows, params, tmp_path / "ckpt", torch.device("cpu"))
    dropouts = [m for n, m in trainer.model.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_dropout" in n]
    assert dropouts and all(m.p == 0.3 for m in dropouts)
    # Everything else stays off, as in trl's DPO (disable_dropout).
    others = [m for n, m in trainer.model.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_dropout" not in n]
    assert all(m.p == 0.0 for m in others)


def test_the_adapter_names_model_base_not_the_local_cache_path(project, tiny_model_dir, monkeypatch):
    """A hub id resolved from the local HF cache: peft would write the snapshot's absolute
    path into adapter_config.json and README.md, so the same training on another machine
    (or with another cache) gave another model folder; the folder names model.base."""
    import json
    import shutil

    revision = "0" * 40
    repo = project / "hub" / "models--dlma-test--tiny"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(project / "hub"))  # read at import: set the constant
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["model"]["base"] = "dlma-test/tiny"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(app, ["model", "--out", "model.json"])
    assert result.exit_code == 0, result.output
    assert json.loads((project / "model.json").read_text())["source"] == "hub-cache"
    result = run_train()
    assert result.exit_code == 0, result.output
    config = json.loads((project / "models/dlma/adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "dlma-test/tiny"
    assert str(project) not in (project / "models/dlma/README.md").read_text()


def test_gradient_accumulation_takes_the_same_step_as_the_whole_batch(base, tmp_path):
    """The paper's line accumulates gradients (batch 64 by accumulation). compute_loss returns
    the micro-batch's mean loss and the Trainer divides it by the accumulation steps (trl's
    DPOTrainer says `loss_is_scaled_for_ga = False`): two micro-batches of 2 pairs must move
    the weights exactly as one batch of 4 (plain SGD, one step). Were the loss left unscaled,
    the step would be twice as long."""
    import copy

    from dlma.train.params import TrainParams
    from dlma.train.run import train
    from dlma.train.trainer import MarginDPOTrainer

    assert MarginDPOTrainer.loss_is_scaled_for_ga is False  # the contract this test pins (trl private behaviour)
    model, tokenizer = base
    rows, _ = tokenise_preferences(preference_frame(model, tokenizer), tokenizer, PROMPTS, max_length=512)
    common = {"max_steps": 1, "optimizer": "sgd", "learning_rate": 0.5, "warmup_steps": 0, "lora_dropout": 0.0,
              "max_grad_norm": 1e9}

    def adapter_after_one_step(batch_size: int, accumulation: int, folder: str) -> dict[str, torch.Tensor]:
        params = shipped(TrainParams, "train", batch_size=batch_size, gradient_accumulation_steps=accumulation, **common)
        trainer, _, _ = train(copy.deepcopy(model), tokenizer, copy.deepcopy(rows[:4]), params, tmp_path / folder,
                              torch.device("cpu"))
        return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}

    whole = adapter_after_one_step(4, 1, "whole")
    accumulated = adapter_after_one_step(2, 2, "accumulated")
    assert max(w.abs().max().item() for w in whole.values()) > 1e-4  # the step moved the adapter
    for name, weight in whole.items():
        torch.testing.assert_close(accumulated[name], weight, rtol=1e-4, atol=1e-6)
