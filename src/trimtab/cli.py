"""The `trimtab` command line."""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from trimtab.config import ConfigError, load_config

app = typer.Typer(
    help="trimtab: real-time micro-adjustments of web content, every one measured.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: medians and tails, next to a baseline.")
app.add_typer(bench_app, name="bench")


def _register_experiment_commands() -> None:
    from trimtab.experiments.cli import bench_stats, report

    app.command("report")(report)
    bench_app.command("stats")(bench_stats)


_register_experiment_commands()


def _register_model_commands() -> None:
    from trimtab.models.cli import register

    register(app)


_register_model_commands()
console = Console()
err = Console(stderr=True)

ConfigArg = Annotated[Path, typer.Argument(help="Site config file (YAML or TOML).")]


def _load(config: Path):
    try:
        return load_config(config)
    except ConfigError as exc:
        err.print(f"[bold red]invalid config[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None


@app.command()
def validate(config: ConfigArg) -> None:
    """Check a site config; print what it declares, or the exact place it is wrong."""
    site = _load(config)
    table = Table(title=f"{config}: valid", show_lines=False)
    table.add_column("slot")
    table.add_column("default")
    table.add_column("variants")
    table.add_column("rules")
    for name, slot in site.slots.items():
        table.add_row(name, slot.default, ", ".join(slot.variants), str(len(slot.rules)))
    console.print(table)
    console.print(f"{len(site.features)} features: {', '.join(site.features) or '-'}")


@app.command()
def decide(
    config: ConfigArg,
    user: Annotated[str, typer.Option(help="Pseudonymous user id.")] = "user-1",
    session: Annotated[str, typer.Option(help="Session id.")] = "session-1",
    events: Annotated[
        Path | None,
        typer.Option(help="JSON array of events to apply first ('-' reads standard input)."),
    ] = None,
    slot: Annotated[
        list[str] | None, typer.Option(help="Slot to decide (repeat); all by default.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Serve the live models and segments of this data dir (default: config's)."
        ),
    ] = None,
) -> None:
    """Apply events for a user (in memory) and print each slot's decision and its reason."""
    from trimtab.decide import Engine
    from trimtab.events import BatchError, decode_batch
    from trimtab.features import FeatureProcessor

    site = _load(config)
    processor = FeatureProcessor(site.feature_specs())
    if events is not None:
        data = sys.stdin.buffer.read() if str(events) == "-" else events.read_bytes()
        try:
            result = decode_batch(data)
        except BatchError as exc:
            err.print(f"[bold red]events rejected[/] {events}: {exc}")
            raise typer.Exit(2) from None
        for problem in result.errors:
            err.print(f"[yellow]rejected[/] {problem}")
        processor.apply(e for e in result.events if e.user_id == user)
    from trimtab.bandits.serving import serve_policies
    from trimtab.models.live import attach as attach_models

    # the same engine the server runs: bandit policies (untrained: fresh state), and the
    # live models and segments registered in the config's data dir
    attach_models(processor, site, data_dir or site.storage.data_dir)
    engine = Engine(site, processor.features_of, policies=serve_policies(site.slots, {}))
    decisions = engine.decide(user, session, slot or None)
    if as_json:
        from trimtab.decide import decision_json

        print(json.dumps([decision_json(d) for d in decisions], indent=2))
        return
    table = Table(title=f"decisions for {user} / {session}")
    for column in ("slot", "variant", "source", "rule", "propensity"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason", overflow="fold", ratio=1)
    for d in decisions:
        table.add_row(d.slot, d.variant, d.source, d.rule_id, f"{d.propensity:.3f}", d.reason)
    console.print(table)


@app.command()
def serve(
    config: ConfigArg,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where local stores live (default: from config).")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            help="Worker processes. More than one needs shared backends: "
            "TRIMTAB_STATE=redis://… and TRIMTAB_BUS=redis://… or nats://…"
        ),
    ] = 1,
) -> None:
    """Run the collector (events, live WebSocket, decide, /t.js, /metrics) for a site config.

    With no backends configured everything runs embedded in this process (SQLite). With
    TRIMTAB_STATE / TRIMTAB_BUS (or `storage:` in the config) many processes, on one machine or
    many, share Redis and Redis Streams or NATS JetStream; see docs/deployment.md.
    """
    import os

    import uvicorn

    from trimtab.collector import create_app
    from trimtab.scaled import ScaledRuntime, runtime_for

    site = _load(config)
    try:
        runtime = runtime_for(site, data_dir)
    except ValueError as exc:
        err.print(f"[bold red]cannot serve[/] {exc}")
        raise typer.Exit(2) from None
    if workers > 1 and not isinstance(runtime, ScaledRuntime):
        runtime.close()
        err.print(
            "[bold red]cannot serve[/] --workers > 1 needs shared backends: set "
            "TRIMTAB_STATE=redis://… and TRIMTAB_BUS=redis://… (or nats://…); embedded "
            "workers would each keep their own features"
        )
        raise typer.Exit(2)
    kind = "scaled" if isinstance(runtime, ScaledRuntime) else "embedded"
    console.print(
        f"trimtab serving {site.site.name or site.site.id} ({kind}) on http://{host}:{port}"
        + (f" with {workers} workers" if workers > 1 else "")
    )
    if workers > 1:
        os.environ["TRIMTAB_CONFIG"] = str(config)
        if data_dir is not None:
            os.environ["TRIMTAB_DATA_DIR"] = str(data_dir)
        uvicorn.run(
            "trimtab.collector:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            ws="websockets-sansio",
        )
        return
    uvicorn.run(
        create_app(runtime), host=host, port=port, log_level="warning", ws="websockets-sansio"
    )


