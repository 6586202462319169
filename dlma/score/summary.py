"""The distribution of a table's scores, for reports/score.json."""

from __future__ import annotations

import numpy as np


def score_summary(scores: np.ndarray) -> dict:
    scores = np.asarray(scores, dtype=np.float64)
    quantiles = np.quantile(scores, [0.1, 0.25, 0.5, 0.75, 0.9])
    return {
        "rows": int(scores.size),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "positive_fraction": float((scores > 0).mean()),
        "abs_mean": float(np.abs(scores).mean()),
        **{f"q{int(q * 100):02d}": float(v) for q, v in zip([0.1, 0.25, 0.5, 0.75, 0.9], quantiles)},
    }
