"""Params of the `evaluate` section."""

from __future__ import annotations

from dataclasses import dataclass

from dlma.core.errors import DlmaError
from dlma.data.params import AgreementSet, PromptSet
from dlma.evaluate.judges import JUDGES
from dlma.lm.ab_judge import check_question


@dataclass(frozen=True)
class ValidityParams:
    """The least a judge must show to be informative; below any of them its verdicts are
    shown as "not informative" and kept out of the headline."""

    min_order_consistency: float  # A/B judges: share of rows where both orders pick the same answer
    min_answer_token_mass: float  # A/B judges: mean probability on the two answer tokens
    min_labelled_accuracy: float  # judges checked on the human-labelled sets: accuracy there

    def __post_init__(self) -> None:
        for name in ("min_order_consistency", "min_answer_token_mass", "min_labelled_accuracy"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise DlmaError(f"evaluate.validity.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class EvaluateParams:
    limit: int | None
    seed: int
    bootstrap: int
    judges: list[str]
    tie_margin: float
    reward_model: str
    judge_model: str
    judge_prompt: str
    judge_tokens: list[str]
    validity: ValidityParams
    agreement_sets: list[AgreementSet]
    prompt_sets: list[PromptSet]

    def __post_init__(self) -> None:
        if self.tie_margin < 0:
            raise DlmaError(f"evaluate.tie_margin must be >= 0 (nats), got {self.tie_margin}")
        unknown = [j for j in self.judges if j not in JUDGES]
        if unknown:
            raise DlmaError(f"evaluate.judges: unknown judge(s) {unknown}; known judges: {list(JUDGES)}")
        for name in self.judges:
            for key in JUDGES[name].needs_params:
                if not getattr(self, key):
                    raise DlmaError(f"evaluate.judges lists {name} but evaluate.{key} is empty; give a path, .gguf file or hub id")
        check_question("evaluate", self.judge_prompt, self.judge_tokens)
        if self.limit is not None and self.limit < 1:
            raise DlmaError("evaluate.limit must be a positive integer or null")
        if self.bootstrap < 1:
            raise DlmaError("evaluate.bootstrap must be >= 1")
        for kind, sets in (("agreement", self.agreement_sets), ("prompt", self.prompt_sets)):
            names = [s.name for s in sets]
            if len(set(names)) != len(names):
                raise DlmaError(f"evaluate.{kind}_sets: names must be unique, got {names}")


def check_set_pairs(params: EvaluateParams, pairs: dict) -> None:
    """Every evaluation set's `pair` must be one of prompts.pairs (or "" = by category)."""
    for spec in [*params.agreement_sets, *params.prompt_sets]:
        if spec.pair and spec.pair not in pairs:
            raise DlmaError(f"evaluation set '{spec.name}': pair '{spec.pair}' is not defined under prompts.pairs "
                            f"({sorted(pairs)}); use one of those or \"\" (by category)")
