"""trl's DPOTrainer with DLMA's per-pair margin and stored reference log-probs.

What this subclass changes, and why (everything else, the training loop, LoRA wiring,
optimiser, scheduler, logging and checkpoints, is trl / transformers as they are):
- the data set arrives tokenised by `dlma.prompts`, exactly as the `score` stage
  tokenised it, so the reference log-probs stored in the preference file are of the very
  tokens the policy is trained on (trl's own tokenisation of prompt + completion can
  merge tokens across the boundary and would not match them);
- the reference log-probs come from the data set: no reference model is loaded and no
  reference forward pass is run;
- the loss is `dlma.train.loss` (trl 1.x has no per-pair margin). Its params travel one
  way, as trl's do: in the trainer's config (`MarginDPOConfig`, trl's DPOConfig plus the
  margin fields), read back as `self.args`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from trl import DPOConfig, DPOTrainer

from dlma.lm.logprobs import pad_pairs, response_token_index, summed_token_logprobs
from dlma.train.loss import (
    dpo_logratio_difference,
    margin_dpo_loss,
    sft_loss,
    weighted_dpo_loss,
)

TOKENISED_COLUMNS = ["prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps", "ref_rejected_logps", "margin"]


@dataclass
class MarginPreferenceCollator:
    """Batch = [chosen sequences..., rejected sequences...], right-padded, plus the index
    tensors that locate every response token (masks from positions, never pad ids)."""

    pad_token_id: int

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        pairs = [(e["prompt_ids"], e["chosen_ids"]) for e in examples] + [
            (e["prompt_ids"], e["rejected_ids"]) for e in examples
        ]
        batch = pad_pairs(pairs, self.pad_token_id, side="right")
        row_index, logit_pos, target_pos = response_token_index(batch)
        return {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "position_ids": batch.position_ids,
            "row_index": row_index,
            "logit_pos": logit_pos,
            "target_pos": target_pos,
            "ref_chosen_logps": torch.tensor([e["ref_chosen_logps"] for e in examples], dtype=torch.float64),
            "ref_rejected_logps": torch.tensor([e["ref_rejected_logps"] for e in examples], dtype=torch.float64),
            "margin": torch.tensor([e["margin"] for e in examples], dtype=torch.float64),
        }


def sequence_logps(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed response log-probs of every row of the batch, with gradients, float64."""
    keep = inputs["input_ids"].shape[1] - int(inputs["logit_pos"].min())
    outputs = model(
        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
        position_ids=inputs["position_ids"], logits_to_keep=keep, use_cache=False,
    )
    return summed_token_logprobs(
        outputs.logits, inputs["input_ids"], inputs["row_index"], inputs["logit_pos"],
        inputs["target_pos"], inputs["input_ids"].shape[0],
    )


@dataclass
class MarginDPOConfig(DPOConfig):
    """trl's DPOConfig (which carries `beta`) plus DLMA's margin terms. No defaults of
    their own: `dlma.train.run.trainer_config` fills every one from params.yaml."""

    dlma_loss: str | None = field(default=None, metadata={"help": "margin | weighted | sft"})
    margin_weight: float | None = field(default=None, metadata={"help": "w in beta * (Delta - w * clamp(R))"})
    margin_min: float | None = field(default=None, metadata={"help": "lower clamp of R"})
    margin_max: float | None = field(default=None, metadata={"help": "upper clamp of R"})

    def __post_init__(self):
        unset = [n for n in ("dlma_loss", "margin_weight", "margin_min", "margin_max") if getattr(self, n) is None]
        if unset:
            raise ValueError(f"MarginDPOConfig needs {unset}")
        super().__post_init__()


class MarginDPOTrainer(DPOTrainer):
    args: MarginDPOConfig

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        missing = [c for c in TOKENISED_COLUMNS if c not in dataset.column_names]
        if missing:
            raise ValueError(f"{dataset_name} data set lacks {missing}; build it with dlma.train_data")
        return dataset

    def _precompute_ref_logps(self, dataset, name, batch_size):
        return dataset  # stored by the score stage (or computed once by the train stage)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = TOKENISED_COLUMNS

    @staticmethod
    def _answer_tokens(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokens of each chosen answer (the first half of the batch's rows)."""
        rows = inputs["input_ids"].shape[0]
        return torch.bincount(inputs["row_index"], minlength=rows)[: rows // 2].to(torch.float64)

    def per_pair_loss(self, inputs: dict[str, torch.Tensor], logps: torch.Tensor):
        """Per-pair loss [B] and the policy's chosen / rejected log-probs."""
        args = self.args
        chosen_logps, rejected_logps = logps.chunk(2)
        delta = dpo_logratio_difference(chosen_logps, rejected_logps, inputs["ref_chosen_logps"], inputs["ref_rejected_logps"])
        if args.dlma_loss == "sft":  # per pair: its answer's mean token NLL (the batch loss weights by tokens)
            losses = -chosen_logps / self._answer_tokens(inputs)
        elif args.dlma_loss == "weighted":
            losses = weighted_dpo_loss(delta, inputs["margin"], beta=args.beta, margin_min=args.margin_min, margin_max=args.margin_max)
        else:
            losses = margin_dpo_loss(
                delta, inputs["margin"], beta=args.beta, margin_weight=args.margin_weight,
                margin_min=args.margin_min, margin_max=args.margin_max,
            )
        return losses, chosen_logps, rejected_logps

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Training only: the pipeline runs no eval loop inside the trainer.
        logps = sequence_logps(model, inputs)
        losses, chosen_logps, rejected_logps = self.per_pair_loss(inputs, logps)
        beta = self.args.beta
        # trl's metric names, so that curves read like any DPO run's.
        chosen_rewards = (beta * (chosen_logps - inputs["ref_chosen_logps"])).detach()
        rejected_rewards = (beta * (rejected_logps - inputs["ref_rejected_logps"])).detach()
        metrics = self._metrics["train"]
        metrics["rewards/chosen"].append(chosen_rewards.mean().item())
        metrics["rewards/rejected"].append(rejected_rewards.mean().item())
        metrics["rewards/accuracies"].append((chosen_rewards > rejected_rewards).float().mean().item())
        metrics["rewards/margins"].append((chosen_rewards - rejected_rewards).mean().item())
        metrics["logps/chosen"].append(chosen_logps.detach().mean().item())
        metrics["logps/rejected"].append(rejected_logps.detach().mean().item())
        metrics["self_reward/margin"].append(inputs["margin"].mean().item())
        if self.args.dlma_loss == "sft":
            loss = sft_loss(chosen_logps, self._answer_tokens(inputs)).to(torch.float32)
        else:
            loss = losses.mean().to(torch.float32)
        return (loss, {"logps": logps}) if return_outputs else loss
