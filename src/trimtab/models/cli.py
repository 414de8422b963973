"""`trimtab train`, `trimtab segments fit|show` and `trimtab models list|promote|rollback`.

The main app registers these (see :func:`register`); training needs the ``models`` extra
(``pip install 'trimtab[models]'``), which is imported only when a command trains.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from trimtab.config import SiteConfig
    from trimtab.models.registry import VersionInfo
    from trimtab.models.train import TrainResult

console = Console()
err = Console(stderr=True, soft_wrap=True)  # an error is one line, whatever the width

ConfigArg = Annotated[Path, typer.Argument(help="Site config file (YAML or TOML).")]
DataDir = Annotated[
    Path | None, typer.Option(help="The data dir with the logs and models (default: config's).")
]
segments_app = typer.Typer(help="Micro-segments: fit them on the logs, show what they are.")
models_app = typer.Typer(help="The model registry: versions, stages, rollback.")


def register(app: typer.Typer, bench_app: typer.Typer | None = None) -> None:
    app.command("train")(train)
    if bench_app is not None:
        bench_app.command("models")(bench_models)
    app.add_typer(segments_app, name="segments")
    app.add_typer(models_app, name="models")


def _load(config: Path) -> SiteConfig:
    from trimtab.config import ConfigError, load_config

    try:
        return load_config(config)
    except ConfigError as exc:
        err.print(f"[bold red]invalid config[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None


def _need_extra() -> None:
    try:
        import lightgbm  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError:
        err.print(
            "[bold red]training needs the models extra[/]: pip install 'trimtab\\[models]' "
            "(scikit-learn, LightGBM, PyTorch CPU); serving does not"
        )
        raise typer.Exit(2) from None


def _time(value: str | None, option: str) -> float | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        err.print(
            f"[bold red]{option}[/]: {value!r} is not a date (2026-11-26 or 2026-11-26T18:00)"
        )
        raise typer.Exit(2) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() * 1000.0


def _when(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000.0, UTC).strftime("%Y-%m-%d %H:%M")


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def train(
    config: ConfigArg,
    name: Annotated[str, typer.Argument(help="The model's name under `models:` in the config.")],
    data_dir: DataDir = None,
    algorithm: Annotated[
        str | None,
        typer.Option(help="lightgbm, mlp or logistic (default: the config's); 'all' compares."),
    ] = None,
    since: Annotated[str | None, typer.Option(help="Observations from this date (UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Observations before this date (UTC).")] = None,
    live: Annotated[bool, typer.Option("--live", help="Serve the new version at once.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train a declared model on the logs; holdout metrics next to the logistic baseline.

    The latest share of the observations (`holdout` in the config, 20 % by default) is the
    test set. The version is registered as shadow (scored and logged, not used by rules) unless
    --live; `trimtab models promote` and `rollback` move it later.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from trimtab.models.train import TrainError
    from trimtab.models.train import train as run_training

    site = _load(config)
    _need_extra()
    folder = data_dir or Path(site.storage.data_dir)
    algorithms = ["lightgbm", "mlp", "logistic"] if algorithm == "all" else [algorithm]
    results = []
    bars = Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        TextColumn("{task.completed:>10,.0f} / {task.total:,.0f}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json,
    )
    tasks: dict[str, Any] = {}

    def progress(step: str, done: int, total: int) -> None:
        if step not in tasks:
            tasks[step] = bars.add_task(step, total=total)
        bars.update(tasks[step], completed=done, total=total)

    try:
        with bars:
            for alg in algorithms:
                results.append(
                    run_training(
                        site,
                        name,
                        folder,
                        algorithm=alg,
                        since_ms=_time(since, "--since"),
                        until_ms=_time(until, "--until"),
                        stage="live" if live and len(algorithms) == 1 else "shadow",
                        progress=progress,
                    )
                )
    except TrainError as exc:
        err.print(f"[bold red]refused[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except (FileNotFoundError, ValueError) as exc:
        err.print(f"[bold red]cannot train[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps([_result_json(r) for r in results], indent=2, default=str))
        return
    for r in results:
        _print_result(r)


def _result_json(r: TrainResult) -> dict[str, Any]:
    return {
        "name": r.name,
        "version": r.version.version if r.version else None,
        "stage": r.version.stage if r.version else None,
        "algorithm": r.algorithm,
        "rows": {"train": r.rows_train, "test": r.rows_test, "censored": r.censored},
        "window": r.window,
        "metrics": {k: v for k, v in r.metrics.items() if k != "calibration"},
        "baseline": {k: v for k, v in r.baseline.items() if k != "calibration"},
        "compiled_max_diff": r.compiled_max_diff,
        "seconds": r.seconds,
        "plots": r.plots,
    }


def _print_result(r: TrainResult) -> None:
    v = r.version
    title = (
        f"{r.name} v{v.version} ({r.algorithm}, {v.stage})" if v else f"{r.name} ({r.algorithm})"
    )
    w = r.window
    console.print(
        f"[bold]{title}[/] — trained on {r.rows_train:,} rows ({_when(w['train_from'])} → "
        f"{_when(w['train_to'])}), tested on the {r.rows_test:,} latest "
        f"({_when(w['test_from'])} → {_when(w['test_to'])}); {r.censored:,} censored"
    )
    table = Table(title="holdout metrics", title_justify="left")
    table.add_column("metric")
    table.add_column(r.algorithm, justify="right")
    table.add_column(
        "Poisson baseline" if r.target == "count" else "logistic baseline", justify="right"
    )
    table.add_column("better", justify="center")
    if r.target == "category":
        rows = [
            ("log loss", "log_loss", False),
            ("accuracy", "accuracy", True),
            ("macro AUC (one vs rest)", "macro_auc", True),
        ]
    elif r.target == "binary":
        rows = [
            ("AUC", "auc", True),
            ("PR AUC", "pr_auc", True),
            ("log loss", "log_loss", False),
            ("Brier", "brier", False),
        ]
    else:
        rows = [("MAE", "mae", False), ("RMSE", "rmse", False)]
    for label, key, higher in rows:
        a, b = r.metrics[key], r.baseline[key]
        if f"{key}_ci" in r.metrics:
            lo, hi = r.metrics[f"{key}_ci"]
            blo, bhi = r.baseline[f"{key}_ci"]
            cell_a = f"{a:.4f} [{lo:.4f}, {hi:.4f}]"
            cell_b = f"{b:.4f} [{blo:.4f}, {bhi:.4f}]"
        else:
            cell_a, cell_b = _fmt(a), _fmt(b)
        better = "model" if (a > b) == higher and a != b else ("baseline" if a != b else "=")
        table.add_row(label, cell_a, cell_b, better)
    console.print(table)
    if r.target == "category":
        shares = r.metrics["share_by_class"]
        console.print(
            "classes (holdout share · AUC one vs rest): "
            + ", ".join(
                f"{c} {shares[c]:.0%} · {_fmt(a, 3)}" for c, a in r.metrics["auc_by_class"].items()
            )
            + f"; always the most frequent class: accuracy {r.metrics['majority_accuracy']:.3f}"
        )
    base = r.metrics.get("base_rate", r.metrics.get("mean", float("nan")))
    console.print(
        f"base rate {_fmt(base)}; compiled = library predict to {r.compiled_max_diff:.1e}; "
        f"{', '.join(f'{k} {s:.1f} s' for k, s in r.seconds.items())}"
    )
    for plot in r.plots:
        console.print(f"calibration plot: {plot}")


# -- segments ---------------------------------------------------------------------------------
@segments_app.command("fit")
def segments_fit(
    config: ConfigArg,
    data_dir: DataDir = None,
    algorithm: Annotated[
        str | None, typer.Option(help="gmm, kmeans, hdbscan or auto (default: the config's).")
    ] = None,
    k: Annotated[str | None, typer.Option(help="Range of k to try, e.g. 2-8.")] = None,
    since: Annotated[str | None, typer.Option(help="Rows from this date (UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Rows before this date (UTC).")] = None,
    live: Annotated[bool, typer.Option("--live", help="Serve the new version at once.")] = False,
) -> None:
    """Cluster readers on the declared features; ids stay those of the live version."""
    from trimtab.models.registry import Registry, RegistryError
    from trimtab.models.segments import SegmentModel, SegmentsError, fit, register

    site = _load(config)
    _need_extra()
    folder = data_dir or Path(site.storage.data_dir)
    k_range = None
    if k is not None:
        lo, _, hi = k.partition("-")
        try:
            k_range = (int(lo), int(hi or lo))
        except ValueError:
            err.print(f"[bold red]--k[/] {k!r} is not a range like 2-8")
            raise typer.Exit(2) from None
    registry = Registry(folder / "models")
    previous = None
    try:
        info = registry.get("segments")
        previous = SegmentModel.from_file(*registry.load(info))
    except (RegistryError, SegmentsError):
        pass
    try:
        with console.status("fitting segments…") as status:
            result = fit(
                site,
                folder,
                algorithm=algorithm,
                k_range=k_range,
                previous=previous,
                since_ms=_time(since, "--since"),
                until_ms=_time(until, "--until"),
                progress=lambda step: status.update(f"fitting segments: {step}"),
            )
            info, plots = register(result, site, registry.root, stage="live" if live else "shadow")
    except SegmentsError as exc:
        err.print(f"[bold red]refused[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except (FileNotFoundError, ValueError) as exc:
        err.print(f"[bold red]cannot fit[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    table = Table(title="candidates", title_justify="left")
    for column in ("algorithm", "k", "criterion", "value", "silhouette", "noise"):
        table.add_column(
            column, justify="left" if column in ("algorithm", "criterion") else "right"
        )
    for c in result.candidates:
        mark = " ←" if c is result.chosen else ""
        table.add_row(
            c.algorithm + mark,
            str(c.k),
            c.criterion,
            _fmt(c.value, 3),
            _fmt(c.silhouette, 3),
            f"{c.noise:.0%}",
        )
    console.print(table)
    console.print(
        f"[bold]segments v{info.version}[/] ({result.chosen.algorithm}, k={result.chosen.k}, "
        f"{info.stage}) from {result.rows:,} rows"
        + (f"; ids matched to v{previous.version}" if previous is not None else "")
    )
    _print_segments(result.report, site)
    for plot in plots:
        console.print(f"plot: {plot}")
    if not live:
        console.print(f"serve it: trimtab models promote segments {info.version} {config}")


@segments_app.command("show")
def segments_show(
    config: ConfigArg,
    data_dir: DataDir = None,
    version: Annotated[int | None, typer.Option(help="A version (default: the live one).")] = None,
) -> None:
    """The segments of a version: size, defining features, conversion; names from the config."""
    from trimtab.models.registry import Registry, RegistryError

    site = _load(config)
    folder = data_dir or Path(site.storage.data_dir)
    registry = Registry(folder / "models")
    try:
        info = registry.get("segments", version)
        meta, _ = registry.load(info)
    except RegistryError as exc:
        err.print(f"[bold red]no segments[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    console.print(
        f"[bold]segments v{info.version}[/] ({info.kind}, {info.stage}), "
        f"{meta['report']['rows']:,} rows, features: {', '.join(meta['columns']['columns'])}"
    )
    _print_segments(meta["report"], site)
    for plot in info.plots:
        console.print(f"plot: {registry.root / plot}")


def _print_segments(report: dict[str, Any], site: Any) -> None:
    names = dict((site.segments or {}).get("names") or {})
    table = Table(
        title=f"segments (conversion: {report['conversion_event']})", title_justify="left"
    )
    for column in ("id", "name", "rows", "share", "conversion [95 %]", "defined by"):
        table.add_column(column, justify="right" if column in ("rows", "share") else "left")
    for s in report["segments"]:
        lo, hi = s["conversion_ci"]
        defining = "; ".join(
            f"{d['feature']} {'↑' if d['z'] > 0 else '↓'} {d['mean']:.3g} (all {d['overall']:.3g})"
            for d in s["defining"]
        )
        table.add_row(
            s["id"],
            names.get(s["id"], ""),
            f"{s['size']:,}",
            f"{s['share']:.0%}",
            f"{s['conversion']:.1%} [{lo:.1%}, {hi:.1%}]",
            defining,
        )
    console.print(table)
    console.print(f"overall conversion {report['overall_conversion']:.1%}")


# -- the registry -----------------------------------------------------------------------------
@models_app.command("list")
def models_list(config: ConfigArg, data_dir: DataDir = None) -> None:
    """Every registered version: stage, window, headline metric next to the baseline."""
    from trimtab.models.registry import Registry

    site = _load(config)
    registry = Registry((data_dir or Path(site.storage.data_dir)) / "models")
    table = Table(title=f"models in {registry.root}")
    for column in (
        "name",
        "version",
        "kind",
        "stage",
        "trained",
        "rows",
        "metric",
        "baseline",
        "config",
    ):
        table.add_column(column)
    for name in registry.names():
        for v in registry.versions(name):
            metric, base = _headline(v)
            trained = datetime.fromtimestamp(v.created, UTC).strftime("%Y-%m-%d %H:%M")
            rows = ", ".join(f"{k} {n:,}" for k, n in v.rows.items())
            style = {"live": "bold green", "shadow": "yellow"}.get(v.stage, "dim")
            table.add_row(
                name,
                str(v.version),
                v.kind,
                f"[{style}]{v.stage}[/]",
                trained,
                rows,
                metric,
                base,
                v.config_hash,
            )
    console.print(table)


def _headline(v: VersionInfo) -> tuple[str, str]:
    for key in ("auc", "mae"):
        if key in v.metrics:
            return f"{key} {_fmt(v.metrics[key])}", f"{key} {_fmt(v.baseline.get(key, math.nan))}"
    if "silhouette" in v.metrics:
        return f"k {v.metrics.get('k')}, silhouette {_fmt(v.metrics['silhouette'], 3)}", ""
    return "", ""


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="Model name (or 'segments').")],
    version: Annotated[int, typer.Argument(help="The version to move.")],
    config: ConfigArg,
    stage: Annotated[str, typer.Option(help="live, shadow or retired.")] = "live",
    data_dir: DataDir = None,
) -> None:
    """Move a version to live (retiring the current live one), shadow or retired.

    Running servers pick the change up within a second.
    """
    from trimtab.models.registry import Registry, RegistryError

    site = _load(config)
    registry = Registry((data_dir or Path(site.storage.data_dir)) / "models")
    try:
        info = registry.set_stage(name, version, stage)
    except RegistryError as exc:
        err.print(f"[bold red]cannot promote[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    console.print(f"{name} v{info.version} is now {info.stage}")


@models_app.command("rollback")
def models_rollback(
    name: Annotated[str, typer.Argument(help="Model name (or 'segments').")],
    config: ConfigArg,
    data_dir: DataDir = None,
) -> None:
    """Serve again the version that was live before the current one."""
    from trimtab.models.registry import Registry, RegistryError

    site = _load(config)
    registry = Registry((data_dir or Path(site.storage.data_dir)) / "models")
    try:
        info = registry.rollback(name)
    except RegistryError as exc:
        err.print(f"[bold red]cannot roll back[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    console.print(f"{name} v{info.version} is live again")


# -- the benchmark ----------------------------------------------------------------------------
def bench_models(
    quick: Annotated[bool, typer.Option(help="Smaller runs (a smoke test).")] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Run only: segments, lift, speed, decide, obd, training, category (repeat)."
        ),
    ] = None,
    obd_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="TRIMTAB_OBD",
            help="Open Bandit Dataset folder, needed by the obd section (a source checkout has "
            "a sample in tests/data/obd); without it a full run skips that section.",
        ),
    ] = None,
    events: Annotated[int, typer.Option(help="Events for the training-time run.")] = 1_000_000,
) -> dict[str, Any]:
    """Segments vs latent groups (ARI), a segment rule's lift, live scoring vs LightGBM's
    predict, decide with a score rule vs GrowthBook, the OBD click model, training time."""
    _need_extra()
    from trimtab.extras import bench_module

    bench = bench_module("models")

    wanted = set(only or ["segments", "lift", "speed", "decide", "obd", "training", "category"])
    if "obd" in wanted and (obd_dir is None or not obd_dir.is_dir()):
        # The dataset is data, not part of the package: its folder is always given.
        if obd_dir is not None:
            err.print(f"[bold red]cannot run the obd section[/] {obd_dir}: no such folder")
            raise typer.Exit(2)
        if only:
            err.print(
                "[bold red]cannot run the obd section[/] without the Open Bandit Dataset: "
                "pass --obd-dir DIR or set TRIMTAB_OBD (a checkout has tests/data/obd)"
            )
            raise typer.Exit(2)
        wanted.discard("obd")
        err.print("obd section skipped: no --obd-dir or TRIMTAB_OBD (the Open Bandit Dataset)")
    figures: dict[str, Any] = {}
    with console.status("benchmarking models…") as status:
        say = status.update
        if "segments" in wanted:
            seeds = (1, 2) if quick else (1, 2, 3, 4, 5)
            rec = bench.segment_recovery(seeds, 1500 if quick else 4000, say)
            figures["segments"] = rec
            table = Table(title="segments vs the simulator's latent reader groups (ARI)")
            for column in ("seed", "chosen", "k", "visits", "ARI (visits)", "ARI (readers)", "fit"):
                table.add_column(column, justify="right")
            for r in rec:
                table.add_row(
                    str(r.seed),
                    r.algorithm,
                    str(r.k),
                    f"{r.rows:,}",
                    f"{r.ari_visits:.3f}",
                    f"{r.ari_readers:.3f}",
                    f"{r.seconds:.1f} s",
                )
            console.print(table)
            console.print(
                f"median ARI: visits {bench.median([r.ari_visits for r in rec]):.3f}, "
                f"readers {bench.median([r.ari_readers for r in rec]):.3f} (target ≥ 0.8)"
            )
        if "lift" in wanted:
            lift = bench.segment_lift(1, 1500 if quick else 4000, 800 if quick else 4000, say)
            figures["lift"] = lift
            d, r, diff = lift.per_1000_default, lift.per_1000_rules, lift.difference
            table = Table(title="rail clicks per 1,000 page views, same visits and random numbers")
            for column in ("arm", "clicks", "per 1,000 [95 %]"):
                table.add_column(column, justify="right")
            table.add_row(
                "plain default (popular)",
                f"{lift.clicks_default:,}",
                f"{d[0]:.1f} [{d[1]:.1f}, {d[2]:.1f}]",
            )
            table.add_row(
                "segment rules", f"{lift.clicks_rules:,}", f"{r[0]:.1f} [{r[1]:.1f}, {r[2]:.1f}]"
            )
            table.add_row("difference", "", f"{diff[0]:+.1f} [{diff[1]:+.1f}, {diff[2]:+.1f}]")
            console.print(table)
            console.print(
                f"{lift.page_views:,} page views; a segment rule chose the rail on "
                f"{lift.rule_share:.0%}; names: {lift.names}"
            )
        if "speed" in wanted:
            sp = bench.live_speed(5000 if quick else 20000, say)
            figures["speed"] = sp
            table = Table(
                title=f"live scoring of one user: segment + LightGBM ({sp.trees} trees) "
                f"+ MLP {sp.mlp_layers}; scorer: {sp.scorer}"
            )
            for column in ("measure", "median", "p99", "ours faster (median, p99)"):
                table.add_column(column, justify="right" if column != "measure" else "left")
            for key, label in bench.SPEED_LABELS.items():
                t = sp.timings[key]
                faster = (
                    f"{sp.ratio(key):.1f}×, {sp.ratio(key, 'p99'):.1f}×"
                    if key in ("booster", "booster_1t", "booster_attrs", "sklearn", "ours_numpy")
                    else ""
                )
                table.add_row(label, f"{t.median_us:.2f} µs", f"{t.p99_us:.1f} µs", faster)
            console.print(table)
            console.print(
                f"max |served − library|: trees {sp.max_diff_trees:.1e}, MLP {sp.max_diff_mlp:.1e}"
                f"; target ≥ 10× Booster.predict (median and p99), serving after a feature "
                f"update: {sp.ratio('booster'):.1f}× and {sp.ratio('booster', 'p99'):.1f}×; "
                f"compute alone on those attributes: "
                f"{sp.ratio('booster', base='ours_compute'):.1f}× and "
                f"{sp.ratio('booster', 'p99', base='ours_compute'):.1f}×; from stored "
                f"attribute dicts: {sp.ratio('booster', base='ours_stored'):.1f}× and "
                f"{sp.ratio('booster', 'p99', base='ours_stored'):.1f}×"
            )
        if "decide" in wanted:
            ds = bench.decide_with_score(5000 if quick else 20000, say)
            figures["decide"] = ds
            table = Table(title="decide: 3 slots, 21 rules (one on a live LightGBM score)")
            for column in ("measure", "median", "p99"):
                table.add_column(column, justify="right" if column != "measure" else "left")
            table.add_row(
                "decide, score cached since the feature update",
                f"{ds.with_score_rule.median_us:.1f} µs",
                f"{ds.with_score_rule.p99_us:.1f} µs",
            )
            table.add_row(
                "decide right after a feature update (re-scores)",
                f"{ds.cold.median_us:.1f} µs",
                f"{ds.cold.p99_us:.1f} µs",
            )
            if ds.growthbook is not None:
                table.add_row(
                    "GrowthBook SDK, the 20 rules without the score",
                    f"{ds.growthbook.median_us:.1f} µs",
                    f"{ds.growthbook.p99_us:.1f} µs",
                )
            console.print(table)
            if ds.ratio is not None:
                console.print(f"speed-up over the SDK (median): {ds.ratio:.1f}× (target ≥ 4×)")
        if "obd" in wanted and obd_dir is not None:  # checked above: a folder
            ob = bench.obd(obd_dir, say)
            figures["obd"] = ob
            table = Table(
                title=f"OBD click model, time-based holdout: {ob.rows_test:,} rows, "
                f"{ob.clicks_test} clicks (trained on {ob.rows_train:,})"
            )
            for column in (
                "model",
                "AUC [95 % bootstrap]",
                "− logistic [paired 95 %]",
                "PR AUC",
                "log loss",
                "Brier",
                "train s",
            ):
                table.add_column(column, justify="right" if column != "model" else "left")
            for name, (a, lo, hi) in ob.auc.items():
                dd = ob.difference.get(name)
                table.add_row(
                    name,
                    f"{a:.3f} [{lo:.3f}, {hi:.3f}]",
                    f"{dd[0]:+.3f} [{dd[1]:+.3f}, {dd[2]:+.3f}]" if dd else "",
                    f"{ob.pr_auc[name]:.4f}",
                    f"{ob.log_loss[name]:.4f}",
                    f"{ob.brier[name]:.5f}",
                    f"{ob.seconds[name]:.1f}",
                )
            console.print(table)
            for target, estimates in ob.ope.items():
                console.print(
                    f"OPE of '{target}' on slot all: "
                    + "; ".join(
                        f"{k} {v:.4f} [{lo:.4f}, {hi:.4f}]" for k, (v, lo, hi) in estimates.items()
                    )
                )
        if "category" in wanted:
            cr = bench.next_category(3, 1500 if quick else 4000, say)
            figures["category"] = cr
            table = Table(
                title=f"next category read: {len(cr.classes)} classes, trained on "
                f"{cr.rows_train:,} page views, tested on the {cr.rows_test:,} latest"
            )
            for column in ("model", "log loss", "accuracy", "macro AUC", "compiled − library"):
                table.add_column(column, justify="right" if column != "model" else "left")
            rows = [(n, m) for n, m in cr.metrics.items() if n != "logistic"]
            rows.append(("logistic (the multinomial baseline)", cr.metrics["logistic"]))
            for name, m in rows:
                cells = [
                    f"{m[k]:.3f} [{m[k + '_ci'][0]:.3f}, {m[k + '_ci'][1]:.3f}]"
                    for k in ("log_loss", "accuracy", "macro_auc")
                ]
                diff = cr.compiled_max_diff.get(name.split()[0])
                table.add_row(name, *cells, f"{diff:.1e}" if diff is not None else "")
            console.print(table)
            console.print(
                "always the commonest class: accuracy "
                f"{cr.baseline['majority_accuracy']:.3f}; classes: "
                + ", ".join(f"{c} {v:.0%}" for c, v in cr.baseline["share_by_class"].items())
            )
        if "training" in wanted:
            tt = bench.training_time(100_000 if quick else events, say)
            figures["training"] = tt
            table = Table(title=f"training time: {tt.events:,} events → {tt.rows:,} page-view rows")
            for column in ("algorithm", "total", "replay to rows", "fit", "holdout AUC"):
                table.add_column(column, justify="right" if column != "algorithm" else "left")
            for alg in ("lightgbm", "mlp", "logistic"):
                s = tt.seconds
                table.add_row(
                    alg,
                    f"{s[alg]:.1f} s",
                    f"{s[alg + ': replay']:.1f} s",
                    f"{s[alg + ': fit']:.1f} s",
                    f"{tt.auc[alg]:.3f}",
                )
            console.print(table)
    return figures
