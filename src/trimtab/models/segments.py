"""Micro-segments: clusters of readers found in the logs, assigned live on every feature update.

**Fitting** (`trimtab segments fit`, needs the ``models`` extra): rows are visits (or page
views) snapshotted by :mod:`trimtab.models.dataset`, read through the declared columns and
standardised. Three families are tried over the declared range of ``k``:

* Gaussian mixtures (full covariance), ``k`` chosen by the lowest BIC;
* MiniBatch k-means, ``k`` chosen by the highest silhouette;
* HDBSCAN (density-based; it finds ``k`` itself and leaves noise unassigned).

``algorithm: auto`` keeps the family whose pick has the best silhouette on the same sample.

**Serving** needs numpy only. Every family is served as Gaussian components in the
standardised space: the mixture's own, k-means centroids with one shared spherical variance
(so the most likely component *is* the nearest centroid), HDBSCAN clusters with their members'
mean and spread. For a user with vector ``x`` the log-density of component ``k`` is
``log w_k + log|U_k| − ½‖(x − μ_k) U_k‖²`` with ``U_k`` the Cholesky factor of its precision;
the standardisation is folded into ``U``, so one ``x @ A`` and a softmax give ``segment`` (the
most likely component) and ``segment_p`` (its posterior).

**Stable ids**: the first fit numbers segments ``s1, s2, …`` by size. A refit assigns the new
rows with both the previous version and the new clustering, matches the clusters by their
overlap (Jaccard, Hungarian assignment) and keeps the old id of each match; names given in the
config (``segments.names``) therefore stay attached to the same readers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trimtab.models.columns import ColumnError, Columns, parse_columns

if TYPE_CHECKING:
    from trimtab.config import SiteConfig
    from trimtab.models.registry import VersionInfo

MATCH_MIN_JACCARD = 0.2
SILHOUETTE_SAMPLE = 5000


class SegmentsError(ValueError):
    """Segments that cannot be fitted or served: ``segments: FIELD: reason``."""

    def __init__(self, where: str, reason: str) -> None:
        self.where, self.reason = where, reason
        super().__init__(f"segments: {where}: {reason}")


class SegmentModel:
    """Live assignment: attributes → (segment id, posterior). Numpy only."""

    def __init__(
        self,
        columns: Columns,
        ids: Sequence[str],
        mean: np.ndarray,
        scale: np.ndarray,
        means: np.ndarray,
        prec_chol: np.ndarray,
        weights: np.ndarray,
        version: int = 0,
        algorithm: str = "",
    ) -> None:
        self.columns = columns
        self.ids = [str(i) for i in ids]
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.means = np.asarray(means, dtype=np.float64)
        self.prec_chol = np.asarray(prec_chol, dtype=np.float64)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.version, self.algorithm = version, algorithm
        k, d = self.means.shape if self.means.ndim == 2 else (0, 0)
        if (
            k < 1
            or len(self.ids) != k
            or self.prec_chol.shape != (k, d, d)
            or self.weights.shape != (k,)
            or self.mean.shape != (d,)
            or self.scale.shape != (d,)
            or d != len(columns)
        ):
            raise SegmentsError("model file", "array shapes do not agree with each other")
        arrays = (self.mean, self.scale, self.means, self.prec_chol, self.weights)
        if not all(np.all(np.isfinite(a)) for a in arrays) or np.any(self.scale <= 0):
            raise SegmentsError("model file", "non-finite or non-positive parameters")
        if np.any(self.weights <= 0):
            raise SegmentsError("model file", "component weights must be positive")
        self.k, self.d = k, d
        # fold the standardisation: (z − μ_k) U_k = x A_k − c_k
        a = self.prec_chol / self.scale[None, :, None]  # (k, d, d)
        self._a = np.ascontiguousarray(a.transpose(1, 0, 2).reshape(d, k * d))
        shift = (self.mean / self.scale)[None, :] + self.means  # (k, d)
        self._c = np.einsum("kd,kde->ke", shift, self.prec_chol).reshape(k * d)
        log_det = np.log(np.abs(np.diagonal(self.prec_chol, axis1=1, axis2=2))).sum(axis=1)
        self._bias = np.log(self.weights / self.weights.sum()) + log_det
        # One user: −½‖x A_k − c_k‖² = −½ xᵀ(A_k A_kᵀ)x + x·(A_k c_k) − ½‖c_k‖², so
        # [vec(x xᵀ), x] @ W + b is one matmul for every component.
        a_k = self._a.reshape(d, k, d).transpose(1, 0, 2)  # (k, d, d)
        c_k = self._c.reshape(k, d)
        quad = -0.5 * np.einsum("kil,kjl->ijk", a_k, a_k).reshape(d * d, k)
        lin = np.einsum("kij,kj->ik", a_k, c_k)
        self._w = np.ascontiguousarray(np.vstack([quad, lin]))
        self._b = self._bias - 0.5 * (c_k * c_k).sum(axis=1)
        from trimtab.models.native import compile_mixture

        self.compiled = compile_mixture(columns, k, d, self._a, self._c, self._bias)

    def log_density(self, x: np.ndarray) -> np.ndarray:
        y = x @ self._a
        y -= self._c
        y *= y
        density: np.ndarray = self._bias - 0.5 * y.reshape(self.k, self.d).sum(axis=1)
        return density

    def posterior(self, x: np.ndarray) -> np.ndarray:
        logp = self.log_density(x)
        logp -= logp.max()
        p = np.exp(logp)
        posterior: np.ndarray = p / p.sum()
        return posterior

    def assign(self, attrs: Mapping[str, Any]) -> tuple[str, float] | None:
        """(segment id, posterior) of one user, or None when an input is not finite."""
        if self.compiled is not None:
            found = self.compiled.score(attrs)
            return None if found is None else (self.ids[found[0]], found[1])
        return self.assign_numpy(attrs)

    def assign_numpy(self, attrs: Mapping[str, Any]) -> tuple[str, float] | None:
        """:meth:`assign` without the compiled scorer (the reference it is tested against)."""
        values = self.columns.vector(attrs)
        total = sum(values)
        if total - total != 0.0:
            return None
        x = np.array(values)
        logp = (np.concatenate((np.outer(x, x).ravel(), x)) @ self._w + self._b).tolist()
        best = max(range(self.k), key=logp.__getitem__)
        top = logp[best]
        # posterior of the best: 1 / Σ exp(logp_j − logp_best)
        return self.ids[best], 1.0 / sum(math.exp(v - top) for v in logp)

    def assign_many(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Component indices and posteriors of a matrix of raw vectors."""
        y = np.asarray(x, dtype=np.float64) @ self._a - self._c
        logp = self._bias[None, :] - 0.5 * (y * y).reshape(len(x), self.k, self.d).sum(axis=2)
        best = logp.argmax(axis=1)
        shifted = np.exp(logp - logp[np.arange(len(x)), best][:, None])
        return best, 1.0 / shifted.sum(axis=1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "ids": np.array(self.ids),
            "mean": self.mean,
            "scale": self.scale,
            "means": self.means,
            "prec_chol": self.prec_chol,
            "weights": self.weights,
        }

    @classmethod
    def from_file(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> SegmentModel:
        try:
            columns = Columns.from_description(meta["columns"])
            return cls(
                columns,
                [str(i) for i in arrays["ids"]],
                arrays["mean"],
                arrays["scale"],
                arrays["means"],
                arrays["prec_chol"],
                arrays["weights"],
                int(meta.get("version", 0)),
                str(meta.get("kind", "")),
            )
        except KeyError as exc:
            raise SegmentsError("model file", f"missing {exc.args[0]!r}") from None
        except ColumnError as exc:
            raise SegmentsError("model file", str(exc)) from None


# -- fitting ---------------------------------------------------------------------------------
@dataclass
class Candidate:
    algorithm: str
    k: int
    criterion: str
    value: float
    silhouette: float = float("nan")
    noise: float = 0.0
    labels: np.ndarray | None = None
    # every family is served as Gaussian components: means, precision factors U, weights
    components: tuple[np.ndarray, np.ndarray, np.ndarray] = field(kw_only=True)


@dataclass
class SegmentFit:
    model: SegmentModel
    candidates: list[Candidate]
    chosen: Candidate
    report: dict[str, Any]
    rows: int
    x: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))
    users: list[str] = field(default_factory=list)
    labels: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    matched: dict[str, str] = field(default_factory=dict)  # new id -> how it was matched


