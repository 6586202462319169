"""Which prompt style should be the default, tag or system? Measured, not chosen by taste.

    python benchmarks/prompt_style.py --hh-rows 200 --prompts 24 --max-new-tokens 200

For each style (`prompts.style`: tag templates, or system messages through the chat
template), with everything else from params.yaml:
- label agreement of the contrastive score with human labels, on the shared HH-RLHF
  harmless dev split (first --hh-rows pairs, judged with the harmless pair) and on the
  shipped pairs (each judged with its category's pair), with 95% bootstrap intervals and
  the paired difference system - tag (the same pairs judged both ways);
- how often the model ends its answer by itself: responses sampled under p+ and p- for the
  first --prompts training prompts, and the share that produced EOS within 64, 128, ...
  tokens, per response and per pair (both ended).
Writes reports/prompt_style.json (the numbers quoted in the README).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

from dlma.core.config import load_section
from dlma.core.io import write_json
from dlma.data.loaders import load_records
from dlma.evaluate.stats import accuracy_summary, paired_difference
from dlma.generate.params import GenerateParams
from dlma.generate.sampling import row_seed, sample_responses
from dlma.lm.params import PromptsParams
from dlma.lm.prompts import encode_contexts, pairs_of
from dlma.model import ModelParams, load_for_stage
from dlma.score.contrastive import score_table
from dlma.score.params import ScoreParams

STYLES = ("tag", "system")
SHARED = Path(os.environ.get("DLMA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def agreement(model, tokenizer, frame: pl.DataFrame, prompts: PromptsParams, score: ScoreParams) -> np.ndarray:
    """1 where the contrastive score prefers the human-chosen answer, per pair."""
    pairs = frame.select("id", "prompt", "pair", pl.col("chosen").alias("response_pos"), pl.col("rejected").alias("response_neg"))
    scored = score_table(model, tokenizer, pairs, prompts, score, with_reference=False)
    return (scored["score"].to_numpy() > 0).astype(float)


def labelled_sets(hh_rows: int, prompts: PromptsParams) -> dict[str, pl.DataFrame]:
    hh, _ = load_records(SHARED / "hh-rlhf" / "harmless-base-test-dev.jsonl.gz", format="hh")
    hh = hh.filter(pl.col("chosen") != pl.col("rejected")).head(hh_rows)
    shipped, _ = load_records("data/labelled_pairs.jsonl")
    return {
        "hh_harmless": hh.with_columns(pl.lit("harmless").alias("pair")),
        "shipped": shipped.with_columns(pl.Series("pair", pairs_of(prompts, shipped["category"].to_list(), shipped.height))),
    }


def completion(model, tokenizer, prompts: PromptsParams, gen: GenerateParams, frame: pl.DataFrame, limits: list[int]) -> dict:
    """Share of responses (and of pairs) that ended with EOS within each length limit."""
    pairs = pairs_of(prompts, frame["category"].to_list(), frame.height)
    queries, ids = frame["prompt"].to_list(), frame["id"].to_list()
    contexts = encode_contexts(tokenizer, prompts, queries, "pos", pairs) + encode_contexts(tokenizer, prompts, queries, "neg", pairs)
    seeds = [row_seed(gen.seed, i, "pos") for i in ids] + [row_seed(gen.seed, i, "neg") for i in ids]
    samples = sample_responses(model, tokenizer, contexts, gen, seeds=seeds)
    lengths = np.array([s.n_tokens if s.finish == "eos" else np.inf for s in samples])
    pos, neg = lengths[: frame.height], lengths[frame.height:]
    return {
        f"within_{limit}": {"responses": float(np.mean(lengths <= limit)),
                            "pairs": float(np.mean((pos <= limit) & (neg <= limit)))}
        for limit in limits
    } | {"median_tokens_of_ended": float(np.median(lengths[np.isfinite(lengths)])) if np.isfinite(lengths).any() else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hh-rows", type=int, default=200)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--styles", default=",".join(STYLES), help="comma-separated styles to measure")
    parser.add_argument("--system-suffix", default="", help="a sentence appended to every pair's system_pos and system_neg")
    parser.add_argument("--out", default="reports/prompt_style.json")
    args = parser.parse_args()
    base_prompts = load_section(PromptsParams, "prompts")
    if args.system_suffix:  # e.g. a length instruction shared by p+ and p- (the contrast is unchanged)
        base_prompts = replace(base_prompts, pairs={
            name: replace(pair, system_pos=f"{pair.system_pos} {args.system_suffix}", system_neg=f"{pair.system_neg} {args.system_suffix}")
            for name, pair in base_prompts.pairs.items()})
    styles = args.styles.split(",")
    score = load_section(ScoreParams, "score")
    gen = replace(load_section(GenerateParams, "generate"), max_new_tokens=args.max_new_tokens)
    model_params = load_section(ModelParams, "model")
    result: dict = {"threads": torch.get_num_threads(), "score_dtype": score.dtype, "generate_dtype": gen.dtype,
                    "system_suffix": args.system_suffix, "agreement": {}, "completion": {}}

    model, tokenizer, _ = load_for_stage(model_params, score.dtype, score.attn_implementation)
    correct: dict[str, dict[str, np.ndarray]] = {}
    for name, frame in ({} if args.skip_agreement else labelled_sets(args.hh_rows, base_prompts)).items():
        correct[name] = {}
        for style in styles:
            started = time.perf_counter()
            correct[name][style] = agreement(model, tokenizer, frame, replace(base_prompts, style=style), score)
            summary = accuracy_summary(correct[name][style], samples=args.bootstrap, seed=0)
            print(f"agreement {name:12s} {style:6s} {summary['accuracy']:.3f} [{summary['ci_low']:.3f}, {summary['ci_high']:.3f}] "
                  f"n={frame.height} ({time.perf_counter() - started:.0f} s)", flush=True)
            result["agreement"].setdefault(name, {"rows": frame.height})[style] = summary
        if len(styles) < 2:
            continue
        difference = paired_difference(correct[name]["system"], correct[name]["tag"], samples=args.bootstrap, seed=0)
        result["agreement"][name]["system_minus_tag"] = difference
        print(f"agreement {name:12s} system - tag {difference['difference']:+.3f} [{difference['ci_low']:+.3f}, {difference['ci_high']:+.3f}]")

    if not args.skip_generation:
        del model
        model, tokenizer, _ = load_for_stage(model_params, gen.dtype)
        train = pl.read_parquet("data/prompts_train.parquet").head(args.prompts)
        limits = sorted({64, 128, args.max_new_tokens} & set(range(args.max_new_tokens + 1)))
        for style in styles:
            started = time.perf_counter()
            shares = completion(model, tokenizer, replace(base_prompts, style=style), gen, train, limits)
            result["completion"][style] = shares | {"prompts": train.height, "seconds": time.perf_counter() - started}
            print(f"completion {style:6s} {json.dumps(shares)}", flush=True)
    write_json(result, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
