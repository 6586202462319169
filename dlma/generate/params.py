"""Params of the `generate` section (also the sampling params of `evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dlma.core.config import DTypeName
from dlma.core.errors import DlmaError


@dataclass(frozen=True)
class GenerateParams:
    pairs_from: Literal["contrastive", "bare", "human"]
    max_new_tokens: int
    max_prompt_tokens: int
    temperature: float
    top_p: float
    top_k: int
    batch_size: int
    seed: int
    dtype: DTypeName
    engine: Literal["hf", "vllm"]  # the generate stage's sampler (evaluate and the served model use hf)
    vllm_python: str  # the python of the vLLM environment, for engine vllm ("" = $DLMA_VLLM_PYTHON)
    vllm_memory_fraction: float  # vLLM's gpu_memory_utilization: of the GPU's memory, or on CPU of the RAM

    def __post_init__(self) -> None:
        if not 0.0 < self.vllm_memory_fraction <= 1.0:
            raise DlmaError(f"generate.vllm_memory_fraction must be in (0, 1], got {self.vllm_memory_fraction}")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.max_prompt_tokens < 1:
            raise DlmaError("generate.max_new_tokens, generate.max_prompt_tokens and generate.batch_size must be >= 1")
        if self.temperature <= 0:
            raise DlmaError("generate.temperature must be > 0 (sampling is required by DLMA)")
        if not 0.0 < self.top_p <= 1.0:  # 0 would mean greedy decoding, above 1 the same as 1
            raise DlmaError(f"generate.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise DlmaError(f"generate.top_k must be >= 0 (0 = no top-k), got {self.top_k}")
