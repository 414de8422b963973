"""Gradient-boosted trees compiled to flat arrays, scored with a few numpy operations.

A LightGBM model is read once (``Booster.dump_model()``) into arrays; live scoring needs numpy
only. The evaluation is QuickScorer's (Lucchese et al., SIGIR 2015) in vector form: number the
leaves of each tree left to right (≤ 64, one bit each) and give every internal node a mask
clearing the bits of the leaves in its *left* subtree. For an input ``x``, every node whose test
``x[f] ≤ t`` fails ANDs its mask into its tree's bits; the exit leaf of each tree is then its
lowest remaining bit. All nodes of all trees are tested at once, so one user costs about ten
numpy calls whatever the number of trees.

Missing values follow LightGBM's ``NumericalDecision``: a NaN is read as 0 unless the node's
missing type is NaN; a node whose missing type is Zero (or NaN) sends 0 (or NaN) to its
default side. The sum runs over trees in the library's order, so scores equal
``Booster.predict`` to ~1e-15 (tested to 1e-9).

>>> import numpy as np
>>> leaf = {"leaf_value": 0.5}
>>> node = {"split_feature": 0, "threshold": 1.0, "decision_type": "<=", "default_left": True,
...         "missing_type": "None", "left_child": {"leaf_value": -1.0}, "right_child": leaf}
>>> trees = TreeEnsemble.from_dump({"objective": "regression", "tree_info": [
...     {"tree_structure": node}, {"tree_structure": {"leaf_value": 0.25}}]}, n_features=1)
>>> float(trees.predict(np.array([0.5]))), float(trees.predict(np.array([2.0])))
(-0.75, 0.75)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
ONE = np.uint64(1)
MAX_LEAVES = 64
ZERO_THRESHOLD = 1e-35
ROWS_PER_CHUNK = 64  # small chunks stay in cache: ~5x faster than 1,024
TABLE_BYTES_MAX = 64 << 20  # the compiled scorer's prefix table (nodes × trees words)
EXP_CAP = 700.0  # exp(700) ~ 1e304: a larger raw count score is a broken model, not a count


class TreeModelError(ValueError):
    """A tree model that cannot be compiled or loaded (the reason says why)."""


def _walk(
    node: Mapping[str, Any], leaves: list[float], nodes: list[tuple[Mapping[str, Any], int, int]]
) -> tuple[int, int]:
    """Number the leaves left to right; each internal node with its left subtree's leaves."""
    if "split_feature" not in node:
        leaves.append(float(node["leaf_value"]))
        return len(leaves) - 1, len(leaves)
    first, middle = _walk(node["left_child"], leaves, nodes)
    _, end = _walk(node["right_child"], leaves, nodes)
    nodes.append((node, first, middle))
    return first, end


