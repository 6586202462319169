"""Stage `base_answers`: the base model's answers to the evaluation prompts, sampled once.

    python -m dlma.core.launch -- stages.base_answers --eval-prompts data/prompts_eval.parquet \
        --model-id data/model.json --sets data/eval_sets.json --out data/base_answers.parquet

They depend on the base model, the prompts and the sampling params only, not on what was
trained, so the evaluate stage reads them here (with their log-probs under the base model,
in the scoring numerics: the base answers' perplexity), and the methods and variants of a
comparison that share a seed take this stage from DVC's run cache (dlma/evaluate/answers.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from dlma.core.config import load_section
from dlma.core.io import write_parquet
from dlma.core.stage import stage_entry
from dlma.evaluate.answers import sample_base_answers
from dlma.evaluate.params import EvaluateParams
from dlma.generate.params import GenerateParams
from dlma.lm.params import PromptsParams
from dlma.model import ModelParams
from dlma.score.params import ScoreParams

log = logging.getLogger(__name__)


@stage_entry
def main(
    eval_prompts: Path = typer.Option(..., help="input: held-out prompts (Parquet)"),
    model_id: Path = typer.Option(..., help="input: model identity written by the model stage"),
    sets: Path = typer.Option(None, help="input: evaluation sets' identities from the sets stage (checked when given)"),
    out: Path = typer.Option(..., help="output: one answer per evaluation prompt (Parquet)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Sample the base model's answer to every evaluation prompt."""
    answers = sample_base_answers(
        load_section(ModelParams, "model", params_file), load_section(PromptsParams, "prompts", params_file),
        load_section(GenerateParams, "generate", params_file), load_section(ScoreParams, "score", params_file),
        load_section(EvaluateParams, "evaluate", params_file),
        eval_prompts, model_id, sets)
    write_parquet(answers, out)  # the main process writes (dlma.core.io)
    log.info("wrote %d base answers to %s (%d ended by the model)", answers.height, out, (answers["finish"] == "eos").sum())


if __name__ == "__main__":
    typer.run(main)
