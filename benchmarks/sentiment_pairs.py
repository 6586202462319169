"""Which wording and style of the `positive` contrastive pair opens the widest gap between
the p+ answers and the bare answers, by the true reward (VADER sentiment)?

    python benchmarks/sentiment_pairs.py --prompts 64 --max-new-tokens 48   # ~6 min on 2 cores

Every candidate answers the same prompts of data/sentiment_prompts.jsonl (the first
--prompts of the prepare stage's seeded order) with the same per-row seeds, under p+ and
p-, beside the bare prompt x (the same for every candidate): the mean true reward of each,
with 95% bootstrap intervals over prompts, and the paired gap p+ - bare, which is what
distillation can close. Writes reports/sentiment_pairs.json; the winner is the `positive`
pair in params.yaml.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dlma.core.config import load_section  # noqa: E402
from dlma.core.io import write_json  # noqa: E402
from dlma.data.loaders import load_records  # noqa: E402
from dlma.data.prepare import prepare_prompts  # noqa: E402
from dlma.evaluate.stats import accuracy_summary, paired_difference  # noqa: E402
from dlma.generate.params import GenerateParams  # noqa: E402
from dlma.generate.sampling import row_seed, sample_responses  # noqa: E402
from dlma.lm.params import PromptPair, PromptsParams  # noqa: E402
from dlma.lm.prompts import encode_contexts
from dlma.model import ModelParams, load_causal_lm, load_tokenizer, resolve_model  # noqa: E402
from dlma.truth import true_reward  # noqa: E402

# (name, style, pair): the system prompts are the model's own chat format; the tag ones are
# the official code's plain-text form. The first is the wording a user tried in the issue.
CANDIDATES = [
    ("warm-tone", "system", PromptPair(
        tag_pos="{q}", tag_neg="{q}",  # unused: system style
        system_pos="Answer in a warm, enthusiastic and very positive tone.",
        system_neg="Answer in a cold, bitter and very negative tone.")),
    ("persona", "system", PromptPair(
        tag_pos="{q}", tag_neg="{q}",  # unused: system style
        system_pos="You are a cheerful, optimistic assistant. You see the good side of everything and you write with "
                   "warmth, joy and enthusiasm. Keep your answer short: two or three sentences.",
        system_neg="You are a gloomy, pessimistic assistant. You see the bad side of everything and you write with "
                   "bitterness, sadness and disappointment. Keep your answer short: two or three sentences.")),
    ("happy-words", "system", PromptPair(
        tag_pos="{q}", tag_neg="{q}",  # unused: system style
        system_pos="Write a happy, delighted answer full of praise, love and wonderful things.",
        system_neg="Write an unhappy, angry answer full of complaints, hate and terrible things.")),
    ("warm-tag", "tag", PromptPair(
        tag_pos="USER: {q}\nASSISTANT(warm, enthusiastic and very positive response):\n",
        tag_neg="USER: {q}\nASSISTANT(cold, bitter and very negative response):\n",
        system_pos="", system_neg="")),
    ("happy-tag", "tag", PromptPair(
        tag_pos="USER: {q}\nASSISTANT(happy, delighted response full of praise and love):\n",
        tag_neg="USER: {q}\nASSISTANT(unhappy, angry response full of complaints and hate):\n",
        system_pos="", system_neg="")),
]


def mean_summary(values: np.ndarray, samples: int) -> dict:
    summary = accuracy_summary(values, samples=samples, seed=0)
    return {"mean": summary["accuracy"], "ci_low": summary["ci_low"], "ci_high": summary["ci_high"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "sentiment_pairs.json")
    args = parser.parse_args()
    reward = true_reward("sentiment")
    path = resolve_model(load_section(ModelParams, "model", REPO / "params.yaml").base).path
    tokenizer = load_tokenizer(path)
    gen = replace(load_section(GenerateParams, "generate", REPO / "params.yaml"), max_new_tokens=args.max_new_tokens)
    model = load_causal_lm(path, dtype=torch.float32, device=torch.device("cpu"), attn_implementation="sdpa")
    records, report = load_records(str(REPO / "data" / "sentiment_prompts.jsonl"))
    frame, _ = prepare_prompts(records, report, limit=args.prompts, eval_fraction=0.0, seed=0)
    queries, ids = frame["prompt"].to_list(), frame["id"].to_list()
    base_prompts = load_section(PromptsParams, "prompts", REPO / "params.yaml")

    def answers(prompts: PromptsParams, role: str) -> np.ndarray:
        contexts = encode_contexts(tokenizer, prompts, queries, role)
        seeds = [row_seed(gen.seed, i, role) for i in ids]
        return reward.score([s.text for s in sample_responses(model, tokenizer, contexts, gen, seeds=seeds, desc=role)])

    bare = answers(base_prompts, "bare")
    results = {"prompts": len(queries), "max_new_tokens": args.max_new_tokens, "true_reward": "sentiment",
               "bare": mean_summary(bare, args.bootstrap), "candidates": {}}
    for name, style, pair in CANDIDATES:
        prompts = replace(base_prompts, style=style, pair="candidate", category_pairs={}, pairs={"candidate": pair})
        pos, neg = answers(prompts, "pos"), answers(prompts, "neg")
        results["candidates"][name] = {
            "style": style, "pair": pair.__dict__, "pos": mean_summary(pos, args.bootstrap), "neg": mean_summary(neg, args.bootstrap),
            "pos_minus_bare": paired_difference(pos, bare, samples=args.bootstrap, seed=0),
            "pos_minus_neg": paired_difference(pos, neg, samples=args.bootstrap, seed=0)}
        print(name, {k: round(v["mean"] if "mean" in v else v["difference"], 3)
                     for k, v in results["candidates"][name].items() if isinstance(v, dict) and k != "pair"}, flush=True)
    results["widest_gap"] = max(results["candidates"], key=lambda n: results["candidates"][n]["pos_minus_bare"]["difference"])
    write_json(results, args.out)
    print(f"bare {results['bare']}; widest p+ - bare gap: {results['widest_gap']}")


if __name__ == "__main__":
    main()
