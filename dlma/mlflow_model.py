"""The aligned model as an MLflow pyfunc model: loads offline and generates text.

    import mlflow
    model = mlflow.pyfunc.load_model("models:/dlma/latest")
    model.predict(["How do I make a good cup of coffee?"])

The logged artifact holds the LoRA adapter (or the full weights) and the tokenizer; the
base model is referred to by its `model.base` value and content hash and resolved with
`dlma.modelio`, which works offline (local directory, GGUF, or the local HF cache).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.models
import mlflow.pyfunc

MODEL_CARD = "dlma_model.json"
_PREDICT_PARAMS = {"max_new_tokens": 128, "temperature": 1.0, "top_p": 1.0, "top_k": 50, "batch_size": 8, "seed": 0}
PREDICT_SIGNATURE = mlflow.models.infer_signature(["a prompt"], ["an answer"], params=_PREDICT_PARAMS)


def read_card(model_dir: str | Path) -> dict:
    return json.loads((Path(model_dir) / MODEL_CARD).read_text())


def load_aligned(model_dir: str | Path, *, dtype=None, device=None):
    """(model, tokenizer, card) for a directory written by the train stage."""
    import torch

    from dlma.errors import DlmaError
    from dlma.modelio import load_causal_lm, load_tokenizer, resolve_model

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
        model = load_causal_lm(base.path, dtype=dtype, device=device)
        model = PeftModel.from_pretrained(model, str(model_dir)).eval()
    else:
        model = load_causal_lm(model_dir, dtype=dtype, device=device)
    return model, tokenizer, card


class AlignedModel(mlflow.pyfunc.PythonModel):
    """predict(list of prompts or a DataFrame with a `prompt` column) -> list of answers."""

    def load_context(self, context):
        self.model, self.tokenizer, self.card = load_aligned(context.artifacts["model"])

    def predict(self, context, model_input, params=None):
        import torch

        from dlma.generation import sample_responses
        from dlma.params import GenerateParams
        from dlma.prompts import bare_context_text, bare_uses_chat, encode_context

        if hasattr(model_input, "columns"):
            prompts = list(model_input["prompt"] if "prompt" in model_input.columns else model_input.iloc[:, 0])
        else:
            prompts = [model_input] if isinstance(model_input, str) else list(model_input)
        params = {**_PREDICT_PARAMS, **(params or {})}
        generate = GenerateParams(
            max_new_tokens=int(params.get("max_new_tokens", 128)), temperature=float(params.get("temperature", 1.0)),
            top_p=float(params.get("top_p", 1.0)), top_k=int(params.get("top_k", 50)),
            batch_size=int(params.get("batch_size", 8)), seed=int(params.get("seed", 0)), dtype="float32",
        )
        chat = bare_uses_chat(self.tokenizer, self.card["bare"])
        contexts = [
            encode_context(self.tokenizer, bare_context_text(self.tokenizer, self.card["bare"], self.card["bare_tag"], p), chat=chat)
            for p in prompts
        ]
        with torch.inference_mode():
            return [s.text for s in sample_responses(self.model, self.tokenizer, contexts, generate, desc="predict")]
