"""How fast the stages are, each against the baseline a user would otherwise run, measured
in the same run on the same machine (these machines are noisy: read the ratios).

    python benchmarks/throughput.py                   # ~10 min on a 2-core CPU
    python benchmarks/throughput.py --pipeline        # + the default pipeline's stage times (~15 min more)

- generate: the stage's batched sampling vs a batch-1 `generate` loop (same prompts, same
  number of new tokens), and vs the same sampling with a draw over the whole vocabulary and
  with batches of 16 (the stage's earlier choices);
- score: the stage's log-prob pass vs a naive pass (full-sequence logits in the model dtype,
  labels masked with -100 and a log-softmax over every position, as the official code
  does), and as a share of this machine's matmul roofline for the dtype, measured here;
- train: one margin-DPO step with stored reference log-probs vs trl's default DPOTrainer
  step (reference log-probs from a reference forward every step), same pairs and batch;
- scaling: generate + score time at 3 prompt counts and 3 response lengths;
- --pipeline: each stage of the default pipeline run in a fresh clone, wall time and peak
  memory (RSS of the stage's process tree);
- --vllm (with a vLLM environment, generate.vllm_python or $DLMA_VLLM_PYTHON): the generate
  stage's sampling with generate.engine vllm (its process start included, as the stage pays
  it) vs the HF engine, at 3 sizes: from how many answers vLLM pays.
Writes reports/benchmarks.json (`dvc repro benchmarks/dvc.yaml:throughput`, outside the
default pipeline) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import polars as pl
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dlma.core.config import load_section  # noqa: E402
from dlma.core.io import write_json  # noqa: E402
from dlma.generate import sampling  # noqa: E402
from dlma.generate.params import GenerateParams  # noqa: E402
from dlma.generate.sampling import row_seed, sample_responses  # noqa: E402
from dlma.lm.logprobs import pad_pairs, response_logprobs  # noqa: E402
from dlma.lm.prompts import PromptsParams, encode_contexts, pairs_of  # noqa: E402
from dlma.model import (  # noqa: E402
    ModelParams,
    load_causal_lm,
    load_tokenizer,
    resolve_dtype,
    resolve_model,
)
from dlma.train.params import TrainParams  # noqa: E402


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def matmul_roofline(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Achieved GFLOP/s of a large square matmul: the most this machine does in `dtype`."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)
    best = min(timed(lambda: torch.matmul(a, b))[1] for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def pair_contexts(tokenizer, prompts: PromptsParams, frame: pl.DataFrame) -> list[list[int]]:
    """The generate stage's contexts for these prompts: every p+ context, then every p- one."""
    pairs = pairs_of(prompts, frame["category"].to_list(), frame.height)
    queries = frame["prompt"].to_list()
    return encode_contexts(tokenizer, prompts, queries, "pos", pairs) + encode_contexts(tokenizer, prompts, queries, "neg", pairs)


def load(path: Path, dtype: torch.dtype, attn: str = "eager"):
    return load_causal_lm(path, dtype=dtype, device=torch.device("cpu"), attn_implementation=attn)


def bench_generate(model, tokenizer, contexts, params: GenerateParams) -> dict:
    """Batched per-row-seeded sampling vs one `generate` call per prompt; both produce
    exactly max_new_tokens per response (min_new_tokens), so they do the same work."""
    model.generation_config.min_new_tokens = params.max_new_tokens
    seeds = list(range(len(contexts)))
    sample_responses(model, tokenizer, contexts[:2], replace(params, batch_size=2), seeds=seeds[:2])  # warm-up
    _, batched = timed(lambda: sample_responses(model, tokenizer, contexts, params, seeds=seeds, desc="batched"))

    def one_at_a_time():
        for context in contexts:
            torch.manual_seed(0)
            model.generate(input_ids=torch.tensor([context]), attention_mask=torch.ones(1, len(context), dtype=torch.long),
                           do_sample=True, top_k=params.top_k, top_p=params.top_p, temperature=params.temperature,
                           max_new_tokens=params.max_new_tokens, pad_token_id=tokenizer.pad_token_id)

    _, single = timed(one_at_a_time)
    # The stage's own earlier choices, as baselines: a draw over the whole vocabulary (what
    # torch.multinomial does with the zeros top-k leaves) and batches of 16.
    with mock.patch.object(sampling, "draw", lambda probs, generator: torch.multinomial(probs, 1, generator=generator)[0]):
        _, whole_vocab = timed(lambda: sample_responses(model, tokenizer, contexts, params, seeds=seeds, desc="whole-vocab draw"))
    _, batch16 = timed(lambda: sample_responses(model, tokenizer, contexts, replace(params, batch_size=16), seeds=seeds,
                                                desc="batch 16"))
    model.generation_config.min_new_tokens = None
    tokens = len(contexts) * params.max_new_tokens
    return {"responses": len(contexts), "new_tokens": params.max_new_tokens, "batch_size": params.batch_size,
            "stage_tokens_per_s": tokens / batched, "batch1_tokens_per_s": tokens / single, "speedup": single / batched,
            "whole_vocab_draw_tokens_per_s": tokens / whole_vocab, "support_draw_speedup": whole_vocab / batched,
            "batch16_tokens_per_s": tokens / batch16, "batch_speedup_vs_16": batch16 / batched}


