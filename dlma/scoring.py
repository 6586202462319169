"""The self-rewarding contrastive score (METHOD.md section 2)."""

from __future__ import annotations

import numpy as np


def contrastive_score(
    logp_pos_given_pos: np.ndarray,
    logp_pos_given_neg: np.ndarray,
    logp_neg_given_pos: np.ndarray,
    logp_neg_given_neg: np.ndarray,
) -> np.ndarray:
    """R = [LL(a1|p+,q) - LL(a1|p-,q)] - [LL(a2|p+,q) - LL(a2|p-,q)].

    a1 (the "pos" response) was sampled under p+, a2 (the "neg" response) under p-; each
    LL is a response's summed token log-prob. All arguments are float arrays of shape
    [N]; R > 0 means the model itself rates a1 as the better answer.
    """
    return (np.asarray(logp_pos_given_pos, dtype=np.float64) - logp_pos_given_neg) - (
        np.asarray(logp_neg_given_pos, dtype=np.float64) - logp_neg_given_neg
    )
