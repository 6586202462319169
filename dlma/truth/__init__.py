"""True rewards: objectives whose reward of an answer is known independently of every model
in the pipeline (the controlled task, as the DPO paper's IMDb sentiment experiment). They
judge aligned against base answers (`evaluate.judges`: the judge of the same name), label
pairs (`score.labeller`: the oracle baseline) and are the reference that label agreement is
measured against on generated pairs (the `truth` stage).

A true reward is a function list[str] -> np.ndarray (one float per answer, higher = better),
registered under its name, with the check of its own accuracy on a hand-labelled sample
(reported beside every use, as the refusal rule's is). Add one: a module here with both,
and its import line below.
"""

from __future__ import annotations

from dlma.truth.registry import TRUE_REWARDS, TrueReward, register, true_reward
from dlma.truth import sentiment  # noqa: E402,F401  isort: skip  (registers `sentiment`)

__all__ = ["TRUE_REWARDS", "TrueReward", "register", "true_reward"]