@torch.no_grad()
def naive_logprobs(model, pairs, pad_id: int, batch_size: int) -> np.ndarray:
    """The official code's way: logits at every position in the model dtype, labels = -100
    on the prompt and the padding, log-softmax over the whole sequence."""
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        batch = pad_pairs(chunk, pad_id, side="right")
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
        labels = batch.input_ids[:, 1:].clone()
        for row, (context, response) in enumerate(chunk):
            labels[row, : len(context) - 1] = -100
            labels[row, len(context) - 1 + len(response):] = -100
        mask = labels != -100
        labels[~mask] = 0
        token_logps = torch.gather(logits.log_softmax(-1), 2, labels.unsqueeze(2)).squeeze(2)
        out.extend((token_logps * mask).sum(-1).double().tolist())
    return np.array(out)


def score_flops(model, pairs) -> float:
    """What the stage's pass must compute: every layer over every token, attention over
    the causal prefix, and the vocabulary projection over the response tokens only."""
    config = model.config
    embed = config.vocab_size * config.hidden_size
    body = sum(p.numel() for p in model.parameters()) - embed * (1 if config.tie_word_embeddings else 2)
    flops = 0.0
    for context, response in pairs:
        length = len(context) + len(response)
        flops += 2 * body * length + 2 * config.num_hidden_layers * length**2 * config.hidden_size
        flops += 2 * embed * len(response)
    return flops


def bench_score(model, pairs, pad_id: int, batch_size: int, roofline_gflops: float) -> dict:
    response_logprobs(model, pairs[:batch_size], pad_id=pad_id, batch_size=batch_size)  # warm-up
    stage, stage_s = timed(lambda: response_logprobs(model, pairs, pad_id=pad_id, batch_size=batch_size))
    naive, naive_s = timed(lambda: naive_logprobs(model, pairs, pad_id, batch_size))
    achieved = score_flops(model, pairs) / stage_s / 1e9
    return {"sequences": len(pairs), "batch_size": batch_size, "stage_s": stage_s, "naive_s": naive_s,
            "speedup": naive_s / stage_s, "max_abs_diff_nats": float(np.max(np.abs(stage - naive))),
            "achieved_gflops": achieved, "roofline_gflops": roofline_gflops, "roofline_share": achieved / roofline_gflops}


