"""Stage `generate`: sample one response under p+ and one under p- for every training prompt.

    python -m stages.generate --prompts data/prompts_train.parquet --model-id data/model.json --out data/generated.parquet
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
import typer

from dlma.core.config import load_section
from dlma.core.errors import DlmaError
from dlma.core.io import write_parquet
from dlma.core.stage import stage_entry
from dlma.generate.params import GenerateParams
from dlma.generate.sampling import sample_responses
from dlma.lm.prompts import PromptsParams, encode_contexts
from dlma.model import ModelParams, load_checked

log = logging.getLogger(__name__)


@stage_entry
def main(
    prompts: Path = typer.Option(..., help="input: training prompts (Parquet with id, prompt)"),
    model_id: Path = typer.Option(..., help="input: model identity written by the model stage"),
    out: Path = typer.Option(..., help="output: generated responses (Parquet)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Sample a positive-prompt and a negative-prompt response for each prompt."""
    model_params = load_section(ModelParams, "model", params_file)
    prompt_params = load_section(PromptsParams, "prompts", params_file)
    params = load_section(GenerateParams, "generate", params_file)
    frame = pl.read_parquet(prompts)
    if frame.height == 0:
        raise DlmaError(f"'{prompts}' has no prompts")
    model, tokenizer, _ = load_checked(model_params, model_id, params.dtype)
    queries = frame["prompt"].to_list()
    contexts = encode_contexts(tokenizer, prompt_params, queries, "pos") + encode_contexts(
        tokenizer, prompt_params, queries, "neg"
    )
    samples = sample_responses(model, tokenizer, contexts, params)
    pos, neg = samples[: len(queries)], samples[len(queries):]
    result = frame.select("id", "prompt", "category").with_columns(
        pl.Series("response_pos", [s.text for s in pos], dtype=pl.String),
        pl.Series("response_neg", [s.text for s in neg], dtype=pl.String),
        pl.Series("finish_pos", [s.finish for s in pos], dtype=pl.String),
        pl.Series("finish_neg", [s.finish for s in neg], dtype=pl.String),
        pl.Series("new_tokens_pos", [s.n_tokens for s in pos], dtype=pl.Int32),
        pl.Series("new_tokens_neg", [s.n_tokens for s in neg], dtype=pl.Int32),
    )
    write_parquet(result, out)
    truncated = sum(s.finish == "length" for s in samples)
    log.info("wrote %d rows to %s (%d of %d responses hit max_new_tokens)", result.height, out, truncated, len(samples))


if __name__ == "__main__":
    typer.run(main)
