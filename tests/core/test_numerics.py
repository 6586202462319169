"""The dtype each stage runs in: float32 as set, `auto` by the hardware, and a warning (logged
and in the stage's report) when bf16 is asked for on a CPU that only emulates it."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import yaml
from typer.testing import CliRunner

from dlma.cli import app
from dlma.core import numerics
from dlma.core.numerics import choose_dtype

CPU = torch.device("cpu")


@pytest.fixture
def avx2_only(monkeypatch):
    """A CPU like the AMD EPYC of the issue: AVX2, no bf16 instructions, bf16 matmuls 100x slower."""
    monkeypatch.setattr(numerics, "cpu_flags", lambda: {"avx", "avx2", "fma"})
    monkeypatch.setattr(numerics, "cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(numerics, "matmul_slowdown", lambda dtype, **_: 100.0)


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setattr(numerics, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    monkeypatch.setattr(numerics, "cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(numerics, "matmul_slowdown", lambda dtype, **_: pytest.fail("no probe where the flags tell"))


def test_float32_is_taken_as_set_with_nothing_machine_specific(avx2_only, caplog):
    with caplog.at_level(logging.WARNING):
        choice = choose_dtype("generate.dtype", "float32", CPU)
    assert choice.dtype == torch.float32 and not caplog.records
    # The default's record holds nothing that differs between CPUs: identical reports everywhere.
    assert choice.record() == {"requested": "float32", "dtype": "float32", "device": "cpu", "reason": "as set"}


def test_bf16_on_a_cpu_without_it_warns_naming_the_param(avx2_only, caplog):
    with caplog.at_level(logging.WARNING):
        choice = choose_dtype("reward.dtype", "bfloat16", CPU)
    assert choice.dtype == torch.bfloat16  # honoured, not silently changed
    assert "Set reward.dtype=float32" in choice.warning and "AVX2" in choice.warning
    logged = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "100x slower" in logged and "reward.dtype=bfloat16" in logged
    record = choice.record()
    assert record["warning"] == choice.warning and record["cpu_capability"] == "AVX2"
    assert "100x" not in record["warning"]  # the timing stays in the log: reports are deterministic


def test_bf16_on_a_cpu_with_it_is_quiet(native_bf16, caplog):
    with caplog.at_level(logging.WARNING):
        choice = choose_dtype("train.dtype", "bfloat16", CPU)
    assert choice.dtype == torch.bfloat16 and choice.warning is None and not caplog.records


def test_auto_picks_by_hardware_and_says_why(avx2_only, caplog):
    with caplog.at_level(logging.INFO):
        choice = choose_dtype("generate.dtype", "auto", CPU)
    assert choice.dtype == torch.float32 and "no native bfloat16" in choice.reason
    assert any("generate.dtype=auto: float32" in r.getMessage() for r in caplog.records)


def test_auto_takes_bf16_where_native(native_bf16):
    assert choose_dtype("generate.dtype", "auto", CPU).dtype == torch.bfloat16


def test_without_cpu_flags_the_probe_decides(monkeypatch):
    monkeypatch.setattr(numerics, "cpu_flags", lambda: None)  # not Linux
    monkeypatch.setattr(numerics, "matmul_slowdown", lambda dtype, **_: 30.0)
    assert choose_dtype("generate.dtype", "auto", CPU).dtype == torch.float32
    monkeypatch.setattr(numerics, "matmul_slowdown", lambda dtype, **_: 0.6)
    assert choose_dtype("generate.dtype", "auto", CPU).dtype == torch.bfloat16


def test_the_probe_is_the_ratio_of_the_best_matmul_times(monkeypatch):
    """Best of the repeats in `dtype` over best of the repeats in float32, read off a clock
    the test controls (a real clock makes this a timing test: a busy machine moved a float32
    against float32 ratio to 285)."""
    durations = iter([3.0, 2.0, 5.0, 1.0, 4.0, 1.5])  # bfloat16: best 2.0; float32: best 1.0
    ticks = []

    def clock():
        if len(ticks) % 2 == 0:  # a start
            ticks.append(0.0)
            return 0.0
        ticks.append(next(durations))  # a stop: the start was 0
        return ticks[-1]

    monkeypatch.setattr(numerics.time, "perf_counter", clock)
    assert numerics.matmul_slowdown(torch.bfloat16, size=8, repeats=3) == pytest.approx(2.0)


def test_the_generate_stage_reports_the_warning(avx2_only, tmp_path, tiny_model_dir, monkeypatch):
    """End to end through the CLI: bf16 asked for on the mocked AVX2 CPU runs, and the
    stage's report carries the warning and the CPU capability."""
    from tests.stages.test_cli import REPO

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_model_dir)
    params["data"].update({"source": str(REPO / "data" / "prompts.jsonl"), "limit": 4})
    params["generate"].update({"max_new_tokens": 3, "dtype": "bfloat16"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["model", "--out", "model.json"]).exit_code == 0
    assert runner.invoke(app, ["prepare", "--train", "tr.parquet", "--eval", "ev.parquet", "--report", "p.json"]).exit_code == 0
    result = runner.invoke(app, ["generate", "--prompts", "tr.parquet", "--model-id", "model.json", "--out", "g.parquet",
                                 "--report", "g.json"])
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "g.json").read_text())["numerics"]["generate.dtype"]
    assert recorded["dtype"] == "bfloat16" and recorded["cpu_capability"] == "AVX2"
    assert "Set generate.dtype=float32" in recorded["warning"]


def test_recorded_log_probs_stand_for_a_scoring_pass_only_in_float32_on_one_device():
    import torch

    from dlma.core.numerics import DtypeChoice, same_numerics

    def choice(dtype, device="cpu"):
        return DtypeChoice("k", "x", dtype, torch.device(device), "as set")

    assert same_numerics(choice(torch.float32), choice(torch.float32))
    assert not same_numerics(choice(torch.float32), choice(torch.bfloat16))
    # bf16 on both sides: the sampling model's attention is not score.attn_implementation (up to 0.5 nats)
    assert not same_numerics(choice(torch.bfloat16), choice(torch.bfloat16))
    assert not same_numerics(choice(torch.float32, "cuda"), choice(torch.float32, "cpu"))
