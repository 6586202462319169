"""The evaluation prompts' answers as a table: sampled once per model and sampling seed.

The base model's answers to the held-out prompts depend on the base model, the prompts and
the sampling params only, not on what was trained: the `base_answers` stage samples them
once, and every evaluation of that seed reads them (a comparison's methods take the stage
from DVC's run cache instead of sampling the same answers again, one evaluation each).
Each prompt's random stream depends on its set and id only (`answer_seeds`), so the base
and the aligned answer to a prompt are paired draws whichever process sampled them. The
table also holds each answer's log-prob under the base model in the scoring numerics (the
base answers' perplexity, which every evaluation of the seed would otherwise compute again).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from dlma.core.errors import DlmaError
from dlma.core.numerics import same_numerics
from dlma.core.tables import require_table
from dlma.evaluate.params import EvaluateParams
from dlma.evaluate.sets import prompt_sets, read_identities
from dlma.generate.pairs import within_prompt_limit
from dlma.generate.params import GenerateParams
from dlma.generate.sampling import Sample, row_seed, sample_responses
from dlma.lm.logprobs import response_logprobs
from dlma.lm.params import PromptsParams
from dlma.lm.prompts import encode_contexts, response_tokens
from dlma.model import ModelParams, load_checked, stage_dtype
from dlma.score.params import ScoreParams

log = logging.getLogger(__name__)

ANSWER_COLUMNS = ("set", "id", "answer", "finish", "n_tokens", "token_ids", "eos_id", "logp_base")


def bare_contexts(prompts: pl.DataFrame, tokenizer, formats: PromptsParams,
                  generate: GenerateParams) -> tuple[pl.DataFrame, list[list[int]], int]:
    """The prompts within generate.max_prompt_tokens, their bare contexts (encoded once, for
    both models), and how many were skipped for length."""
    contexts = encode_contexts(tokenizer, formats, prompts["prompt"].to_list(), "bare")
    keep = within_prompt_limit(contexts, generate.max_prompt_tokens)
    if not any(keep):
        raise DlmaError(f"every evaluation prompt is longer than generate.max_prompt_tokens={generate.max_prompt_tokens}")
    skipped = len(keep) - sum(keep)
    if skipped:
        log.warning("evaluate: skipped %d prompt(s) over generate.max_prompt_tokens", skipped)
    return prompts.filter(pl.Series(keep)), [c for c, k in zip(contexts, keep) if k], skipped


def answer_seeds(prompts: pl.DataFrame, params: GenerateParams) -> list[int]:
    """Each evaluation prompt's sampling seed: from generate.seed, its set and its id."""
    return [row_seed(params.seed, f"{s}/{i}", "bare") for s, i in zip(prompts["set"], prompts["id"])]


def sample_answers(model, tokenizer, prompts: pl.DataFrame, contexts: list[list[int]], params: GenerateParams,
                   desc: str = "answers", with_logprobs: bool = False) -> list[Sample]:
    return sample_responses(model, tokenizer, contexts, params, seeds=answer_seeds(prompts, params), desc=desc,
                            with_logprobs=with_logprobs)


def answer_logprobs(model, tokenizer, contexts: list[list[int]], samples: list[Sample], score: ScoreParams,
                    desc: str) -> np.ndarray:
    """Summed log-prob under `model` of each sampled answer given its context: its very
    tokens, plus the EOS where the model ended it (`response_tokens`, as score and train see
    an answer), in the scoring batch size and padding."""
    pairs = [(context, response_tokens(tokenizer, s.token_ids, s.finish, s.eos_id)) for context, s in zip(contexts, samples)]
    return response_logprobs(model, pairs, pad_id=tokenizer.pad_token_id, batch_size=score.batch_size,
                             padding_side=score.padding_side, desc=desc)


def answers_table(prompts: pl.DataFrame, samples: list[Sample], logp_base: np.ndarray) -> pl.DataFrame:
    """One row per prompt: its set, id and prompt, and the sampled answer with the exact
    tokens, how it ended, the EOS that ended it (null when cut at max_new_tokens) and its
    log-prob under the base model (`answer_logprobs`)."""
    return prompts.select("set", "id", "prompt").with_columns(
        pl.Series("answer", [s.text for s in samples], dtype=pl.String),
        pl.Series("finish", [s.finish for s in samples], dtype=pl.String),
        pl.Series("n_tokens", [s.n_tokens for s in samples], dtype=pl.Int32),
        pl.Series("token_ids", [list(s.token_ids) for s in samples], dtype=pl.List(pl.Int32)),
        pl.Series("eos_id", [s.eos_id for s in samples], dtype=pl.Int64),
        pl.Series("logp_base", logp_base, dtype=pl.Float64),
    )


