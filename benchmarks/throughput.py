"""How fast the stages are, each against the baseline a user would otherwise run, measured
in the same run on the same machine (these machines are noisy: read the ratios).

Every figure names its dtype. The stages' defaults are float32 (the same numerics and
speed on every CPU), so the ratios against the baselines are measured in float32, baselines
included; bfloat16 is measured beside them (bf16 / fp32 speed), with the CPU's capability
and whether it has native bf16 (avx512_bf16 / AMX): on an AVX2-only CPU bf16 is emulated.

    python benchmarks/throughput.py                   # ~15 min on a 2-core CPU
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
- memory: the reward stage's training at its micro-batch against whole batches (peak RSS
  and s/step, each in its own process), beside the bytes of weights, optimiser state and
  activations by arithmetic (benchmarks/memory.py), checked against autograd's own count;
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

from benchmarks import memory  # noqa: E402
from dlma.core import numerics  # noqa: E402
from dlma.core.config import load_section  # noqa: E402
from dlma.core.io import write_json  # noqa: E402
from dlma.generate import sampling  # noqa: E402
from dlma.generate.params import GenerateParams  # noqa: E402
from dlma.generate.sampling import row_seed, sample_responses  # noqa: E402
from dlma.lm.logprobs import pad_pairs, response_logprobs  # noqa: E402
from dlma.lm.params import PromptsParams  # noqa: E402
from dlma.lm.prompts import encode_contexts, pairs_of
from dlma.model import (  # noqa: E402
    ModelParams,
    load_causal_lm,
    load_tokenizer,
    resolve_model,
)
from dlma.reward.params import RewardParams  # noqa: E402
from dlma.score.params import ScoreParams  # noqa: E402
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


def dtype_of(model) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def machine() -> dict:
    """What decides the figures: the CPU, its vector capability, and native bf16."""
    flags = numerics.cpu_flags() or set()
    model_name = next((line.partition(":")[2].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                       if line.startswith("model name")), "") if Path("/proc/cpuinfo").is_file() else ""
    return {"threads": torch.get_num_threads(), "torch": torch.__version__, "cpu_count": os.cpu_count(), "cpu": model_name,
            "cpu_capability": numerics.cpu_capability(),
            "native_bf16": numerics.cpu_native(torch.bfloat16),
            "bf16_flags": sorted(flags & set(numerics.NATIVE_FLAGS[torch.bfloat16]))}


def longest_reward_pairs(tokenizer, frame: pl.DataFrame, params: RewardParams, count: int) -> tuple[pl.DataFrame, int]:
    """The `count` human pairs with the longest inputs that the stage keeps (<= max_length):
    the batches that set the stage's peak memory. Returns them and their longest length."""
    from dlma.reward.inputs import reward_inputs

    lengths = [max(len(reward_inputs(tokenizer, q, c)), len(reward_inputs(tokenizer, q, r)))
               for q, c, r in zip(frame["prompt"], frame["chosen"], frame["rejected"])]
    frame = frame.with_columns(pl.Series("_length", lengths)).filter(pl.col("_length") <= params.max_length)
    chosen = frame.sort("_length", descending=True).head(count)
    return chosen.drop("_length"), int(chosen["_length"].max())


