"""Stage `generate`: sample one response under p+ and one under p- for every training prompt
(or two from the bare prompt, for RLAIF; or take the human-labelled pairs, for dpo_human).

    python -m stages.generate --prompts data/prompts_train.parquet --human data/human_train.parquet \
        --model-id data/model.json --out data/generated.parquet --report reports/generate.json
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
import typer

from dlma.core.config import load_section
from dlma.core.errors import DlmaError
from dlma.core.io import write_json, write_parquet
from dlma.core.stage import stage_entry
from dlma.generate.pairs import generate_pairs, human_pairs
from dlma.generate.params import GenerateParams
from dlma.lm.prompts import PromptsParams
from dlma.model import ModelParams, load_checked

log = logging.getLogger(__name__)


@stage_entry
def main(
    prompts: Path = typer.Option(..., help="input: training prompts (Parquet with id, prompt)"),
    human: Path = typer.Option(None, help="input: human-labelled training pairs (generate.pairs_from: human)"),
    model_id: Path = typer.Option(..., help="input: model identity written by the model stage"),
    out: Path = typer.Option(..., help="output: generated responses (Parquet)"),
    report: Path = typer.Option(..., help="output: skipped prompts and finish reasons (JSON metrics)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Sample a positive-prompt and a negative-prompt response for each prompt."""
    model_params = load_section(ModelParams, "model", params_file)
    prompt_params = load_section(PromptsParams, "prompts", params_file)
    params = load_section(GenerateParams, "generate", params_file)
    if params.pairs_from == "human":  # dpo_human: nothing to sample
        if human is None:
            raise DlmaError("generate.pairs_from is human: pass --human (the human stage's training pairs)")
        # as many pairs as there are training prompts: the same budget as the other methods
        result, summary = human_pairs(pl.read_parquet(human), str(human), budget=pl.read_parquet(prompts).height)
        write_parquet(result, out)
        write_json(summary, report)
        log.info("wrote %d human-labelled pairs to %s", result.height, out)
        return
    frame = pl.read_parquet(prompts)
    if frame.height == 0:
        raise DlmaError(f"'{prompts}' has no prompts")
    model, tokenizer, _ = load_checked(model_params, model_id, params.dtype)
    result, summary = generate_pairs(model, tokenizer, frame, prompt_params, params)
    write_parquet(result, out)
    write_json(summary, report)
    log.info("wrote %d rows to %s: %s", result.height, out, summary)


if __name__ == "__main__":
    typer.run(main)
