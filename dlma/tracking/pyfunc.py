"""The aligned model as an MLflow pyfunc model: loads offline and generates text.

    import mlflow
    model = mlflow.pyfunc.load_model("models:/dlma/latest")
    model.predict(["How do I make a good cup of coffee?"])

The logged artifact holds the LoRA adapter (or the full weights), the tokenizer and the
card; the base model is referred to by its `model.base` value and content hash and
resolved with `dlma.model`, which works offline (local directory, GGUF, local HF cache).
predict's sampling params default to the `generate` params the model was trained with
(kept in the card), so the served model samples as the pipeline did.
"""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc

from dlma.generate.params import GenerateParams

PREDICT_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k", "batch_size", "seed")


def predict_signature(generate: GenerateParams):
    defaults = {key: getattr(generate, key) for key in PREDICT_KEYS}
    return mlflow.models.infer_signature(["a prompt"], ["an answer"], params=defaults)


class AlignedModel(mlflow.pyfunc.PythonModel):
    """predict(list of prompts or a DataFrame with a `prompt` column) -> list of answers."""

    def load_context(self, context):
        from dlma.model import load_aligned

        self.model, self.tokenizer, self.card = load_aligned(context.artifacts["model"])

    def predict(self, context, model_input, params=None):
        import torch

        from dlma.generate.sampling import row_seed, sample_responses
        from dlma.lm.prompts import user_turn_ids

        if hasattr(model_input, "columns"):
            prompts = list(model_input["prompt"] if "prompt" in model_input.columns else model_input.iloc[:, 0])
        else:
            prompts = [model_input] if isinstance(model_input, str) else list(model_input)
        trained_with = self.card["generate"]
        overrides = {key: type(trained_with[key])(value) for key, value in (params or {}).items() if key in PREDICT_KEYS}
        # the served model samples with hf in float32 whatever the generate stage used (engine, dtype)
        serving = {"dtype": "float32", "engine": "hf", "vllm_python": "", "vllm_memory_fraction": 1.0}
        generate = GenerateParams(**{**trained_with, **overrides, **serving})
        contexts = [user_turn_ids(self.tokenizer, self.card["bare"], self.card["bare_tag"], p) for p in prompts]
        with torch.inference_mode():
            seeds = [row_seed(generate.seed, str(i), "predict") for i in range(len(prompts))]
            return [s.text for s in sample_responses(self.model, self.tokenizer, contexts, generate, seeds=seeds, desc="predict")]
