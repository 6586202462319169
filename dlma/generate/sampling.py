"""Batched sampling of responses with left padding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from dlma.generate.params import GenerateParams
from dlma.lm.logprobs import left_pad


@dataclass(frozen=True)
class Sample:
    text: str
    finish: str  # "eos" (the model ended it) or "length" (cut at max_new_tokens)
    n_tokens: int


def _eos_ids(model, tokenizer) -> set[int]:
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    ids.add(tokenizer.eos_token_id)
    return ids


def _cut_at_eos(new_tokens: list[int], eos_ids: set[int]) -> tuple[list[int], str]:
    for position, token in enumerate(new_tokens):
        if token in eos_ids:
            return new_tokens[:position], "eos"
    return new_tokens, "length"


@torch.inference_mode()
def sample_responses(
    model, tokenizer, contexts: list[list[int]], params: GenerateParams, *, desc: str = "generate"
) -> list[Sample]:
    """Sample one response per context. Batches are formed in order of context length so
    that little padding is computed; results come back in the input order."""
    torch.manual_seed(params.seed)
    eos_ids = _eos_ids(model, tokenizer)
    order = sorted(range(len(contexts)), key=lambda i: (len(contexts[i]), i))
    results: list[Sample | None] = [None] * len(contexts)
    device = next(model.parameters()).device
    with tqdm(total=len(contexts), desc=desc, unit="resp") as bar:
        for start in range(0, len(order), params.batch_size):
            chunk = order[start:start + params.batch_size]
            batch = left_pad([contexts[i] for i in chunk], tokenizer.pad_token_id)
            output = model.generate(
                input_ids=batch.input_ids.to(device),
                attention_mask=batch.attention_mask.to(device),
                do_sample=True,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k,
                max_new_tokens=params.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=sorted(eos_ids),
            )
            new_tokens = output[:, batch.input_ids.shape[1]:].tolist()
            for index, tokens in zip(chunk, new_tokens):
                kept, finish = _cut_at_eos(tokens, eos_ids)
                text = tokenizer.decode(kept, skip_special_tokens=True).strip()
                results[index] = Sample(text=text, finish=finish, n_tokens=len(kept))
            bar.update(len(chunk))
    return results  # type: ignore[return-value]
