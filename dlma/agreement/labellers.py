"""The labellers that are not the base model, for the agreement stage and for evaluate's
independent judges: a fitted reward model (the reward stage's folder, another local
sequence-classification model or a hub id) and a second causal LM as A/B judge. Each
loads once and returns a callable over (query, answer) texts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from dlma.core.errors import DlmaError
from dlma.lm.ab_judge import ab_judge
from dlma.reward.inputs import reward_inputs
from dlma.reward.run import REWARD_CARD, reward_scores


def reward_card(path: str) -> dict:
    """The reward stage's card in the folder ({} for any other model): its held-out
    accuracy, or why there is no model ("skipped")."""
    card = Path(path) / REWARD_CARD
    return json.loads(card.read_text()) if card.is_file() else {}


def load_reward_model(path: str, *, trust_remote_code: bool = False):
    from transformers import AutoModelForSequenceClassification

    from dlma.model import load_tokenizer

    try:
        tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code, require_eos=False)
        model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                                   dtype=torch.float32).eval()
    except (OSError, ValueError, DlmaError) as exc:
        raise DlmaError(f"evaluate.reward_model: cannot load '{path}' ({exc})") from exc
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def reward_function(path: str, *, batch_size: int, trust_remote_code: bool = False):
    """(queries, answers) -> one reward per answer, from the model at `path`."""
    model, tokenizer = load_reward_model(path, trust_remote_code=trust_remote_code)

    def rewards(queries: list[str], answers: list[str]) -> np.ndarray:
        sequences = [reward_inputs(tokenizer, q, a) for q, a in zip(queries, answers)]
        return reward_scores(model, tokenizer.pad_token_id, sequences, batch_size=batch_size)

    return rewards
def second_judge(model_params, judge_model: str, template: str, tokens: list[str], *, numerics,
                 attn_implementation: str | None, batch_size: int):
    """A second, independent causal LM (`evaluate.judge_model`) as an A/B judge in its own
    format (its chat template when it has one): (queries, first, second) -> ab_judge's summary."""
    from dataclasses import replace

    from dlma.model import load_for_stage

    model, tokenizer, _ = load_for_stage(replace(model_params, base=judge_model), numerics, attn_implementation)

    def ask(queries, first, second) -> dict:
        return ab_judge(model, tokenizer, "auto", template, tokens, queries, first, second, batch_size=batch_size)

    return ask
