"""The true reward `sentiment`: VADER's compound score of an answer, in [-1, 1].

VADER (Hutto & Gilbert, 2014; PyPI `vaderSentiment`) is a lexicon of rated words plus rules
for negation, intensifiers, punctuation and "but" clauses: deterministic, no download, and
independent of every model here, so the base model cannot game it by being its own judge.
Its accuracy is checked on `sentiment_labels.jsonl` beside this module (48 sentences written
for dlma in the style of the pipeline's answers: 16 positive, 16 negative, 16 neutral, with
negations such as "not bad" and "I can't recommend this place enough"), by VADER's own
thresholds (compound >= 0.05 positive, <= -0.05 negative, neutral between), and reported
with every use. It was not tuned on that set: what it gets wrong there is reported.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from dlma.truth.registry import TrueReward, register

LABELLED_SAMPLE = Path(__file__).with_name("sentiment_labels.jsonl")
THRESHOLD = 0.05  # VADER's documented neutral band


@functools.cache
def _analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def compound(texts: list[str]) -> np.ndarray:
    """VADER's compound score of each text (an empty answer scores 0, neutral)."""
    analyzer = _analyzer()
    return np.array([analyzer.polarity_scores(text)["compound"] if text else 0.0 for text in texts], dtype=np.float64)


def polarity(scores: np.ndarray) -> np.ndarray:
    return np.where(scores >= THRESHOLD, "positive", np.where(scores <= -THRESHOLD, "negative", "neutral"))


def check(*, samples: int, seed: int, path: Path = LABELLED_SAMPLE) -> dict:
    """Accuracy on the labelled sentences (3 classes) and on the positive-vs-negative ones
    (sign only), each with a 95% bootstrap interval, and the mistakes themselves."""
    from dlma.evaluate.stats import accuracy_summary

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    labels = np.array([r["label"] for r in rows])
    scores = compound([r["text"] for r in rows])
    predicted = polarity(scores)
    polar = labels != "neutral"
    sign_right = np.sign(scores[polar]) == np.where(labels[polar] == "positive", 1.0, -1.0)
    return {"sample": path.name, "n": int(labels.size),
            "accuracy": accuracy_summary(predicted == labels, samples=samples, seed=seed),
            "sign_accuracy_polar": accuracy_summary(sign_right, samples=samples, seed=seed),
            "mistakes": [{"text": r["text"], "label": r["label"], "compound": float(s)}
                         for r, s, p in zip(rows, scores, predicted) if p != r["label"]]}


register(TrueReward(name="sentiment", score=compound, check=check,
                    description="VADER compound sentiment of the answer, -1..1 (a lexicon, not a model)"))
