"""Summed log-probabilities of responses given contexts, batched, masks from positions.

The official code masks prompt tokens by writing pad ids into the labels, which breaks
with left padding and drops EOS when pad == eos (METHOD.md section 2). Here every
response token is located by its offset in the concatenated sequence, so pad ids are
never compared with anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from dlma.core.parallel import is_main_process, map_batches, rows_of_this_process


@dataclass(frozen=True)
class PaddedBatch:
    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L], 1 on real tokens
    position_ids: torch.Tensor  # [B, L], 0.. over real tokens
    response_start: torch.Tensor  # [B], index in the padded row of the first response token
    response_len: torch.Tensor  # [B]


def pad_pairs(pairs: list[tuple[list[int], list[int]]], pad_id: int, side: str = "right") -> PaddedBatch:
    """Concatenate (context, response) token lists and pad them on `side`."""
    lengths = [len(c) + len(r) for c, r in pairs]
    width = max(lengths)
    batch = len(pairs)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    position_ids = torch.zeros((batch, width), dtype=torch.long)
    starts, resp_lens = [], []
    for row, ((context, response), length) in enumerate(zip(pairs, lengths)):
        offset = width - length if side == "left" else 0
        input_ids[row, offset:offset + length] = torch.tensor(context + response, dtype=torch.long)
        attention_mask[row, offset:offset + length] = 1
        position_ids[row, offset:offset + length] = torch.arange(length)
        starts.append(offset + len(context))
        resp_lens.append(len(response))
    return PaddedBatch(
        input_ids, attention_mask, position_ids, torch.tensor(starts), torch.tensor(resp_lens)
    )


def left_pad(contexts: list[list[int]], pad_id: int) -> PaddedBatch:
    """Left-pad contexts with no response (generation and next-token judging)."""
    return pad_pairs([(context, []) for context in contexts], pad_id, side="left")


def response_token_index(batch: PaddedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, position of the logit that predicts the token, position of the token) for every
    response token, flattened over the batch."""
    rows, targets = [], []
    for row, (start, length) in enumerate(zip(batch.response_start.tolist(), batch.response_len.tolist())):
        rows.append(torch.full((length,), row, dtype=torch.long))
        targets.append(torch.arange(start, start + length))
    row_index = torch.cat(rows)
    target_pos = torch.cat(targets)
    return row_index, target_pos - 1, target_pos


def summed_token_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, row_index: torch.Tensor,
    logit_pos: torch.Tensor, target_pos: torch.Tensor, n_rows: int,
) -> torch.Tensor:
    """Sum over each row's response of log softmax(logits)[token], in float64.

    logits: [B, K, V] for the last K positions of the padded sequence of width L, so
    absolute position p sits at index p - (L - K). Returns [B] float64.
    """
    width = input_ids.shape[1]
    kept = logits.shape[1]
    selected = logits[row_index, logit_pos - (width - kept)].float()  # [N, V]
    tokens = input_ids[row_index, target_pos]
    token_logp = selected.gather(1, tokens[:, None]).squeeze(1) - torch.logsumexp(selected, dim=-1)
    sums = torch.zeros(n_rows, dtype=torch.float64, device=logits.device)
    return sums.index_add_(0, row_index.to(logits.device), token_logp.double())


@torch.inference_mode()
def batch_logprobs(model, batch: PaddedBatch) -> torch.Tensor:
    device = next(model.parameters()).device
    row_index, logit_pos, target_pos = response_token_index(batch)
    # Logits are only needed from the first response-predicting position on: skipping the
    # vocabulary projection over the prompt saves a large share of the compute.
    first_needed = int(logit_pos.min())
    keep = batch.input_ids.shape[1] - first_needed
    out = model(
        input_ids=batch.input_ids.to(device),
        attention_mask=batch.attention_mask.to(device),
        position_ids=batch.position_ids.to(device),
        logits_to_keep=keep,
        use_cache=False,
    )
    return summed_token_logprobs(
        out.logits, batch.input_ids.to(device), row_index.to(device), logit_pos.to(device),
        target_pos.to(device), batch.input_ids.shape[0],
    ).cpu()


def response_logprobs(
    model, pairs: list[tuple[list[int], list[int]]], *, pad_id: int, batch_size: int,
    padding_side: str, desc: str = "score",
) -> np.ndarray:
    """Summed log p(response | context) for every (context, response) pair, float64.

    Pairs are batched in order of total length (less padding); results keep input order.
    """
    if any(len(r) == 0 for _, r in pairs):
        raise ValueError("every response needs at least one token (EOS is always appended)")
    order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]) + len(pairs[i][1]), i))
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    result = np.zeros(len(pairs), dtype=np.float64)
    with tqdm(total=rows_of_this_process(batches), desc=desc, unit="seq", disable=not is_main_process()) as bar:
        def run(chunk: list[int]) -> np.ndarray:
            batch = pad_pairs([pairs[i] for i in chunk], pad_id, padding_side)
            bar.update(len(chunk))
            return batch_logprobs(model, batch).numpy()

        for chunk, logps in map_batches(batches, run):  # each process runs its share of the batches
            result[chunk] = logps
    return result
