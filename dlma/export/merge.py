"""Write the exported model folder: merged weights (safetensors), the tokenizer with the
training prompt format as its chat template, the pipeline's sampling params as the
generation config, the model card and a provenance record. Plain transformers loads it."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from dlma.core.errors import DlmaError
from dlma.export.card import model_card, provenance
from dlma.export.source import ExportSource
from dlma.export.template import export_chat_template
from dlma.lm.prompts import bare_uses_chat
from dlma.generate.sampling import eos_ids_of_model
from dlma.model import load_aligned

log = logging.getLogger(__name__)

PROVENANCE = "dlma_export.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _generation_config(model, tokenizer, generate: dict):
    """The pipeline's sampling params: `model.generate(**inputs)` samples as the pipeline did."""
    config = model.generation_config
    config.do_sample = True
    config.temperature, config.top_p, config.top_k = generate["temperature"], generate["top_p"], generate["top_k"]
    config.max_new_tokens = generate["max_new_tokens"]
    eos_ids = sorted(eos_ids_of_model(model, tokenizer))  # all of them, as the pipeline stopped at any
    config.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    config.pad_token_id = tokenizer.pad_token_id
    return config


def write_export(source: ExportSource, out: Path, *, dtype: str, overwrite: bool) -> Path:
    """Merge and write to `out` atomically (a crash leaves no half-written folder there)."""
    if dtype not in DTYPES:
        raise DlmaError(f"--dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise DlmaError(f"'{out}' exists and is not empty; choose another --out or pass --overwrite")
    card = source.card
    # Merged in float32 (the trained weights' precision), then stored in the requested dtype.
    model, tokenizer, _ = load_aligned(source.model_dir, dtype=DTYPES[dtype], merged=True)
    model.config._name_or_path = card["base"]
    model.generation_config = _generation_config(model, tokenizer, card["generate"])
    chat_format = (("the model's chat template, user turn alone" if bare_uses_chat(tokenizer, card["bare"])
                    else f"plain text `{card['bare_tag']}`"))
    tokenizer.chat_template = export_chat_template(tokenizer, card["bare"], card["bare_tag"])
    record = provenance(source, chat_format) | {"dtype": dtype}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "README.md").write_text(model_card(record, source))
    (tmp / PROVENANCE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    tmp.rename(out)
    log.info("exported %s to %s (%s, %s)", source.described_as, out, record["method"], dtype)
    return out
