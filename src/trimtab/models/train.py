"""`trimtab train`: fit a declared model on the logs, check it, compare it, register it.

1. Rows come from :mod:`trimtab.models.dataset` (point in time, censored windows left out).
2. **Time-based holdout**: the latest ``holdout`` share of the observation times is the test
   set; nothing from it is seen in training (not even the one-hot levels).
3. The declared algorithm (LightGBM, a PyTorch MLP or the logistic baseline) and the baseline
   are fitted on the training rows. Counts use Poisson losses throughout.
4. The model is compiled for serving and its compiled outputs are compared with the library's
   own ``predict`` on the test rows: trees and linear models must agree to 1e-9, the MLP to
   1e-6, or the version is refused.
5. Test metrics (AUC with a bootstrap interval, PR AUC, log loss, Brier and a calibration plot;
   MAE and RMSE for counts; for a ``category`` target — several classes, LightGBM's softmax,
   the MLP's softmax, a multinomial logistic baseline — multiclass log loss, accuracy and macro
   one-vs-rest AUC with intervals, and the top class's calibration), each next to the
   baseline's, and the version is registered with its data window, metrics and config hash —
   as ``shadow`` unless asked otherwise.

Bad input is refused with :class:`TrainError` naming the model, the field and the reason: an
empty window, a target with one class, non-finite feature values.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from trimtab.models import dataset as datasets
from trimtab.models.columns import Columns, parse_columns
from trimtab.models.metrics import classifier_metrics, multiclass_metrics, regression_metrics
from trimtab.models.registry import Registry, VersionInfo
from trimtab.models.scorer import Scorer
from trimtab.models.spec import ModelDecl, models_of

if TYPE_CHECKING:
    from trimtab.models.dataset import Row
    from trimtab.models.linear import Linear
    from trimtab.models.mlp import MLP
    from trimtab.models.trees import TreeEnsemble

TOLERANCE = {"lightgbm": 1e-9, "logistic": 1e-9, "mlp": 1e-6}
Progress = Callable[[str, int, int], None]


class TrainError(ValueError):
    """Training refused: ``model NAME: FIELD: reason``."""

    def __init__(self, model: str, where: str, reason: str) -> None:
        self.model, self.where, self.reason = model, where, reason
        super().__init__(f"model {model}: {where}: {reason}")


@dataclass
class TrainResult:
    name: str
    algorithm: str
    target: str
    columns: list[str]
    rows_train: int
    rows_test: int
    window: dict[str, float]
    metrics: dict[str, Any]
    baseline: dict[str, Any]
    compiled_max_diff: float
    seconds: dict[str, float]
    censored: int
    events: int
    version: VersionInfo | None = None
    plots: list[str] = field(default_factory=list)
    scorer: Scorer | None = None
    baseline_scorer: Scorer | None = None
    native: Any = None
    test: tuple[np.ndarray, np.ndarray] | None = None


def config_hash(config: Any, name: str) -> str:
    """What a version was trained from: its declaration and every feature declaration."""
    decl = config.models[name] if name != "segments" else config.segments
    payload = {
        "decl": decl,
        "features": {k: msgspec.to_builtins(v) for k, v in sorted(config.features.items())},
    }
    if name == "segments":
        payload["decl"] = {k: v for k, v in dict(decl).items() if k != "names"}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _declaration(config: Any, name: str) -> ModelDecl:
    declared = models_of(config).models
    if name not in declared:
        known = ", ".join(declared) or "none"
        raise TrainError(name, "$.models", f"not declared in the config (declared: {known})")
    return declared[name]


def train(
    config: Any,
    name: str,
    data_dir: str | Path,
    *,
    algorithm: str | None = None,
    since_ms: float | None = None,
    until_ms: float | None = None,
    stage: str | None = "shadow",
    models_dir: str | Path | None = None,
    seed: int = 0,
    n_boot: int = 500,
    progress: Progress | None = None,
) -> TrainResult:
    """Train model ``name`` of ``config`` on the logs in ``data_dir`` (see the module doc).

    ``stage=None`` trains and reports without registering.
    """
    decl = _declaration(config, name)
    algorithm = algorithm or decl.algorithm
    if algorithm not in TOLERANCE:
        raise TrainError(name, "algorithm", f"{algorithm!r} is not lightgbm, mlp or logistic")
    kind = decl.target.type
    columns = parse_columns(decl.features)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    data = datasets.build(
        data_dir,
        config,
        at=decl.at,
        target=decl.target,
        after_s=decl.after_s,
        slot=decl.slot,
        keys={c.path[0] for c in columns},
        since_ms=since_ms,
        until_ms=until_ms,
        progress=(lambda done, total: progress("replaying the event log", done, total))
        if progress
        else None,
    )
    timings["dataset"] = time.perf_counter() - started
    rows = data.rows
    if not rows:
        raise TrainError(
            name,
            "window",
            f"no {decl.at} observations with a complete outcome window in the logs "
            f"({data.events:,} events, {data.censored:,} observations censored)"
            + ("; widen --since/--until" if since_ms or until_ms else ""),
        )
    times = np.array([r.ts for r in rows])
    cut = float(np.quantile(times, 1.0 - decl.holdout))
    train_rows = [r for r in rows if r.ts < cut]
    test_rows = [r for r in rows if r.ts >= cut]
    if len(train_rows) < 10 or len(test_rows) < 10:
        raise TrainError(
            name,
            "window",
            f"{len(rows)} rows are too few to train and test on (need ≥ 10 on each side of the "
            f"time split at holdout {decl.holdout:g})",
        )
    cols = Columns.learn(columns, (r.attrs for r in train_rows))
    x_train = cols.matrix([r.attrs for r in train_rows])
    x_test = cols.matrix([r.attrs for r in test_rows])
    target_field = f"target ({decl.target.event}, within {decl.target.within})"
    class_names: list[str] = []
    unseen = 0
    if kind == "category":  # class names → indices 0…K−1, the classes seen in training
        class_names = sorted({str(r.label) for r in train_rows})
        if len(class_names) < 2:
            raise TrainError(
                name,
                target_field,
                f"only one class in the training rows ({len(train_rows):,} rows, all "
                f"{class_names[0] if class_names else '?'!r}): nothing to learn or judge",
            )
        index = {c: i for i, c in enumerate(class_names)}
        known = [i for i, r in enumerate(test_rows) if str(r.label) in index]
        unseen = len(test_rows) - len(known)
        if len(known) < 10:
            raise TrainError(
                name, "window", f"{len(known)} holdout rows name a class seen in training"
            )
        test_rows = [test_rows[i] for i in known]
        x_test = x_test[known]
        y_train = np.array([index[str(r.label)] for r in train_rows])
        y_test = np.array([index[str(r.label)] for r in test_rows])
    else:
        y_train = np.array([r.label for r in train_rows])
        y_test = np.array([r.label for r in test_rows])
    _check_finite(name, cols, x_train, train_rows)
    _check_finite(name, cols, x_test, test_rows)
    fit_kind = "multiclass" if kind == "category" else kind
    if kind == "binary":
        for part, y in (("training", y_train), ("holdout", y_test)):
            classes = np.unique(y)
            if len(classes) < 2:
                raise TrainError(
                    name,
                    target_field,
                    f"only one class in the {part} rows ({len(y):,} rows, all "
                    f"{int(classes[0]) if len(classes) else '?'}): nothing to learn or judge",
                )
    elif kind == "count" and float(np.ptp(y_train)) == 0.0:
        raise TrainError(name, target_field, f"the count is {y_train[0]:g} in every training row")
    started = time.perf_counter()
    baseline_model, baseline_pipe = _fit_linear(x_train, y_train, fit_kind)
    timings["baseline"] = time.perf_counter() - started
    started = time.perf_counter()
    native_files: dict[str, bytes] = {}
    params = _params_for(decl, algorithm)
    model: TreeEnsemble | MLP | Linear
    if algorithm == "lightgbm":
        model, native, reference = _fit_lightgbm(
            name, x_train, y_train, x_test, fit_kind, params, seed
        )
        native_files["native.lgb.txt"] = native.booster_.model_to_string().encode()
    elif algorithm == "mlp":
        model, native, reference = _fit_mlp(name, x_train, y_train, x_test, fit_kind, params, seed)
        native_files["native.pt"] = _torch_bytes(native)
    else:
        model, native = baseline_model, baseline_pipe
        from trimtab.models.linear import library_predict

        reference = library_predict(baseline_pipe, x_test, fit_kind)
    timings["fit"] = time.perf_counter() - started
    compiled = model.predict_many(x_test)
    single = np.array([model.predict(x) for x in x_test[:200]])
    diff = float(
        max(np.max(np.abs(compiled - reference)), np.max(np.abs(single - reference[:200])))
    )
    from trimtab.models.native import compile_model

    served = compile_model(cols, model)  # what live scoring runs, when it can be compiled
    if served is not None:
        walked = np.array([served.predict(x.tolist()) for x in x_test[:200]])
        diff = max(diff, float(np.max(np.abs(walked - reference[:200]))))
    if not diff <= TOLERANCE[algorithm]:
        raise TrainError(
            name,
            "compiled model",
            f"serving differs from {algorithm}'s own predict by {diff:.3g} "
            f"(> {TOLERANCE[algorithm]:g}); not registered",
        )
    from trimtab.models.linear import library_predict

    base_pred = library_predict(baseline_pipe, x_test, fit_kind)
    if kind == "category":
        metrics = multiclass_metrics(y_test, compiled, class_names, n_boot=n_boot, seed=seed)
        baseline = multiclass_metrics(y_test, base_pred, class_names, n_boot=n_boot, seed=seed)
    elif kind == "binary":
        metrics = classifier_metrics(y_test, compiled, n_boot=n_boot, seed=seed)
        baseline = classifier_metrics(y_test, base_pred, n_boot=n_boot, seed=seed)
    else:
        metrics = regression_metrics(y_test, compiled, n_boot=n_boot, seed=seed)
        baseline = regression_metrics(y_test, base_pred, n_boot=n_boot, seed=seed)
    window = {
        "data_from": data.first_ms,
        "data_to": data.last_ms,
        "train_from": float(times.min()),
        "train_to": cut,
        "test_from": cut,
        "test_to": float(times.max()),
    }
    meta = {
        "columns": cols.describe(),
        "target": kind,
        "target_decl": msgspec.to_builtins(decl.target),
        "at": decl.at,
        "algorithm": algorithm,
        "config_hash": config_hash(config, name),
        **({"classes": class_names} if class_names else {}),
    }
    scorer = Scorer(name, 0, algorithm, cols, model, kind, meta)
    baseline_scorer = Scorer(name, 0, "logistic", cols, baseline_model, kind, meta)
    result = TrainResult(
        name=name,
        algorithm=algorithm,
        target=kind,
        columns=cols.names,
        rows_train=len(train_rows),
        rows_test=len(test_rows),
        window=window,
        metrics=metrics,
        baseline=baseline,
        compiled_max_diff=diff,
        seconds=timings,
        censored=data.censored,
        events=data.events,
        scorer=scorer,
        baseline_scorer=baseline_scorer,
        native=native,
        test=(x_test, y_test),
    )
    if stage is None:
        return result
    registry = Registry(models_dir or Path(data_dir) / "models")
    version = registry.next_version(name)
    folder = registry.folder(name, version)
    plots = [str(_plot(folder, f"{name} v{version}", algorithm, kind, y_test, compiled, base_pred))]
    result.plots = plots
    result.version = registry.add(
        name,
        algorithm,
        model.to_arrays(),
        meta,
        stage=stage,
        files=native_files,
        version=version,
        config_hash=meta["config_hash"],
        window=window,
        rows={
            "train": len(train_rows),
            "test": len(test_rows),
            "censored": data.censored,
            **({"test_unseen_class": unseen} if kind == "category" else {}),
        },
        metrics=_summary(metrics),
        baseline=_summary(baseline),
        plots=[str(Path(p).relative_to(registry.root)) for p in plots],
    )
    scorer.version = result.version.version
    return result


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "calibration"}


def _check_finite(name: str, cols: Columns, x: np.ndarray, rows: list[Row]) -> None:
    bad = ~np.isfinite(x)
    if not bad.any():
        return
    column = int(np.flatnonzero(bad.any(axis=0))[0])
    first = int(np.flatnonzero(bad[:, column])[0])
    row = rows[first]
    raise TrainError(
        name,
        f"features[{cols.names[column]}]",
        f"{int(bad[:, column].sum()):,} rows hold NaN or infinite values (first: user "
        f"{row.user_id} at ts {row.ts:.0f}); fix the source or drop the column",
    )


def _fit_linear(x: np.ndarray, y: np.ndarray, kind: str) -> tuple[Linear, Any]:
    """The baseline and its scikit-learn pipeline (untyped)."""
    from trimtab.models.linear import fit_linear

    return fit_linear(x, y, kind)


LIGHTGBM_DEFAULTS: dict[str, Any] = {
    "n_estimators": 200,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 20,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.9,
    "reg_lambda": 1.0,
    "verbose": -1,
    "n_jobs": 2,
    "deterministic": True,
    "force_row_wise": True,
}


def _params_for(decl: ModelDecl, algorithm: str) -> dict[str, Any]:
    """``params`` of the declared algorithm, or ``params.<algorithm>`` when given per algorithm."""
    params = dict(decl.params)
    if set(params) & set(TOLERANCE):
        return dict(params.get(algorithm) or {})
    return params if algorithm == decl.algorithm else {}


def _fit_lightgbm(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    kind: str,
    params: dict[str, Any],
    seed: int,
) -> tuple[TreeEnsemble, Any, np.ndarray]:
    """The compiled trees, LightGBM's estimator (untyped) and its own test predictions."""
    import lightgbm as lgb

    merged = {**LIGHTGBM_DEFAULTS, "random_state": seed, **params}
    if int(merged.get("num_leaves", 31)) > 64:
        raise TrainError(name, "params.num_leaves", "live scoring takes ≤ 64 leaves per tree")
    if kind in ("binary", "multiclass"):  # several classes: LightGBM's softmax objective
        estimator = lgb.LGBMClassifier(**merged)
    else:
        estimator = lgb.LGBMRegressor(objective="poisson", **merged)
    estimator.fit(x, y)
    from trimtab.models.trees import TreeEnsemble

    compiled = TreeEnsemble.from_lightgbm(estimator)
    reference = np.asarray(estimator.booster_.predict(x_test))  # an array for dense inputs
    return compiled, estimator, reference


