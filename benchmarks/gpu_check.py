"""One-shot check of the GPU path: correctness of batched log-probs on CUDA, and the
throughput of generate / score / train in fp32 and bf16, each against a baseline measured
in the same run.

    python benchmarks/gpu_check.py --config-dir .gpu --out gpu_check.json
    python benchmarks/gpu_check.py --config-dir .gpu --paper-shapes-only   # only section 5

Section 5 runs the paper's shapes: a randomly initialised LLaMA-2-7B-shaped model (no
weights travel; 32 layers, hidden 4096), bf16, generation, scoring and one full
fine-tuning step under FSDP2 on one GPU, with tokens/s, peak memory and MFU against the
card's bf16 peak. With --quick it runs a 2-layer model of the same width on CPU (a dry
run of the code path; its numbers mean nothing).

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


# Dense bf16 peak of a card, TFLOP/s (vendor data sheets, without sparsity).
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}
LLAMA2_7B = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096}


def card_peak_tflops() -> float | None:
    if DEVICE.type != "cuda":
        return None
    name = torch.cuda.get_device_name(0)
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def paper_shapes(config_dir: Path, *, quick: bool, peak_tflops: float | None) -> dict:
    """LLaMA-2-7B shapes at the paper's lengths (prompts and answers up to 512 tokens): the
    stages' own code (sample_responses, response_logprobs, the margin-DPO loss), bf16."""
    import os

    import torch.distributed as dist
    from transformers import LlamaConfig, LlamaForCausalLM

    from dlma.core.config import load_section
    from dlma.generate.params import GenerateParams
    from dlma.generate.sampling import sample_responses
    from dlma.lm.logprobs import response_logprobs
    from dlma.model import load_tokenizer
    from dlma.train.loss import dpo_logratio_difference, margin_dpo_loss
    from dlma.train.trainer import MarginPreferenceCollator, sequence_logps

    shape = dict(LLAMA2_7B) | ({"num_hidden_layers": 2} if quick else {})
    config = LlamaConfig(**shape, attn_implementation="sdpa", use_cache=True)
    tokenizer = load_tokenizer(config_dir)
    peak = peak_tflops or card_peak_tflops()
    out: dict = {"shape": shape, "peak_bf16_tflops": peak}
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    params_count = sum(p.numel() for p in model.parameters())
    out["parameters"] = params_count
    out["weights_gib"] = params_count * 2 / 2**30
    rng = random.Random(0)
    vocab = shape["vocab_size"]

    def mfu(flops: float, seconds: float) -> float | None:
        return flops / seconds / (peak * 1e12) if peak else None

    # Generation: 64 prompts of 256 tokens, 128 new tokens each, batch 64.
    count, new_tokens = (8, 8) if quick else (64, 128)
    contexts = [[rng.randrange(3, vocab) for _ in range(256)] for _ in range(count)]
    gen = load_section(GenerateParams, "generate", max_new_tokens=new_tokens, batch_size=count, dtype="bfloat16")
    model.generation_config.min_new_tokens = new_tokens  # every row decodes the full length
    sample_responses(model, tokenizer, contexts[:2], gen, seeds=[0, 1])  # warm-up
    peak_gib()
    _, seconds = timed(lambda: sample_responses(model, tokenizer, contexts, gen, seeds=list(range(count))))
    out["generate"] = {"sequences": count, "new_tokens": new_tokens, "tokens_per_s": count * new_tokens / seconds,
                       "seconds": seconds, "peak_gib": peak_gib()}
    print(out, flush=True)

    # Scoring: 6 x 32 sequences of 256 + 256 tokens, batch 16 (the stage's pass).
    rows = 8 if quick else 192
    pairs = [([rng.randrange(3, vocab) for _ in range(256)], [rng.randrange(3, vocab) for _ in range(256)]) for _ in range(rows)]
    response_logprobs(model, pairs[:4], pad_id=tokenizer.pad_token_id, batch_size=4, padding_side="right")  # warm-up
    _, seconds = timed(lambda: response_logprobs(model, pairs, pad_id=tokenizer.pad_token_id, batch_size=16, padding_side="right"))
    tokens = rows * 512
    out["score"] = {"sequences": rows, "tokens_per_s": tokens / seconds, "seconds": seconds, "peak_gib": peak_gib(),
                    "mfu": mfu(2 * params_count * tokens, seconds)}
    print(out, flush=True)

    # One full fine-tuning step (8 pairs of 512 tokens, margin-DPO loss, AdamW, activation
    # checkpointing) with the model under FSDP2 on this one GPU.
    model.train()
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
    try:
        if not dist.is_initialized():
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", "29533")
            dist.init_process_group("nccl" if DEVICE.type == "cuda" else "gloo", rank=0, world_size=1)
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        out["fsdp"] = "fully_shard (FSDP2), world size 1"
    except Exception as exc:  # noqa: BLE001 - report why, and time the step unsharded
        out["fsdp"] = f"not used: {type(exc).__name__}: {exc}"[:300]
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-7)
    pairs_per_step = 2 if quick else 8
    batch = MarginPreferenceCollator(tokenizer.pad_token_id)([
        {"prompt_ids": [rng.randrange(3, vocab) for _ in range(256)], "chosen_ids": [rng.randrange(3, vocab) for _ in range(256)],
         "rejected_ids": [rng.randrange(3, vocab) for _ in range(256)], "ref_chosen_logps": -2000.0,
         "ref_rejected_logps": -2000.0, "margin": 1.0} for _ in range(pairs_per_step)])
    batch = {k: v.to(DEVICE) for k, v in batch.items()}

    def step():
        logps = sequence_logps(model, batch)
        chosen, rejected = logps.chunk(2)
        delta = dpo_logratio_difference(chosen, rejected, batch["ref_chosen_logps"], batch["ref_rejected_logps"])
        loss = margin_dpo_loss(delta, batch["margin"], beta=0.1, margin_weight=0.2, margin_min=-40, margin_max=40).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    step()  # warm-up: allocates the optimiser state
    peak_gib()
    steps = 1 if quick else 3
    _, seconds = timed(lambda: [step() for _ in range(steps)])
    tokens = pairs_per_step * 2 * 512 * steps
    # 6 N per token (forward 2N + backward 4N) plus the recompute of checkpointing (2N).
    out["train"] = {"pairs_per_step": pairs_per_step, "seconds_per_step": seconds / steps, "tokens_per_s": tokens / seconds,
                    "peak_gib": peak_gib(), "mfu": mfu(8 * params_count * tokens, seconds)}
    if dist.is_initialized():
        dist.destroy_process_group()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config-dir", type=Path, default=Path(".gpu"))
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a dry run on CPU")
    parser.add_argument("--paper-shapes-only", action="store_true", help="only section 5 (LLaMA-2-7B shapes)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak (default: by name)")
    args = parser.parse_args()
    if args.paper_shapes_only:
        results = {"device": torch.cuda.get_device_name(0) if DEVICE.type == "cuda" else "cpu", "torch": torch.__version__}
        results["paper_shapes"] = paper_shapes(args.config_dir, quick=args.quick, peak_tflops=args.peak_tflops)
        print(json.dumps(results, indent=2), flush=True)
        args.out.write_text(json.dumps(results, indent=2))
        return
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
    alone = response_logprobs(model32, pairs, pad_id=tokenizer.pad_token_id, batch_size=1, padding_side="right")
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
        samples, seconds = timed(lambda m=model: sample_responses(m, tokenizer, contexts, params, seeds=list(range(len(contexts)))))
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
        response_logprobs(model, score_pairs[:32], pad_id=tokenizer.pad_token_id, batch_size=32, padding_side="right")  # warm-up
        logps, seconds = timed(lambda m=model: response_logprobs(m, score_pairs, pad_id=tokenizer.pad_token_id, batch_size=32, padding_side="right"))
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

    # 5. The paper's shapes (LLaMA-2-7B), bf16: generate, score, one FSDP training step.
    results["paper_shapes"] = paper_shapes(args.config_dir, quick=args.quick, peak_tflops=args.peak_tflops)
    print(json.dumps(results["paper_shapes"], indent=2), flush=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
