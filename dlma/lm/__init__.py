"""Shared language-model maths of the model stages: prompt formats and their tokens, padding,
summed response log-probs, and next-token A/B judging."""
