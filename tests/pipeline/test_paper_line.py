"""The README's paper-7b line (full fine-tuning, bfloat16, RMSprop, the accelerate FSDP
config, tag prompts, sdpa scoring) runs end to end as written, on the tiny model, with 2
gloo processes and the sizes scaled down. accelerate runs FSDP on accelerators only, so on
CPU the same config trains data-parallel (DDP): the run says so, and the GPU check covers
FSDP (benchmarks/gpu_check.py)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.core.test_config import readme_exp_run_lines
from tests.dvcrepo import REPO, DvcRepo

pytestmark = pytest.mark.slow

# What the test changes in the line: the model and data (the line names the user's), 2
# processes instead of 8, and sizes a 2-core CPU runs in a minute.
SCALED = {"run.processes": "2", "data.limit": "8", "evaluate.limit": "4", "generate.max_new_tokens": "8",
          "train.batch_size": "4", "train.warmup_steps": "1", "generate.batch_size": "4", "score.batch_size": "4"}


def paper_line() -> list[str]:
    (line,) = [command for command in readme_exp_run_lines() if "paper-7b" in command]
    return line


def test_the_paper_line_runs_on_two_processes_in_bfloat16(tmp_path, tiny_model_dir):
    repo = DvcRepo(tmp_path / "project", tiny_model_dir, {})
    shutil.copytree(REPO / "configs", repo.root / "configs")
    repo.commit("configs")
    line, args = paper_line(), []
    for flag, assignment in zip(line, line[1:]):
        if flag == "-S":
            key, _, value = assignment.partition("=")
            value = {"model.base": str(tiny_model_dir), "data.source": "data/prompts.jsonl"}.get(key, SCALED.get(key, value))
            args += ["-S", f"{key}={value}"]
    assert {"train.dtype=bfloat16", "train.peft=none", "run.launcher=accelerate",
            "run.accelerate_config=configs/accelerate/fsdp.yaml", "score.attn_implementation=sdpa"} <= set(args)
    # A tiny random model rarely ends an answer within 8 tokens: keep the cut ones.
    result = repo.run("dvc", "exp", "run", "-n", "paper-tiny", *args, "-S", "filter.drop_truncated=none")
    log = result.stdout + result.stderr
    assert "Running stage 'evaluate'" in log

    report = json.loads((repo.root / "reports" / "train.json").read_text())
    assert report["parallel"] == {"processes": 2, "type": "MULTI_CPU"}  # DDP over gloo
    assert "asks for FSDP, but accelerate runs FSDP on GPUs" in log
    assert report["numerics"]["train.dtype"]["dtype"] == "bfloat16"
    # Score stays float32 (the self-rewarding score's sign); train recomputes the reference
    # in its own numerics, so DPO's log-ratios start at 0 (the step-0 check passed at 1e-3).
    assert report["reference_logps"]["source"] == "recomputed (bfloat16 autocast)"
    assert report["reference_logps"]["moved_from_stored"]["responses"] == 2 * report["pairs"]
    assert report["steps"] >= 1 and report["pairs"] >= 4
    # A full fine-tune (train.peft=none): a whole model in safetensors, no adapter.
    model_files = {p.name for p in (repo.root / "models" / "dlma").iterdir()}
    assert "model.safetensors" in model_files and "adapter_config.json" not in model_files
    metrics = json.loads((repo.root / "reports" / "metrics.json").read_text())
    assert metrics["training_data"]["style"] == "tag" and metrics["training_data"]["pairs"] == report["pairs"]
    assert "self_contrast" in metrics["win_rate"]
