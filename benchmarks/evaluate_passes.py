"""What an evaluation computes for the aligned model's answers, before and after the passes it
no longer runs, measured in the same run on the same machine (these machines are noisy: read
the ratios).

    python benchmarks/evaluate_passes.py            # ~4 min on a 2-core CPU (64 prompts, 48 new tokens)

The aligned model is the base model with a LoRA adapter shaped as the train stage's
(`train.lora_r`, `train.lora_target_modules`), its weights random: the time does not depend
on their values. Both sides sample the same prompts with the same seeds, in float32.

- before: the adapter model samples its answers; a pass of it over them (KL's first term);
  a pass of the base model over them (KL's second term); and the perplexity guard's two
  passes over the base and the aligned answers re-encoded from their text;
- after: the merged model samples, recording each answer's log-prob as it goes (KL's first
  term); the base model's pass over them (KL's second term, also the aligned answers'
  perplexity); the base answers' perplexity comes from the base_answers stage, which
  records it while sampling them once per seed (its cost: `recording_overhead` below).

Prints each part's seconds and the ratio before / after, checks that the merged model
samples the adapter model's answers and that the recorded log-probs match a scoring pass,
and writes reports/evaluate_passes.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dlma.core.config import load_section  # noqa: E402
from dlma.core.io import write_json  # noqa: E402
from dlma.evaluate.answers import answer_logprobs  # noqa: E402
from dlma.generate.params import GenerateParams  # noqa: E402
from dlma.generate.sampling import row_seed, sample_responses  # noqa: E402
from dlma.lm.logprobs import response_logprobs  # noqa: E402
from dlma.lm.params import PromptsParams  # noqa: E402
from dlma.lm.prompts import encode_contexts, encode_response  # noqa: E402
from dlma.model import ModelParams, load_causal_lm, load_tokenizer, resolve_model  # noqa: E402
from dlma.score.params import ScoreParams  # noqa: E402
from dlma.train.params import TrainParams  # noqa: E402

CPU = torch.device("cpu")


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def adapter_model(path: Path, train: TrainParams):
    """The base model with a random LoRA adapter of the train stage's shape (B != 0, so it
    changes the answers as a trained one does)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = load_causal_lm(path, dtype=torch.float32, device=CPU)
    config = LoraConfig(r=train.lora_r, lora_alpha=train.lora_alpha, target_modules=list(train.lora_target_modules),
                        init_lora_weights=False)
    model = get_peft_model(model, config).eval()
    with torch.no_grad():  # small, as a trained adapter's update is
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.mul_(0.01)
    return model


def text_perplexity_pass(model, tokenizer, prompts: PromptsParams, queries, texts, batch_size: int) -> np.ndarray:
    """The perplexity guard as it was: each answer re-encoded from its text, EOS appended."""
    contexts = encode_contexts(tokenizer, prompts, queries, "bare")
    pairs = list(zip(contexts, [encode_response(tokenizer, t) for t in texts]))
    return response_logprobs(model, pairs, pad_id=tokenizer.pad_token_id, batch_size=batch_size, padding_side="right",
                             desc="perplexity (text)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--source", type=Path, default=REPO / "data" / "sentiment_prompts.jsonl")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "evaluate_passes.json")
    args = parser.parse_args()
    params_file = REPO / "params.yaml"
    model_params = load_section(ModelParams, "model", params_file)
    prompts = load_section(PromptsParams, "prompts", params_file)
    score = load_section(ScoreParams, "score", params_file)
    train = load_section(TrainParams, "train", params_file)
    gen = replace(load_section(GenerateParams, "generate", params_file), max_new_tokens=args.new_tokens, dtype="float32")
    path = resolve_model(model_params.base).path
    tokenizer = load_tokenizer(path)
    queries = pl.read_ndjson(args.source)["prompt"].head(args.prompts).to_list()
    contexts = encode_contexts(tokenizer, prompts, queries, "bare")
    seeds = [row_seed(0, str(i), "bare") for i in range(len(queries))]

    base_sampler = load_causal_lm(path, dtype=torch.float32, device=CPU)  # as evaluate samples: default attention
    judge = load_causal_lm(path, dtype=torch.float32, device=CPU, attn_implementation=score.attn_implementation)
    adapter = adapter_model(path, train)
    sample_responses(base_sampler, tokenizer, contexts[:2], replace(gen, batch_size=2), seeds=seeds[:2])  # warm-up

    parts: dict[str, float] = {}
    base_answers, parts["base_sampling"] = timed(lambda: sample_responses(base_sampler, tokenizer, contexts, gen, seeds=seeds,
                                                                           desc="base answers"))
    recorded_base, parts["base_sampling_recording"] = timed(lambda: sample_responses(
        base_sampler, tokenizer, contexts, gen, seeds=seeds, desc="base answers, recording", with_logprobs=True))

    # Before: the adapter model samples, then four passes.
    aligned, parts["before_sampling_adapter"] = timed(lambda: sample_responses(adapter, tokenizer, contexts, gen, seeds=seeds,
                                                                                desc="adapter"))
    _, parts["before_kl_policy_pass"] = timed(lambda: answer_logprobs(adapter, tokenizer, contexts, aligned, score, "kl (aligned)"))
    _, parts["before_kl_base_pass"] = timed(lambda: answer_logprobs(judge, tokenizer, contexts, aligned, score, "kl (base)"))
    _, parts["before_perplexity_passes"] = timed(lambda: [
        text_perplexity_pass(judge, tokenizer, prompts, queries, [s.text for s in answers], score.batch_size)
        for answers in (base_answers, aligned)])

    # After: the merged model samples and records; one pass of the base model.
    merged, parts["merging"] = timed(lambda: adapter.merge_and_unload().eval())
    aligned_after, parts["after_sampling_merged_recording"] = timed(lambda: sample_responses(
        merged, tokenizer, contexts, gen, seeds=seeds, desc="merged, recording", with_logprobs=True))
    _, parts["after_kl_base_pass"] = timed(lambda: answer_logprobs(judge, tokenizer, contexts, aligned_after, score, "kl (base)"))
    scored = answer_logprobs(merged, tokenizer, contexts, aligned_after, score, "check: a scoring pass")

    before = sum(v for k, v in parts.items() if k.startswith("before_"))
    after = sum(v for k, v in parts.items() if k.startswith("after_")) + parts["merging"]
    recorded = np.array([s.logp for s in aligned_after])
    results = {
        "machine": {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()},
        "prompts": len(queries), "new_tokens": gen.max_new_tokens, "batch_size": gen.batch_size, "dtype": "float32",
        "seconds": {k: round(v, 2) for k, v in parts.items()},
        "aligned_answers_before_s": round(before, 2), "aligned_answers_after_s": round(after, 2),
        "speedup": round(before / after, 2),
        "recording_overhead": round(parts["base_sampling_recording"] / parts["base_sampling"], 3),
        "merged_samples_adapter_answers": sum(a.token_ids == b.token_ids for a, b in zip(aligned, aligned_after)),
        "recording_changes_no_answer": all(a.token_ids == b.token_ids for a, b in zip(base_answers, recorded_base)),
        "recorded_minus_scored_logp_max_abs": float(np.abs(recorded - scored).max()),
    }
    write_json(results, args.out)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
