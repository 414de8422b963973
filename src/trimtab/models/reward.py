"""A registered model as the reward model of off-policy evaluation (DM and DR).

A model trained ``at: exposure`` predicts the reward of a shown variant from the attributes the
decision saw plus ``slot``, ``variant`` and the variant's payload (``item``). For a logged
round, :class:`RewardModel` scores every variant of the slot the same way, which is the
``q̂(x, a)`` the direct method and doubly robust estimators need
(``trimtab ope --reward-model NAME``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trimtab.models.registry import Registry
from trimtab.models.scorer import Scorer

CHUNK_ROWS = 8192


class RewardModel:
    """``attrs -> {variant: predicted reward}`` for every variant of ``slot``.

    Predictions are remembered per logged decision (``__decision_id``), so evaluating several
    candidate policies scores each round once; :meth:`prefetch` scores many rounds in
    vectorised chunks.
    """

    def __init__(
        self, scorer: Scorer, slot: str, variants: Sequence[str], payloads: Mapping[str, Any]
    ) -> None:
        if scorer.n_outputs != 1:
            raise ValueError(
                f"model {scorer.name} v{scorer.version} predicts one of several classes; a "
                "reward model predicts the reward (a binary or count target)"
            )
        self.scorer, self.slot, self.variants = scorer, slot, list(variants)
        self.items = {v: payloads.get(v) or {} for v in variants}
        self.memo: dict[str, dict[str, float]] = {}

    def _rows(self, attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
        slot, items = self.slot, self.items
        return [{**attrs, "slot": slot, "variant": v, "item": items[v]} for v in self.variants]

    def prefetch(self, many: Sequence[Mapping[str, Any]]) -> None:
        per = max(1, CHUNK_ROWS // max(1, len(self.variants)))
        for lo in range(0, len(many), per):
            chunk = many[lo : lo + per]
            scores = self.scorer.score_many([row for a in chunk for row in self._rows(a)])
            k = len(self.variants)
            for i, attrs in enumerate(chunk):
                key = attrs.get("__decision_id")
                if key is not None:
                    values = scores[i * k : (i + 1) * k]
                    self.memo[key] = dict(zip(self.variants, map(float, values), strict=True))

    def __call__(self, attrs: Mapping[str, Any]) -> dict[str, float]:
        key = attrs.get("__decision_id")
        known = self.memo.get(key) if key is not None else None
        if known is not None:
            return known
        scores = self.scorer.score_many(self._rows(attrs))
        out = dict(zip(self.variants, map(float, scores), strict=True))
        if key is not None:
            self.memo[key] = out
        return out


def load_scorer(models_dir: str | Path, name: str) -> tuple[Scorer, Any]:
    """``NAME`` (its live version, else the newest) or ``NAME@VERSION`` from the registry."""
    base, _, version = name.partition("@")
    registry = Registry(models_dir)
    info = registry.get(base, int(version) if version else None)
    return Scorer.from_file(*registry.load(info)), info