def reward_run(micro_batch: int) -> None:
    """(child process of bench_reward_memory) Train the reward model as the stage does on its
    2 x batch_size longest human pairs with this micro-batch; print time, steps and width."""
    from dlma.reward.run import train_reward

    params = replace(load_section(RewardParams, "reward"), micro_batch_size=micro_batch, epochs=1.0)
    path = resolve_model(load_section(ModelParams, "model").base).path
    pairs, width = longest_reward_pairs(load_tokenizer(path), pl.read_parquet("data/human_train.parquet"), params,
                                        2 * params.batch_size)
    choice = numerics.choose_dtype("reward.dtype", params.dtype, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as scratch:
        (report, seconds) = timed(lambda: train_reward(params, path, pairs, pairs.head(0), Path(scratch) / "reward", {}, choice))
    print(json.dumps({"seconds": seconds, "steps": report["steps"], "width": width, "pairs": report["train_pairs"]}))


def bench_reward_memory(model_params: ModelParams, params: RewardParams) -> dict:
    """The reward stage's training at its micro-batch and at whole batches, each in a fresh
    process (peak RSS by wait4), beside the arithmetic of what it must hold. Run before this
    process loads any model: a forked child's peak counts the parent's pages."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = resolve_model(model_params.base).path
    config = AutoConfig.from_pretrained(path, num_labels=1)
    with torch.device("meta"):  # parameter shapes only, no memory
        weights = memory.weight_bytes(AutoModelForSequenceClassification.from_config(config))
    trainable = memory.lora_parameters(config, params.lora_r, memory.llama_linears(config)) + config.hidden_size
    runtime = memory.runtime_bytes(["torch", "transformers", "trl", "peft", "datasets", "polars"])
    rows = []
    for micro in sorted({params.micro_batch_size, params.batch_size}):
        process = subprocess.Popen([sys.executable, __file__, "--reward-run", str(micro)], cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        out = process.stdout.read().decode()
        _, status, usage = os.wait4(process.pid, 0)
        if status != 0:
            raise SystemExit(f"reward run (micro-batch {micro}) failed")
        run = json.loads(out.strip().splitlines()[-1])
        activations = memory.activation_bytes(config, 2 * micro, run["width"])
        need = runtime + weights + memory.optimizer_bytes(trainable) + activations
        rows.append({"micro_batch_pairs": micro, "batch_pairs": params.batch_size, "dtype": params.dtype,
                     "width_tokens": run["width"], "steps": run["steps"], "seconds": run["seconds"],
                     "peak_rss_gib": usage.ru_maxrss / 2**20,
                     "arithmetic_gib": {"runtime": runtime / memory.GIB, "weights": weights / memory.GIB,
                                        "optimizer_state": memory.optimizer_bytes(trainable) / memory.GIB,
                                        "activations": activations / memory.GIB, "total": need / memory.GIB},
                     "peak_over_arithmetic": usage.ru_maxrss * 1024 / need})
        print(f"reward memory: {rows[-1]}", flush=True)
    return {"runs": rows, "trainable_parameters": trainable}


def check_activation_arithmetic(model_params: ModelParams, params: RewardParams, width: int) -> dict:
    """The activation formula against autograd's own count of the tensors it keeps, for one
    micro-batch of the reward model (LoRA on every linear layer, as the stage)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    path = resolve_model(model_params.base).path
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=torch.float32,
                                                               attn_implementation="sdpa")
    model.config.pad_token_id = 0
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=params.lora_r, lora_alpha=params.lora_alpha,
                                             target_modules="all-linear")).train()
    ids = torch.randint(1, model.config.vocab_size, (2 * params.micro_batch_size, width))
    counted = memory.saved_tensor_bytes(model, ids, torch.ones_like(ids))
    formula = memory.activation_bytes(model.config, 2 * params.micro_batch_size, width)
    return {"sequences": 2 * params.micro_batch_size, "width": width, "autograd_saved_gib": counted / memory.GIB,
            "formula_gib": formula / memory.GIB, "formula_over_autograd": formula / counted}


def load(path: Path, dtype: torch.dtype, attn: str = "eager"):
    return load_causal_lm(path, dtype=dtype, device=torch.device("cpu"), attn_implementation=attn)