class TreeEnsemble:
    """Compiled trees: :meth:`predict` for one row, :meth:`predict_many` for a matrix.

    ``link`` turns the raw sum into the output: ``identity`` (regression), ``sigmoid``
    (binary, with ``sigmoid`` scale) or ``exp`` (Poisson).
    """

    def __init__(
        self,
        feature: np.ndarray,
        threshold: np.ndarray,
        mask: np.ndarray,
        default_left: np.ndarray,
        missing: np.ndarray,
        starts: np.ndarray,
        leaf_offset: np.ndarray,
        leaf_value: np.ndarray,
        constant: float,
        n_features: int,
        link: str = "identity",
        sigmoid: float = 1.0,
        tree_output: np.ndarray | None = None,
        constants: np.ndarray | None = None,
    ) -> None:
        self.feature = np.ascontiguousarray(feature, dtype=np.intp)
        self.threshold = np.ascontiguousarray(threshold, dtype=np.float64)
        self.mask = np.ascontiguousarray(mask, dtype=np.uint64)
        self.default_left = np.ascontiguousarray(default_left, dtype=bool)
        self.missing = np.ascontiguousarray(missing, dtype=np.int8)  # 0 none, 1 zero, 2 NaN
        self.starts = np.ascontiguousarray(starts, dtype=np.intp)
        self.leaf_offset = np.ascontiguousarray(leaf_offset, dtype=np.intp)
        self.leaf_value = np.ascontiguousarray(leaf_value, dtype=np.float64)
        self.constant = float(constant)
        self.constants = np.ascontiguousarray(
            [self.constant] if constants is None else constants, dtype=np.float64
        ).ravel()
        self.n_outputs = len(self.constants)
        self.tree_output = np.ascontiguousarray(
            np.zeros(len(self.starts)) if tree_output is None else tree_output, dtype=np.intp
        )
        self.n_features = int(n_features)
        self.link = link
        self.sigmoid = float(sigmoid)
        self._special = bool(np.any(self.missing))
        self._check()
        self._by_output = [np.flatnonzero(self.tree_output == j) for j in range(self.n_outputs)]

    # -- building -----------------------------------------------------------------------
    @classmethod
    def from_lightgbm(cls, booster: Any) -> TreeEnsemble:
        """Compile a ``lightgbm.Booster`` (or an ``LGBMModel``'s ``booster_``)."""
        booster = getattr(booster, "booster_", booster)
        return cls.from_dump(booster.dump_model(), booster.num_feature())

    @classmethod
    def from_dump(cls, dump: Mapping[str, Any], n_features: int) -> TreeEnsemble:
        """Compile LightGBM's ``dump_model()`` dictionary."""
        objective = str(dump.get("objective", "regression")).split()
        link, sigmoid = "identity", 1.0
        outputs = int(dump.get("num_tree_per_iteration", 1))
        if objective and objective[0] == "multiclass":
            link = "softmax"
            if outputs != int(dump.get("num_class", 1)) or outputs < 2:
                raise TreeModelError("a multiclass model needs one tree per class per iteration")
        elif objective and objective[0] in ("binary", "cross_entropy", "xentropy"):
            link = "sigmoid"
            for part in objective[1:]:
                if part.startswith("sigmoid:"):
                    sigmoid = float(part.split(":", 1)[1])
        elif objective and objective[0] in ("poisson", "gamma", "tweedie"):
            link = "exp"
        elif objective and objective[0] not in (
            "regression",
            "regression_l2",
            "regression_l1",
            "huber",
            "fair",
            "quantile",
            "mape",
        ):
            raise TreeModelError(f"objective {objective[0]!r} is not supported for live scoring")
        if link != "softmax" and (int(dump.get("num_class", 1)) != 1 or outputs != 1):
            raise TreeModelError(
                f"objective {objective[0]!r} with several outputs is not supported for live "
                "scoring (multiclass, softmax, is)"
            )
        feature: list[int] = []
        threshold: list[float] = []
        mask: list[int] = []
        default_left: list[bool] = []
        missing: list[int] = []
        starts: list[int] = []
        leaf_offset: list[int] = []
        leaf_value: list[float] = []
        tree_output: list[int] = []
        constants = [0.0] * outputs
        for number, info in enumerate(dump.get("tree_info", [])):
            root = info["tree_structure"]
            if "leaf_value" in root and "split_feature" not in root:
                constants[number % outputs] += float(root["leaf_value"])  # a tree without splits
                continue
            tree_output.append(number % outputs)
            leaves: list[float] = []
            nodes: list[tuple[Mapping[str, Any], int, int]] = []  # node, first leaf, end leaf
            _walk(root, leaves, nodes)
            if len(leaves) > MAX_LEAVES:
                raise TreeModelError(
                    f"tree {number} has {len(leaves)} leaves; live scoring takes ≤ {MAX_LEAVES} "
                    "(set num_leaves ≤ 64)"
                )
            starts.append(len(feature))
            leaf_offset.append(len(leaf_value))
            leaf_value.extend(leaves)
            for node, first, middle in nodes:
                if node.get("decision_type", "<=") != "<=":
                    raise TreeModelError(
                        f"tree {number}: categorical splits are not supported for live scoring "
                        "(one-hot the column instead: path=*)"
                    )
                f = int(node["split_feature"])
                if not 0 <= f < n_features:
                    raise TreeModelError(f"tree {number} splits on feature {f} of {n_features}")
                left_bits = ((1 << middle) - 1) ^ ((1 << first) - 1)
                feature.append(f)
                threshold.append(float(node["threshold"]))
                mask.append(0xFFFFFFFFFFFFFFFF ^ left_bits)
                default_left.append(bool(node.get("default_left", True)))
                missing.append(
                    {"None": 0, "Zero": 1, "NaN": 2}.get(str(node.get("missing_type")), 0)
                )
        return cls(
            np.array(feature, dtype=np.intp),
            np.array(threshold, dtype=np.float64),
            np.array(mask, dtype=np.uint64),
            np.array(default_left, dtype=bool),
            np.array(missing, dtype=np.int8),
            np.array(starts, dtype=np.intp),
            np.array(leaf_offset, dtype=np.intp),
            np.array(leaf_value, dtype=np.float64),
            constants[0],
            n_features,
            link,
            sigmoid,
            np.array(tree_output, dtype=np.intp),
            np.array(constants, dtype=np.float64),
        )

    # -- persistence --------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "feature": self.feature,
            "threshold": self.threshold,
            "mask": self.mask,
            "default_left": self.default_left,
            "missing": self.missing,
            "starts": self.starts,
            "leaf_offset": self.leaf_offset,
            "leaf_value": self.leaf_value,
            "scalars": np.array([self.constant, self.n_features, self.sigmoid]),
            "link": np.array(self.link),
            "tree_output": self.tree_output,
            "constants": self.constants,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> TreeEnsemble:
        try:
            constant, n_features, sigmoid = (float(v) for v in arrays["scalars"])
            return cls(
                arrays["feature"],
                arrays["threshold"],
                arrays["mask"],
                arrays["default_left"],
                arrays["missing"],
                arrays["starts"],
                arrays["leaf_offset"],
                arrays["leaf_value"],
                constant,
                int(n_features),
                str(arrays["link"]),
                sigmoid,
                arrays.get("tree_output"),  # files of single-output models may lack these
                arrays.get("constants"),
            )
        except KeyError as exc:
            raise TreeModelError(f"the tree arrays lack {exc.args[0]!r}") from None

    def _check(self) -> None:
        n = len(self.feature)
        same = (self.threshold, self.mask, self.default_left, self.missing)
        if any(len(a) != n for a in same):
            raise TreeModelError("the node arrays differ in length")
        if len(self.starts) != len(self.leaf_offset):
            raise TreeModelError("tree starts and leaf offsets differ in length")
        if n and (self.feature.min() < 0 or self.feature.max() >= self.n_features):
            raise TreeModelError("a node reads a feature outside the input")
        if len(self.starts) and (self.starts[0] != 0 or np.any(np.diff(self.starts) <= 0)):
            raise TreeModelError("tree starts must begin at 0 and increase")
        if not np.all(np.isfinite(self.leaf_value)) or not np.all(np.isfinite(self.constants)):
            raise TreeModelError("a leaf value is not finite")
        if self.link not in ("identity", "sigmoid", "exp", "softmax"):
            raise TreeModelError(f"unknown link {self.link!r}")
        if (self.link == "softmax") != (self.n_outputs > 1):
            raise TreeModelError("several outputs go with the softmax link, and only they do")
        if len(self.tree_output) != len(self.starts) or (
            len(self.tree_output)
            and (self.tree_output.min() < 0 or self.tree_output.max() >= self.n_outputs)
        ):
            raise TreeModelError("each tree needs an output among the model's outputs")

    @property
    def n_trees(self) -> int:
        return len(self.starts)

    # -- scoring ------------------------------------------------------------------------
    def _go_left(self, values: np.ndarray) -> np.ndarray:
        if not self._special:
            nan = values != values
            if nan.any():  # LightGBM reads NaN as 0 where the node has no NaN handling
                values = np.where(nan, 0.0, values)
            return values <= self.threshold
        nan = values != values
        as_zero = np.where(nan & (self.missing != 2), 0.0, values)
        zero = (as_zero >= -ZERO_THRESHOLD) & (as_zero <= ZERO_THRESHOLD)
        special = ((self.missing == 1) & zero) | ((self.missing == 2) & nan)
        return np.where(special, self.default_left, as_zero <= self.threshold)

    def raw(self, x: np.ndarray) -> Any:
        """The raw score (sum of leaf values) of one row: a float, or one per output."""
        if not len(self.starts):
            return self.constant if self.n_outputs == 1 else self.constants.copy()
        go_left = self._go_left(x.take(self.feature))
        bits = np.bitwise_and.reduceat(np.where(go_left, ALL_ONES, self.mask), self.starts)
        leaf = np.bitwise_count((bits & (~bits + ONE)) - ONE)
        values = self.leaf_value[self.leaf_offset + leaf]
        if self.n_outputs == 1:
            return float(values.sum()) + self.constant
        return np.bincount(self.tree_output, values, self.n_outputs) + self.constants

    def predict(self, x: np.ndarray) -> Any:
        """The model's output for one row: a probability for binary models, the class
        probabilities (an array) for multiclass ones."""
        raw = self.raw(x)
        if self.link == "sigmoid":
            return 1.0 / (1.0 + math.exp(-self.sigmoid * raw))
        if self.link == "exp":
            return math.exp(min(raw, EXP_CAP))
        if self.link == "softmax":
            return softmax(raw)
        return raw

    def raw_many(self, x: np.ndarray) -> np.ndarray:
        """Raw scores of a matrix (rows in chunks, to bound memory): (rows,) or (rows, outputs)."""
        x = np.asarray(x, dtype=np.float64)
        multi = self.n_outputs > 1
        out = np.tile(self.constants, (len(x), 1)) if multi else np.full(len(x), self.constant)
        if not len(self.starts):
            return out
        for lo in range(0, len(x), ROWS_PER_CHUNK):
            chunk = x[lo : lo + ROWS_PER_CHUNK]
            go_left = self._go_left(chunk[:, self.feature])
            bits = np.bitwise_and.reduceat(
                np.where(go_left, ALL_ONES, self.mask), self.starts, axis=1
            )
            leaf = np.bitwise_count((bits & (~bits + ONE)) - ONE).astype(np.intp)
            values = self.leaf_value[self.leaf_offset + leaf]
            if not multi:
                out[lo : lo + len(chunk)] += values.sum(axis=1)
                continue
            for j, trees in enumerate(self._by_output):
                out[lo : lo + len(chunk), j] += values[:, trees].sum(axis=1)
        return out

    def predict_many(self, x: np.ndarray) -> np.ndarray:
        raw = self.raw_many(x)
        out: np.ndarray
        if self.link == "sigmoid":
            out = 1.0 / (1.0 + np.exp(-self.sigmoid * raw))
            return out
        if self.link == "exp":
            out = np.exp(np.minimum(raw, EXP_CAP))
            return out
        if self.link == "softmax":
            return softmax(raw)
        return raw

    # -- the compiled scorer's form --------------------------------------------------------
    def scan_form(self) -> dict[str, np.ndarray]:
        """The nodes ordered by feature, then threshold (:mod:`trimtab.models.native`).

        QuickScorer's order: for an input ``x``, the nodes of feature ``f`` whose test
        ``x[f] ≤ t`` fails are exactly a prefix of that feature's nodes, so the scorer ANDs
        masks until the first threshold ``≥ x[f]`` and skips the rest. A feature with NaN- or
        zero-aware nodes is tested node by node when its value is NaN or ~0.

        Unless it would exceed ``TABLE_BYTES_MAX``, each feature's prefixes are also folded in
        advance: for each of its distinct thresholds, the AND of the masks of the nodes up to
        it, one word per tree. A score then costs, per feature, a binary search among its
        thresholds and one AND over the trees' words (contiguous, vectorised by the compiler).
        """
        n = len(self.feature)
        ends = np.append(self.starts[1:], n)
        tree = np.repeat(np.arange(len(self.starts)), ends - self.starts)
        order = np.lexsort((self.threshold, self.feature))
        counts = np.bincount(self.feature, minlength=self.n_features)
        special = np.zeros(self.n_features, dtype=np.uint8)
        special[np.unique(self.feature[self.missing != 0])] = 1
        start = np.concatenate(([0], np.cumsum(counts))).astype(np.intp)
        # per feature, the AND of the masks of every node whose threshold is below each of
        # its distinct thresholds: one row of tree masks per (feature, bin)
        trees = len(self.starts)
        bounds: list[float] = []
        bound_start = [0]
        rows: list[np.ndarray] = []
        row_start: list[int] = []
        sorted_thr, sorted_tree, sorted_mask = (
            self.threshold[order],
            tree[order],
            self.mask[order],
        )
        with_table = n * trees * 8 <= TABLE_BYTES_MAX
        for f in range(self.n_features):
            row_start.append(len(rows))
            lo, hi = int(start[f]), int(start[f + 1])
            if with_table and hi > lo:
                current = np.full(trees, ALL_ONES, dtype=np.uint64)
                i = lo
                while i < hi:
                    value = sorted_thr[i]
                    while i < hi and sorted_thr[i] == value:
                        current[sorted_tree[i]] &= sorted_mask[i]
                        i += 1
                    bounds.append(float(value))
                    rows.append(current.copy())  # x above `value`: these nodes fail
            bound_start.append(len(bounds))
        table = np.array(rows, dtype=np.uint64).reshape(len(rows), trees)
        return {
            "bound_start": np.array(bound_start, dtype=np.int32),
            "bound": np.array(bounds, dtype=np.float64),
            "row_start": np.array(row_start, dtype=np.int32),
            "table": table,
            "feature_start": start.astype(np.int32),
            "feature_special": special,
            "threshold": self.threshold[order],
            "tree": tree[order].astype(np.int32),
            "mask": self.mask[order],
            "missing": self.missing[order].astype(np.uint8),
            "default_left": self.default_left[order].astype(np.uint8),
            "leaf_offset": self.leaf_offset.astype(np.int32),
            "leaf_count": (
                np.append(self.leaf_offset[1:], len(self.leaf_value)) - self.leaf_offset
            ).astype(np.int32),
            "tree_output": self.tree_output.astype(np.int32),
            "leaf_value": self.leaf_value,
            "constants": self.constants,
        }


def softmax(raw: np.ndarray) -> np.ndarray:
    """Class probabilities from raw scores (the last axis), as LightGBM computes them."""
    shifted = np.exp(raw - np.max(raw, axis=-1, keepdims=True))
    out: np.ndarray = shifted / shifted.sum(axis=-1, keepdims=True)
    return out
