"""Which contrastive pair and style spread the score most on the shipped prompts?

    python benchmarks/prompt_pairs.py --limit 24 --max-new-tokens 96

For each (pair, style) it generates on the same prompts and seed, scores in float32, and
prints the spread of the score (std, mean |score|), the share of positive scores and how
many responses ended with EOS. Then it rescores one of those tables under each score
precision / attention setting and prints its deviation from float32+eager and its time
ratio against it, all measured in this run.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import polars as pl
import torch

from dlma.core.config import load_section
from dlma.data.loaders import load_records
from dlma.data.prepare import prepare_prompts
from dlma.generate.params import GenerateParams
from dlma.generate.sampling import sample_responses
from dlma.lm.params import PromptsParams
from dlma.lm.prompts import encode_contexts
from dlma.model import load_causal_lm, load_tokenizer, resolve_model
from dlma.score.contrastive import score_table
from dlma.score.params import ScoreParams


def generate(model, tokenizer, prompts, queries, gen):
    contexts = encode_contexts(tokenizer, prompts, queries, "pos") + encode_contexts(tokenizer, prompts, queries, "neg")
    samples = sample_responses(model, tokenizer, contexts, gen, seeds=list(range(len(contexts))))
    n = len(queries)
    return pl.DataFrame({
        "id": [f"q{i}" for i in range(n)], "prompt": queries,
        "response_pos": [s.text for s in samples[:n]], "response_neg": [s.text for s in samples[n:]],
        "finish_pos": [s.finish for s in samples[:n]], "finish_neg": [s.finish for s in samples[n:]],
    })


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--precision-pair", default="harmless:system")
    args = parser.parse_args()
    resolved = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    tokenizer = load_tokenizer(resolved.path)
    gen_model = load_causal_lm(resolved.path, dtype=torch.bfloat16, device=torch.device("cpu"))
    score_model = load_causal_lm(resolved.path, dtype=torch.float32, device=torch.device("cpu"), attn_implementation="eager")
    base_prompts = load_section(PromptsParams, "prompts")
    records, report = load_records("data/prompts.jsonl")
    train, _ = prepare_prompts(records, report, limit=args.limit, eval_fraction=0.0, seed=0)
    queries = train["prompt"].to_list()
    gen = replace(load_section(GenerateParams, "generate"), max_new_tokens=args.max_new_tokens)
    score_params = load_section(ScoreParams, "score", dtype="float32", attn_implementation="eager")
    tables = {}
    print(f"\n== score spread by pair and style ({len(queries)} prompts, {args.max_new_tokens} new tokens)")
    for pair in ("harmless", "helpful"):
        for style in ("tag", "system"):
            prompts = replace(base_prompts, pair=pair, style=style)
            generated = generate(gen_model, tokenizer, prompts, queries, gen)
            scored = score_table(score_model, tokenizer, generated, prompts, score_params)
            tables[f"{pair}:{style}"] = (scored, prompts)
            s = scored["score"].to_numpy()
            eos = float(((scored["finish_pos"] == "eos").mean() + (scored["finish_neg"] == "eos").mean()) / 2)
            print(f"{pair:9s} {style:6s} std={s.std():7.2f} mean|R|={np.abs(s).mean():7.2f} "
                  f"mean={s.mean():7.2f} positive={np.mean(s > 0):.2f} eos_share={eos:.2f}")

    scored, prompts = tables[args.precision_pair]
    print(f"\n== score precision on {args.precision_pair} ({scored.height} rows, 6 sequences each)")
    baseline = None
    for dtype, attn in (("float32", "eager"), ("float32", "sdpa"), ("bfloat16", "eager"), ("bfloat16", "sdpa")):
        model = load_causal_lm(resolved.path, dtype=getattr(torch, dtype), device=torch.device("cpu"), attn_implementation=attn)
        started = time.perf_counter()
        result = score_table(model, tokenizer, scored.select(generated_columns()), prompts, score_params_for(dtype, attn))
        elapsed = time.perf_counter() - started
        s = result["score"].to_numpy()
        if baseline is None:
            baseline = (s, elapsed, result["logp_pos_given_pos"].to_numpy())
        ds = np.abs(s - baseline[0])
        dlp = np.abs(result["logp_pos_given_pos"].to_numpy() - baseline[2])
        flips = np.mean(np.sign(s) != np.sign(baseline[0]))
        print(f"{dtype:8s} {attn:5s} time={elapsed:6.1f}s speed-up={baseline[1] / elapsed:4.2f}x "
              f"mean|dR|={ds.mean():.4f} max|dR|={ds.max():.4f} max|dLL|={dlp.max():.4f} sign_flips={flips:.1%}")


def score_params_for(dtype: str, attn: str):
    return load_section(ScoreParams, "score", dtype=dtype, attn_implementation=attn)


def generated_columns():
    return ["id", "prompt", "response_pos", "response_neg", "finish_pos", "finish_neg"]


if __name__ == "__main__":
    main()
