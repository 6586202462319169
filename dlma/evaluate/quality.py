"""Quality guards of both models' answers: perplexity under the base model, length, diversity."""

from __future__ import annotations

import numpy as np

from dlma.evaluate.stats import distinct_n, perplexity
from dlma.generate.sampling import Sample


def scored_tokens(sample: Sample) -> int:
    """How many tokens an answer's log-prob sums over: the sampled ones, plus the EOS where
    the model ended it (`response_tokens`)."""
    return sample.n_tokens + (1 if sample.finish == "eos" else 0)


def quality_guards(samples: dict[str, list[Sample]], logp_base: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """(perplexity per model, text statistics per model). `logp_base[who]`: each of that
    model's answers' summed log-prob under the base model given the bare prompt, over its
    very tokens (`answer_logprobs`); the evaluation has them from its KL pass (the aligned
    answers) and from the base_answers stage (the base answers), so no pass runs here."""
    ppl = {who: perplexity(np.asarray(logp_base[who]), np.array([scored_tokens(s) for s in samples[who]]))
           for who in ("base", "aligned")}
    text = {
        who: {"mean_tokens": float(np.mean([s.n_tokens for s in samples[who]])),
              "distinct_1": distinct_n([s.text for s in samples[who]], 1),
              "distinct_2": distinct_n([s.text for s in samples[who]], 2)}
        for who in ("base", "aligned")
    }
    return ppl, text
