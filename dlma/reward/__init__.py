"""Step `reward`: a reward model fitted on human-labelled pairs (trl's RewardTrainer), the independent judge of evaluate."""
