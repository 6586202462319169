"""Params of the `prompts` section: the contrastive pairs (p+, p-) in both styles and the
bare prompt's format, checked when they load."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Literal

from dlma.core.errors import DlmaError


def check_template(key: str, template: str, placeholders: tuple[str, ...]) -> None:
    """A params template (`{q}`, `{a}`, ...): every placeholder it needs is there and no other
    one, so a stray `{x}` or an unmatched brace is refused when params load, naming the key,
    not later as a KeyError inside a stage. A literal brace is written `{{` or `}}`."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:  # an unmatched `{` or `}`
        raise DlmaError(f"{key}: {exc} in {template!r}; write a literal brace as {{{{ or }}}}") from exc
    allowed = ", ".join("{" + name + "}" for name in placeholders)
    stray = sorted({field for field in fields if field not in placeholders})
    if stray:
        raise DlmaError(f"{key} has the placeholder(s) {', '.join('{' + f + '}' for f in stray)}; only {allowed} are "
                        "filled in (write a literal brace as {{ or }})")
    for name in placeholders:
        if name not in fields:
            raise DlmaError(f"{key} must contain the placeholder {{{name}}}")


@dataclass(frozen=True)
class PromptPair:
    """A contrastive pair: positive and negative prompt in both styles ({q} = the query)."""

    tag_pos: str
    tag_neg: str
    system_pos: str
    system_neg: str

    def __post_init__(self) -> None:
        for name in ("tag_pos", "tag_neg"):
            check_template(f"prompt pair field '{name}'", getattr(self, name), ("q",))


@dataclass(frozen=True)
class PromptsParams:
    pair: str  # the pair of a prompt whose category is not in category_pairs
    category_pairs: dict[str, str]  # prompt category -> pair (e.g. helpful -> helpful)
    style: Literal["tag", "system"]
    pairs: dict[str, PromptPair]
    bare: Literal["auto", "chat", "tag"]
    bare_tag: str

    def __post_init__(self) -> None:
        if self.pair not in self.pairs:
            raise DlmaError(
                f"prompts.pair '{self.pair}' is not defined; defined pairs: {sorted(self.pairs)}. "
                "Add it under prompts.pairs or pick one of those."
            )
        unknown = {c: p for c, p in self.category_pairs.items() if p not in self.pairs}
        if unknown:
            raise DlmaError(f"prompts.category_pairs names undefined pair(s) {unknown}; defined pairs: {sorted(self.pairs)}")
        check_template("prompts.bare_tag", self.bare_tag, ("q",))

    @property
    def selected(self) -> PromptPair:
        return self.pairs[self.pair]

    def pair_for(self, category: str | None) -> str:
        """The pair that judges a prompt of this category (prompts.pair when unmapped)."""
        return self.category_pairs.get((category or "").lower(), self.pair)
