"""Output links of the served models: a raw score becomes a probability, a count or classes.

``sigmoid`` (a logit to a probability), ``exp`` (a log-rate to a count, capped so a broken
model cannot overflow), ``identity``, and ``softmax`` (one raw score per class to the class
probabilities). :class:`Linked` applies the link once for every model that computes a raw
score, one row at a time or a matrix at once.

>>> import numpy as np
>>> softmax(np.array([0.0, 0.0])).tolist()
[0.5, 0.5]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

LINKS = ("sigmoid", "exp", "identity", "softmax")
EXP_CAP = 700.0  # exp(700) ~ 1e304: a larger raw count score is a broken model, not a count


def softmax(raw: np.ndarray) -> np.ndarray:
    """Class probabilities from one row's raw scores, or from each row's of a matrix."""
    shifted = np.exp(raw - np.max(raw, axis=-1, keepdims=True))
    probabilities: np.ndarray = shifted / shifted.sum(axis=-1, keepdims=True)
    return probabilities


class Linked:
    """A model served as ``link(raw score)``: subclasses compute the raw scores."""

    link: str

    def raw(self, x: np.ndarray) -> Any:
        """One row's raw score: a float, or an array of one per class (softmax)."""
        raise NotImplementedError

    def raw_many(self, x: np.ndarray) -> np.ndarray:
        """The raw scores of a matrix's rows: (rows,) or (rows, classes)."""
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> Any:
        """One row's output: a float, or the class probabilities (softmax)."""
        raw = self.raw(x)
        if self.link == "sigmoid":
            return 1.0 / (1.0 + math.exp(-raw))
        if self.link == "exp":
            return math.exp(min(raw, EXP_CAP))
        if self.link == "softmax":
            return softmax(raw)
        return raw

    def predict_many(self, x: np.ndarray) -> np.ndarray:
        """The outputs of a matrix's rows: (rows,) or (rows, classes)."""
        raw = self.raw_many(x)
        out: np.ndarray
        if self.link == "sigmoid":
            out = 1.0 / (1.0 + np.exp(-raw))
        elif self.link == "exp":
            out = np.exp(np.minimum(raw, EXP_CAP))
        elif self.link == "softmax":
            out = softmax(raw)
        else:
            out = raw
        return out


__all__ = ["EXP_CAP", "LINKS", "Linked", "softmax"]
