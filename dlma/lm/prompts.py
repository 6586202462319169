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

from typing import Literal

from dlma.core.errors import DlmaError
from dlma.lm.params import PromptPair, PromptsParams


Role = Literal["pos", "neg", "bare"]
# Private-use characters: stand-ins for message contents while the chat template renders.
_SENTINEL = "\ue000{}\ue001"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def bare_uses_chat(tokenizer, bare: str) -> bool:
    return bare == "chat" or (bare == "auto" and has_chat_template(tokenizer))


def injects_default_system(tokenizer) -> bool:
    """Whether the chat template writes a system prompt of its own when the messages have
    none (SmolLM2's does: "You are a helpful AI assistant named SmolLM...")."""
    user, system = _SENTINEL.format("u"), _SENTINEL.format("s")
    alone = render_chat(tokenizer, [{"role": "user", "content": user}])
    with_system = render_chat(tokenizer, [{"role": "system", "content": system}, {"role": "user", "content": user}])
    before_alone = alone[: alone.index(user)]
    before_with = with_system[: with_system.index(user)].replace(system, "")
    return len(before_alone) > len(before_with)


def bare_messages(tokenizer, text: str) -> list[dict]:
    """`text` as the user turn alone, with no system prompt: where the template would inject
    its default one, an empty system message stands in its place."""
    if injects_default_system(tokenizer):
        return [{"role": "system", "content": ""}, {"role": "user", "content": text}]
    return [{"role": "user", "content": text}]


def _messages(tokenizer, params: PromptsParams, query: str, role: Role, pair_name: str | None) -> list[dict] | None:
    """The chat messages for a query under p+, p- or no prompt; None for a plain-text (tag) format."""
    if role == "bare":
        return bare_messages(tokenizer, query) if bare_uses_chat(tokenizer, params.bare) else None
    if params.style == "tag":
        return None
    pair: PromptPair = params.pairs[pair_name or params.pair]
    return [{"role": "system", "content": pair.system_pos if role == "pos" else pair.system_neg},
            {"role": "user", "content": query}]


def _tag_text(params: PromptsParams, query: str, role: Role, pair_name: str | None) -> str:
    if role == "bare":
        return params.bare_tag.format(q=query)
    pair: PromptPair = params.pairs[pair_name or params.pair]
    return (pair.tag_pos if role == "pos" else pair.tag_neg).format(q=query)


def _require_template(tokenizer, params: PromptsParams, role: Role) -> None:
    if not has_chat_template(tokenizer):
        key = "prompts.bare is 'chat'" if role == "bare" else "prompts.style is 'system'"
        raise DlmaError(f"{key} but the tokenizer has no chat template; use 'tag'")


def render_chat(tokenizer, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def context_text(tokenizer, params: PromptsParams, query: str, role: Role, pair_name: str | None = None) -> str:
    """The text that precedes the response for a query under p+, p- (of `pair_name`, else
    prompts.pair) or no prompt (for display and tests; the model gets `context_ids`)."""
    messages = _messages(tokenizer, params, query, role, pair_name)
    if messages is None:
        return _tag_text(params, query, role, pair_name)
    _require_template(tokenizer, params, role)
    return render_chat(tokenizer, messages)


def encode_text(tokenizer, text: str, *, add_special_tokens: bool = False) -> list[int]:
    """User or model text, encoded as text: a control string typed in it (`<|im_end|>`)
    stays characters and never becomes the special token that ends or forges a turn."""
    return tokenizer(text, add_special_tokens=add_special_tokens, split_special_tokens=True)["input_ids"]


def _holds_control_string(tokenizer, text: str) -> bool:
    return any(token in text for token in tokenizer.get_added_vocab())


def encode_chat(tokenizer, messages: list[dict]) -> list[int]:
    """The chat template's tokens with every message's content encoded as text: the
    template's own special tokens are real, the contents' are not.

    Contents without any control string take the usual path (render, then tokenise the
    whole string), so ordinary prompts get exactly the tokens every other tool gives them;
    only a content that holds one is encoded on its own, between the template's pieces."""
    rendered = render_chat(tokenizer, messages)
    if not any(_holds_control_string(tokenizer, m["content"]) for m in messages):
        return tokenizer(rendered, add_special_tokens=False)["input_ids"]
    sentinels = [_SENTINEL.format(i) for i in range(len(messages))]
    rendered = render_chat(tokenizer, [{**m, "content": s} for m, s in zip(messages, sentinels)])
    ids: list[int] = []
    rest = rendered
    for message, sentinel in zip(messages, sentinels):
        before, found, rest = rest.partition(sentinel)
        if not found:
            raise DlmaError("the chat template changed or dropped a message's content; use the 'tag' format for this model")
        ids += tokenizer(before, add_special_tokens=False)["input_ids"] + encode_text(tokenizer, message["content"])
    return ids + tokenizer(rest, add_special_tokens=False)["input_ids"]


def context_ids(tokenizer, params: PromptsParams, query: str, role: Role, pair_name: str | None = None) -> list[int]:
    """Tokens that precede the response for a query under p+, p- (of `pair_name`, else
    prompts.pair) or no prompt. A chat template writes its own special tokens; plain text
    gets the tokenizer's usual ones (BOS for Llama-style models)."""
    messages = _messages(tokenizer, params, query, role, pair_name)
    if messages is None:
        return encode_text(tokenizer, _tag_text(params, query, role, pair_name), add_special_tokens=True)
    _require_template(tokenizer, params, role)
    return encode_chat(tokenizer, messages)


def user_turn_ids(tokenizer, bare: str, bare_tag: str, text: str) -> list[int]:
    """`text` as the whole user turn, in the bare format (the A/B judge's question, the
    served model's prompt)."""
    if bare_uses_chat(tokenizer, bare):
        if not has_chat_template(tokenizer):
            raise DlmaError("prompts.bare is 'chat' but the tokenizer has no chat template; use 'tag'")
        return encode_chat(tokenizer, bare_messages(tokenizer, text))
    return encode_text(tokenizer, bare_tag.format(q=text), add_special_tokens=True)


def encode_response(tokenizer, response: str) -> list[int]:
    """Response tokens followed by EOS, as the official code trains and scores them."""
    return encode_text(tokenizer, response) + [tokenizer.eos_token_id]


def response_tokens(tokenizer, sampled_ids, finish: str, eos_id: int | None) -> list[int]:
    """A sampled response as it is scored and trained: the very tokens the model sampled,
    plus the EOS the model produced (`eos_id`, one of its EOS ids; a table written before
    it was recorded has none: the tokenizer's) only when it produced one (finish == "eos");
    a response cut at max_new_tokens gets none, so no loss term asks for an end in
    mid-sentence."""
    if finish != "eos":
        return [int(t) for t in sampled_ids]
    return [int(t) for t in sampled_ids] + [int(eos_id) if eos_id is not None else tokenizer.eos_token_id]


def encode_contexts(tokenizer, params: PromptsParams, queries: list[str], role: Role,
                    pairs: list[str] | None = None) -> list[list[int]]:
    """Contexts of many queries; `pairs` names each query's contrastive pair (default: prompts.pair)."""
    pairs = pairs or [params.pair] * len(queries)
    return [context_ids(tokenizer, params, q, role, p) for q, p in zip(queries, pairs)]


def pairs_of(params: PromptsParams, categories: list[str | None] | None, count: int, fixed: str = "") -> list[str]:
    """Each row's pair: `fixed` when a set names one, else by the row's category."""
    if fixed:
        return [fixed] * count
    return [params.pair_for(c) for c in (categories or [None] * count)]