@app.command()
def power(
    baseline: Annotated[
        float, typer.Option(help="Control conversion rate (proportion) or mean (with --sd).")
    ],
    lift: Annotated[
        float | None, typer.Option(help="Relative lift to detect, e.g. 0.1 for +10 %.")
    ] = None,
    users: Annotated[
        int | None, typer.Option(help="Users per arm you have: prints the detectable lift.")
    ] = None,
    sd: Annotated[float | None, typer.Option(help="Standard deviation, for a mean metric.")] = None,
    alpha: Annotated[float, typer.Option(help="Two-sided significance level.")] = 0.05,
    target_power: Annotated[float, typer.Option("--power", help="Desired power.")] = 0.8,
) -> None:
    """Plan an experiment: users per arm for a lift, or the smallest lift for a sample size."""
    from trimtab.experiments.stats import power as stats_power

    if (lift is None) == (users is None):
        err.print("[bold red]give exactly one of[/] --lift (to size) or --users (for the MDE)")
        raise typer.Exit(2)
    try:
        if lift is not None:
            if sd is None:
                n = stats_power.sample_size_proportions(
                    baseline, baseline * (1 + lift), alpha=alpha, power=target_power
                )
            else:
                n = stats_power.sample_size_means(
                    baseline * lift, sd, alpha=alpha, power=target_power
                )
            console.print(
                f"{math.ceil(n):,} users per arm detect a {lift:+.1%} change of {baseline:g} "
                f"with {target_power:.0%} power at α = {alpha:g} (two-sided)"
            )
        else:
            assert users is not None
            if sd is None:
                delta = stats_power.mde_proportions(
                    baseline, users, alpha=alpha, power=target_power
                )
            else:
                delta = stats_power.mde_means(sd, users, alpha=alpha, power=target_power)
            console.print(
                f"with {users:,} users per arm the smallest detectable change of {baseline:g} is "
                f"{delta:+.4g} ({delta / baseline:+.1%}) at {target_power:.0%} power, α = {alpha:g}"
            )
    except ValueError as exc:
        err.print(f"[bold red]cannot plan[/] {exc}")
        raise typer.Exit(2) from None


