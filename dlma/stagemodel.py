"""Load the stage's model and check it is the one the `model` stage recorded."""

from __future__ import annotations

import json
from pathlib import Path

from dlma.errors import DlmaError
from dlma.modelio import load_for_stage
from dlma.params import ModelParams


def load_checked(params: ModelParams, identity_file: Path, dtype: str, attn_implementation: str | None = None):
    try:
        recorded = json.loads(Path(identity_file).read_text())
    except (OSError, ValueError) as exc:
        raise DlmaError(f"cannot read model identity '{identity_file}' ({exc}); run the model stage first") from exc
    model, tokenizer, resolved = load_for_stage(params, dtype, attn_implementation)
    if recorded.get("sha256") != resolved.sha256:
        raise DlmaError(
            f"model '{params.base}' changed since '{identity_file}' was written; "
            "run `dvc repro` so every stage uses the same model"
        )
    return model, tokenizer, resolved
