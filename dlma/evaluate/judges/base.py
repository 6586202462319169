"""The judge registry: what a judge of aligned vs base answers is, sees and returns.

A judge is one small function `JudgeContext -> JudgeResult`, registered under a name with
`@register("name", description=...)`. `evaluate.judges` in params.yaml picks which run;
they run (and their columns appear) in registration order. The evaluate stage and the
report handle whatever a judge returns, so adding one is a module plus its import line in
`dlma/evaluate/judges/__init__.py` (or, in a test or a plugin, just the `register` call).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import polars as pl


@dataclass
class JudgeContext:
    """What every judge sees. The answers are aligned[i] and base[i] to queries[i]."""

    prompts: pl.DataFrame  # id, prompt, category, set, harm (harmful | safe | unknown)
    queries: list[str]
    aligned: list[str]
    base: list[str]
    judge_model: Any  # the base model in the scoring dtype (a self-judge)
    tokenizer: Any
    params: Any  # the stage's params bundle (evaluate, prompts, score, model)
    # the agreement stage's rows: every human-labelled pair (set, id, prompt, chosen,
    # rejected) with each labeller's verdict on it (<labeller>_right, ...); a judge that
    # is also a labeller there (reward_model, judge_model) reads its accuracy as validity
    labelled: pl.DataFrame = field(default_factory=pl.DataFrame)
    shared: dict = field(default_factory=dict)  # passes one judge leaves for others (e.g. log-probs)


@dataclass
class JudgeResult:
    """verdicts: win / tie / lose of the aligned answer per prompt (None for a judge that
    does not compare, like a refusal rate); columns: per-prompt values for the samples table;
    metrics: top-level sections for reports/metrics.json; validity: how far the judge can be
    trusted (order consistency, answer-token mass, ...), shown beside its verdicts."""

    verdicts: list[str] | None = None
    columns: dict[str, list] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    validity: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Judge:
    name: str
    run: Callable[[JudgeContext], JudgeResult]
    description: str
    needs_params: tuple[str, ...]  # evaluate.* keys that must be set for it to run
    independent: bool  # not the base model grading its own fine-tune: may make the headline


JUDGES: dict[str, Judge] = {}


def register(name: str, *, description: str, needs_params: tuple[str, ...] = (), independent: bool = False):
    def add(run: Callable[[JudgeContext], JudgeResult]):
        JUDGES[name] = Judge(name=name, run=run, description=description, needs_params=needs_params, independent=independent)
        return run

    return add


def run_judges(names: list[str], context: JudgeContext) -> dict[str, JudgeResult]:
    """Run the configured judges in registration order."""
    return {name: judge.run(context) for name, judge in JUDGES.items() if name in names}