def _silhouette(z: np.ndarray, labels: np.ndarray, seed: int) -> float:
    from sklearn.metrics import silhouette_score

    keep = labels >= 0
    if len(np.unique(labels[keep])) < 2:
        return float("nan")
    z, labels = z[keep], labels[keep]
    size = min(SILHOUETTE_SAMPLE, len(z))
    return float(silhouette_score(z, labels, sample_size=size, random_state=seed))


def _spherical(
    z: np.ndarray, labels: np.ndarray, k: int, shared: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Component means, precision factors and weights from hard labels."""
    d = z.shape[1]
    means = np.array([z[labels == j].mean(axis=0) for j in range(k)])
    weights = np.array([(labels == j).mean() for j in range(k)])
    if shared:
        sq = ((z - means[labels]) ** 2).sum() / max(1, len(z) * d)
        variances = np.full(k, max(sq, 1e-6))
    else:
        variances = np.array(
            [max(((z[labels == j] - means[j]) ** 2).mean(), 1e-6) for j in range(k)]
        )
    prec = np.array([np.eye(d) / math.sqrt(v) for v in variances])
    return means, prec, weights


def fit_candidates(
    z: np.ndarray,
    algorithm: str,
    k_range: tuple[int, int],
    seed: int,
    progress: Callable[[str], None] | None = None,
) -> list[Candidate]:
    """Every family's pick (or just the asked one) on standardised rows ``z``."""
    from sklearn.cluster import HDBSCAN, MiniBatchKMeans
    from sklearn.mixture import GaussianMixture

    lo, hi = k_range
    hi = min(hi, max(lo, len(z) // 10))
    out: list[Candidate] = []
    if algorithm in ("auto", "gmm"):
        best = None
        for k in range(lo, hi + 1):
            if progress:
                progress(f"Gaussian mixture, k={k}")
            gmm = GaussianMixture(
                k, covariance_type="full", reg_covar=0.1, n_init=1, random_state=seed
            ).fit(z)
            bic = float(gmm.bic(z))
            if best is None or bic < best[0]:
                best = (bic, k, gmm)
        assert best is not None
        bic, k, gmm = best
        labels = gmm.predict(z)
        out.append(
            Candidate(
                "gmm", k, "BIC", bic, _silhouette(z, labels, seed), 0.0, labels,
                components=(gmm.means_, gmm.precisions_cholesky_, gmm.weights_),
            )
        )  # fmt: skip
    if algorithm in ("auto", "kmeans"):
        best_km = None
        for k in range(lo, hi + 1):
            if progress:
                progress(f"MiniBatch k-means, k={k}")
            km = MiniBatchKMeans(k, n_init=10, random_state=seed, batch_size=2048).fit(z)
            sil = _silhouette(z, km.labels_, seed)
            if best_km is None or sil > best_km[0]:
                best_km = (sil, k, km)
        assert best_km is not None
        sil, k, km = best_km
        labels = km.predict(z)
        means, prec, _ = _spherical(z, labels, k, shared=True)
        means = km.cluster_centers_
        out.append(
            Candidate("kmeans", k, "silhouette", sil, sil, 0.0, labels,
                      components=(means, prec, np.full(k, 1.0 / k)))
        )  # fmt: skip
    if algorithm in ("auto", "hdbscan"):
        if progress:
            progress("HDBSCAN")
        sample = z
        if len(z) > 20_000:  # HDBSCAN is quadratic-ish: cluster a sample
            rng = np.random.default_rng(seed)
            sample = z[rng.choice(len(z), 20_000, replace=False)]
        min_size = max(15, len(sample) // 50)
        hdb = HDBSCAN(min_cluster_size=min_size, min_samples=10, copy=True).fit(sample)
        found = [j for j in sorted(set(hdb.labels_)) if j >= 0]
        if len(found) >= 2:
            remap = {j: i for i, j in enumerate(found)}
            labels = np.array([remap.get(j, -1) for j in hdb.labels_])
            kept = labels >= 0
            means, prec, weights = _spherical(sample[kept], labels[kept], len(found), False)
            sil = _silhouette(sample, labels, seed)
            cand = Candidate("hdbscan", len(found), "silhouette", sil, sil, float((~kept).mean()),
                             None, components=(means, prec, weights))  # fmt: skip
            out.append(cand)
        elif algorithm == "hdbscan":
            raise SegmentsError("algorithm", f"HDBSCAN found {len(found)} cluster(s) in the rows")
    return out


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    return (x - mean) / scale, mean, scale


def _match_ids(
    previous: SegmentModel | None,
    new_labels: np.ndarray,
    rows_attrs: Sequence[Mapping[str, Any]],
    k: int,
) -> tuple[list[str], dict[str, str]]:
    """Ids for the new components: inherited from ``previous`` by overlap, else fresh."""
    sizes = np.bincount(new_labels[new_labels >= 0], minlength=k)
    if previous is None:
        order = np.argsort(-sizes, kind="stable")
        ids = [""] * k
        for rank, j in enumerate(order, 1):
            ids[int(j)] = f"s{rank}"
        return ids, {i: "new" for i in ids}
    from scipy.optimize import linear_sum_assignment

    old_idx, _ = previous.assign_many(previous.columns.matrix(rows_attrs))
    m = len(previous.ids)
    inter = np.zeros((m, k))
    np.add.at(inter, (old_idx[new_labels >= 0], new_labels[new_labels >= 0]), 1.0)
    old_sizes = np.bincount(old_idx[new_labels >= 0], minlength=m)
    union = old_sizes[:, None] + sizes[None, :] - inter
    jaccard = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    rows, cols = linear_sum_assignment(-jaccard)
    ids = [""] * k
    how: dict[str, str] = {}
    for r, c in zip(rows, cols, strict=True):
        if jaccard[r, c] >= MATCH_MIN_JACCARD:
            ids[c] = previous.ids[r]
            how[previous.ids[r]] = f"kept (overlap {jaccard[r, c]:.2f})"
    used = {int(i[1:]) for i in previous.ids if i[1:].isdigit()}
    next_id = max(used, default=0) + 1
    for j in np.argsort(-sizes, kind="stable"):
        if not ids[j]:
            ids[j] = f"s{next_id}"
            how[ids[j]] = "new"
            next_id += 1
    return ids, how


def fit(
    config: Any,
    data_dir: str | Path,
    *,
    algorithm: str | None = None,
    k_range: tuple[int, int] | None = None,
    previous: SegmentModel | None = None,
    since_ms: float | None = None,
    until_ms: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> SegmentFit:
    """Fit the declared segmentation on the logs in ``data_dir``."""
    from trimtab.models import dataset as datasets
    from trimtab.models.spec import TargetDecl, models_of

    decl = models_of(config).segments
    if decl is None:
        raise SegmentsError("$.segments", "the config declares no segments")
    algorithm = algorithm or decl.algorithm
    k_range = k_range or decl.k
    columns = parse_columns(decl.features)
    if progress:
        progress("replaying the event log")
    data = datasets.build(
        data_dir,
        config,
        at=decl.at,
        target=TargetDecl(event=decl.conversion, within="session"),
        keys={c.path[0] for c in columns},
        since_ms=since_ms,
        until_ms=until_ms,
        past=True,
    )
    rows = data.rows
    if len(rows) < 10 * k_range[0]:
        raise SegmentsError(
            "window",
            f"{len(rows)} {decl.at} rows are too few to find {k_range[0]}+ segments (need "
            f"≥ {10 * k_range[0]}; {data.events:,} events in the logs)"
            + ("; widen --since/--until" if since_ms or until_ms else ""),
        )
    cols = Columns.learn(columns, (r.attrs for r in rows))
    attrs = [r.attrs for r in rows]
    x = cols.matrix(attrs)
    bad = ~np.isfinite(x)
    if bad.any():
        j = int(np.flatnonzero(bad.any(axis=0))[0])
        first = rows[int(np.flatnonzero(bad[:, j])[0])]
        raise SegmentsError(
            f"features[{cols.names[j]}]",
            f"{int(bad[:, j].sum())} rows hold NaN or infinite values (first: user "
            f"{first.user_id} at ts {first.ts:.0f}); fix the source or drop the column",
        )
    z, mean, scale = _standardise(x)
    candidates = fit_candidates(z, algorithm, k_range, decl.seed, progress)
    if not candidates:
        raise SegmentsError("algorithm", "no clustering found two or more segments")
    chosen = max(
        candidates, key=lambda c: -math.inf if c.silhouette != c.silhouette else c.silhouette
    )
    if algorithm != "auto":
        chosen = candidates[0]
    means, prec, weights = chosen.components
    provisional = SegmentModel(cols, [str(i) for i in range(chosen.k)], mean, scale, means, prec,
                               weights, algorithm=chosen.algorithm)  # fmt: skip
    labels, _ = provisional.assign_many(x)
    ids, matched = _match_ids(previous, labels, attrs, chosen.k)
    model = SegmentModel(cols, ids, mean, scale, means, prec, weights, algorithm=chosen.algorithm)
    report = build_report(model, x, labels, np.array([r.label for r in rows]), decl, config)
    return SegmentFit(model, candidates, chosen, report, len(rows), x,
                      [r.user_id for r in rows], labels, matched)  # fmt: skip


def _wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def build_report(
    model: SegmentModel,
    x: np.ndarray,
    labels: np.ndarray,
    converted: np.ndarray,
    decl: Any,
    config: Any,
) -> dict[str, Any]:
    """Size, defining features and conversion per segment; a 2-D projection for the plot."""
    names = dict(decl.names)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std < 1e-12] = 1.0
    features = model.columns.names
    segments = []
    for j in np.argsort([int(i[1:]) if i[1:].isdigit() else 0 for i in model.ids]):
        mask = labels == j
        n = int(mask.sum())
        seg_id = model.ids[j]
        seg_mean = x[mask].mean(axis=0) if n else mean
        z = (seg_mean - mean) / std
        top = np.argsort(-np.abs(z))[:3]
        conv = float(converted[mask].mean()) if n else float("nan")
        segments.append(
            {
                "id": seg_id,
                "name": names.get(seg_id, ""),
                "label": f"{seg_id} {names[seg_id]}" if seg_id in names else seg_id,
                "size": n,
                "share": n / len(x),
                "conversion": conv,
                "conversion_ci": list(_wilson(float(converted[mask].sum()), n)),
                "z": [float(v) for v in z],
                "defining": [
                    {
                        "feature": features[i],
                        "z": float(z[i]),
                        "mean": float(seg_mean[i]),
                        "overall": float(mean[i]),
                    }
                    for i in top
                ],
            }
        )
    rng = np.random.default_rng(0)
    sample = rng.choice(len(x), min(3000, len(x)), replace=False)
    zs = (x[sample] - mean) / std
    _, _, vt = np.linalg.svd(zs - zs.mean(axis=0), full_matrices=False)
    points = zs @ vt[:2].T if vt.shape[0] >= 2 else np.c_[zs[:, 0], np.zeros(len(zs))]
    label_of = {model.ids.index(s["id"]): s["label"] for s in segments}
    return {
        "features": features,
        "segments": segments,
        "rows": len(x),
        "overall_conversion": float(converted.mean()) if len(converted) else float("nan"),
        "conversion_event": decl.conversion,
        "algorithm": model.algorithm,
        "projection": {
            "points": points.tolist(),
            "labels": [label_of[int(j)] for j in labels[sample]],
        },
    }


def register(
    fit_result: SegmentFit, config: SiteConfig, models_dir: str | Path, stage: str = "shadow"
) -> tuple[VersionInfo, list[Path]]:
    """Store a fit as a new version of ``segments`` with its report and plots."""
    from trimtab.models.plots import segment_plots
    from trimtab.models.registry import Registry
    from trimtab.models.train import config_hash

    registry = Registry(models_dir)
    version = registry.next_version("segments")
    folder = registry.folder("segments", version)
    plots = segment_plots(folder, fit_result.report)
    chosen = fit_result.chosen
    report = {k: v for k, v in fit_result.report.items() if k != "projection"}
    meta = {
        "columns": fit_result.model.columns.describe(),
        "config_hash": config_hash(config, "segments"),
        "report": report,
        "candidates": [
            {"algorithm": c.algorithm, "k": c.k, "criterion": c.criterion, "value": c.value,
             "silhouette": c.silhouette, "noise": c.noise}
            for c in fit_result.candidates
        ],
        "matched": fit_result.matched,
    }  # fmt: skip
    info = registry.add(
        "segments",
        chosen.algorithm,
        fit_result.model.to_arrays(),
        meta,
        stage=stage,
        version=version,
        config_hash=meta["config_hash"],
        rows={"rows": fit_result.rows},
        metrics={"k": chosen.k, chosen.criterion: chosen.value, "silhouette": chosen.silhouette},
        plots=[str(p.relative_to(registry.root)) for p in plots],
    )
    fit_result.model.version = info.version
    return info, plots
