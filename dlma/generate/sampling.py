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
    # Summed log-prob of the sampled tokens (and the EOS where the model ended it) under the
    # sampling model's full softmax, recorded while sampling (`with_logprobs`); else None.
    logp: float | None = None


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


class StepLogprobs:
    """At each decoding step, log softmax of the model's own next-token logits, before any
    logits processor (HF hands processors the output of the ones before them; a forward hook
    on the transformers model, under any PEFT wrapper, sees the model's). The sampler keeps
    the sampled token's, so an answer's log-prob comes with it instead of from a second
    forward pass over it (the evaluation's KL estimate; transformers records only whole
    [batch, vocab] logits per step, too large to keep)."""

    def __init__(self, model):
        target = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.last: torch.Tensor | None = None
        self.handle = target.register_forward_hook(self._record)

    def _record(self, module, args, output) -> None:
        logits = output.logits[:, -1].float()
        self.last = logits - torch.logsumexp(logits, dim=-1, keepdim=True)

    def close(self) -> None:
        self.handle.remove()


class PerRowSampler(LogitsProcessor):
    """Warp the scores (temperature, top-k, top-p), draw each row's next token from its own
    generator, and leave only that token possible, so greedy decoding emits it. With a
    `StepLogprobs`, each step's drawn tokens' log-probs are kept (`chosen_logps`)."""

    def __init__(self, seeds: list[int], params: GenerateParams, device: torch.device,
                 logprobs: StepLogprobs | None = None):
        self.logprobs = logprobs
        self.chosen_logps: list[torch.Tensor] = []
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
        if self.logprobs is not None:
            self.chosen_logps.append(self.logprobs.last[torch.arange(scores.shape[0], device=scores.device), chosen])
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


def sample_from_tokens(new_tokens: list[int], eos_ids: set[int], tokenizer, step_logps: list[float] | None = None) -> Sample:
    """A sampled continuation as a Sample: cut at the first EOS, decoded without special
    tokens (both engines, so their tables have the same form). `step_logps`: each step's
    sampled token's log-prob; the sample's is their sum over its tokens and its EOS."""
    kept, finish, eos_id = _cut_at_eos(new_tokens, eos_ids)
    logp = None
    if step_logps is not None:
        logp = float(sum(step_logps[:len(kept) + (1 if finish == "eos" else 0)]))
    return Sample(text=tokenizer.decode(kept, skip_special_tokens=True).strip(), finish=finish, n_tokens=len(kept),
                  token_ids=tuple(kept), eos_id=eos_id, logp=logp)


@torch.inference_mode()
def sample_responses(
    model, tokenizer, contexts: list[list[int]], params: GenerateParams, *, seeds: list[int], desc: str = "generate",
    with_logprobs: bool = False,
) -> list[Sample]:
    """Sample one response per context, the i-th from its own stream `seeds[i]`. Batches
    are formed in order of context length so that little padding is computed (and dealt to
    the processes of a multi-process run); results come back in the input order.
    `with_logprobs`: each Sample's `logp` is its log-prob under the model (`StepLogprobs`),
    the same as a scoring pass over it up to float rounding (KV cache, left padding)."""
    if len(seeds) != len(contexts):
        raise ValueError("one seed per context")
    eos_ids = eos_ids_of_model(model, tokenizer)
    order = sorted(range(len(contexts)), key=lambda i: (len(contexts[i]), i))
    batches = [order[start:start + params.batch_size] for start in range(0, len(order), params.batch_size)]
    results: list[Sample | None] = [None] * len(contexts)
    device = next(model.parameters()).device
    recorder = StepLogprobs(model) if with_logprobs else None
    with tqdm(total=rows_of_this_process(batches), desc=desc, unit="resp", disable=not is_main_process()) as bar:
        def run(chunk: list[int]) -> list[Sample]:
            batch = left_pad([contexts[i] for i in chunk], tokenizer.pad_token_id)
            sampler = PerRowSampler([seeds[i] for i in chunk], params, device, recorder)
            output = model.generate(
                input_ids=batch.input_ids.to(device),
                attention_mask=batch.attention_mask.to(device),
                do_sample=False,  # the sampling is PerRowSampler's; greedy then takes its token
                temperature=None, top_p=None, top_k=None,
                logits_processor=LogitsProcessorList([sampler]),
                max_new_tokens=params.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=sorted(eos_ids),
            )
            new_tokens = output[:, batch.input_ids.shape[1]:].tolist()
            step_logps = (torch.stack(sampler.chosen_logps, dim=1).double().tolist() if recorder is not None
                          else [None] * len(chunk))
            samples = [sample_from_tokens(tokens, eos_ids, tokenizer, logps) for tokens, logps in zip(new_tokens, step_logps)]
            bar.update(len(chunk))
            return samples

        try:
            # With several processes (torchrun / accelerate launch) each runs its share of the
            # batches; every process gets all results back.
            for chunk, samples in map_batches(batches, run):
                for index, sample in zip(chunk, samples):
                    results[index] = sample
        finally:
            if recorder is not None:
                recorder.close()
    return results  # type: ignore[return-value]