def _fit_mlp(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    kind: str,
    params: dict[str, Any],
    seed: int,
) -> tuple[MLP, Any, np.ndarray]:
    """The served MLP, the torch module (untyped) and its own test predictions."""
    from trimtab.models.mlp import torch_predict, train_mlp

    allowed = {"hidden", "epochs", "batch_size", "lr", "weight_decay", "patience"}
    unknown = set(params) - allowed
    if unknown:
        raise TrainError(
            name, "params", f"unknown MLP parameters {sorted(unknown)} (known: {sorted(allowed)})"
        )
    served, net = train_mlp(x, y, kind, seed=seed, **params)
    return served, net, torch_predict(net, x_test, kind)


def _torch_bytes(net: Any) -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    return buffer.getvalue()


def _plot(
    folder: Path,
    title: str,
    algorithm: str,
    kind: str,
    y: np.ndarray,
    compiled: np.ndarray,
    base_pred: np.ndarray,
) -> Path:
    from trimtab.models.metrics import auc, calibration
    from trimtab.models.plots import calibration_plot

    if kind == "category":  # the most likely class: its probability vs how often it was right
        from trimtab.models.metrics import accuracy

        rows = np.arange(len(y))
        top, base_top = np.argmax(compiled, axis=1), np.argmax(base_pred, axis=1)
        title += (
            f": top class on the holdout\n{algorithm} accuracy {accuracy(y, compiled):.3f}"
            f" · logistic baseline {accuracy(y, base_pred):.3f}"
        )
        return calibration_plot(
            Path(folder) / "calibration.png",
            title,
            {
                algorithm: calibration((top == y).astype(float), compiled[rows, top]),
                "logistic baseline": calibration(
                    (base_top == y).astype(float), base_pred[rows, base_top]
                ),
            },
            {algorithm: compiled[rows, top], "baseline": base_pred[rows, base_top]},
        )
    if kind == "binary":
        title += (
            f": calibration on the holdout\n{algorithm} AUC {auc(y, compiled):.3f}"
            f" · logistic baseline {auc(y, base_pred):.3f}"
        )
    else:
        mae = float(np.mean(np.abs(y - compiled)))
        title += f": holdout MAE {mae:.3f} · baseline {float(np.mean(np.abs(y - base_pred))):.3f}"
    return calibration_plot(
        Path(folder) / "calibration.png",
        title,
        {algorithm: calibration(y, compiled), "logistic baseline": calibration(y, base_pred)},
        {algorithm: compiled, "baseline": base_pred},
        count=kind != "binary",
    )
