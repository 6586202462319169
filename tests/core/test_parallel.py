"""Data-parallel model stages: generate and score launched on 2 CPU processes (torchrun,
gloo) write the same table, byte for byte, as one process; the launcher builds the
command each setting of `run` asks for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dlma.cli import app
from dlma.core.errors import DlmaError
from dlma.core.launch import RunParams, command
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

    assert pl.read_parquet(tmp_path / "generated2.parquet").height == 10
    for name in outputs[1]:
        assert outputs[2][name] == outputs[1][name], f"{name} differs between 1 and 2 processes"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers  # no temporary file of a second writer left behind
