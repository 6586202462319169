"""Stage `score`: label every generated pair (`score.labeller`; the default is DLMA's
self-rewarding contrastive score), plus reference log-probs.

    python -m stages.score --generated data/generated.parquet --model-id data/model.json --out data/scored.parquet --report reports/score.json

The reference log-probs (each response given the bare query, in the format training
uses) are computed here once so that training needs no reference-model passes. The
log-probs the generate stage recorded while sampling (each answer under its own context:
p+ / p- for contrastive pairs, x for bare ones) are taken from its table when generation
and scoring both run in float32 on the same device (`same_numerics`; equal up to float
rounding), so 2 of the contrastive score's 6 passes are not run again; the report lists them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
import typer

from dlma.core.config import load_section
from dlma.core.io import write_json, write_parquet
from dlma.core.numerics import same_numerics
from dlma.core.stage import stage_entry
from dlma.generate.params import GenerateParams
from dlma.lm.params import PromptsParams
from dlma.model import ModelParams, load_checked, stage_dtype
from dlma.score.contrastive import recorded_logprobs
from dlma.score.labellers import check_generated, label
from dlma.score.params import ScoreParams
from dlma.score.summary import score_summary

log = logging.getLogger(__name__)


@stage_entry
def main(
    generated: Path = typer.Option(..., help="input: generated responses (Parquet)"),
    model_id: Path = typer.Option(..., help="input: model identity written by the model stage"),
    out: Path = typer.Option(..., help="output: scored rows (Parquet)"),
    report: Path = typer.Option(..., help="output: score distribution (JSON metrics)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Score each (positive, negative) response pair with the configured labeller."""
    model_params = load_section(ModelParams, "model", params_file)
    prompt_params = load_section(PromptsParams, "prompts", params_file)
    params = load_section(ScoreParams, "score", params_file)
    frame = pl.read_parquet(generated)
    check_generated(frame, str(generated))
    numerics = stage_dtype(model_params, "score.dtype", params.dtype)
    sampling = stage_dtype(model_params, "generate.dtype", load_section(GenerateParams, "generate", params_file).dtype)
    recorded = recorded_logprobs(frame) if same_numerics(sampling, numerics) else {}
    model, tokenizer, _ = load_checked(model_params, model_id, numerics, params.attn_implementation)
    scored = label(params.labeller, model, tokenizer, frame, prompt_params, params, recorded)
    write_parquet(scored, out)
    summary = score_summary(scored["score"].to_numpy())
    summary["numerics"] = {numerics.key: numerics.record()}
    summary["recorded_while_sampling"] = sorted(recorded)  # log-probs taken from the generate table, not computed again
    write_json(summary, report)
    log.info("score: %s", summary)


if __name__ == "__main__":
    typer.run(main)
