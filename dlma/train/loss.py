"""DLMA's DPO loss with the self-rewarding margin (METHOD.md section 4), as pure functions.

All arguments are tensors of shape [B] holding summed response log-probs (policy and
reference, chosen and rejected) and the pair's self-rewarding score R (the `margin`
column). Each function returns the unreduced per-pair loss [B].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_logratio_difference(
    policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
) -> torch.Tensor:
    """Delta = [log pi(a1|x) - log pi_ref(a1|x)] - [log pi(a2|x) - log pi_ref(a2|x)]."""
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def margin_dpo_loss(
    delta: torch.Tensor, margin: torch.Tensor, *, beta: float, margin_weight: float,
    margin_min: float, margin_max: float,
) -> torch.Tensor:
    """L = -log sigmoid(beta * (Delta - w * clamp(R, r_min, r_max)))   (DLMA, eq. in section 4).

    With margin_weight w = 0 this is exactly the standard DPO sigmoid loss.
    """
    shift = margin_weight * margin.to(delta.dtype).clamp(margin_min, margin_max)
    return -F.logsigmoid(beta * (delta - shift))


def weighted_dpo_loss(
    delta: torch.Tensor, margin: torch.Tensor, *, beta: float, margin_min: float, margin_max: float,
) -> torch.Tensor:
    """The official code's other variant: the standard DPO loss times the (clamped) score R.

    L = clamp(R, r_min, r_max) * -log sigmoid(beta * Delta). A negative R pushes the pair
    the other way, as in the official code.
    """
    return margin.to(delta.dtype).clamp(margin_min, margin_max) * -F.logsigmoid(beta * delta)


def sft_loss(chosen_logps: torch.Tensor, chosen_tokens: torch.Tensor) -> torch.Tensor:
    """Context distillation (the paper's baseline): supervised fine-tuning on the p+ answers
    given the bare prompt, no pairs. The token-mean negative log-likelihood over the batch,
    as trl's SFTTrainer reduces it: -sum(log p(a1 | x)) / number of answer tokens. A scalar."""
    return -chosen_logps.sum() / chosen_tokens.sum()
