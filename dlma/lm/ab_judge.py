"""An RLAIF-style A/B judge: a model asked which of two responses is better, read from the
probabilities of its two answer tokens, always asked in both orders (position bias shows
up as disagreement between them). Used by evaluate's judges and label agreement, and by
any labeller that labels pairs this way."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from dlma.core.errors import DlmaError
from dlma.core.parallel import is_main_process, map_batches, rows_of_this_process
from dlma.lm.logprobs import left_pad
from dlma.lm.params import check_template
from dlma.lm.prompts import bare_messages, bare_uses_chat, encode_chat, encode_text


def check_question(section: str, template: str, tokens: list[str]) -> None:
    """The params of an A/B question (`score` labeller, `evaluate` judges): the template
    shows the request and both answers, and there are exactly two answer tokens."""
    check_template(f"{section}.judge_prompt", template, ("q", "a", "b"))
    if len(tokens) != 2:
        raise DlmaError(f"{section}.judge_tokens must name exactly two answer tokens, e.g. [A, B]")


def answer_token_ids(tokenizer, tokens: list[str]) -> list[int]:
    ids = []
    for token in tokens:
        encoded = tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise DlmaError(f"evaluate.judge_tokens: '{token}' is {len(encoded)} tokens for this tokenizer; use single-token answers")
        ids.append(encoded[0])
    return ids


@torch.inference_mode()
def next_token_probs(model, tokenizer, contexts: list[list[int]], token_ids: list[int], *, batch_size: int) -> np.ndarray:
    """P(next token = each of token_ids | context) for every context, [N, len(token_ids)]."""
    device = next(model.parameters()).device
    out = np.zeros((len(contexts), len(token_ids)))
    order = sorted(range(len(contexts)), key=lambda i: len(contexts[i]))
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    with tqdm(total=rows_of_this_process(batches), desc="ab-judge", unit="row", disable=not is_main_process()) as bar:
        def run(chunk: list[int]) -> np.ndarray:
            batch = left_pad([contexts[i] for i in chunk], tokenizer.pad_token_id)
            logits = model(
                input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                position_ids=batch.position_ids.to(device), logits_to_keep=1, use_cache=False,
            ).logits[:, -1].float()
            bar.update(len(chunk))
            return torch.softmax(logits, dim=-1)[:, token_ids].double().cpu().numpy()

        for chunk, probs in map_batches(batches, run):  # each process runs its share of the batches
            out[chunk] = probs
    return out


def ab_judge_contexts(tokenizer, bare: str, template: str, queries, first, second) -> list[list[int]]:
    """The judge's question as the user turn (chat template when the bare format uses it);
    the query and answers in it are encoded as text."""
    chat = bare_uses_chat(tokenizer, bare)
    contexts = []
    for q, a, b in zip(queries, first, second):
        text = template.format(q=q, a=a, b=b)
        contexts.append(encode_chat(tokenizer, bare_messages(tokenizer, text)) if chat
                        else encode_text(tokenizer, text, add_special_tokens=True))
    return contexts


def ab_judge_summary(p_a_first: np.ndarray, p_b_first: np.ndarray, p_a_swapped: np.ndarray, p_b_swapped: np.ndarray) -> dict:
    """Per-row verdicts of an A/B judge asked twice: first with (A = chosen, B = rejected),
    then swapped (A = rejected, B = chosen). Returns per-row arrays:
    - prob_chosen: P(chosen is better), from the two answer tokens only, averaged over orders;
    - picks_chosen_first_order / picks_chosen_swapped_order: its pick in each order;
    - consistent: the judge picked the same response in both orders;
    - prefers_a_both: it said "A" in both orders (position bias);
    - answer_mass: probability mass on the two answer tokens, averaged over orders.
    """
    first = p_a_first / (p_a_first + p_b_first)  # P(chosen) when chosen is A
    swapped = p_b_swapped / (p_a_swapped + p_b_swapped)  # P(chosen) when chosen is B
    return {
        "prob_chosen": (first + swapped) / 2,
        "picks_chosen_first_order": first > 0.5,
        "picks_chosen_swapped_order": swapped > 0.5,
        "consistent": (first > 0.5) == (swapped > 0.5),
        "prefers_a_both": (p_a_first > p_b_first) & (p_a_swapped > p_b_swapped),
        "answer_mass": ((p_a_first + p_b_first) + (p_a_swapped + p_b_swapped)) / 2,
    }


def ab_judge(model, tokenizer, bare: str, template: str, tokens: list[str], queries, first, second, *, batch_size: int) -> dict:
    """Ask the judge about (first, second) in both orders; see ab_judge_summary ("chosen" = first)."""
    token_ids = answer_token_ids(tokenizer, tokens)
    forward = next_token_probs(model, tokenizer, ab_judge_contexts(tokenizer, bare, template, queries, first, second), token_ids, batch_size=batch_size)
    swapped = next_token_probs(model, tokenizer, ab_judge_contexts(tokenizer, bare, template, queries, second, first), token_ids, batch_size=batch_size)
    return ab_judge_summary(forward[:, 0], forward[:, 1], swapped[:, 0], swapped[:, 1])
