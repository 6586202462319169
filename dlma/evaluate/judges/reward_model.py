"""Judge `reward_model`: a sequence-classification reward model (`evaluate.reward_model`: the
reward stage's folder, another local model or a hub id) scores both answers; the higher
reward wins. It checks itself on the human-labelled sets (accuracy, as validity) and, for
the reward stage's model, carries its accuracy on the held-out human pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from dlma.core.errors import DlmaError
from dlma.evaluate.judges.base import JudgeContext, JudgeResult, register
from dlma.evaluate.stats import verdict_from_margin
from dlma.model import load_tokenizer
from dlma.reward.inputs import reward_inputs
from dlma.reward.run import REWARD_CARD, reward_scores


def load_reward_model(path: str, *, trust_remote_code: bool = False):
    from transformers import AutoModelForSequenceClassification

    try:
        tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code, require_eos=False)
        model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                                   dtype=torch.float32).eval()
    except (OSError, ValueError) as exc:
        raise DlmaError(f"evaluate.reward_model: cannot load '{path}' ({exc})") from exc
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def reward_card(path: str) -> dict:
    card = Path(path) / REWARD_CARD
    return json.loads(card.read_text()) if card.is_file() else {}


@register("reward_model", description="independent: a reward model fitted on human labels (evaluate.reward_model)",
          needs_params=("reward_model",), independent=True)
def reward_model(context: JudgeContext) -> JudgeResult:
    p = context.params
    card = reward_card(p.evaluate.reward_model)
    if "skipped" in card:  # the reward stage had no human pairs
        return JudgeResult(metrics={"reward_model": {"skipped": card["skipped"]}})
    model, tokenizer = load_reward_model(p.evaluate.reward_model, trust_remote_code=p.model.trust_remote_code)

    def rewards(queries, answers) -> np.ndarray:
        sequences = [reward_inputs(tokenizer, q, a) for q, a in zip(queries, answers)]
        return reward_scores(model, tokenizer.pad_token_id, sequences, batch_size=p.score.batch_size)

    reward_aligned, reward_base = rewards(context.queries, context.aligned), rewards(context.queries, context.base)
    # Validity: does it prefer the human-chosen answer on the labelled sets?
    right = [rewards(f["prompt"].to_list(), f["chosen"].to_list()) > rewards(f["prompt"].to_list(), f["rejected"].to_list())
             for f in context.labelled.values()]
    labelled = np.concatenate(right) if right else np.array([])
    validity = {"labelled_accuracy": float(labelled.mean()) if labelled.size else float("nan"), "labelled_pairs": labelled.size}
    if "holdout" in card and "accuracy" in card["holdout"]:
        validity |= {"holdout_accuracy": card["holdout"]["accuracy"], "holdout_pairs": card["holdout"]["pairs"]}
    return JudgeResult(
        verdicts=[verdict_from_margin(a - b, 0.0) for a, b in zip(reward_aligned, reward_base)],
        columns={"reward_aligned": reward_aligned.tolist(), "reward_base": reward_base.tolist()},
        validity=validity,
    )
