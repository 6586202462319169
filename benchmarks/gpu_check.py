"""One-shot check of the GPU path: correctness of batched log-probs on CUDA, and the
throughput of generate / score / train in fp32 and bf16, each against a baseline measured
in the same run.

    python benchmarks/gpu_check.py --config-dir .gpu --out gpu_check.json

The model is SmolLM2-135M-shaped (config and tokenizer of the default model) with random
weights, since the real weights do not travel to the GPU machine: timings are
representative, the precision figures (bf16 vs fp32 on the score) are not.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def peak_gib() -> float:
    if DEVICE.type != "cuda":
        return 0.0
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return peak


def timed(fn):
    sync()
    started = time.perf_counter()
    result = fn()
    sync()
    return result, time.perf_counter() - started


def build_model(config_dir: Path, dtype, attn):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(config_dir)
    config._attn_implementation = attn
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=attn)
    with torch.no_grad():  # peakier than the default init, so log-probs are not near-uniform
        model.model.embed_tokens.weight.normal_(0, 0.5)
    return model.to(DEVICE, dtype=dtype).eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config-dir", type=Path, default=Path(".gpu"))
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a dry run on CPU")
    args = parser.parse_args()
    from dlma.core.config import load_section
    from dlma.generate.params import GenerateParams
    from dlma.generate.sampling import sample_responses
    from dlma.lm.logprobs import response_logprobs
    from dlma.model import load_tokenizer
    from dlma.score.contrastive import contrastive_score
    from dlma.train.params import TrainParams

    n = 8 if args.quick else 128
    steps = 2 if args.quick else 12
    results: dict = {"device": torch.cuda.get_device_name(0) if DEVICE.type == "cuda" else "cpu", "torch": torch.__version__}
    tokenizer = load_tokenizer(args.config_dir)
    queries = [json.loads(line)["prompt"] for line in open("data/prompts.jsonl")]
    rng = random.Random(0)
    vocab = len(tokenizer)

    # 1. Batched log-probs equal one-sequence-at-a-time on CUDA (fp32), both padding sides.
    model32 = build_model(args.config_dir, torch.float32, "eager")
    pairs = [([rng.randrange(vocab) for _ in range(rng.randint(5, 90))],
              [rng.randrange(vocab) for _ in range(rng.randint(1, 60))] + [tokenizer.eos_token_id]) for _ in range(24)]
    alone = response_logprobs(model32, pairs, pad_id=tokenizer.pad_token_id, batch_size=1)
    for side in ("right", "left"):
        batched = response_logprobs(model32, pairs, pad_id=tokenizer.pad_token_id, batch_size=8, padding_side=side)
        results[f"batched_vs_alone_max_rel_{side}"] = float(max(abs(batched - alone) / abs(alone)))
    print(results, flush=True)

    # 2. Generation throughput, bf16 vs fp32 (sdpa), batch 64, 256 sequences of 64 new tokens.
    contexts = [tokenizer(f"USER: {q}\nASSISTANT(law-abiding, ethical, inoffensive response):\n")["input_ids"] for q in queries[:n]] * 2
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model = build_model(args.config_dir, dtype, "sdpa")
        params = load_section(GenerateParams, "generate", max_new_tokens=64, batch_size=64, seed=0,
                              dtype={"fp32": "float32", "bf16": "bfloat16"}[name])
        sample_responses(model, tokenizer, contexts[:64], params, seeds=list(range(64)))  # warm-up
        peak_gib()
        # Throughput counts every decoded position: a batch runs until its longest answer ends.
        model.generation_config.min_new_tokens = params.max_new_tokens
        samples, seconds = timed(lambda: sample_responses(model, tokenizer, contexts, params, seeds=list(range(len(contexts)))))
        results[f"generate_{name}_tokens_per_s"] = len(contexts) * params.max_new_tokens / seconds
        results[f"generate_{name}_peak_gib"] = peak_gib()
        del model
    results["generate_bf16_speedup"] = results["generate_bf16_tokens_per_s"] / results["generate_fp32_tokens_per_s"]
    print(results, flush=True)

    # 3. Scoring: 128 rows x 6 sequences, batch 32; each setting against fp32 + eager.
    ctx = [tokenizer(q)["input_ids"] + [rng.randrange(vocab) for _ in range(40)] for q in queries[:n]]
    resp = [[rng.randrange(vocab) for _ in range(rng.randint(20, 128))] + [tokenizer.eos_token_id] for _ in range(2 * n)]
    score_pairs = [(c, resp[i]) for i, c in enumerate(ctx)] + [(c[::-1], resp[i]) for i, c in enumerate(ctx)] + \
                  [(c, resp[n + i]) for i, c in enumerate(ctx)] + [(c[::-1], resp[n + i]) for i, c in enumerate(ctx)] + \
                  [(c[:10], resp[i]) for i, c in enumerate(ctx)] + [(c[:10], resp[n + i]) for i, c in enumerate(ctx)]
    baseline = None
    for dtype_name, attn in (("fp32", "eager"), ("fp32", "sdpa"), ("bf16", "eager"), ("bf16", "sdpa")):
        model = build_model(args.config_dir, torch.float32 if dtype_name == "fp32" else torch.bfloat16, attn)
        response_logprobs(model, score_pairs[:32], pad_id=tokenizer.pad_token_id, batch_size=32)  # warm-up
        logps, seconds = timed(lambda: response_logprobs(model, score_pairs, pad_id=tokenizer.pad_token_id, batch_size=32))
        logps = logps.reshape(6, n)
        score = contrastive_score(logps[0], logps[1], logps[2], logps[3])
        if baseline is None:
            baseline = (score, seconds)
        key = f"score_{dtype_name}_{attn}"
        results[f"{key}_seconds"] = seconds
        results[f"{key}_speedup"] = baseline[1] / seconds
        results[f"{key}_mean_abs_dscore"] = float(abs(score - baseline[0]).mean())
        results[f"{key}_sign_flips"] = float((torch.sign(torch.tensor(score)) != torch.sign(torch.tensor(baseline[0]))).float().mean())
        del model
    print(results, flush=True)

    # 4. Training: LoRA margin-DPO, 96 pairs, batch 8, 12 steps; fp32 vs bf16 autocast.
    from dlma.train.run import train

    rows = []
    for i in range(6 * n // 8):
        prompt = tokenizer(queries[i % len(queries)])["input_ids"]
        chosen, rejected = resp[i % (2 * n)], resp[(i + 7) % (2 * n)]
        rows.append({"id": str(i), "prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected,
                     "margin": float(i % 11 - 3), "ref_chosen_logps": -100.0, "ref_rejected_logps": -110.0})
    for dtype_name in ("float32", "bfloat16"):
        model = build_model(args.config_dir, torch.float32, "sdpa").train()
        params = load_section(TrainParams, "train", batch_size=8, max_steps=steps, save_steps=1000, dtype=dtype_name, warmup_steps=0)
        peak_gib()
        _, _, timings = train(model, tokenizer, rows, params, Path(f"/tmp/ckpt-{dtype_name}"), DEVICE)
        results[f"train_{dtype_name}_s_per_step"] = timings["seconds_per_step"]
        results[f"train_{dtype_name}_peak_gib"] = peak_gib()
        del model
    results["train_bf16_speedup"] = results["train_float32_s_per_step"] / results["train_bfloat16_s_per_step"]
    print(json.dumps(results, indent=2), flush=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