def bench_generate(model, tokenizer, contexts, params: GenerateParams, other_model) -> dict:
    """Batched per-row-seeded sampling vs one `generate` call per prompt, in the stage's
    dtype (`model`); both produce exactly max_new_tokens per response (min_new_tokens), so
    they do the same work. `other_model` (the other dtype) runs the stage's sampling only."""
    for m in (model, other_model):
        m.generation_config.min_new_tokens = params.max_new_tokens
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
    sample_responses(other_model, tokenizer, contexts[:2], replace(params, batch_size=2), seeds=seeds[:2])  # warm-up
    _, other = timed(lambda: sample_responses(other_model, tokenizer, contexts, params, seeds=seeds, desc=dtype_of(other_model)))
    for m in (model, other_model):
        m.generation_config.min_new_tokens = None
    tokens = len(contexts) * params.max_new_tokens
    return {"dtype": dtype_of(model), "responses": len(contexts), "new_tokens": params.max_new_tokens, "batch_size": params.batch_size,
            f"stage_{dtype_of(other_model)}_tokens_per_s": tokens / other,
            f"{dtype_of(other_model)}_over_{dtype_of(model)}_speed": batched / other,
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


def bench_score(model, pairs, pad_id: int, batch_size: int, roofline: dict[str, float], other_model) -> dict:
    """The stage's pass vs the official code's, in the stage's dtype (`model`); the stage's
    pass in the other dtype beside it: its time, its share of that dtype's roofline, and how
    far its log-probs move from the stage's."""
    response_logprobs(model, pairs[:batch_size], pad_id=pad_id, batch_size=batch_size, padding_side="right")  # warm-up
    stage, stage_s = timed(lambda: response_logprobs(model, pairs, pad_id=pad_id, batch_size=batch_size, padding_side="right"))
    naive, naive_s = timed(lambda: naive_logprobs(model, pairs, pad_id, batch_size))
    response_logprobs(other_model, pairs[:batch_size], pad_id=pad_id, batch_size=batch_size, padding_side="right")
    other, other_s = timed(lambda: response_logprobs(other_model, pairs, pad_id=pad_id, batch_size=batch_size, padding_side="right"))
    flops = score_flops(model, pairs)
    name, other_name = dtype_of(model), dtype_of(other_model)
    return {"dtype": name, "sequences": len(pairs), "batch_size": batch_size, "stage_s": stage_s, "naive_s": naive_s,
            "speedup": naive_s / stage_s, "max_abs_diff_nats": float(np.max(np.abs(stage - naive))),
            "achieved_gflops": flops / stage_s / 1e9, "roofline_gflops": roofline[name],
            "roofline_share": flops / stage_s / 1e9 / roofline[name],
            f"stage_{other_name}_s": other_s, f"{other_name}_over_{name}_speed": stage_s / other_s,
            f"{other_name}_roofline_share": flops / other_s / 1e9 / roofline[other_name],
            f"{other_name}_mean_abs_diff_nats": float(np.mean(np.abs(other - stage)))}


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
        # the same steps under bf16 autocast (train.dtype: bfloat16), beside the default
        _, _, bf16_timings = train(load(path, torch.float32), tokenizer, rows, replace(params, dtype="bfloat16"),
                                   Path(scratch) / "ours-bf16", torch.device("cpu"))
        texts = Dataset.from_list([{"prompt": tokenizer.decode(r["prompt_ids"]), "chosen": tokenizer.decode(r["chosen_ids"]),
                                    "rejected": tokenizer.decode(r["rejected_ids"])} for r in rows])
        config = DPOConfig(output_dir=str(Path(scratch) / "trl"), per_device_train_batch_size=params.batch_size, max_steps=steps,
                           learning_rate=params.learning_rate, beta=params.beta, use_cpu=True, report_to="none",
                           save_strategy="no", logging_steps=1, max_length=params.max_length, seed=params.seed)
        trainer = DPOTrainer(model=load(path, torch.float32), args=config, train_dataset=texts, processing_class=tokenizer,
                             peft_config=lora_config(params))
        _, seconds = timed(trainer.train)
        theirs = seconds / steps
    return {"dtype": params.dtype, "batch_size": params.batch_size, "steps": steps, "ours_s_per_step": ours,
            "trl_default_s_per_step": theirs, "time_ratio": ours / theirs,
            "ours_bfloat16_autocast_s_per_step": bf16_timings["seconds_per_step"],
            "bfloat16_over_float32_speed": ours / bf16_timings["seconds_per_step"]}


def bench_scaling(gen_model, score_model, tokenizer, prompts, frame, gen: GenerateParams, sizes, lengths, batch_size) -> list[dict]:
    rows = []
    for count, length in [(n, lengths[1]) for n in sizes] + [(sizes[1], m) for m in lengths if m != lengths[1]]:
        part = frame.head(count)
        pairs = pairs_of(prompts, part["category"].to_list(), part.height)
        contexts = encode_contexts(tokenizer, prompts, part["prompt"].to_list(), "pos", pairs)
        seeds = [row_seed(gen.seed, i, "pos") for i in part["id"]]
        samples, gen_s = timed(lambda: sample_responses(gen_model, tokenizer, contexts, replace(gen, max_new_tokens=length), seeds=seeds))
        scored = [(c, list(s.token_ids) or [tokenizer.eos_token_id]) for c, s in zip(contexts, samples)]
        _, score_s = timed(lambda: response_logprobs(score_model, scored, pad_id=tokenizer.pad_token_id, batch_size=batch_size, padding_side="right"))
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
    parser.add_argument("--no-memory", action="store_true", help="skip the reward stage's memory section (~3 min)")
    parser.add_argument("--reward-run", type=int, help=argparse.SUPPRESS)  # child process of the memory section
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "benchmarks.json")
    args = parser.parse_args()
    os.chdir(REPO)
    if args.reward_run:
        reward_run(args.reward_run)
        return
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
    reward_params = load_section(RewardParams, "reward")
    reward_memory = None if args.no_memory else bench_reward_memory(model_params, reward_params)
    prompts = load_section(PromptsParams, "prompts")
    gen = replace(load_section(GenerateParams, "generate"), max_new_tokens=args.new_tokens)
    path = resolve_model(model_params.base).path
    tokenizer = load_tokenizer(path)
    frame = pl.read_parquet("data/prompts_train.parquet").head(max(args.prompts, 32))
    results: dict = {"machine": machine()}
    score_params = load_section(ScoreParams, "score")
    train_params = load_section(TrainParams, "train")
    results["stage_dtypes"] = {"generate": gen.dtype, "score": score_params.dtype, "train": train_params.dtype,
                               "reward": reward_params.dtype}
    print(f"machine: {results['machine']}; stage dtypes: {results['stage_dtypes']}", flush=True)
    # The generate stage's setting (dtype, sdpa), and the other of float32 / bfloat16 beside it.
    gen_dtype = numerics.choose_dtype("generate.dtype", gen.dtype, torch.device("cpu")).dtype
    other_dtype = torch.bfloat16 if gen_dtype == torch.float32 else torch.float32
    gen_model = load(path, gen_dtype, "sdpa")
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
    results["generate"] = bench_generate(gen_model, tokenizer, contexts, gen, load(path, other_dtype, "sdpa"))
    print(f"generate: {results['generate']}", flush=True)

    score_dtype = numerics.choose_dtype("score.dtype", score_params.dtype, torch.device("cpu")).dtype
    score_model = load(path, score_dtype, score_params.attn_implementation)  # the stage's setting
    samples = sample_responses(gen_model, tokenizer, contexts, gen, seeds=list(range(len(contexts))))
    score_pairs = [(c, list(s.token_ids) or [tokenizer.eos_token_id]) for c, s in zip(contexts, samples)]
    score_pairs = score_pairs * 2  # each response is scored under two contexts in the stage
    other_score = load(path, torch.bfloat16 if score_dtype == torch.float32 else torch.float32, score_params.attn_implementation)
    results["score"] = bench_score(score_model, score_pairs, tokenizer.pad_token_id, score_params.batch_size, roofline, other_score)
    del other_score
    print(f"score: {results['score']}", flush=True)

    preferences = pl.read_parquet("data/preferences.parquet").head(train_params.batch_size * args.train_steps)
    results["train"] = bench_train(path, tokenizer, preferences, train_params, args.train_steps)
    print(f"train: {results['train']}", flush=True)

    results["scaling"] = bench_scaling(gen_model, score_model, tokenizer, prompts, frame, gen,
                                       sizes=[8, 16, 32], lengths=[16, 32, 64], batch_size=8)
    if reward_memory is not None:
        reward_memory["autograd_check"] = check_activation_arithmetic(model_params, reward_params,
                                                                      reward_memory["runs"][0]["width_tokens"])
        print(f"activation arithmetic: {reward_memory['autograd_check']}", flush=True)
        results["reward_memory"] = reward_memory
    if args.pipeline:
        results["pipeline"] = pipeline
    results["peak_rss_gib_this_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    write_json(results, args.out)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
