"""Params for tests: the shipped params.yaml (the only place defaults live) with overrides."""

from __future__ import annotations

from pathlib import Path

import torch

from dlma.core.config import load_section
from dlma.lm.params import PromptsParams

REPO = Path(__file__).resolve().parents[1]


def shipped(cls, section: str, **overrides):
    """The `section` params of the shipped params.yaml, with `overrides` on top."""
    return load_section(cls, section, REPO / "params.yaml", **overrides)


# A short contrastive pair the tiny model's chat template renders as system messages.
TEST_PROMPTS = shipped(
    PromptsParams, "prompts", pair="x", style="system", category_pairs={},
    pairs={"x": {"tag_pos": "+ {q}", "tag_neg": "- {q}", "system_pos": "Be good.", "system_neg": "Be bad."}},
)


def reference_logprob(model, context: list[int], response: list[int]) -> float:
    """One sequence alone, no padding, full log-softmax in float64: the textbook definition."""
    ids = torch.tensor([context + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    total = 0.0
    for offset, token in enumerate(response):
        position = len(context) + offset
        total += float(logp[position - 1, token])
    return total
