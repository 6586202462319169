"""Batched sampling of responses with left padding, one random stream per response.

HF `generate(do_sample=True)` draws every row of a batch from one global generator, so a
row's sample depends on which rows share its batch: changing `data.limit`, a batch size or
the order would change every other row's answer. Here each response has its own seeded
generator (from `generate.seed`, the row id and the side, see `row_seed`) and draws one
token per step from it; HF's own temperature / top-k / top-p warpers shape the
distribution first. transformers has no per-row sampling of its own, hence this processor.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from dlma.core.parallel import is_main_process, map_batches, rows_of_this_process
from dlma.generate.params import GenerateParams
from dlma.lm.logprobs import left_pad


@dataclass(frozen=True)
class Sample:
    text: str
    finish: str  # "eos" (the model ended it) or "length" (cut at max_new_tokens)
    n_tokens: int
    token_ids: tuple[int, ...]  # the sampled tokens, without the EOS that ended them
    # The EOS id that ended it (finish "eos"): a model may have several (Llama-3: <|eot_id|>
    # and <|end_of_text|>), and score and train must see the one the model sampled.
    eos_id: int | None = None


def row_seed(seed: int, row_id: str, side: str) -> int:
    """The seed of one response: a hash of (generate.seed, row id, side), so it does not
    depend on the other rows."""
    digest = hashlib.sha256(f"{seed}\0{row_id}\0{side}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token drawn from `probs` [V], over its support only.

    `torch.multinomial` draws one exponential variate per vocabulary entry (49k here), zeros
    included: that was 15% of the generate stage's time on CPU. Top-k / top-p leave a few
    dozen tokens possible, and renormalising over them is the same distribution.
    """
    support = probs.nonzero().squeeze(1)
    return support[torch.multinomial(probs[support], 1, generator=generator)[0]]


class PerRowSampler(LogitsProcessor):
    """Warp the scores (temperature, top-k, top-p), draw each row's next token from its own
    generator, and leave only that token possible, so greedy decoding emits it."""

    def __init__(self, seeds: list[int], params: GenerateParams, device: torch.device):
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        warpers = [TemperatureLogitsWarper(params.temperature)] if params.temperature != 1.0 else []
        if params.top_k > 0:
            warpers.append(TopKLogitsWarper(top_k=params.top_k))
        if params.top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=params.top_p))
        self.warpers = LogitsProcessorList(warpers)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(self.warpers(input_ids, scores).float(), dim=-1)
        chosen = torch.stack([draw(row_probs, g) for row_probs, g in zip(probs, self.generators)])
        only = torch.full_like(scores, float("-inf"))
        only[torch.arange(scores.shape[0], device=scores.device), chosen] = 0.0
        return only


def eos_ids_of_model(model, tokenizer) -> set[int]:
    """Every id that ends an answer: the generation config's (one or several) and the tokenizer's."""
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    ids.add(tokenizer.eos_token_id)
    return ids


def _cut_at_eos(new_tokens: list[int], eos_ids: set[int]) -> tuple[list[int], str, int | None]:
    for position, token in enumerate(new_tokens):
        if token in eos_ids:
            return new_tokens[:position], "eos", token
    return new_tokens, "length", None


def sample_from_tokens(new_tokens: list[int], eos_ids: set[int], tokenizer) -> Sample:
    """A sampled continuation as a Sample: cut at the first EOS, decoded without special
    tokens (both engines, so their tables have the same form)."""
    kept, finish, eos_id = _cut_at_eos(new_tokens, eos_ids)
    return Sample(text=tokenizer.decode(kept, skip_special_tokens=True).strip(), finish=finish, n_tokens=len(kept),
                  token_ids=tuple(kept), eos_id=eos_id)


@torch.inference_mode()
def sample_responses(
    model, tokenizer, contexts: list[list[int]], params: GenerateParams, *, seeds: list[int], desc: str = "generate"
) -> list[Sample]:
    """Sample one response per context, the i-th from its own stream `seeds[i]`. Batches
    are formed in order of context length so that little padding is computed (and dealt to
    the processes of a multi-process run); results come back in the input order."""
    if len(seeds) != len(contexts):
        raise ValueError("one seed per context")
    eos_ids = eos_ids_of_model(model, tokenizer)
    order = sorted(range(len(contexts)), key=lambda i: (len(contexts[i]), i))
    batches = [order[start:start + params.batch_size] for start in range(0, len(order), params.batch_size)]
    results: list[Sample | None] = [None] * len(contexts)
    device = next(model.parameters()).device
    with tqdm(total=rows_of_this_process(batches), desc=desc, unit="resp", disable=not is_main_process()) as bar:
        def run(chunk: list[int]) -> list[Sample]:
            batch = left_pad([contexts[i] for i in chunk], tokenizer.pad_token_id)
            output = model.generate(
                input_ids=batch.input_ids.to(device),
                attention_mask=batch.attention_mask.to(device),
                do_sample=False,  # the sampling is PerRowSampler's; greedy then takes its token
                temperature=None, top_p=None, top_k=None,
                logits_processor=LogitsProcessorList([PerRowSampler([seeds[i] for i in chunk], params, device)]),
                max_new_tokens=params.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=sorted(eos_ids),
            )
            samples = [sample_from_tokens(tokens, eos_ids, tokenizer) for tokens in output[:, batch.input_ids.shape[1]:].tolist()]
            bar.update(len(chunk))
            return samples

        # With several processes (torchrun / accelerate launch) each runs its share of the
        # batches; every process gets all results back.
        for chunk, samples in map_batches(batches, run):
            for index, sample in zip(chunk, samples):
                results[index] = sample
    return results  # type: ignore[return-value]
