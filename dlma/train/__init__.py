"""Step `train`: DLMA's margin-DPO (loss, tokenised data, trl trainer, run and checkpoints)."""
