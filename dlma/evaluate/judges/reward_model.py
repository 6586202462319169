"""Judge `reward_model`: any Hugging Face sequence-classification reward model
(`evaluate.reward_model`, a path or hub id) scores both answers; the higher reward wins."""

from __future__ import annotations

import numpy as np
import torch

from dlma.core.errors import DlmaError
from dlma.evaluate.judges.base import JudgeContext, JudgeResult, register
from dlma.evaluate.stats import verdict_from_margin
from dlma.model import load_tokenizer


@torch.inference_mode()
def reward_model_scores(path: str, queries, answers, *, batch_size: int = 8, trust_remote_code: bool = False) -> np.ndarray:
    """Scalar rewards from a Hugging Face sequence-classification reward model."""
    from transformers import AutoModelForSequenceClassification

    try:
        tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code, require_eos=False)
        model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=trust_remote_code).eval()
    except (OSError, ValueError) as exc:
        raise DlmaError(f"evaluate.reward_model: cannot load '{path}' ({exc})") from exc
    scores = []
    for start in range(0, len(queries), batch_size):
        q, a = queries[start:start + batch_size], answers[start:start + batch_size]
        if getattr(tokenizer, "chat_template", None):
            texts = [tokenizer.apply_chat_template([{"role": "user", "content": x}, {"role": "assistant", "content": y}], tokenize=False) for x, y in zip(q, a)]
            batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=1024, add_special_tokens=False)
        else:
            batch = tokenizer(q, a, return_tensors="pt", padding=True, truncation=True, max_length=1024)
        scores.extend(model(**batch).logits[:, 0].float().tolist())
    return np.array(scores)


@register("reward_model", description="independent: a reward model (evaluate.reward_model)", needs_params=("reward_model",),
          independent=True)
def reward_model(context: JudgeContext) -> JudgeResult:
    p = context.params
    trust = p.model.trust_remote_code

    def rewards(queries, answers) -> np.ndarray:
        return reward_model_scores(p.evaluate.reward_model, queries, answers, trust_remote_code=trust)

    reward_aligned, reward_base = rewards(context.queries, context.aligned), rewards(context.queries, context.base)
    # Validity: does it prefer the human-chosen answer on the labelled sets?
    right = [rewards(f["prompt"].to_list(), f["chosen"].to_list()) > rewards(f["prompt"].to_list(), f["rejected"].to_list())
             for f in context.labelled.values()]
    labelled = np.concatenate(right) if right else np.array([])
    return JudgeResult(
        verdicts=[verdict_from_margin(a - b, 0.0) for a, b in zip(reward_aligned, reward_base)],
        columns={"reward_aligned": reward_aligned.tolist(), "reward_base": reward_base.tolist()},
        validity={"labelled_accuracy": float(labelled.mean()) if labelled.size else float("nan"), "labelled_pairs": labelled.size},
    )
