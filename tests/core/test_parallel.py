"""Data-parallel model stages: generate and score launched on 2 CPU processes (torchrun,
gloo) write the same table as one process (byte for byte, but for the log-probs recorded
while sampling: equal up to float rounding); the launcher builds the command each setting
of `run` asks for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from dlma.cli import app
from dlma.core.errors import DlmaError
from dlma.core.launch import command
from dlma.core.params import RunParams
from tests.helpers import REPO


def test_launch_commands():
    one = RunParams(processes=1, launcher="torchrun", accelerate_config="")
    assert command(one, "stages.score", ["--x", "1"]) == [sys.executable, "-m", "stages.score", "--x", "1"]
    two = RunParams(processes=2, launcher="torchrun", accelerate_config="")
    assert command(two, "stages.score", []) == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                 "--nproc_per_node=2", "-m", "stages.score"]
    fsdp = RunParams(processes=8, launcher="accelerate", accelerate_config="configs/accelerate/fsdp.yaml")
    assert command(fsdp, "stages.train", [])[2:6] == ["accelerate.commands.launch", "--config_file",
                                                       "configs/accelerate/fsdp.yaml", "--num_processes=8"]
    with pytest.raises(DlmaError, match="run.processes must be >= 1"):
        RunParams(processes=0, launcher="torchrun", accelerate_config="")


def run_stage(project: Path, processes: int, *args: str) -> str:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["run"]["processes"] = processes
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO), "DLMA_LOG_LEVEL": "INFO"}
    done = subprocess.run([sys.executable, "-m", "dlma.core.launch", "--", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_two_processes_write_the_table_one_process_writes(tmp_path, tiny_model_dir, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_model_dir)
    params["data"].update({"source": str(REPO / "data" / "prompts.jsonl"), "limit": 12})
    # 10 training prompts, 20 contexts in 5 batches: the two processes run 3 and 2 of them.
    params["generate"].update({"max_new_tokens": 6, "batch_size": 4})
    params["score"].update({"batch_size": 4})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    for args in (["model", "--out", "model.json"],
                 ["prepare", "--train", "train.parquet", "--eval", "eval.parquet", "--report", "prepare.json"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output

    outputs = {}
    for processes in (1, 2):
        log = run_stage(tmp_path, processes, "stages.generate", "--prompts", "train.parquet", "--model-id", "model.json",
                  "--out", f"generated{processes}.parquet", "--report", f"generate{processes}.json")
        run_stage(tmp_path, processes, "stages.score", "--generated", "generated1.parquet", "--model-id", "model.json",
                  "--out", f"scored{processes}.parquet", "--report", f"score{processes}.json")
        if processes == 2:  # really two processes, each with its share of the 5 batches
            assert "process 0 of 2 runs 3 of 5 batches" in log and "process 1 of 2 runs 2 of 5 batches" in log
        outputs[processes] = {name: (tmp_path / f"{name}{processes}.{ext}").read_bytes()
                              for name, ext in (("generated", "parquet"), ("scored", "parquet"), ("generate", "json"), ("score", "json"))}
    import polars as pl

    generated = {n: pl.read_parquet(tmp_path / f"generated{n}.parquet") for n in (1, 2)}
    assert generated[2].height == 10
    # The same answers, token for token; the log-probs recorded while sampling agree up to float
    # rounding only: one process computes with two threads, each of two processes with one.
    recorded = ["sampled_logp_pos", "sampled_logp_neg"]
    assert generated[2].drop(recorded).equals(generated[1].drop(recorded))
    for column in recorded:
        np.testing.assert_allclose(generated[2][column].to_numpy(), generated[1][column].to_numpy(), rtol=0, atol=1e-5)
    for name in outputs[1]:
        if name != "generated":
            assert outputs[2][name] == outputs[1][name], f"{name} differs between 1 and 2 processes"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers  # no temporary file of a second writer left behind


def test_two_process_ddp_training_follows_the_one_process_curve(tmp_path, tiny_model_dir, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_model_dir)
    params["data"].update({"source": str(REPO / "data" / "prompts.jsonl"), "limit": 10})
    params["generate"].update({"max_new_tokens": 6, "batch_size": 8})
    params["filter"]["drop_truncated"] = "none"  # a tiny random model rarely ends an answer in 6 tokens
    # 8 pairs, global batch 4: 2 full steps. (A last partial batch would differ: accelerate
    # evens out the processes' shares by repeating pairs from the start.) No checkpoint.
    # No dropout: its masks come from each process's own random stream, as in any DDP run.
    params["train"].update({"batch_size": 4, "max_steps": -1, "warmup_steps": 0, "save_steps": 100, "lora_dropout": 0.0,
                            "final_metrics": True})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / ".dvc").mkdir()  # the repository root for the MLflow store
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from tests.evaluate.test_judges import STAGES

    for args in STAGES[:5]:  # model, prepare, generate, score, filter -> prefs.parquet
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    import polars as pl

    curves = {}
    for processes in (1, 2):
        run_stage(tmp_path, processes, "stages.train", "--preferences", "prefs.parquet", "--model-id", "model.json",
                  "--out", f"models/p{processes}", "--checkpoints", "models/checkpoints", "--report", f"train{processes}.json", "--curve", f"curve{processes}.csv")
        curves[processes] = pl.read_csv(tmp_path / f"curve{processes}.csv")
    assert curves[1]["step"].to_list() == curves[2]["step"].to_list() == [1, 2]
    # The same global batches (the distributed sampler deals each batch of 4 over the two
    # processes) and gradients averaged over them: the same curve up to float32 rounding.
    # (The per-batch rewards/logps columns are the main process's half of a batch.)
    for column in ("loss", "grad_norm"):
        assert curves[2][column].to_list() == pytest.approx(curves[1][column].to_list(), rel=1e-4, abs=1e-5), column
    assert (tmp_path / "models" / "p2" / "adapter_model.safetensors").is_file()
    # Final metrics: every pair once, gathered from both processes.
    import json

    final = {p: json.loads((tmp_path / f"train{p}.json").read_text()) for p in (1, 2)}
    assert final[1]["pairs"] == final[2]["pairs"] == 8
    for key in ("final_loss", "reward_accuracy", "reward_margin"):
        assert final[2][key] == pytest.approx(final[1][key], rel=1e-4, abs=1e-6), key
    with pytest.raises(DlmaError, match="multiple of run.processes=3"):
        from dlma.train.run import per_process_batch

        per_process_batch(4, 3)


@pytest.mark.parametrize("name, kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("zero3", "DEEPSPEED")])
def test_shipped_accelerate_configs_load(name, kind):
    import json

    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO / "configs" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.value == kind and config.mixed_precision == "no"  # precision is train.dtype's
    if name == "fsdp":
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # one ordinary model is saved
    if name == "zero3":
        file = json.loads((REPO / config.deepspeed_config["deepspeed_config_file"]).read_text())
        assert file["zero_optimization"]["stage"] == 3 and file["train_micro_batch_size_per_gpu"] == "auto"
