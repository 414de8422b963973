"""A served model: its feature columns plus compiled trees, an MLP or a linear model.

:meth:`Scorer.score` reads one user's attributes into a vector and runs the compiled model
in one call of the compiled scorer (:mod:`trimtab.models.native`; numpy when there is no C
compiler); a vector with a NaN or an infinity is not scored (``None``) rather than producing a
number nobody can trust.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from trimtab.models.columns import ColumnError, Columns
from trimtab.models.linear import Linear, LinearError
from trimtab.models.mlp import MLP, MLPError
from trimtab.models.native import compile_model
from trimtab.models.trees import TreeEnsemble, TreeModelError

KINDS: dict[str, type[TreeEnsemble] | type[MLP] | type[Linear]] = {
    "lightgbm": TreeEnsemble,
    "mlp": MLP,
    "logistic": Linear,
}


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
        self.n_outputs = getattr(model, "n_outputs", 1)
        self.classes = [str(c) for c in self.meta.get("classes", [])]
        if self.n_outputs > 1 and len(self.classes) != self.n_outputs:
            raise ScorerError(
                f"model {name} v{version}: {self.n_outputs} outputs but "
                f"{len(self.classes)} class names"
            )
        self.compiled = compile_model(columns, model)  # None: numpy serves (no compiler)

    def vector(self, attrs: Mapping[str, Any]) -> np.ndarray:
        return np.array(self.columns.vector(attrs))

    def score(self, attrs: Mapping[str, Any]) -> Any:
        """One user's score (for multiclass models, the tuple of class probabilities), or
        ``None`` when an input is NaN or infinite."""
        if self.compiled is not None:
            return self.compiled.score(attrs)
        return self.score_numpy(attrs)

    def score_numpy(self, attrs: Mapping[str, Any]) -> Any:
        """:meth:`score` without the compiled scorer (the reference it is tested against)."""
        values = self.columns.vector(attrs)
        total = sum(values)
        if total - total != 0.0:  # a NaN or an infinity among the inputs
            return None
        out = self.model.predict(np.array(values))
        return tuple(out.tolist()) if self.n_outputs > 1 else out

    def attributes(self, score: Any) -> dict[str, Any]:
        """The attributes a score gives rules: ``{name: score}``; for a multiclass model the
        most likely class under the name, its probability under ``<name>_p`` and every class's
        under ``<name>_p_by_class``."""
        if self.n_outputs == 1:
            return {self.name: score}
        best = max(range(len(score)), key=score.__getitem__)
        return {
            self.name: self.classes[best],
            f"{self.name}_p": score[best],
            f"{self.name}_p_by_class": dict(zip(self.classes, score, strict=True)),
        }

    def logged(self, score: Any) -> dict[str, Any]:
        """What the decision log keeps of a score."""
        if self.n_outputs == 1:
            return {"score": round(score, 6)}
        best = max(range(len(score)), key=score.__getitem__)
        return {"class": self.classes[best], "p": round(score[best], 6)}

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
