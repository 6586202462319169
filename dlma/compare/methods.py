"""The methods of the paper's comparison, each as the params that make the pipeline run it.

Every method shares the prompts, model, sampling, training budget and evaluation; only
these keys differ. `base` trains nothing: its row is the base model's answers, which
every run's evaluation already holds (paired with the aligned answers by prompt and seed).
"""

from __future__ import annotations

import itertools
from typing import Any

from dlma.core.errors import DlmaError

TRUE_REWARD = "<truth.reward>"  # stands for the objective's true reward (the truth.reward param) in a method's params

METHODS: dict[str, dict[str, Any] | None] = {
    # contrastive pairs from p+ / p-, self-rewarding margin (the shipped params)
    "dlma": {},
    # the same pairs, plain DPO (w = 0)
    "rlcd": {"train.margin_weight": 0.0},
    # two samples from the bare prompt, labelled by the model as A/B judge in both orders
    "rlaif": {"generate.pairs_from": "bare", "score.labeller": "ab_judge", "filter.swap_negative": True,
              "train.margin_weight": 0.0},
    # supervised fine-tuning on the p+ answers given the bare prompt
    "context_distillation": {"train.loss": "sft"},
    # plain DPO on human-labelled pairs (the human params section)
    "dpo_human": {"generate.pairs_from": "human", "score.labeller": "human", "train.margin_weight": 0.0},
    # plain DPO on the contrastive pairs, each ordered by the objective's true reward (a
    # controlled objective only): the labels the self-rewarding score stands in for
    "oracle": {"score.labeller": TRUE_REWARD, "filter.swap_negative": True, "train.margin_weight": 0.0},
    "base": None,
}


def check_methods(methods: list[str]) -> None:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise DlmaError(f"compare.methods: unknown method(s) {unknown}; known: {list(METHODS)}")
    if not any(METHODS[m] is not None for m in methods):
        raise DlmaError("compare.methods lists no trained method; add one of " + ", ".join(m for m in METHODS if METHODS[m] is not None))


def with_true_reward(values: dict[str, Any], true_reward: str, method: str) -> dict[str, Any]:
    """A method's params with TRUE_REWARD replaced by the objective's true reward."""
    if TRUE_REWARD not in values.values():
        return values
    if not true_reward:
        raise DlmaError(f"compare method '{method}' needs a true reward: set truth.reward (e.g. in compare.set: "
                        "{truth.reward: sentiment}); the harmlessness objective has none")
    return {key: true_reward if value == TRUE_REWARD else value for key, value in values.items()}


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in order ([{}] for no grid)."""
    keys = list(grid)
    return [dict(zip(keys, combination)) for combination in itertools.product(*(grid[k] for k in keys))]


def variant_label(method: str, point: dict[str, Any]) -> str:
    """How reports name a method at a grid point: `dlma beta=0.1`."""
    return " ".join([method, *(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in point.items())])


def as_set_params(values: dict[str, Any]) -> list[str]:
    """`-S key=value` strings for `dvc exp run`: values in YAML flow form (DVC parses them as YAML)."""
    import yaml

    def flow(value: Any) -> str:
        if isinstance(value, str) and "\n" in value:  # a JSON string is a YAML double-quoted scalar: no line folding
            import json

            return json.dumps(value)
        return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()

    return [f"{key}={flow(value)}" for key, value in values.items()]
