"""The DLMA loss against hand arithmetic (inputs chosen so the numbers are easy to follow)."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
import torch

from dlma.train.loss import dpo_logratio_difference, margin_dpo_loss, weighted_dpo_loss


def neg_log_sigmoid(x: float) -> float:
    return math.log1p(math.exp(-x))


def test_logratio_difference():
    # (-10 - -12) - (-20 - -15) = 2 - (-5) = 7
    delta = dpo_logratio_difference(torch.tensor([-10.0]), torch.tensor([-20.0]), torch.tensor([-12.0]), torch.tensor([-15.0]))
    assert delta.item() == 7.0


@pytest.mark.parametrize(
    "delta, margin, clamped",
    [
        (10.0, -100.0, -40.0),  # below the clamp range
        (10.0, 25.0, 25.0),  # inside
        (-3.0, 55.0, 40.0),  # above
        (0.0, 0.0, 0.0),
    ],
)
def test_margin_loss_by_hand(delta, margin, clamped):
    beta, weight = 0.1, 0.2
    got = margin_dpo_loss(torch.tensor([delta]), torch.tensor([margin]), beta=beta, margin_weight=weight, margin_min=-40, margin_max=40)
    expected = neg_log_sigmoid(beta * (delta - weight * clamped))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_batch_of_pairs_is_elementwise():
    delta = torch.tensor([10.0, 10.0, -3.0, 0.0])
    margin = torch.tensor([-100.0, 25.0, 55.0, 0.0])
    got = margin_dpo_loss(delta, margin, beta=0.1, margin_weight=0.2, margin_min=-40, margin_max=40)
    # beta*(delta - 0.2*clamp): 0.1*(10+8)=1.8, 0.1*(10-5)=0.5, 0.1*(-3-8)=-1.1, 0
    expected = [neg_log_sigmoid(x) for x in (1.8, 0.5, -1.1, 0.0)]
    assert got.tolist() == pytest.approx(expected, rel=1e-6)
    assert got[3].item() == pytest.approx(math.log(2.0))


def test_zero_margin_weight_is_standard_dpo():
    delta = torch.tensor([-4.0, 0.5, 12.0])
    margin = torch.tensor([30.0, -7.0, 100.0])
    got = margin_dpo_loss(delta, margin, beta=0.5, margin_weight=0.0, margin_min=-40, margin_max=40)
    standard = [-math.log(1 / (1 + math.exp(-0.5 * d))) for d in (-4.0, 0.5, 12.0)]
    assert got.tolist() == pytest.approx(standard, rel=1e-6)


def test_weighted_variant():
    delta = torch.tensor([2.0, 2.0, 2.0])
    margin = torch.tensor([3.0, -1.0, 90.0])
    got = weighted_dpo_loss(delta, margin, beta=0.1, margin_min=-40, margin_max=40)
    base = neg_log_sigmoid(0.2)
    assert got.tolist() == pytest.approx([3.0 * base, -1.0 * base, 40.0 * base], rel=1e-6)


def test_gradient_pushes_chosen_up():
    chosen = torch.tensor([-10.0], requires_grad=True)
    loss = margin_dpo_loss(
        dpo_logratio_difference(chosen, torch.tensor([-10.0]), torch.tensor([-10.0]), torch.tensor([-10.0])),
        torch.tensor([5.0]), beta=0.1, margin_weight=0.2, margin_min=-40, margin_max=40,
    )
    loss.sum().backward()
    assert chosen.grad.item() < 0  # descending the loss raises log pi(chosen)


def test_context_distillation_loss_is_the_sft_loss_on_the_p_plus_answers(tiny_model_dir):
    """train.loss=sft: the trainer's loss on a batch equals the token-mean NLL of the chosen
    (p+) answers given x, computed here from a plain forward pass with -100 labels."""
    from types import SimpleNamespace

    import torch.nn.functional as F

    from dlma.model import load_causal_lm, load_tokenizer
    from dlma.train.trainer import (
        MarginDPOTrainer,
        MarginPreferenceCollator,
        sequence_logps,
    )

    model = load_causal_lm(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"), attn_implementation="eager")
    tokenizer = load_tokenizer(tiny_model_dir)
    rows = [{"prompt_ids": tokenizer("Question one?")["input_ids"], "chosen_ids": tokenizer(" A good answer.")["input_ids"],
             "rejected_ids": tokenizer(" Bad.")["input_ids"], "ref_chosen_logps": -5.0, "ref_rejected_logps": -3.0, "margin": 2.0},
            {"prompt_ids": tokenizer("Two?")["input_ids"], "chosen_ids": tokenizer(" Yes, a much longer reply here.")["input_ids"],
             "rejected_ids": tokenizer(" No")["input_ids"], "ref_chosen_logps": -9.0, "ref_rejected_logps": -1.0, "margin": -1.0}]
    batch = MarginPreferenceCollator(tokenizer.pad_token_id)(rows)
    trainer = SimpleNamespace(args=SimpleNamespace(dlma_loss="sft", beta=0.1), _metrics={"train": defaultdict(list)},
                              _answer_tokens=MarginDPOTrainer._answer_tokens)
    trainer.per_pair_loss = lambda inputs, logps: MarginDPOTrainer.per_pair_loss(trainer, inputs, logps)
    with torch.no_grad():
        loss = MarginDPOTrainer.compute_loss(trainer, model, batch)
        per_pair, _, _ = trainer.per_pair_loss(batch, sequence_logps(model, batch))

    nll, tokens = [], []
    for row in rows:
        ids = torch.tensor([row["prompt_ids"] + row["chosen_ids"]])
        labels = ids.clone()
        labels[0, : len(row["prompt_ids"])] = -100
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        nll.append(F.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100, reduction="sum").item())
        tokens.append(len(row["chosen_ids"]))
    assert loss.item() == pytest.approx(sum(nll) / sum(tokens), rel=1e-4)
    assert per_pair.tolist() == pytest.approx([n / t for n, t in zip(nll, tokens)], rel=1e-4)