def read_answers(path: Path, prompts: pl.DataFrame) -> tuple[list[Sample], np.ndarray]:
    """The answers of `path`, one per row of `prompts`, in its order, and their log-probs
    under the base model. The table must answer exactly these prompts (set and id, in
    order): answers sampled for other prompts or another evaluate.limit would pair the
    wrong rows."""
    if not Path(path).is_file():
        raise DlmaError(f"'{path}' does not exist; run the base_answers stage first (dvc repro)")
    try:
        table = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DlmaError(f"'{path}' is not a readable Parquet table ({exc}); rerun the base_answers stage") from exc
    if "eos_id" not in table.columns:
        raise DlmaError(f"'{path}' lacks column(s) ['eos_id']; it must come from the base_answers stage")
    # eos_id is null where the answer was cut at max_new_tokens; every other field is required.
    require_table(table, [c for c in ANSWER_COLUMNS if c != "eos_id"], str(path), producer="base_answers")
    expected = prompts.select("set", "id")
    found = table.select("set", "id")
    if found.height != expected.height or not found.equals(expected):
        mismatch = next((i for i, (a, b) in enumerate(zip(found.iter_rows(), expected.iter_rows())) if a != b),
                        min(found.height, expected.height))
        where = (f"row {mismatch}: {found.row(mismatch) if mismatch < found.height else 'missing'} where the evaluation "
                 f"has {expected.row(mismatch) if mismatch < expected.height else 'no row'}")
        raise DlmaError(f"'{path}': its {found.height} answers are not for the {expected.height} evaluation prompts ({where}); "
                        "rerun the base_answers stage (dvc repro) with the same prompts, sets and evaluate.limit")
    bad = table.filter(~pl.col("finish").is_in(["eos", "length"]))
    if bad.height:
        raise DlmaError(f"'{path}': row id={bad['id'][0]!r}: field 'finish' is {bad['finish'][0]!r}, not eos or length")
    bad = table.filter(~pl.col("logp_base").is_finite() | (pl.col("logp_base") > 0))
    if bad.height:
        raise DlmaError(f"'{path}': row id={bad['id'][0]!r}: field 'logp_base' is {bad['logp_base'][0]!r}, not a log-prob; "
                        "rerun the base_answers stage")
    samples = [Sample(text=row["answer"], finish=row["finish"], n_tokens=row["n_tokens"], token_ids=tuple(row["token_ids"]),
                      eos_id=row["eos_id"]) for row in table.iter_rows(named=True)]
    return samples, table["logp_base"].to_numpy()


def sample_base_answers(model_params: ModelParams, formats: PromptsParams, generate: GenerateParams, score: ScoreParams,
                        evaluate: EvaluateParams, eval_prompts: Path, model_id: Path, sets: Path | None) -> pl.DataFrame:
    """The base model's answers to the evaluation prompts (the base_answers stage): the same
    prompts, contexts, model, numerics and sampling streams as an evaluation would use; and
    their log-probs under the base model, recorded while sampling where the sampling and
    scoring numerics are the same, else scored by a judging copy (score.dtype and
    score.attn_implementation, as evaluate's judge)."""
    numerics = stage_dtype(model_params, "generate.dtype", generate.dtype)
    judging = stage_dtype(model_params, "score.dtype", score.dtype)
    model, tokenizer, _ = load_checked(model_params, model_id, numerics)  # as evaluate samples: default attention
    prompts, _ = prompt_sets(eval_prompts, evaluate, read_identities(sets), formats)
    prompts, contexts, _ = bare_contexts(prompts, tokenizer, formats, generate)
    recorded = same_numerics(numerics, judging)
    samples = sample_answers(model, tokenizer, prompts, contexts, generate, desc="base answers", with_logprobs=recorded)
    if recorded:
        logp_base = np.array([s.logp for s in samples], dtype=np.float64)
    else:
        del model
        judge, _, _ = load_checked(model_params, model_id, judging, score.attn_implementation)
        logp_base = answer_logprobs(judge, tokenizer, contexts, samples, score, desc="log-probs")
    return answers_table(prompts, samples, logp_base)