@app.command()
def ope(
    config: ConfigArg,
    slot: Annotated[str, typer.Option(help="The slot whose logged decisions to evaluate.")],
    target: Annotated[
        list[str] | None,
        typer.Option(help="Candidate policy: always:VARIANT, uniform or logged (repeat)."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="The data dir with the logs (default: from config).")
    ] = None,
    reward: Annotated[str, typer.Option(help="Reward event pattern (kind:detail).")] = "click:*",
    in_slot: Annotated[bool, typer.Option(help="Only events inside the slot count.")] = True,
    window_s: Annotated[float, typer.Option(help="Attribution window after exposure.")] = 3600,
) -> None:
    """Off-policy evaluation on the decision log: IPS, SNIPS, DM and DR of candidate policies."""
    from trimtab.bandits import logeval

    site = _load(config)
    if slot not in site.slots:
        err.print(f"[bold red]unknown slot[/] {slot!r} (slots: {', '.join(site.slots)})")
        raise typer.Exit(2)
    variants = list(site.slots[slot].variants)
    folder = data_dir or Path(site.storage.data_dir)
    rounds = logeval.load_rounds(folder, slot, reward, in_slot, window_s)
    if not rounds:
        err.print(f"[bold red]no exposed decisions[/] for slot {slot!r} in {folder}")
        raise typer.Exit(2)
    by_id = {r.decision_id: r for r in rounds}
    table = Table(
        title=f"off-policy value of candidate policies for '{slot}' ({len(rounds):,} rounds)"
    )
    for column in ("policy", "IPS", "SNIPS", "DM", "DR"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for name in target or ["logged", "uniform", *(f"always:{v}" for v in variants)]:
        if name == "logged":
            policy = logeval.logged(by_id)
        elif name == "uniform":
            policy = logeval.uniform()
        elif name.startswith("always:") and name[7:] in variants:
            policy = logeval.always(name[7:])
        else:
            err.print(f"[bold red]unknown target[/] {name!r}: always:VARIANT, uniform or logged")
            raise typer.Exit(2)
        est = logeval.evaluate(rounds, variants, policy)
        table.add_row(
            name, *(f"{e.value:.4f} [{e.lower:.4f}, {e.upper:.4f}]" for e in est.values())
        )
    console.print(table)
    observed = sum(r.reward for r in rounds) / len(rounds)
    console.print(f"observed reward rate of the logged policy: {observed:.4f}")


@app.command()
def export(
    bus: Annotated[
        str, typer.Option(help="The event bus to read: redis://…?prefix=… or nats://…?stream=…")
    ],
    data_dir: Annotated[Path, typer.Option(help="Where to write events.sqlite.")],
) -> None:
    """Copy a scaled deployment's event log into DATA_DIR/events.sqlite.

    `trimtab report` and `trimtab ope` read SQLite logs; put the processes' decision logs
    (decisions-*.sqlite) in the same folder. Events already exported are not copied twice.
    """
    import asyncio

    from rich.progress import Progress

    from trimtab.backends import open_event_bus
    from trimtab.bus.sqlite import SqliteEventLog

    data_dir.mkdir(parents=True, exist_ok=True)
    target = SqliteEventLog(data_dir / "events.sqlite")

    async def copy(progress: Progress) -> tuple[int, int]:
        source = open_event_bus(bus, data_dir)
        total = await source.count()
        task = progress.add_task("exporting events", total=total)
        read = added = 0
        batch: list = []
        try:
            async for event in source.iter_all():
                batch.append(event)
                if len(batch) >= 10_000:
                    added += target.append_sync(batch)
                    read += len(batch)
                    progress.update(task, completed=read)
                    batch = []
            added += target.append_sync(batch)
            read += len(batch)
            progress.update(task, completed=read)
        finally:
            await source.close()
        return read, added

    try:
        with Progress(console=console, transient=True) as progress:
            read, added = asyncio.run(copy(progress))
    except (OSError, ConnectionError) as exc:
        err.print(f"[bold red]cannot read the bus[/] {bus}: {exc}")
        raise typer.Exit(2) from None
    finally:
        target.close_sync()
    console.print(
        f"{read:,} events read from the bus, {added:,} new in {data_dir / 'events.sqlite'}"
    )


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def process(ctx: typer.Context) -> None:
    """Run a standalone bus consumer (features → shared state); see `trimtab process --help`.

    Same as `python -m trimtab.processor`: --bus URL --state URL --config FILE --group G
    --consumer NAME. Useful to catch up a backlog without serving traffic.
    """
    from trimtab.processor import main as processor_main

    raise typer.Exit(processor_main(ctx.args))


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its data.")] = Path(
        "var/demo"
    ),
) -> None:
    """Serve the demo news site: scroll, hover and watch its slots adjust live."""
    import uvicorn

    from trimtab.demo.server import build_app

    app_ = build_app(data_dir=data_dir)
    url = f"http://{host}:{port}/"
    console.print(f"[bold]The Daily Trim[/] — trimtab demo running at [link={url}]{url}[/link]")
    console.print(
        "Accept the consent banner, then scroll an article past 75 %, hover its picture for "
        "3 s, or read several stories of one category: the slots change while you read, and "
        "the “why am I seeing this” panel says why. Ctrl-C stops."
    )
    uvicorn.run(app_, host=host, port=port, log_level="warning", ws="websockets-sansio")


