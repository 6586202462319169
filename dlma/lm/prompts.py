"""Contexts for the contrastive prompts p+ / p- and for the bare query, and their tokens.

Two styles (METHOD.md section 1):
- `tag`: a plain-text template around the query, as in the official code (base models);
- `system`: a system message through the model's chat template (instruct models).

The bare query (no p+ / p-) is the training prompt x: the chat template with only the
user turn when the tokenizer has one (`bare: auto`), else the `bare_tag` template.
Score and train both tokenise through this module, so the reference log-probs computed
in `score` are of exactly the tokens that training sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dlma.core.errors import DlmaError


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
    bare: Literal["auto", "chat", "tag"]
    bare_tag: str

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


Role = Literal["pos", "neg", "bare"]


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _chat(tokenizer, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def bare_context_text(tokenizer, bare: str, bare_tag: str, query: str) -> str:
    """The training prompt x: the query with no p+ / p- (also what the aligned model gets)."""
    if bare_uses_chat(tokenizer, bare):
        if not has_chat_template(tokenizer):
            raise DlmaError("prompts.bare is 'chat' but the tokenizer has no chat template; use 'tag'")
        return _chat(tokenizer, [{"role": "user", "content": query}])
    return bare_tag.format(q=query)


def bare_uses_chat(tokenizer, bare: str) -> bool:
    return bare == "chat" or (bare == "auto" and has_chat_template(tokenizer))


def context_text(tokenizer, params: PromptsParams, query: str, role: Role) -> str:
    """The text that precedes the response for a query under p+, p- or no prompt."""
    pair: PromptPair = params.selected
    if role == "bare":
        return bare_context_text(tokenizer, params.bare, params.bare_tag, query)
    if params.style == "tag":
        return (pair.tag_pos if role == "pos" else pair.tag_neg).format(q=query)
    if not has_chat_template(tokenizer):
        raise DlmaError("prompts.style is 'system' but the tokenizer has no chat template; use style 'tag'")
    system = pair.system_pos if role == "pos" else pair.system_neg
    return _chat(tokenizer, [{"role": "system", "content": system}, {"role": "user", "content": query}])


def context_uses_chat(tokenizer, params: PromptsParams, role: Role) -> bool:
    if role == "bare":
        return bare_uses_chat(tokenizer, params.bare)
    return params.style == "system"


def encode_context(tokenizer, text: str, *, chat: bool) -> list[int]:
    # A chat template already writes its own special tokens; plain text gets the
    # tokenizer's usual ones (BOS for Llama-style models).
    return tokenizer(text, add_special_tokens=not chat)["input_ids"]


def encode_response(tokenizer, response: str) -> list[int]:
    """Response tokens followed by EOS, as the official code trains and scores them."""
    return tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def encode_contexts(tokenizer, params: PromptsParams, queries: list[str], role: Role) -> list[list[int]]:
    chat = context_uses_chat(tokenizer, params, role)
    return [encode_context(tokenizer, context_text(tokenizer, params, q, role), chat=chat) for q in queries]
