"""A training process killed after a checkpoint resumes there and ends where an
uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from dlma.cli import app
from tests.train.test_train import preference_frame

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
TRAIN_ARGS = ["--preferences", "prefs.parquet", "--model-id", "model.json", "--out", "models/dlma", "--checkpoints", "models/checkpoints",
              "--report", "reports/train.json", "--curve", "reports/plots/train.csv"]


def make_project(root: Path, model_dir: Path, frame) -> Path:
    root.mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["base"] = str(model_dir)
    params["prompts"]["style"] = "system"
    params["train"].update({"max_steps": 40, "save_steps": 5, "batch_size": 2, "learning_rate": 1e-2, "lora_dropout": 0.0,
                            "final_metrics": True})
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / ".dvc").mkdir()
    frame.write_parquet(root / "prefs.parquet")
    return root


def test_resume_after_kill(tmp_path, tiny_model_dir, monkeypatch):
    import torch

    from dlma.model import load_causal_lm, load_tokenizer

    model = load_causal_lm(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"), attn_implementation="eager")
    frame = preference_frame(model, load_tokenizer(tiny_model_dir))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)

    straight = make_project(tmp_path / "straight", tiny_model_dir, frame)
    monkeypatch.chdir(straight)
    assert CliRunner().invoke(app, ["model", "--out", "model.json"]).exit_code == 0
    assert CliRunner().invoke(app, ["train", *TRAIN_ARGS]).exit_code == 0

    killed = make_project(tmp_path / "killed", tiny_model_dir, frame)
    monkeypatch.chdir(killed)
    assert CliRunner().invoke(app, ["model", "--out", "model.json"]).exit_code == 0
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-m", "stages.train", *TRAIN_ARGS], cwd=killed, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not list(killed.glob("models/checkpoints/*/checkpoint-10/trainer_state.json")):
        assert process.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "models/dlma").exists()  # no half-written model for DVC to cache

    result = CliRunner().invoke(app, ["train", *TRAIN_ARGS])
    assert result.exit_code == 0, result.output
    import json

    report = json.loads((killed / "reports/train.json").read_text())
    reference = json.loads((straight / "reports/train.json").read_text())
    assert report["steps"] == reference["steps"] == 40
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{killed / 'mlflow.db'}")
    (run,) = mlflow.search_runs(experiment_names=["dlma"], output_format="list")  # the killed run, resumed
    assert run.info.status == "FINISHED" and run.data.metrics["timing/resumed_from_step"] >= 10
    a = load_file(straight / "models/dlma/adapter_model.safetensors")
    b = load_file(killed / "models/dlma/adapter_model.safetensors")
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst
    assert report["final_loss"] == pytest.approx(reference["final_loss"], abs=1e-5)
    curve_a = np.loadtxt(straight / "reports/plots/train.csv", delimiter=",", skiprows=1, usecols=1)
    curve_b = np.loadtxt(killed / "reports/plots/train.csv", delimiter=",", skiprows=1, usecols=1)
    np.testing.assert_allclose(curve_b, curve_a, atol=1e-5)
