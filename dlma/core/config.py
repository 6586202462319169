"""Loading typed params from `params.yaml`: one frozen dataclass per section.

The dataclasses live beside the code they configure (`dlma/<step>/params.py`); this module
only builds them. Each parameter is documented once, beside its value in `params.yaml`,
which is the only place a default lives: the dataclasses have no defaults, and loading
rejects unknown and missing keys with a message naming the key, so a typo or a key left
out never silently falls back to a value written in code.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from dlma.core.errors import DlmaError

DTypeName = Literal["auto", "float32", "bfloat16", "float16"]
_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")

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
    if annotation is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        # PyYAML (YAML 1.1) reads 5e-07 -- how `dvc exp run -S train.learning_rate=5e-7` writes it -- as a string
        value = float(value)
    if annotation is float and isinstance(value, float) and not math.isfinite(value):
        # NaN / inf would train NaN weights and register them as a finished model.
        raise DlmaError(f"{where} must be a finite number, got {value!r}")
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
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise DlmaError(
            f"unknown key(s) {', '.join(where + '.' + k for k in unknown)} in params; "
            f"known keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name in fields:
        if name in raw:
            kwargs[name] = _check_type(raw[name], hints[name], f"{where}.{name}")
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


def load_section(cls: type[T], section: str, path: str | Path = "params.yaml", **overrides: Any) -> T:
    """The `section` of the params file as `cls`; `overrides` replace keys (benchmarks, tests)."""
    raw = read_params_file(path)
    if section not in raw:
        raise DlmaError(f"params file '{path}' has no section '{section}'")
    return build(cls, {**raw[section], **overrides}, section)


def flatten(raw: dict, prefix: str = "", *, sep: str = ".", numbers_only: bool = False) -> dict[str, Any]:
    """Flatten nested mappings into joined keys: dotted for params (as DVC and MLflow show
    them), or, with numbers_only, the finite numbers of a metrics tree (MLflow metrics)."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + sep, sep=sep, numbers_only=numbers_only))
        elif not numbers_only:
            flat[name] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = value
    return flat


