"""What the score stage computes, before and after taking the log-probs that the generate
stage records while sampling, measured in the same run on the same machine (these machines
are noisy: read the ratios).

    python benchmarks/score_passes.py            # ~4 min on a 2-core CPU (64 prompts, 48 new tokens)

The pairs are the controlled preset's (`compare.presets.controlled.set`: the sentiment
prompts, the positive pair in tag style, 48 new tokens), sampled here in float32:

- contrastive pairs (DLMA, RLCD, the oracle): before, the score runs six jobs (each answer
  under p+ and p-, and under x for the reference); after, four: each answer's log-prob
  under its own sampling context was recorded while sampling it;
- bare pairs (RLAIF): before, two reference jobs (each answer under x); after, none.

Prints each part's seconds and the ratio before / after, checks that every column equals a
full scoring up to float rounding, and writes reports/score_passes.json.
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
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dlma.core.config import load_section  # noqa: E402
from dlma.core.io import write_json  # noqa: E402
from dlma.generate.pairs import generate_pairs  # noqa: E402
from dlma.generate.params import GenerateParams  # noqa: E402
from dlma.lm.params import PromptsParams  # noqa: E402
from dlma.model import ModelParams, load_causal_lm, load_tokenizer, resolve_model  # noqa: E402
from dlma.score.contrastive import recorded_logprobs, score_table  # noqa: E402
from dlma.score.labellers import with_reference  # noqa: E402
from dlma.score.params import ScoreParams  # noqa: E402

CPU = torch.device("cpu")
COLUMNS = ("logp_pos_given_pos", "logp_pos_given_neg", "logp_neg_given_pos", "logp_neg_given_neg", "ref_logp_pos",
           "ref_logp_neg", "score")


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def preset_section(cls, section: str, params_file: Path, preset: str):
    """A params section with the preset's `set` keys of that section applied."""
    changes = yaml.safe_load(params_file.read_text())["compare"]["presets"][preset]["set"]
    overrides = {key.split(".", 1)[1]: value for key, value in changes.items() if key.startswith(f"{section}.")}
    return replace(load_section(cls, section, params_file), **overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--source", type=Path, default=REPO / "data" / "sentiment_prompts.jsonl")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "score_passes.json")
    args = parser.parse_args()
    params_file = REPO / "params.yaml"
    model_params = load_section(ModelParams, "model", params_file)
    prompts = preset_section(PromptsParams, "prompts", params_file, "controlled")
    generate = replace(preset_section(GenerateParams, "generate", params_file, "controlled"), dtype="float32")
    score = replace(load_section(ScoreParams, "score", params_file), dtype="float32")
    path = resolve_model(model_params.base).path
    tokenizer = load_tokenizer(path)
    frame = pl.read_ndjson(args.source).head(args.prompts).with_row_index("row").select(
        pl.col("row").cast(pl.String).alias("id"), "prompt", pl.lit("").alias("category"))
    sampler = load_causal_lm(path, dtype=torch.float32, device=CPU)  # as the generate stage: default attention
    scorer = load_causal_lm(path, dtype=torch.float32, device=CPU, attn_implementation=score.attn_implementation)

    parts: dict[str, float] = {}
    checks: dict[str, float] = {}
    contrastive, parts["sampling_contrastive"] = timed(lambda: generate_pairs(sampler, tokenizer, frame, prompts, generate)[0])
    full, parts["before_contrastive_score"] = timed(lambda: score_table(scorer, tokenizer, contrastive, prompts, score))
    taken, parts["after_contrastive_score"] = timed(lambda: score_table(scorer, tokenizer, contrastive, prompts, score,
                                                                        recorded=recorded_logprobs(contrastive)))
    for column in COLUMNS:
        checks[f"contrastive_{column}_max_abs"] = float(np.abs(taken[column].to_numpy() - full[column].to_numpy()).max())

    bare_pairs = replace(generate, pairs_from="bare")
    bare, parts["sampling_bare"] = timed(lambda: generate_pairs(sampler, tokenizer, frame, prompts, bare_pairs)[0])
    full_bare, parts["before_bare_reference"] = timed(lambda: with_reference(scorer, tokenizer, bare, prompts, score))
    taken_bare, parts["after_bare_reference"] = timed(lambda: with_reference(scorer, tokenizer, bare, prompts, score,
                                                                             recorded_logprobs(bare)))
    for column in ("ref_logp_pos", "ref_logp_neg"):
        checks[f"bare_{column}_max_abs"] = float(np.abs(taken_bare[column].to_numpy() - full_bare[column].to_numpy()).max())

    results = {
        "machine": {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()},
        "pairs": contrastive.height, "new_tokens": generate.max_new_tokens, "score_batch_size": score.batch_size,
        "dtype": "float32",
        "seconds": {k: round(v, 2) for k, v in parts.items()},
        "contrastive_score_speedup": round(parts["before_contrastive_score"] / parts["after_contrastive_score"], 2),
        "contrastive_saved_share_of_generate_plus_score": round(
            (parts["before_contrastive_score"] - parts["after_contrastive_score"])
            / (parts["sampling_contrastive"] + parts["before_contrastive_score"]), 3),
        "bare_reference_saved_s": round(parts["before_bare_reference"] - parts["after_bare_reference"], 2),
        "taken_minus_scored_max_abs": checks,
        "score_sign_flips": int((np.sign(taken["score"].to_numpy()) != np.sign(full["score"].to_numpy())).sum()),
    }
    write_json(results, args.out)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
