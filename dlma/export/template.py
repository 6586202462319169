"""The chat template an exported model carries: the prompt format the pipeline trained with.

A merged model that loses its prompt format answers worse than the pipeline's model (a
known failure of merged exports elsewhere), so the exported tokenizer's chat template
renders a user message exactly as `dlma.lm.prompts.user_turn_ids` does:

- the model's own template, when the bare query used it. Where that template injects a
  default system prompt when the messages have none (SmolLM2's does), the pipeline trained
  with an empty system turn in its place, so the exported template adds that empty system
  turn itself; a caller's own system message is kept as given.
- a template written from `prompts.bare_tag` when the bare query was plain text.

Written here because neither transformers nor peft carries a training prompt format into
a merged model.
"""

from __future__ import annotations

from dlma.core.errors import DlmaError
from dlma.lm.prompts import bare_uses_chat, has_chat_template, injects_default_system

_EMPTY_SYSTEM_FIRST = (
    "{#- dlma: the model was trained with an empty system turn where this template would write its default one #}\n"
    "{%- if messages and messages[0]['role'] != 'system' %}"
    "{%- set messages = [{'role': 'system', 'content': ''}] + messages %}"
    "{%- endif %}\n"
)


def _adds_bos(tokenizer) -> bool:
    """Whether plain text gets the tokenizer's BOS in front (Llama-style), as the tag format does."""
    with_specials = tokenizer("x", add_special_tokens=True)["input_ids"]
    without = tokenizer("x", add_special_tokens=False)["input_ids"]
    return len(with_specials) > len(without) and with_specials[0] == tokenizer.bos_token_id


def _tag_template(tokenizer, bare_tag: str) -> str:
    if bare_tag.count("{q}") != 1:
        raise DlmaError(f"prompts.bare_tag must hold {{q}} exactly once to export its format, got {bare_tag!r}")
    before, after = bare_tag.split("{q}")
    # Single-turn, as the pipeline trained: each user turn in the tag format, each assistant
    # turn as its text and EOS; the generation prompt is part of the tag (its text after {q}).
    return (
        "{#- dlma: the plain-text (tag) prompt format the model was trained with #}\n"
        + ("{{- bos_token }}" if _adds_bos(tokenizer) else "")
        + "{%- for message in messages %}"
        "{%- if message['role'] == 'user' %}{{- " + repr(before) + " + message['content'] + " + repr(after) + " }}"
        "{%- elif message['role'] == 'assistant' %}{{- message['content'] + eos_token }}"
        "{%- endif %}{%- endfor %}"
    )


def export_chat_template(tokenizer, bare: str, bare_tag: str) -> str:
    """The chat template for the exported tokenizer (see the module doc)."""
    if not bare_uses_chat(tokenizer, bare):
        return _tag_template(tokenizer, bare_tag)
    if not has_chat_template(tokenizer):
        raise DlmaError("the model was trained with prompts.bare 'chat' but its tokenizer has no chat template")
    template = tokenizer.chat_template
    return _EMPTY_SYSTEM_FIRST + template if injects_default_system(tokenizer) else template
