"""`dlma compare`: DLMA against its baselines on the same prompts, model and budget, over seeds."""
