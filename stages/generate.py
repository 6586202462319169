"""Stage `generate`: sample one response under p+ and one under p- for every training prompt
(or two from the bare prompt, for RLAIF; or take the human-labelled pairs, for dpo_human).

    python -m stages.generate --prompts data/prompts_train.parquet --human data/human_train.parquet \
        --model-id data/model.json --out data/generated.parquet --report reports/generate.json
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import polars as pl
import typer

from dlma.core.config import load_section
from dlma.core.errors import DlmaError
from dlma.core.io import write_json, write_parquet
from dlma.core.parallel import world_size
from dlma.core.stage import stage_entry
from dlma.generate.pairs import generate_pairs, human_pairs
from dlma.generate.params import GenerateParams
from dlma.generate.vllm_engine import sample_with_vllm
from dlma.lm.params import PromptsParams
from dlma.model import ModelParams, checked_model, load_checked, load_tokenizer, stage_dtype

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
    if params.engine == "vllm" and world_size() > 1:
        raise DlmaError("generate.engine is vllm: run it as one process (run.processes: 1); vLLM spreads the work over "
                        "the GPUs itself")
    frame = pl.read_parquet(prompts)
    if frame.height == 0:
        raise DlmaError(f"'{prompts}' has no prompts")
    if params.engine == "vllm":  # vLLM samples in its own process; this one only needs the tokenizer
        resolved = checked_model(model_params, model_id)
        tokenizer = load_tokenizer(resolved.path, trust_remote_code=model_params.trust_remote_code)
        sampler = functools.partial(sample_with_vllm, str(resolved.path), tokenizer, params=params)
        result, summary = generate_pairs(None, tokenizer, frame, prompt_params, params, sampler=sampler)
    else:
        numerics = stage_dtype(model_params, "generate.dtype", params.dtype)
        model, tokenizer, _ = load_checked(model_params, model_id, numerics)
        result, summary = generate_pairs(model, tokenizer, frame, prompt_params, params)
        summary["numerics"] = {numerics.key: numerics.record()}
    write_parquet(result, out)
    write_json(summary, report)
    log.info("wrote %d rows to %s: %s", result.height, out, summary)


if __name__ == "__main__":
    typer.run(main)