def bench_train(path: Path, tokenizer, preferences: pl.DataFrame, train_params: TrainParams, steps: int) -> dict:
    """Seconds per optimiser step: ours (stored reference log-probs) vs trl's default."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from dlma.train.data import tokenise_preferences
    from dlma.train.run import lora_config, train

    prompts = load_section(PromptsParams, "prompts", REPO / "params.yaml")
    params = replace(train_params, max_steps=steps, save_steps=10_000, warmup_steps=0)
    rows, _ = tokenise_preferences(preferences, tokenizer, prompts, max_length=params.max_length)
    with tempfile.TemporaryDirectory() as scratch:
        _, _, timings = train(load(path, torch.float32), tokenizer, rows, params, Path(scratch) / "ours", torch.device("cpu"))
        ours = timings["seconds_per_step"]
        texts = Dataset.from_list([{"prompt": tokenizer.decode(r["prompt_ids"]), "chosen": tokenizer.decode(r["chosen_ids"]),
                                    "rejected": tokenizer.decode(r["rejected_ids"])} for r in rows])
        config = DPOConfig(output_dir=str(Path(scratch) / "trl"), per_device_train_batch_size=params.batch_size, max_steps=steps,
                           learning_rate=params.learning_rate, beta=params.beta, use_cpu=True, report_to="none",
                           save_strategy="no", logging_steps=1, max_length=params.max_length, seed=params.seed)
        trainer = DPOTrainer(model=load(path, torch.float32), args=config, train_dataset=texts, processing_class=tokenizer,
                             peft_config=lora_config(params))
        _, seconds = timed(trainer.train)
        theirs = seconds / steps
    return {"batch_size": params.batch_size, "steps": steps, "ours_s_per_step": ours, "trl_default_s_per_step": theirs,
            "time_ratio": ours / theirs}


def bench_scaling(gen_model, score_model, tokenizer, prompts, frame, gen: GenerateParams, sizes, lengths, batch_size) -> list[dict]:
    rows = []
    for count, length in [(n, lengths[1]) for n in sizes] + [(sizes[1], m) for m in lengths if m != lengths[1]]:
        part = frame.head(count)
        pairs = pairs_of(prompts, part["category"].to_list(), part.height)
        contexts = encode_contexts(tokenizer, prompts, part["prompt"].to_list(), "pos", pairs)
        seeds = [row_seed(gen.seed, i, "pos") for i in part["id"]]
        samples, gen_s = timed(lambda: sample_responses(gen_model, tokenizer, contexts, replace(gen, max_new_tokens=length), seeds=seeds))
        scored = [(c, list(s.token_ids) or [tokenizer.eos_token_id]) for c, s in zip(contexts, samples)]
        _, score_s = timed(lambda: response_logprobs(score_model, scored, pad_id=tokenizer.pad_token_id, batch_size=batch_size))
        rows.append({"prompts": count, "max_new_tokens": length, "generate_s": gen_s, "score_s": score_s})
        print(f"scaling: {rows[-1]}", flush=True)
    return rows


def bench_vllm(path: Path, gen_model, tokenizer, contexts: list[list[int]], gen: GenerateParams, sizes: list[int]) -> dict:
    """The HF engine (stage setting, in this process) vs the vLLM engine (its own process,
    started per call as the stage does) on the same contexts and seeds; a 1-answer, 1-token
    call measures vLLM's start."""
    from dlma.generate.vllm_engine import sample_with_vllm

    vllm_gen = replace(gen, engine="vllm", vllm_python=gen.vllm_python or os.environ.get("DLMA_VLLM_PYTHON", ""))
    _, start = timed(lambda: sample_with_vllm(str(path), tokenizer, contexts[:1], [0], params=replace(vllm_gen, max_new_tokens=1)))
    rows = []
    for size in sizes:
        part = (contexts * (size // len(contexts) + 1))[:size]
        seeds = list(range(size))
        hf, hf_s = timed(lambda: sample_responses(gen_model, tokenizer, part, gen, seeds=seeds, desc=f"hf {size}"))
        vl, vllm_s = timed(lambda: sample_with_vllm(str(path), tokenizer, part, seeds, params=vllm_gen))
        rows.append({"answers": size, "new_tokens": gen.max_new_tokens, "hf_s": hf_s, "vllm_s": vllm_s, "vllm_speedup": hf_s / vllm_s,
                     "hf_tokens": sum(s.n_tokens for s in hf), "vllm_tokens": sum(s.n_tokens for s in vl),
                     "hf_tokens_per_s": sum(s.n_tokens for s in hf) / hf_s,
                     "vllm_tokens_per_s_after_start": sum(s.n_tokens for s in vl) / max(vllm_s - start, 1e-9)})
        print(f"vllm: {rows[-1]}", flush=True)
    pays = [r["answers"] for r in rows if r["vllm_speedup"] > 1]
    return {"start_s": start, "sizes": rows, "pays_from_answers": min(pays) if pays else None}


def bench_pipeline() -> list[dict]:
    """Each stage of dvc.lock, in order, in a fresh clone: wall time and peak RSS."""
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        clone = Path(scratch) / REPO.name
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        shared = REPO.parent / "shared"
        if shared.exists():
            os.symlink(shared, Path(scratch) / "shared")
        for name in stages:
            started = time.perf_counter()
            # The stages' `python` is this interpreter's (the project's environment).
            env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
            process = subprocess.Popen(lock[name]["cmd"], shell=True, cwd=clone, env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE)
            _, status, usage = os.wait4(process.pid, 0)
            if status != 0:
                raise SystemExit(f"stage {name} failed: {process.stderr.read().decode()[-2000:]}")
            # ru_maxrss of wait4 is the largest process of the stage's tree (KiB on Linux).
            results.append({"stage": name, "seconds": time.perf_counter() - started, "peak_rss_gib": usage.ru_maxrss / 2**20})
            print(f"pipeline: {results[-1]}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--pipeline", action="store_true")
    parser.add_argument("--pipeline-only", action="store_true", help="only the pipeline section, merged into --out")
    parser.add_argument("--vllm", action="store_true", help="also the vLLM engine against the HF engine")
    parser.add_argument("--vllm-only", action="store_true", help="only the vLLM section, merged into --out")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "benchmarks.json")
    args = parser.parse_args()
    os.chdir(REPO)
    if args.pipeline_only:
        results = json.loads(args.out.read_text()) if args.out.is_file() else {}
        results["pipeline"] = bench_pipeline()
        write_json(results, args.out)
        print(json.dumps(results["pipeline"], indent=2))
        return
    # The stages first, while this process is small: a forked child's peak RSS counts the
    # parent's pages it starts with, so after the models below every stage would read >= 3.8 GiB.
    pipeline = bench_pipeline() if args.pipeline else None
    model_params = load_section(ModelParams, "model")
    prompts = load_section(PromptsParams, "prompts")
    gen = replace(load_section(GenerateParams, "generate"), max_new_tokens=args.new_tokens)
    path = resolve_model(model_params.base).path
    tokenizer = load_tokenizer(path)
    frame = pl.read_parquet("data/prompts_train.parquet").head(max(args.prompts, 32))
    results: dict = {"machine": {"threads": torch.get_num_threads(), "torch": torch.__version__, "cpu_count": os.cpu_count()}}
    gen_model = load(path, resolve_dtype(gen.dtype, torch.device("cpu")), "sdpa")  # the generate stage's setting
    if args.vllm or args.vllm_only:  # the HF engine as the stage runs it, against vLLM, at 64 new tokens
        if args.vllm_only:
            results = json.loads(args.out.read_text()) if args.out.is_file() else results
        results["vllm"] = bench_vllm(path, gen_model, tokenizer, pair_contexts(tokenizer, prompts, frame),
                                     replace(gen, max_new_tokens=64), sizes=[16, 64, 128])
        if args.vllm_only:
            write_json(results, args.out)
            print(json.dumps(results["vllm"], indent=2))
            return

    roofline = {name: matmul_roofline(dtype) for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))}
    results["roofline_gflops"] = roofline
    print(f"matmul roofline GFLOP/s: {roofline}", flush=True)

    contexts = pair_contexts(tokenizer, prompts, frame.head(args.prompts))
    results["generate"] = bench_generate(gen_model, tokenizer, contexts, gen)
    print(f"generate: {results['generate']}", flush=True)

    score_model = load(path, torch.float32)  # score.dtype float32, eager: the stage's setting
    samples = sample_responses(gen_model, tokenizer, contexts, gen, seeds=list(range(len(contexts))))
    score_pairs = [(c, list(s.token_ids) or [tokenizer.eos_token_id]) for c, s in zip(contexts, samples)]
    score_pairs = score_pairs * 2  # each response is scored under two contexts in the stage
    results["score"] = bench_score(score_model, score_pairs, tokenizer.pad_token_id, 8, roofline["float32"])
    print(f"score: {results['score']}", flush=True)

    train_params = load_section(TrainParams, "train")
    preferences = pl.read_parquet("data/preferences.parquet").head(train_params.batch_size * args.train_steps)
    results["train"] = bench_train(path, tokenizer, preferences, train_params, args.train_steps)
    print(f"train: {results['train']}", flush=True)

    results["scaling"] = bench_scaling(gen_model, score_model, tokenizer, prompts, frame, gen,
                                       sizes=[8, 16, 32], lengths=[16, 32, 64], batch_size=8)
    if args.pipeline:
        results["pipeline"] = pipeline
    results["peak_rss_gib_this_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    write_json(results, args.out)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
