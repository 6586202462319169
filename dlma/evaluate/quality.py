"""Quality guards of both models' answers: perplexity under the base model, length, diversity."""

from __future__ import annotations

import numpy as np

from dlma.evaluate.stats import distinct_n, perplexity
from dlma.lm.logprobs import response_logprobs
from dlma.lm.params import PromptsParams
from dlma.lm.prompts import encode_contexts, encode_response


def answer_logps(model, tokenizer, prompts: PromptsParams, queries, answers, *, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Summed log-prob of each answer given the bare query, and its token count."""
    contexts = encode_contexts(tokenizer, prompts, queries, "bare")
    responses = [encode_response(tokenizer, a) for a in answers]
    logps = response_logprobs(model, list(zip(contexts, responses)), pad_id=tokenizer.pad_token_id, batch_size=batch_size,
                              padding_side="right", desc="perplexity")  # as training pads: one numerics for the whole guard
    return logps, np.array([len(r) for r in responses])


def quality_guards(model, tokenizer, prompts: PromptsParams, queries, answers: dict[str, list[str]], *,
                   batch_size: int, bare_logps: dict | None = None) -> tuple[dict, dict]:
    """(perplexity per model, text statistics per model). `bare_logps` reuses a scoring pass
    that already holds each answer's log-prob given the bare query (the self-contrast judge's)."""
    logps = bare_logps or {
        who: answer_logps(model, tokenizer, prompts, queries, texts, batch_size=batch_size) for who, texts in answers.items()
    }
    ppl = {who: perplexity(*logps[who]) for who in ("base", "aligned")}
    text = {
        who: {"mean_tokens": float(np.mean(logps[who][1]) - 1), "distinct_1": distinct_n(answers[who], 1),
              "distinct_2": distinct_n(answers[who], 2)}
        for who in ("base", "aligned")
    }
    return ppl, text
