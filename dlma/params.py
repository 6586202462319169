"""Typed params: one frozen dataclass per `params.yaml` section.

Each parameter is documented once, beside its value in `params.yaml`. Loading rejects
unknown and missing keys with a message naming the key, so a typo never silently falls
back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from dlma.errors import DlmaError

DTypeName = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class ModelParams:
    base: str
    dtype: DTypeName = "auto"
    device: str = "auto"
    trust_remote_code: bool = False


@dataclass(frozen=True)
class DataParams:
    source: str
    format: Literal["auto", "table", "hh", "pku"] = "auto"
    split: str = "train"
    columns: dict[str, str] = field(default_factory=dict)
    pku_label: Literal["safer", "better"] = "safer"
    limit: int | None = None
    eval_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0:
            raise DlmaError(f"data.eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.limit is not None and self.limit < 1:
            raise DlmaError(f"data.limit must be a positive integer or null, got {self.limit}")
        unknown = set(self.columns) - {"prompt", "id", "category", "chosen", "rejected"}
        if unknown:
            raise DlmaError(
                f"data.columns has unknown key(s) {sorted(unknown)}; "
                "allowed: prompt, id, category, chosen, rejected"
            )


@dataclass(frozen=True)
class PromptPair:
    """A contrastive pair: positive and negative prompt in both styles ({q} = the query)."""

    tag_pos: str
    tag_neg: str
    system_pos: str
    system_neg: str

    def __post_init__(self) -> None:
        for name in ("tag_pos", "tag_neg"):
            if "{q}" not in getattr(self, name):
                raise DlmaError(f"prompt pair field '{name}' must contain the placeholder {{q}}")


@dataclass(frozen=True)
class PromptsParams:
    pair: str
    style: Literal["tag", "system"]
    pairs: dict[str, PromptPair]
    bare: Literal["auto", "chat", "tag"] = "auto"
    bare_tag: str = "USER: {q}\nASSISTANT:\n"

    def __post_init__(self) -> None:
        if self.pair not in self.pairs:
            raise DlmaError(
                f"prompts.pair '{self.pair}' is not defined; defined pairs: {sorted(self.pairs)}. "
                "Add it under prompts.pairs or pick one of those."
            )
        if "{q}" not in self.bare_tag:
            raise DlmaError("prompts.bare_tag must contain the placeholder {q}")

    @property
    def selected(self) -> PromptPair:
        return self.pairs[self.pair]


@dataclass(frozen=True)
class GenerateParams:
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    batch_size: int = 16
    seed: int = 0
    dtype: DTypeName = "auto"

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise DlmaError("generate.max_new_tokens and generate.batch_size must be >= 1")
        if self.temperature <= 0:
            raise DlmaError("generate.temperature must be > 0 (sampling is required by DLMA)")


@dataclass(frozen=True)
class ScoreParams:
    dtype: DTypeName = "float32"
    attn_implementation: Literal["eager", "sdpa"] = "eager"
    batch_size: int = 8
    max_length: int = 1024
    padding_side: Literal["right", "left"] = "right"


@dataclass(frozen=True)
class FilterParams:
    drop_empty: bool = False
    drop_identical: bool = False
    drop_truncated: bool = False
    swap_negative: bool = False
    min_abs_score: float = 0.0
    max_prompt_words: int | None = 600


T = TypeVar("T")


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    origin = get_origin(annotation)
    if annotation is Any:
        return value
    if origin is Literal:
        if value not in get_args(annotation):
            raise DlmaError(f"{where} must be one of {list(get_args(annotation))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in get_args(annotation):
            return None
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return _check_type(value, inner[0], where)
    if origin is list:
        if not isinstance(value, list):
            raise DlmaError(f"{where} must be a list, got {value!r}")
        (item_type,) = get_args(annotation)
        return [_check_type(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise DlmaError(f"{where} must be a mapping, got {value!r}")
        _, value_type = get_args(annotation)
        return {str(k): _check_type(v, value_type, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(annotation):
        return build(annotation, value, where)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool) and not isinstance(value, annotation):
        raise DlmaError(f"{where} must be {annotation.__name__}, got {value!r}")
    if annotation is int and isinstance(value, bool):
        raise DlmaError(f"{where} must be int, got {value!r}")
    return value


def build(cls: type[T], raw: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown and missing keys."""
    if not isinstance(raw, dict):
        raise DlmaError(f"params section '{where}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise DlmaError(
            f"unknown key(s) {', '.join(where + '.' + k for k in unknown)} in params; "
            f"known keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in raw:
            kwargs[name] = _check_type(raw[name], hints[name], f"{where}.{name}")
        elif getattr(cls, "ALLOW_DEFAULTS", False) and (
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        ):
            continue  # list entries (data sets) may leave optional keys out
        else:
            # Every key must be written out: a default changed in code must never change
            # results without DVC seeing a params change.
            raise DlmaError(f"missing key '{where}.{name}' in params.yaml (see the shipped params.yaml for its meaning)")
    return cls(**kwargs)


def read_params_file(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.is_file():
        raise DlmaError(f"params file '{path}' not found; run from the repository root")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DlmaError(f"params file '{path}' is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise DlmaError(f"params file '{path}' must hold a mapping of sections")
    return raw


def load_section(cls: type[T], section: str, path: str | Path = "params.yaml") -> T:
    raw = read_params_file(path)
    if section not in raw:
        raise DlmaError(f"params file '{path}' has no section '{section}'")
    return build(cls, raw[section], section)


def flatten(raw: dict, prefix: str = "") -> dict[str, Any]:
    """Flatten nested params into dotted keys (as DVC and MLflow show them)."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


@dataclass(frozen=True)
class TrainParams:
    loss: Literal["margin", "weighted"] = "margin"
    beta: float = 0.1
    margin_weight: float = 0.2
    margin_min: float = -40.0
    margin_max: float = 40.0
    peft: Literal["lora", "none"] = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    learning_rate: float = 2e-4
    optimizer: str = "adamw_torch"
    lr_scheduler: str = "linear"
    warmup_steps: int = 2
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    max_grad_norm: float = 10.0
    gradient_checkpointing: bool = False
    save_steps: int = 10
    seed: int = 0
    dtype: DTypeName = "float32"

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise DlmaError(f"train.beta must be > 0, got {self.beta}")
        if self.margin_min > self.margin_max:
            raise DlmaError("train.margin_min must be <= train.margin_max")
        if self.loss == "weighted" and self.margin_weight != 0:
            raise DlmaError("train.loss 'weighted' multiplies the loss by R; set train.margin_weight to 0 with it")
        if self.batch_size < 1 or self.save_steps < 1:
            raise DlmaError("train.batch_size and train.save_steps must be >= 1")


@dataclass(frozen=True)
class TrackingParams:
    uri: str = ""  # empty: one SQLite store at the repository root
    experiment: str = "dlma"
    model_name: str = "dlma"


JUDGES = ("self_contrast", "ab_judge", "reward_model", "refusal")


@dataclass(frozen=True)
class DataSetSpec:
    """A data set named in params: where it is and how to read it (see DataParams)."""

    ALLOW_DEFAULTS = True
    name: str
    source: str
    format: Literal["auto", "table", "hh", "pku"] = "auto"
    columns: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AgreementSet(DataSetSpec):
    pku_label: Literal["safer", "better"] = "safer"


@dataclass(frozen=True)
class PromptSet(DataSetSpec):
    kind: Literal["mixed", "harmful", "safe"] = "mixed"


@dataclass(frozen=True)
class EvaluateParams:
    limit: int | None
    seed: int
    bootstrap: int
    judges: list[str]
    tie_margin: float
    reward_model: str
    judge_prompt: str
    judge_tokens: list[str]
    agreement_sets: list[AgreementSet]
    prompt_sets: list[PromptSet]

    def __post_init__(self) -> None:
        unknown = [j for j in self.judges if j not in JUDGES]
        if unknown:
            raise DlmaError(f"evaluate.judges: unknown judge(s) {unknown}; known judges: {list(JUDGES)}")
        if "reward_model" in self.judges and not self.reward_model:
            raise DlmaError("evaluate.judges lists reward_model but evaluate.reward_model is empty; give a path or hub id")
        for key in ("{q}", "{a}", "{b}"):
            if key not in self.judge_prompt:
                raise DlmaError(f"evaluate.judge_prompt must contain {key}")
        if len(self.judge_tokens) != 2:
            raise DlmaError("evaluate.judge_tokens must name exactly two answer tokens, e.g. [A, B]")
        if self.limit is not None and self.limit < 1:
            raise DlmaError("evaluate.limit must be a positive integer or null")