@app.command()
def simulate(
    config: Annotated[
        Path | None, typer.Argument(help="Site config (default: the demo's).")
    ] = None,
    sessions: Annotated[int, typer.Option(help="Simulated visits to run.")] = 6000,
    users: Annotated[int, typer.Option(help="Size of the simulated population.")] = 3000,
    slot: Annotated[str, typer.Option(help="The bandit-driven slot to watch.")] = "rail",
    seed: Annotated[int, typer.Option(help="Seed of the simulated population.")] = 0,
    data_dir: Annotated[Path, typer.Option(help="Where the run's stores live.")] = Path(
        "var/simulate"
    ),
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG of the arm probabilities over time.")
    ] = Path("var/simulate/arms.png"),
) -> None:
    """Send simulated visitors through the real pipeline and watch a bandit learn."""
    from rich.progress import Progress

    from trimtab.demo.server import DEMO_CONFIG
    from trimtab.runtime import Runtime
    from trimtab.sim.drive import simulate as run_simulation

    site = _load(config or DEMO_CONFIG)
    runtime = Runtime(site, data_dir)
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"simulating {sessions:,} visits", total=sessions)
            result = run_simulation(
                runtime,
                sessions,
                seed,
                slot,
                every=max(1, sessions // 10),
                progress=lambda n: progress.advance(task, n),
                users=users,
            )
    except ValueError as exc:
        err.print(f"[bold red]cannot simulate[/] {exc}")
        raise typer.Exit(2) from None
    finally:
        runtime.close()
    table = Table(title=f"{result.policy}: top arms per reference visitor as rewards arrive")
    table.add_column("sessions", justify="right")
    table.add_column("CTR policy / rules", justify="right")
    profiles = list(result.snapshots[0].probabilities)
    for name in profiles:
        table.add_column(name)
    for snap in result.snapshots:
        ctr = snap.ctr_by_source
        row = [f"{snap.sessions:,}", f"{ctr.get('policy', 0):.1%} / {ctr.get('force', 0):.1%}"]
        for name in profiles:
            top = sorted(snap.probabilities[name].items(), key=lambda kv: -kv[1])[:2]
            row.append(", ".join(f"{arm} {p:.2f}" for arm, p in top))
        table.add_row(*row)
    console.print(table)
    if plot is not None:
        from trimtab.sim.plots import plot_arms

        plot_arms(result, plot)
        console.print(f"arm probabilities plotted to {plot}")


def _print_timings(title: str, rows: list[tuple[str, ...]], columns: tuple[str, ...]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column != "measure" else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@bench_app.command("core")
def bench_core(
    quick: Annotated[bool, typer.Option(help="Fewer iterations (a smoke run).")] = False,
    against: Annotated[
        str,
        typer.Option(
            help="Also time feature updates of this git revision (e.g. main) against this "
            "tree, alternating in one run, and print the ratio.",
        ),
    ] = "",
) -> None:
    """Decode, feature updates and decide (3 slots, 20 rules, 30 features), with baselines.

    Feature updates are compared with River's online statistics on the same 10 declarations
    and events; decide with the GrowthBook SDK on the same rules and attributes.
    """
    from trimtab.bench import core

    with console.status("running the core benchmark…"):
        started = time.perf_counter()
        result = core.run(quick=quick)
        differ = core.same_choices(200)
    rows = [
        (
            "decode+validate 20-event batch",
            f"{result.decode.median_us:.1f} µs",
            f"{result.decode.p99_us:.1f} µs",
            "-",
        ),
        ("feature updates", f"{result.events_per_s:,.0f} events/s", "-", "≥ 200,000 events/s"),
    ]
    if result.river_runs:
        rows.append(
            (
                "River per-key aggregates (Agg), same declarations and events",
                f"{result.river_events_per_s:,.0f} events/s",
                "-",
                "-",
            )
        )
        rows.append(
            ("speed-up over River (median ratio)", f"{result.river_ratio:.1f}×", "-", "≥ 2×")
        )
        rows.append(
            (
                "River statistics in hand-written per-key tables (no Agg)",
                f"{result.river_stats_events_per_s:,.0f} events/s",
                "-",
                "-",
            )
        )
    rows += [
        (
            f"decide {result.slots} slots / {result.rules} rules / {result.features} features",
            f"{result.decide.median_us:.1f} µs",
            f"{result.decide.p99_us:.1f} µs",
            "p99 ≤ 50 µs",
        ),
    ]
    if result.growthbook is not None:
        rows.append(
            (
                "GrowthBook SDK, same rules and attributes",
                f"{result.growthbook.median_us:.1f} µs",
                f"{result.growthbook.p99_us:.1f} µs",
                "-",
            )
        )
        rows.append(("speed-up over the SDK (median ratio)", f"{result.ratio:.1f}×", "-", "≥ 4×"))
    _print_timings("trimtab bench core", rows, ("measure", "median", "p99", "target"))
    console.print(f"choices that differ from the SDK on 200 users × {result.slots} slots: {differ}")
    console.print(
        f"feature-update runs (events/s): {', '.join(f'{r:,.0f}' for r in result.apply_runs)}"
    )
    if result.river_runs:
        console.print(
            f"River Agg runs (events/s): {', '.join(f'{r:,.0f}' for r in result.river_runs)}; "
            f"River values that differ from trimtab's: {result.river_differ}"
        )
    if against:
        from trimtab.bench import ab

        with console.status(f"timing feature updates of {against} against this tree…"):
            compared = ab.run(against, rounds=2 if quick else 4)
        console.print(
            f"feature updates, {against}: median {statistics.median(compared.before):,.0f} "
            f"events/s; this tree: {statistics.median(compared.after):,.0f} events/s; "
            f"ratio {compared.ratio:.3f} (target ≥ 0.90)"
        )
    console.print(f"[dim]took {time.perf_counter() - started:.1f} s[/]")


@bench_app.command("live")
def bench_live(
    sessions: Annotated[int, typer.Option(help="Concurrent live WebSocket sessions.")] = 200,
    seconds: Annotated[float, typer.Option(help="How long to drive them.")] = 15.0,
    interval_ms: Annotated[
        float, typer.Option(help="Mean gap between a session's batches.")
    ] = 250.0,
) -> None:
    """The live loop: event batch arriving → adjustment leaving, under many WebSocket sessions."""
    from trimtab.bench import live

    with console.status(f"driving {sessions} live sessions for {seconds:.0f} s…"):
        result = live.run(sessions=sessions, seconds=seconds, interval_ms=interval_ms)
    server = result.server
    rows = [
        (
            "sessions / batches / events sent",
            f"{result.sessions} / {result.batches_sent:,} / {result.events_sent:,}",
            "-",
            "-",
        ),
        ("adjustments pushed", f"{server.get('pushes', 0):,}", "-", "-"),
        (
            "server: events arrive → adjustment leaves",
            f"{server.get('median_us', 0) / 1000:.2f} ms",
            f"{server.get('p99_us', 0) / 1000:.2f} ms",
            "p99 ≤ 10 ms",
        ),
        (
            "client round trip (batch sent → push read)",
            f"{result.client_median_us / 1000:.2f} ms",
            f"{result.client_p99_us / 1000:.2f} ms",
            "-",
        ),
    ]
    _print_timings("trimtab bench live", rows, ("measure", "median", "p99", "target"))
    console.print(
        f"throughput: {result.batches_sent / result.seconds:,.0f} batches/s, "
        f"max server latency {server.get('max_us', 0) / 1000:.2f} ms"
    )
    size = _tracker_size()
    if size is not None:
        console.print(f"tracker /t.js: {size[0]:,} bytes, {size[1]:,} bytes gzipped (budget 6,144)")


def _tracker_size() -> tuple[int, int] | None:
    import gzip

    from trimtab.collector import TRACKER_PATHS

    for path in TRACKER_PATHS:
        if path.is_file():
            raw = path.read_bytes()
            return len(raw), len(gzip.compress(raw, 9))
    return None


@bench_app.command("bandits")
def bench_bandits(
    campaign: Annotated[
        list[str] | None, typer.Option(help="OBD campaign(s): all, men, women (repeat).")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Open Bandit Dataset folder (default: tests/data/obd).")
    ] = None,
    peers: Annotated[bool, typer.Option(help="Also run Vowpal Wabbit and MABWiser.")] = True,
    limit: Annotated[int | None, typer.Option(help="Replay only the first N rows.")] = None,
) -> None:
    """Replay trimtab's policies on real logged data (OBD) next to VW and MABWiser."""
    from trimtab.bench import bandits

    for name in campaign or ["all", "men", "women"]:
        with console.status(f"replaying OBD '{name}'…") as status:
            rows = bandits.run(
                data_dir,
                name,
                peers=peers,
                limit=limit,
                render=False,
                progress=lambda msg, name=name: status.update(f"OBD '{name}': {msg}"),
            )
        bandits.render_table(rows, title=f"OBD random logs, campaign '{name}'")


@bench_app.command("scale")
def bench_scale(
    processes: Annotated[
        list[int] | None, typer.Option(help="Worker process counts to try (repeat).")
    ] = None,
    seconds: Annotated[float, typer.Option(help="Duration of each load run.")] = 8.0,
    connections: Annotated[int, typer.Option(help="Concurrent HTTP connections.")] = 32,
) -> None:
    """Event batches and decide calls at 1, 2, 4 processes on Redis / NATS vs embedded."""
    from trimtab.bench import scale

    with console.status("starting servers and driving them with wrk…"):
        rows = scale.run(tuple(processes or (1, 2, 4)), seconds=seconds, connections=connections)
    table = Table(title="trimtab bench scale (HTTP, wrk, 20-event batches)")
    for column in (
        "backend",
        "processes",
        "events/s",
        "decide/s",
        "decide p50",
        "decide p99",
        "errors",
    ):
        table.add_column(column, justify="left" if column == "backend" else "right")
    for r in rows:
        table.add_row(
            r.backend,
            str(r.processes),
            f"{r.events_per_s:,.0f}",
            f"{r.decide_per_s:,.0f}",
            f"{r.decide_p50_ms:.2f} ms",
            f"{r.decide_p99_ms:.2f} ms",
            str(r.errors),
        )
    console.print(table)
    console.print(f"[dim]{os.cpu_count()} cores shared by the servers and wrk[/]")
    with console.status("measuring the buses: 200,000 events each…"):
        buses = scale.bus_throughput()
    table = Table(title="event buses: publish (1,000-event batches) and feature processor")
    for column in ("bus", "events", "publish events/s", "bus → features → Redis → ack, events/s"):
        table.add_column(column, justify="left" if column == "bus" else "right")
    for b in buses:
        table.add_row(b.bus, f"{b.events:,}", f"{b.publish_per_s:,.0f}", f"{b.process_per_s:,.0f}")
    console.print(table)


@bench_app.command("all")
def bench_all(ctx: typer.Context) -> None:
    """Every benchmark in turn (what `make bench` runs)."""
    ctx.invoke(bench_core, quick=False, against="")
    ctx.invoke(bench_live, sessions=200, seconds=15.0, interval_ms=250.0)
    ctx.invoke(bench_bandits, campaign=None, data_dir=None, peers=True, limit=None)
    from trimtab.experiments.cli import bench_stats

    ctx.invoke(bench_stats)
    ctx.invoke(bench_scale, processes=None, seconds=8.0, connections=32)


def _json_default(value: Any) -> Any:
    return str(value)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
