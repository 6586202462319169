"""How a (query, answer) pair is shown to a reward model: one function for training and
for judging, so the judge scores exactly the format it was fitted on."""

from __future__ import annotations

from dlma.lm.prompts import bare_messages, encode_chat, encode_text, has_chat_template


def reward_inputs(tokenizer, query: str, answer: str) -> list[int]:
    """The chat template's user and assistant turns where the tokenizer has one (the
    user turn as the bare prompt x: no injected default system prompt), else the query
    and answer as plain text ending with EOS. Control strings typed in the text stay text."""
    if has_chat_template(tokenizer):
        return encode_chat(tokenizer, [*bare_messages(tokenizer, query), {"role": "assistant", "content": answer}])
    return encode_text(tokenizer, f"{query}\n\n{answer}", add_special_tokens=True) + [tokenizer.eos_token_id]
