"""The agreement step as a library call: every labeller's agreement with human labels on
the configured pair sets, with the base model, the reward model (evaluate.reward_model)
and a second judge model (evaluate.judge_model) where configured.

It is its own step, apart from evaluate, because none of it depends on the trained model:
in a comparison (many methods and seeds, same base model and sets) DVC runs it once and
restores it from the run cache for every other run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from dlma.agreement.labellers import reward_card, reward_function, second_judge
from dlma.agreement.measure import agreement_results
from dlma.core.config import load_section
from dlma.core.errors import DlmaError
from dlma.core.io import write_json, write_parquet
from dlma.evaluate.params import EvaluateParams, check_set_pairs
from dlma.evaluate.sets import read_identities
from dlma.lm.params import PromptsParams
from dlma.model import ModelParams, load_checked, stage_dtype
from dlma.score.params import ScoreParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgreementConfig:
    """The params the agreement step reads: the base model and prompt pairs, the scoring
    numerics (score.dtype, attn_implementation, batch_size, max_length, padding_side), and
    from `evaluate` the sets, limit, bootstrap, A/B question and the two outside labellers."""

    model: ModelParams
    prompts: PromptsParams
    score: ScoreParams
    evaluate: EvaluateParams

    def __post_init__(self) -> None:
        check_set_pairs(self.evaluate, self.prompts.pairs)

    @classmethod
    def load(cls, path: Path) -> AgreementConfig:
        return cls(model=load_section(ModelParams, "model", path), prompts=load_section(PromptsParams, "prompts", path),
                   score=load_section(ScoreParams, "score", path), evaluate=load_section(EvaluateParams, "evaluate", path))


def measure_agreement(config: AgreementConfig, model_id: Path, sets: Path | None) -> tuple[dict, pl.DataFrame]:
    """Summaries by set (reports/agreement.json) and every pair's verdicts (one table)."""
    p = config.evaluate
    if not p.agreement_sets:  # nothing to label: load no model
        log.warning("agreement: evaluate.agreement_sets is empty; nothing to measure")
        return {}, pl.DataFrame(schema={"set": pl.String})
    numerics = stage_dtype(config.model, "score.dtype", config.score.dtype)
    model, tokenizer, _ = load_checked(config.model, model_id, numerics, config.score.attn_implementation)
    reward, reward_skipped = None, None
    if p.reward_model:
        card = reward_card(p.reward_model)
        if "skipped" in card:  # the reward stage had no human pairs to fit on
            reward_skipped = card["skipped"]
            log.warning("agreement: no reward model (%s)", reward_skipped)
        else:
            reward = reward_function(p.reward_model, batch_size=config.score.batch_size,
                                     trust_remote_code=config.model.trust_remote_code)
    judge = second_judge(config.model, p.judge_model, p.judge_prompt, p.judge_tokens, numerics=numerics,
                         attn_implementation=config.score.attn_implementation,
                         batch_size=config.score.batch_size) if p.judge_model else None
    results, rows = agreement_results(model, tokenizer, p, config.prompts, config.score, read_identities(sets),
                                      reward=reward, judge=judge)
    if reward_skipped:
        for summary in results.values():
            if "rows" in summary:
                summary["reward_model"] = {"skipped": reward_skipped}
    return results, rows


def write_agreement(results: dict, rows: pl.DataFrame, metrics: Path, samples: Path) -> None:
    write_parquet(rows, samples)
    write_json(results, metrics)


def read_agreement(metrics: Path, samples: Path) -> tuple[dict, pl.DataFrame]:
    """The agreement step's outputs, for evaluate (the report, and the judges' validity)."""
    for path in (metrics, samples):
        if not path.is_file():
            raise DlmaError(f"{path} not found: run the agreement stage first (dvc repro agreement)")
    return json.loads(metrics.read_text()), pl.read_parquet(samples)
