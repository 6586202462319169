"""The float type a stage computes in, checked against what this machine runs fast.

bfloat16 (and float16) is fast only where the hardware has it: CUDA GPUs that support it,
and CPUs with avx512_bf16 or AMX (avx512_fp16 / amx_fp16 for float16). Elsewhere torch
emulates it: on an AVX2-only EPYC a 512x512 bf16 matmul ran at 1.2 GFLOP/s against 121.6 in
float32 (100x), and a training step under bf16 autocast took 17.7x longer. So:

- every default is float32 on CPU (the same numerics on every machine);
- `auto` is opt-in: bf16 where it is native, float32 elsewhere, and the log says which and why;
- asking for bf16 / fp16 where it is not native works, with a warning that names the
  param to change and the slowdown a quick matmul probe measured; the stage's report records it.

Torch has no query for "this CPU computes bf16 natively" (`get_cpu_capability()` says
AVX2 / AVX512, not whether the bf16 instructions exist), hence the flags and the probe.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# The CPU flags (Linux /proc/cpuinfo) that make each reduced precision native.
NATIVE_FLAGS = {torch.bfloat16: ("avx512_bf16", "amx_bf16"), torch.float16: ("avx512_fp16", "amx_fp16")}
NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags, or None where /proc/cpuinfo cannot be read (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return None


def cpu_capability() -> str:
    """The vector instruction set torch's CPU kernels use here (DEFAULT, AVX2, AVX512, ...)."""
    return torch.backends.cpu.get_cpu_capability()


def matmul_slowdown(dtype: torch.dtype, size: int = 256, repeats: int = 3) -> float:
    """How many times longer a `size`-square matmul takes in `dtype` than in float32 on this
    CPU (best of `repeats`; ~0.1 s where the type is emulated)."""

    def best(kind: torch.dtype) -> float:
        a, b = torch.randn(size, size).to(kind), torch.randn(size, size).to(kind)
        torch.matmul(a, b)  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            torch.matmul(a, b)
            times.append(time.perf_counter() - started)
        return min(times)

    return best(dtype) / max(best(torch.float32), 1e-9)


def cpu_native(dtype: torch.dtype) -> bool:
    """Whether this CPU computes `dtype` in hardware: by its flags where they can be read,
    else by the probe (within 2x of float32)."""
    flags = cpu_flags()
    if flags is not None:
        return any(flag in flags for flag in NATIVE_FLAGS[dtype])
    return matmul_slowdown(dtype) < 2.0


@dataclass(frozen=True)
class DtypeChoice:
    """A stage's float type: what the params asked for, what it runs, and why."""

    key: str  # the params key that asked, e.g. "generate.dtype"
    requested: str
    dtype: torch.dtype
    device: torch.device
    reason: str
    warning: str | None = None
    cpu_capability: str | None = None  # only where reduced precision on CPU is involved

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def record(self) -> dict:
        """For the stage's report: the same on every machine for the float32 defaults."""
        out = {"requested": self.requested, "dtype": self.name, "device": self.device.type, "reason": self.reason}
        if self.cpu_capability is not None:
            out["cpu_capability"] = self.cpu_capability
        if self.warning is not None:
            out["warning"] = self.warning
        return out


def same_numerics(sampling: DtypeChoice, scoring: DtypeChoice) -> bool:
    """Whether log-probs recorded while sampling (`sample_responses(with_logprobs=True)`)
    stand for a scoring pass: float32 on the same device, where they differ only by float
    rounding (at most 7.8e-5 nats per answer measured here). In 16-bit floats they are
    scored again: there a scoring pass itself moves by ~0.4 nats against float32, and the
    sampling model's attention (default, left padding) differs from score.attn_implementation
    (sdpa with padding moved bf16 log-probs by up to 0.5 nats)."""
    return sampling.dtype == scoring.dtype == torch.float32 and sampling.device == scoring.device


def choose_dtype(key: str, requested: str, device: torch.device) -> DtypeChoice:
    """The dtype for params key `key` (value `requested`) on `device`; logs the choice, and
    warns when it is a reduced precision this device does not compute natively."""
    if requested == "auto":
        choice = _auto(key, device)
        log.info("%s=auto: %s (%s)", key, choice.name, choice.reason)
        return choice
    dtype = NAMES[requested]
    if dtype == torch.float32:
        return DtypeChoice(key, requested, dtype, device, "as set")
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported() if dtype == torch.bfloat16 else True
        warning = None if supported else (f"{key}={requested}: this GPU has no native bfloat16; it will be slow. "
                                          f"Set {key}=float16 or float32")
        if warning:
            log.warning("%s", warning)
        return DtypeChoice(key, requested, dtype, device, "as set", warning)
    capability = cpu_capability()
    if cpu_native(dtype):
        return DtypeChoice(key, requested, dtype, device, "as set; native on this CPU", cpu_capability=capability)
    flags = " or ".join(NATIVE_FLAGS[dtype])
    warning = (f"{key}={requested} on a CPU without native {requested} ({capability}, no {flags}): torch emulates it, "
               f"so this stage runs many times slower than in float32. Set {key}=float32")
    # The probe's figure goes to the log only: a timing would make the report differ between identical runs.
    log.warning("%s (a %s matmul measured %.0fx slower than float32 here)", warning, requested, matmul_slowdown(dtype))
    return DtypeChoice(key, requested, dtype, device, "as set; emulated on this CPU", warning, capability)


def _auto(key: str, device: torch.device) -> DtypeChoice:
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return DtypeChoice(key, "auto", torch.bfloat16, device, "auto: this GPU supports bfloat16")
        return DtypeChoice(key, "auto", torch.float16, device, "auto: this GPU has no bfloat16, float16 instead")
    capability = cpu_capability()
    if cpu_native(torch.bfloat16):
        return DtypeChoice(key, "auto", torch.bfloat16, device, "auto: this CPU has native bfloat16",
                           cpu_capability=capability)
    return DtypeChoice(key, "auto", torch.float32, device,
                       "auto: this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16), float32 instead",
                       cpu_capability=capability)

