"""A served model: its feature columns plus compiled trees, an MLP or a linear model.

:meth:`Scorer.score` reads one user's attributes into a vector and runs the compiled model
with numpy alone; a vector with a NaN or an infinity is not scored (``None``) rather than
producing a number nobody can trust.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from trimtab.models.columns import ColumnError, Columns
from trimtab.models.linear import Linear, LinearError
from trimtab.models.mlp import MLP, MLPError
from trimtab.models.trees import TreeEnsemble, TreeModelError

KINDS = {"lightgbm": TreeEnsemble, "mlp": MLP, "logistic": Linear}


class ScorerError(ValueError):
    """A model file that cannot be served; the message names the model and the reason."""


class Scorer:
    def __init__(
        self,
        name: str,
        version: int,
        kind: str,
        columns: Columns,
        model: TreeEnsemble | MLP | Linear,
        target: str = "binary",
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.name, self.version, self.kind = name, version, kind
        self.columns = columns
        self.model = model
        self.target = target
        self.meta = dict(meta or {})
        if model.n_features != len(columns):
            raise ScorerError(
                f"model {name} v{version}: the model reads {model.n_features} inputs but its "
                f"columns give {len(columns)}"
            )
        self.tag = f"{name}@{version}"

    def vector(self, attrs: Mapping[str, Any]) -> np.ndarray:
        return np.array(self.columns.vector(attrs))

    def score(self, attrs: Mapping[str, Any]) -> float | None:
        values = self.columns.vector(attrs)
        total = sum(values)
        if total - total != 0.0:  # a NaN or an infinity among the inputs
            return None
        return self.model.predict(np.array(values))

    def score_many(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self.model.predict_many(self.columns.matrix(rows))

    def arrays(self) -> dict[str, np.ndarray]:
        return self.model.to_arrays()

    def describe(self) -> dict[str, Any]:
        return {"columns": self.columns.describe(), "target": self.target, **self.meta}

    @classmethod
    def from_file(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Scorer:
        name = str(meta.get("name", "?"))
        version = int(meta.get("version", 0))
        kind = str(meta.get("kind", ""))
        if kind not in KINDS:
            raise ScorerError(f"model {name} v{version}: unknown kind {kind!r}")
        try:
            columns = Columns.from_description(meta["columns"])
            model = KINDS[kind].from_arrays(arrays)
        except (KeyError, TypeError) as exc:
            raise ScorerError(f"model {name} v{version}: the file lacks {exc}") from None
        except (ColumnError, TreeModelError, MLPError, LinearError) as exc:
            raise ScorerError(f"model {name} v{version}: {exc}") from None
        return cls(name, version, kind, columns, model, str(meta.get("target", "binary")), meta)
