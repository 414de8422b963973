"""The `trimtab` command line."""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import statistics
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trimtab.config import ConfigError, SiteConfig, load_config

if TYPE_CHECKING:
    from trimtab.sim.drive import SimulationResult

app = typer.Typer(
    help="trimtab: real-time micro-adjustments of web content, every one measured.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: medians and tails, next to a baseline.")


def _show_version(value: bool) -> None:
    if value:
        from trimtab import __version__

        print(f"trimtab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            metavar="",  # a flag takes no value: typer would show "<bool>" here
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """trimtab: real-time micro-adjustments of web content, every one measured."""


app.add_typer(bench_app, name="bench")


def _register_experiment_commands() -> None:
    from trimtab.experiments.cli import bench_stats, report

    app.command("report")(report)
    bench_app.command("stats")(bench_stats)


_register_experiment_commands()


def _register_model_commands() -> None:
    from trimtab.models.cli import register

    register(app, bench_app)


_register_model_commands()


def _register_import_commands() -> None:
    from trimtab.gbcli import import_app

    app.add_typer(import_app, name="import")


_register_import_commands()
console = Console()
err = Console(stderr=True, soft_wrap=True)  # an error is one line, whatever the width

ConfigArg = Annotated[Path, typer.Argument(help="Site config file (YAML or TOML).")]


def _load(config: Path) -> SiteConfig:
    try:
        return load_config(config)
    except ConfigError as exc:
        err.print(f"[bold red]invalid config[/] {escape(str(exc))}", soft_wrap=True)
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
    user: Annotated[
        str | None,
        typer.Option(help="Pseudonymous user id (default: the one user of --events, else user-1)."),
    ] = None,
    session: Annotated[
        str | None,
        typer.Option(
            help="Session id (default: the user's one session in --events, else session-1)."
        ),
    ] = None,
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
    """Apply events for a user (in memory) and print each slot's decision and its reason.

    Only the events of --user are applied; events of other users are counted and named on
    standard error, never silently dropped.
    """
    from trimtab.decide import Engine
    from trimtab.events import BatchError, decode_batch
    from trimtab.features import FeatureProcessor

    site = _load(config)
    unknown = [name for name in slot or [] if name not in site.slots]
    if unknown:
        _fail(
            "unknown slot",
            f"{', '.join(map(repr, unknown))} is not in {config} "
            f"(slots: {', '.join(site.slots) or 'none'})",
        )
    processor = FeatureProcessor(site.feature_specs())
    if events is not None:
        data = _read_input(events, "events")
        try:
            result = decode_batch(data)
        except BatchError as exc:
            _fail("events rejected", f"{events}: {exc}")
        for problem in result.errors:
            err.print(f"[yellow]rejected[/] {escape(str(problem))}")
        users = list(dict.fromkeys(e.user_id for e in result.events))
        if user is None:
            user = users[0] if len(users) == 1 else "user-1"
        others = [u for u in users if u != user]
        if others:
            skipped = sum(1 for e in result.events if e.user_id != user)
            shown = ", ".join(others[:5]) + (", …" if len(others) > 5 else "")
            err.print(
                f"[yellow]ignored[/] {skipped} event(s) of other users ({shown}): only "
                f"--user {user}'s are applied"
            )
        processor.apply(e for e in result.events if e.user_id == user)
        sessions = list(dict.fromkeys(e.session_id for e in result.events if e.user_id == user))
        if session is None and len(sessions) == 1:
            session = sessions[0]
    user = user or "user-1"
    session = session or "session-1"
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
    # the short fields in a table, each reason under it at full width: readable at 80 columns
    table = Table(title=f"decisions for {user} / {session}")
    for column in ("slot", "variant", "source", "rule", "p"):
        table.add_column(column, justify="right" if column == "p" else "left")
    for d in decisions:
        table.add_row(d.slot, d.variant, d.source, d.rule_id or "-", f"{d.propensity:.3f}")
    console.print(table)
    for d in decisions:
        console.print(f"[bold]{d.slot}[/]: {d.reason or '-'}", highlight=False)


def _fail(what: str, cause: str, code: int = 2) -> NoReturn:
    """One line on standard error, what failed and why; then exit with ``code``."""
    err.print(f"[bold red]{what}[/] {cause}", highlight=False)
    raise typer.Exit(code)


def _read_input(path: Path, what: str) -> bytes:
    """A file's bytes ('-' reads standard input), or a one-line error naming the cause."""
    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        _fail(f"cannot read {what}", f"{path}: no such file")
    except IsADirectoryError:
        _fail(f"cannot read {what}", f"{path}: is a directory")
    except OSError as exc:
        _fail(f"cannot read {what}", f"{path}: {exc.strerror or exc}")


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything says the server is running."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        _fail("cannot listen", f"{host}:{port}: {exc.strerror}")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        cause = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        _fail("cannot listen", f"on {host}:{port}: {cause}")
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _run_on(
    app_: Any, sock: socket.socket, limits: Any, forwarded_allow_ips: str | None = None
) -> None:
    """Serve an ASGI app on an already bound socket (uvicorn, the options `serve` uses, with
    the socket limits of the config: trimtab.connections; ``forwarded_allow_ips``: the proxies
    whose forwarded headers are trusted, default loopback)."""
    import uvicorn

    from trimtab.connections import uvicorn_options

    config = uvicorn.Config(
        app_,
        log_level="warning",
        forwarded_allow_ips=forwarded_allow_ips,
        **uvicorn_options(limits),
    )
    uvicorn.Server(config).run(sockets=[sock])


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the config.")] = Path("trimtab.yaml"),
    site_id: Annotated[str, typer.Option(help="A short id for the site.")] = "my-site",
    name: Annotated[str, typer.Option(help="The site's name, as people say it.")] = "My site",
    origin: Annotated[
        list[str] | None,
        typer.Option(
            help="An origin your pages are served from, e.g. https://news.example (repeat)."
        ),
    ] = None,
    data_dir: Annotated[str, typer.Option(help="Where trimtab keeps its data.")] = "var/trimtab",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a first site config: the site, its keys, a few features and one example slot.

    The file is valid as written (`trimtab serve PATH` runs it); docs/integrate.md walks from
    it to live adjustments on your own pages.
    """
    from trimtab.scaffold import scaffold

    for o in origin or []:
        if o != "*" and not o.startswith(("http://", "https://")):
            _fail("bad --origin", f"{o!r}: write scheme://host[:port], e.g. https://news.example")
    if path.exists() and not force:
        _fail("not overwriting", f"{path} exists (--force replaces it)")
    text = scaffold(site_id, name, origin, data_dir, str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail("cannot write", f"{path}: {exc.strerror or exc}")
    site = _load(path)  # what we wrote must be valid
    console.print(f"wrote {path}: site {site.site.id}, public key {site.site.public_key}")
    console.print(
        f"next: set TRIMTAB_SECRET_KEY (a long random string), run trimtab serve {path}, "
        "then follow docs/integrate.md",
        highlight=False,
    )


@app.command("force-link")
def force_link(
    config: ConfigArg,
    force: Annotated[
        list[str],
        typer.Option(help="slot:variant to show (repeat for several slots)."),
    ],
    url: Annotated[
        str, typer.Option(help="The page to link to (any page of the site).")
    ] = "http://127.0.0.1:8000/",
    hours: Annotated[
        float, typer.Option(min=0.01, max=24 * 90, help="How long the link works.")
    ] = 24.0,
) -> None:
    """A signed QA link that shows the given variants to whoever opens it.

    Signed with the site's secret key (site.secret_key, e.g. TRIMTAB_SECRET_KEY): nobody can
    make or edit one without it. The holder's tab keeps it from page to page; the decisions it
    forces are logged with source `qa` and left out of experiments and bandit learning.
    """
    from trimtab.qa import ForceError, force_token
    from trimtab.qa import force_link as link_with

    site = _load(config)
    choices: dict[str, str] = {}
    for item in force:
        slot_name, sep, variant = item.partition(":")
        if not sep or not slot_name or not variant:
            _fail("bad --force", f"{item!r}: write slot:variant")
        if slot_name not in site.slots:
            _fail("unknown slot", f"{slot_name!r} (slots: {', '.join(site.slots) or 'none'})")
        declared = site.slots[slot_name].variants
        if variant not in declared:
            _fail(
                "unknown variant",
                f"{variant!r} of slot {slot_name!r} (variants: {', '.join(declared)})",
            )
        choices[slot_name] = variant
    secret = site.secret_key()
    if not secret:
        _fail("cannot sign", f"no secret key: set {site.site.secret_key.removeprefix('env:')}")
    expires = time.time() + hours * 3600
    try:
        token = force_token(secret, choices, expires)
    except ForceError as exc:
        _fail("cannot sign", str(exc))
    print(link_with(url, token))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
    err.print(f"[dim]shows {', '.join(f'{k}={v}' for k, v in choices.items())} until {when}[/]")


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
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            help="Proxies whose X-Forwarded-For / X-Forwarded-Proto are trusted (comma-separated "
            "addresses, '*' for any). Default: loopback (a proxy on this machine). Rate limits "
            "and IP truncation then see the reader's address, not the proxy's."
        ),
    ] = None,
) -> None:
    """Run the collector (events, live WebSocket, decide, /t.js, /metrics) for a site config.

    With no backends configured everything runs embedded in this process (SQLite). With
    TRIMTAB_STATE / TRIMTAB_BUS (or `storage:` in the config) many processes, on one machine or
    many, share Redis and Redis Streams or NATS JetStream; see docs/deployment.md.
    """
    import uvicorn

    from trimtab.collector import create_app
    from trimtab.connections import uvicorn_options
    from trimtab.pipeline import open_pipeline
    from trimtab.store.sqlite import StorageError

    site = _load(config)
    try:
        runtime = open_pipeline(site, data_dir)
    except (ValueError, StorageError) as exc:
        err.print(f"[bold red]cannot serve[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        served = create_app(runtime) if workers == 1 else None
    except StorageError as exc:
        runtime.close()
        _fail("cannot serve", str(exc))
    if workers > 1 and not runtime.deployment.shared:
        runtime.close()
        err.print(
            "[bold red]cannot serve[/] --workers > 1 needs shared backends: set "
            "TRIMTAB_STATE=redis://… and TRIMTAB_BUS=redis://… (or nats://…); embedded "
            "workers would each keep their own features"
        )
        raise typer.Exit(2)
    kind = runtime.deployment.kind
    try:
        sock = _bind(host, port)
    except typer.Exit:
        runtime.close()
        raise
    console.print(
        f"trimtab serving {site.site.name or site.site.id} ({kind}) on http://{host}:{port}"
        + (f" with {workers} workers" if workers > 1 else "")
        + f"; the console at http://{host}:{port}/console"
    )
    if workers > 1:
        sock.close()  # uvicorn's workers bind it themselves; it was free a moment ago
        os.environ["TRIMTAB_CONFIG"] = str(config)
        if data_dir is not None:
            os.environ["TRIMTAB_DATA_DIR"] = str(data_dir)
        uvicorn.run(
            "trimtab.collector:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            forwarded_allow_ips=forwarded_allow_ips,
            log_level="warning",
            **uvicorn_options(site.limits),
        )
        return
    _run_on(served, sock, site.limits, forwarded_allow_ips)


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
        err.print(f"[bold red]cannot plan[/] {escape(str(exc))}")
        raise typer.Exit(2) from None


@app.command()
def ope(
    config: ConfigArg,
    slot: Annotated[str, typer.Option(help="The slot whose logged decisions to evaluate.")],
    target: Annotated[
        list[str] | None,
        typer.Option(
            help="Candidate policy: always:VARIANT, uniform, rules (the slot's rules without "
            "its bandit) or logged (repeat)."
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="The data dir with the logs (default: from config).")
    ] = None,
    reward: Annotated[
        str | None,
        typer.Option(help="Reward event pattern (kind:detail); default: the slot's policy's."),
    ] = None,
    in_slot: Annotated[
        bool | None, typer.Option(help="Only events inside the slot count (default: policy's).")
    ] = None,
    window_s: Annotated[
        float | None,
        typer.Option(help="Attribution window after exposure (default: policy's, else 3600)."),
    ] = None,
    min_value: Annotated[
        float | None, typer.Option(help="Summed amount a round needs (default: policy's).")
    ] = None,
    reward_model: Annotated[
        str | None,
        typer.Option(
            help="A registered model (NAME or NAME@VERSION, trained at: exposure) as the DM/DR "
            "reward model, instead of a ridge regression fitted on the rounds."
        ),
    ] = None,
) -> None:
    """Off-policy evaluation on the decision log: IPS, SNIPS, DM and DR of candidate policies.

    Rewards are attributed exactly as the live learner and experiment reports attribute them;
    by default with the reward declared by the slot's bandit policy, so a candidate is scored
    on what the policy learns from. Options override single fields of it.
    """
    import msgspec

    from trimtab.attribution import Reward
    from trimtab.bandits import logeval
    from trimtab.bandits.serving import policy_specs

    site = _load(config)
    if slot not in site.slots:
        err.print(f"[bold red]unknown slot[/] {slot!r} (slots: {', '.join(site.slots)})")
        raise typer.Exit(2)
    variants = list(site.slots[slot].variants)
    folder = data_dir or Path(site.storage.data_dir)
    declared = [spec for name, _, spec in policy_specs(site.slots) if name == slot]
    base = declared[0].reward if declared else Reward(window_s=3600.0)
    given = {"event": reward, "in_slot": in_slot, "window_s": window_s, "min_value": min_value}
    rule = msgspec.structs.replace(base, **{k: v for k, v in given.items() if v is not None})
    rounds = logeval.load_rounds(folder, slot, rule)
    if not rounds:
        err.print(f"[bold red]no exposed decisions[/] for slot {slot!r} in {folder}")
        raise typer.Exit(2)
    origin = f"policy {declared[0].name}'s reward" if declared else "reward"
    console.print(
        f"{origin}: {rule.event}{' in the slot' if rule.in_slot else ''} within "
        f"{rule.window_s:g} s of the exposure"
        + (f", summing to {rule.min_value:g}" if rule.min_value > 0 else "")
    )
    by_id = {r.decision_id: r for r in rounds}
    q_model = None
    if reward_model is not None:
        from trimtab.models.registry import RegistryError
        from trimtab.models.reward import RewardModel, load_scorer
        from trimtab.models.scorer import ScorerError

        try:
            scorer, info = load_scorer(folder / "models", reward_model)
            q_model = RewardModel(scorer, slot, variants, site.slots[slot].variants)
        except (RegistryError, ScorerError, ValueError) as exc:
            err.print(f"[bold red]cannot use the reward model[/] {escape(str(exc))}")
            raise typer.Exit(2) from None
        with console.status(f"scoring {len(rounds):,} rounds × {len(variants)} variants…"):
            q_model.prefetch([r.features for r in rounds])
        auc = info.metrics.get("auc")
        console.print(
            f"DM/DR reward model: {info.name} v{info.version} ({info.kind}"
            + (f", holdout AUC {auc:.3f}" if auc is not None else "")
            + ")"
        )
    table = Table(
        title=f"off-policy value of candidate policies for '{slot}' ({len(rounds):,} rounds)"
    )
    for column in ("policy", "IPS", "SNIPS", "DM", "DR"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for name in target or ["logged", "uniform", "rules", *(f"always:{v}" for v in variants)]:
        if name == "logged":
            policy = logeval.logged(by_id)
        elif name == "uniform":
            policy = logeval.uniform()
        elif name == "rules":
            policy = logeval.rules(site, slot)
        elif name.startswith("always:") and name[7:] in variants:
            policy = logeval.always(name[7:])
        else:
            err.print(
                f"[bold red]unknown target[/] {name!r}: always:VARIANT, uniform, rules or logged"
            )
            raise typer.Exit(2)
        est = logeval.evaluate(rounds, variants, policy, reward_model=q_model)
        table.add_row(
            name, *(f"{e.value:.4f} [{e.lower:.4f}, {e.upper:.4f}]" for e in est.values())
        )
    console.print(table)
    observed = sum(r.reward for r in rounds) / len(rounds)
    console.print(f"observed reward rate of the logged policy: {observed:.4f}")


@app.command()
def export(
    what: Annotated[
        str | None,
        typer.Argument(help="`growthbook`: print CONFIG as a GrowthBook SDK payload instead."),
    ] = None,
    config: Annotated[
        Path | None, typer.Argument(help="The site config (with `growthbook`).")
    ] = None,
    bus: Annotated[
        str | None,
        typer.Option(help="The event bus to read: redis://…?prefix=… or nats://…?stream=…"),
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where to write events.sqlite.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="`growthbook`: write the payload here.")
    ] = None,
) -> None:
    """Copy a scaled deployment's event log into DATA_DIR/events.sqlite.

    `trimtab report` and `trimtab ope` read SQLite logs; put the processes' decision logs
    (decisions-*.sqlite) in the same folder. Events already exported are not copied twice.

    `trimtab export growthbook CONFIG` prints the config's slots as a GrowthBook SDK payload
    (what `GET /api/features/{key}` serves; docs/ecosystem.md).
    """
    if what is not None:
        if what != "growthbook":
            _fail("cannot export", f"unknown target {what!r}: growthbook, or --bus and --data-dir")
        if config is None:
            _fail("cannot export", "name the site config: trimtab export growthbook CONFIG")
        from trimtab.gbcli import export_growthbook

        export_growthbook(config, output)
        return
    if bus is None or data_dir is None:
        _fail("cannot export", "pass --bus and --data-dir (or: trimtab export growthbook CONFIG)")
    import asyncio

    from rich.progress import Progress

    from trimtab.backends import open_event_bus
    from trimtab.bus import ReplayableBus
    from trimtab.bus.sqlite import SqliteEventLog
    from trimtab.events import AnyEvent
    from trimtab.logschema import events_path

    data_dir.mkdir(parents=True, exist_ok=True)
    target = SqliteEventLog(events_path(data_dir))

    async def copy(progress: Progress) -> tuple[int, int]:
        source = open_event_bus(bus, data_dir)
        if isinstance(source, SqliteEventLog) or not isinstance(source, ReplayableBus):
            await source.close()
            _fail("cannot export", f"--bus {bus}: a Redis or NATS bus (a SQLite log is one)")
        total = await source.count()
        task = progress.add_task("exporting events", total=total)
        read = added = 0
        batch: list[AnyEvent] = []
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
        err.print(f"[bold red]cannot read the bus[/] {escape(str(bus))}: {escape(str(exc))}")
        raise typer.Exit(2) from None
    finally:
        target.close_sync()
    console.print(
        f"{read:,} events read from the bus, {added:,} new in {data_dir / 'events.sqlite'}"
    )


@app.command()
def process(
    config: Annotated[
        Path, typer.Option(help="Site config file (its features are what gets computed).")
    ],
    bus: Annotated[
        str | None,
        typer.Option(help="Event bus URL: redis://…, nats://… or sqlite (default: config's)."),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(help="State store URL: redis://… or sqlite (default: config's)."),
    ] = None,
    group: Annotated[str, typer.Option(help="Consumer group on the bus.")] = "features",
    consumer: Annotated[
        str | None, typer.Option(help="This consumer's name in the group (default: host+pid).")
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Events read per batch.")] = 1000,
    data_dir: Annotated[
        Path | None, typer.Option(help="Directory of the embedded stores (default: config's).")
    ] = None,
) -> None:
    """Run a standalone bus consumer: events → features → shared state, until Ctrl-C.

    Useful to catch up a backlog without serving traffic. Same as `python -m
    trimtab.processor`.
    """
    from trimtab.processor import main as processor_main

    _load(config)  # a bad config fails here, in one line, before any connection
    argv = ["--config", str(config), "--group", group, "--batch", str(batch)]
    for flag, value in (
        ("--bus", bus),
        ("--state", state),
        ("--consumer", consumer),
        ("--data-dir", data_dir),
    ):
        if value is not None:
            argv += [flag, str(value)]
    try:
        code = processor_main(argv)
    except (OSError, ConnectionError, ValueError) as exc:
        _fail("cannot process", f"{type(exc).__name__}: {exc}")
    raise typer.Exit(code)


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its data.")] = Path(
        "var/demo"
    ),
    config: Annotated[
        Path | None,
        typer.Option(help="A site config to serve the demo site with (default: the demo's own)."),
    ] = None,
    segments: Annotated[
        bool,
        typer.Option(
            "--segments",
            help="Serve reader segments (fitted once on simulated readers, first run only), so "
            "the config's segment rules apply: `make demo` uses it.",
        ),
    ] = False,
) -> None:
    """Serve the demo news site: scroll, hover and watch its slots adjust live."""
    from trimtab.demo.server import DEMO_CONFIG, build_app
    from trimtab.models.bootstrap import ensure_segments

    site_config = _load(config or DEMO_CONFIG)
    sock = _bind(host, port)
    fitted = None
    if segments:
        with console.status("first run: fitting reader segments on 3,000 simulated visits…"):
            fitted = ensure_segments(site_config, data_dir)
    if fitted is not None:
        console.print(
            f"reader segments v{fitted.version} fitted on simulated visits "
            f"(trimtab segments show {config or DEMO_CONFIG} --data-dir {data_dir})"
        )
    # asked before build_app, which sets the demo's own key when none is set
    key = "your TRIMTAB_SECRET_KEY" if os.environ.get("TRIMTAB_SECRET_KEY") else "sk_demo"
    app_ = build_app(site_config if config else None, data_dir=data_dir)
    url = f"http://{host}:{port}/"
    console.print(f"[bold]The Daily Trim[/] — trimtab demo running at [link={url}]{url}[/link]")
    console.print(f"The console: [link={url}console]{url}console[/link] (key: {key})")
    console.print(
        "Accept the consent banner, then scroll an article past 75 %, hover its picture for "
        "3 s, or read several stories of one category: the slots change while you read, and "
        "the “why am I seeing this” panel says why. Ctrl-C stops."
    )
    _run_on(app_, sock, site_config.limits)


@app.command()
def simulate(
    config: Annotated[
        Path | None, typer.Argument(help="Site config (default: the demo's).")
    ] = None,
    sessions: Annotated[int, typer.Option(help="Simulated visits per run.")] = 6000,
    users: Annotated[int, typer.Option(help="Size of the simulated population.")] = 3000,
    slot: Annotated[str, typer.Option(help="The bandit-driven slot to watch.")] = "rail",
    seed: Annotated[int, typer.Option(help="Seed of the (first) simulated population.")] = 0,
    seeds: Annotated[
        int, typer.Option(help="Independent runs (seeds SEED, SEED+1, …): mean and interval.")
    ] = 1,
    data_dir: Annotated[
        Path, typer.Option(help="Where the run's stores live (one folder per seed if several).")
    ] = Path("var/simulate"),
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG of the arm probabilities over time.")
    ] = Path("var/simulate/arms.png"),
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Lift report: in-session bandit vs hourly batch vs static default vs hand "
            "rules, each run on the same readers, with off-policy estimates next to the truth "
            "(per seed: four runs and a uniformly random log as many times longer as the slot "
            "has variants).",
        ),
    ] = False,
    start: Annotated[
        str,
        typer.Option(
            help="When the simulated traffic starts: 'spread' (run k of N at k/N of a day "
            "after 2026-01-05 00:00 UTC, so the runs cover the day), a UTC time 'HH:MM' on "
            "that day for every run, or 'now' (the wall clock: not reproducible)."
        ),
    ] = "spread",
) -> None:
    """Send simulated readers through the real pipeline: does the bandit earn its place?

    Prints the bandit's click rate against the hand rules (the readers outside its share of
    traffic) and the default (its control share), with 95 % intervals, and what it shows each
    kind of reader. With --seeds N the figures are means over N independent runs. The same
    arguments give the same figures at any time of day (see --start).
    """
    from rich.progress import Progress

    from trimtab.demo.server import DEMO_CONFIG
    from trimtab.runtime import Runtime
    from trimtab.sim.drive import run_starts
    from trimtab.sim.drive import simulate as run_simulation

    site = _load(config or DEMO_CONFIG)
    try:
        starts = run_starts(max(seeds, 1), start)
    except ValueError as exc:
        err.print(f"[bold red]--start[/]: {escape(str(exc))}")
        raise typer.Exit(2) from None
    if compare:
        from trimtab.sim import lift

        lift.run_and_print(
            site, sessions, users, slot, seed, seeds, data_dir, console, starts=starts
        )
        return
    runs = []
    with Progress(console=console, transient=True) as progress:
        for k in range(seeds):
            folder = data_dir if seeds == 1 else data_dir / f"seed-{seed + k}"
            runtime = Runtime(site, folder)
            task = progress.add_task(
                f"seed {seed + k}: simulating {sessions:,} visits", total=sessions
            )
            try:
                runs.append(
                    run_simulation(
                        runtime,
                        sessions,
                        seed + k,
                        slot,
                        every=max(1, sessions // 10),
                        progress=partial(progress.advance, task),
                        users=users,
                        start_ms=starts[k],
                    )
                )
            except ValueError as exc:
                err.print(f"[bold red]cannot simulate[/] {escape(str(exc))}")
                raise typer.Exit(2) from None
            finally:
                runtime.close()
    _print_simulation(runs, site, slot)
    if plot is not None and runs[0].snapshots and runs[0].snapshots[0].probabilities:
        from trimtab.sim.plots import plot_arms

        plot_arms(runs[0], plot)
        console.print(f"arm probabilities of seed {seed} plotted to {plot}")


def _pct(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{100 * x:.1f}%"


def _print_simulation(runs: list[SimulationResult], site: SiteConfig, slot: str) -> None:
    """The bandit against the rules and the default, and its picks per reader type."""
    from trimtab.sim import summary

    first = runs[0]
    shown = sum(len(r.shown) for r in runs)
    seeds = ", ".join(str(r.seed) for r in runs)
    console.print(
        f"[bold]{len(runs)} run(s)[/] (seed {seeds}) of {first.sessions:,} sessions: "
        f"{shown:,} '{slot}' decisions"
    )
    if len(runs) == 1 and first.snapshots:
        table = Table(title=f"{first.policy or slot}: cumulative click rate as rewards arrive")
        table.add_column("sessions", justify="right")
        for column in ("bandit", "rules", "default"):
            table.add_column(column, justify="right")
        profiles = list(first.snapshots[0].probabilities)
        for name in profiles:
            table.add_column(f"{name}: top arms")
        for snap in first.snapshots:
            ctr = snap.ctr_by_source
            row = [f"{snap.sessions:,}"]
            row += [_pct(ctr.get(g, math.nan)) for g in ("policy", "rules", "default")]
            for name in profiles:
                top = sorted(snap.probabilities[name].items(), key=lambda kv: -kv[1])[:2]
                row.append(", ".join(f"{arm} {p:.2f}" for arm, p in top))
            table.add_row(*row)
        console.print(table)
    rates = summary.group_rates(runs)
    if "policy" not in rates:
        console.print(f"no bandit serves '{slot}' in this config: nothing to compare")
        return
    coverage = next(
        (r.coverage for r in site.slots[slot].rules if r.policy and r.id == first.policy), None
    )
    share = f"{coverage:.0%} of readers by hash" if coverage is not None else "all readers"
    interval = "95 % CI (seeds)" if len(runs) > 1 else "95 % CI"
    table = Table(
        title=f"'{slot}': bandit vs rules on the same readers",
        caption=f"{first.policy} takes {share}; the others get the hand rules below it. "
        "default: the bandit's control share. Rules above the split serve both halves.",
    )
    for column in ("group", "decisions", "clicks", "CTR", interval, "× default"):
        table.add_column(column, justify="left" if column == "group" else "right")
    labels = {
        "policy": "bandit",
        "rules": "hand rules",
        "default": "default",
        "other": "above split",
    }
    base = rates.get("default")
    for group, rate in rates.items():
        ratio = rate.mean / base.mean if base and base.mean > 0 and group != "other" else math.nan
        table.add_row(
            labels[group],
            f"{rate.decisions:,}",
            f"{rate.clicks:,}",
            _pct(rate.mean),
            f"{_pct(rate.lower)} – {_pct(rate.upper)}",
            "-" if not math.isfinite(ratio) else f"{ratio:.2f}×",
        )
    console.print(table)
    if len(runs) > 1:
        per_seed = "; ".join(
            f"seed {r.seed}: "
            + " / ".join(_pct(r.ctr(g)[0]) for g in ("policy", "rules", "default"))
            for r in runs
        )
        console.print(f"per seed (bandit / rules / default): {per_seed}")
    for expected, what in ((False, "observed clicks"), (True, "expected clicks")):
        for v in summary.verdicts(runs, expected=expected):
            mark = "[green]✓[/]" if v.holds else "[bold red]✗[/]"
            scale = 100.0 if "points" in v.claim else 1.0
            console.print(
                f"{mark} {v.claim}, {what}: {scale * v.estimate:.2f} "
                f"[{scale * v.lower:.2f}, {scale * v.upper:.2f}]"
            )
    console.print(
        "[dim]expected clicks: the simulator's click probability of each shown rail (the "
        "same decisions without the coin flips' noise)[/]"
    )
    shares = summary.arm_shares(runs)
    if shares:
        table = Table(title="what the bandit shows each kind of reader (its picks, 2nd half)")
        table.add_column("reader's favourite category")
        table.add_column("picks", justify="right")
        table.add_column("rails shown")
        counts = {
            reader: sum(1 for r in runs for s in r.shown if s.group == "policy"
                        and s.reader == reader and s.session > r.sessions / 2)
            for reader in shares
        }  # fmt: skip
        for reader, per in shares.items():
            favourites = ", ".join(f"{arm} {100 * p:.0f}%" for arm, p in list(per.items())[:3])
            table.add_row(reader, f"{counts[reader]:,}", favourites)
        console.print(table)


def _cpu_rows(mine: Any, theirs: Any) -> list[tuple[str, str, str, str]]:
    """The same calls on the thread's CPU clock: a busy machine's preemptions left out."""
    if mine is None or theirs is None:
        return []
    return [
        ("decide, CPU time", f"{mine.median_us:.1f} µs", f"{mine.p99_us:.1f} µs", "-"),
        ("GrowthBook SDK, CPU time", f"{theirs.median_us:.1f} µs", f"{theirs.p99_us:.1f} µs", "-"),
        (
            "speed-up in CPU time (median; p99 ratio)",
            f"{theirs.median_us / mine.median_us:.1f}×",
            f"{theirs.p99_us / mine.p99_us:.1f}×",
            "≥ 6× ; ≥ 4×",
        ),
    ]


def _bench_payload(core: Any, quick: bool) -> None:
    """`trimtab bench core --payload realworld`."""
    with console.status("running the real-world payload benchmark…"):
        started = time.perf_counter()
        result = core.run_payload(quick=quick)
    what = (
        f"decide {result.features} features / {result.rules} rules "
        f"({result.prerequisites} with prerequisites)"
    )
    rows = [(what, f"{result.decide.median_us:.1f} µs", f"{result.decide.p99_us:.1f} µs", "-")]
    if result.growthbook is not None:
        rows.append(
            (
                "GrowthBook SDK, same payload",
                f"{result.growthbook.median_us:.1f} µs",
                f"{result.growthbook.p99_us:.1f} µs",
                "-",
            )
        )
        rows.append(
            (
                "speed-up over the SDK (median; p99 ratio)",
                f"{result.ratio:.1f}×",
                f"{result.p99_ratio:.1f}×",
                "≥ 6× ; ≥ 4×",
            )
        )
        rows += _cpu_rows(result.decide_cpu, result.growthbook_cpu)
    _print_timings(
        "trimtab bench core --payload realworld", rows, ("measure", "median", "p99", "target")
    )
    if result.differ is None:
        console.print("the GrowthBook comparison needs the GrowthBook SDK: pip install -e '.[dev]'")
    else:
        console.print(
            f"values that differ from the SDK on {result.compared // result.features:,} users × "
            f"{result.features} features: {result.differ}"
        )
    console.print(f"took {time.perf_counter() - started:.1f} s")


def _print_timings(title: str, rows: Sequence[tuple[str, ...]], columns: tuple[str, ...]) -> None:
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
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
    payload: Annotated[
        str,
        typer.Option(
            help="'realworld': decide only, on a real-world-shaped GrowthBook payload (60 "
            "features, prerequisites, namespaces, filters, saved groups) imported as a config, "
            "against the SDK on the same payload.",
        ),
    ] = "",
) -> None:
    """Decode, feature updates and decide (3 slots, 20 rules, 30 features), with baselines.

    Feature updates are compared with River's online statistics on the same 10 declarations
    and events; decide with the GrowthBook SDK on the same rules and attributes, call by call
    (alternating, so the machine's load weighs on both alike), with the choices that differ
    on 1,000 users.
    """
    from trimtab.extras import bench_module

    core = bench_module("core")
    if payload:
        if payload != "realworld":
            raise typer.BadParameter("the only payload is 'realworld'", param_hint="--payload")
        _bench_payload(core, quick)
        return

    with console.status("running the core benchmark…"):
        started = time.perf_counter()
        result = core.run(quick=quick)
        differ = core.same_choices(1000)
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
        rows.append(
            (
                "speed-up over the SDK (median; p99 ratio)",
                f"{result.ratio:.1f}×",
                f"{result.p99_ratio:.1f}×",
                "≥ 6× ; ≥ 4×",
            )
        )
        rows += _cpu_rows(result.decide_cpu, result.growthbook_cpu)
    _print_timings("trimtab bench core", rows, ("measure", "median", "p99", "target"))
    if differ is None or result.growthbook is None:
        console.print(
            "the GrowthBook comparison needs the GrowthBook SDK, a dev dependency: "
            "pip install -e '.[dev]'"
        )
    else:
        console.print(
            f"choices that differ from the SDK on 1,000 users × {result.slots} slots: {differ}"
        )
    console.print(
        f"feature-update runs (events/s): {', '.join(f'{r:,.0f}' for r in result.apply_runs)}"
    )
    if result.river_runs:
        console.print(
            f"River Agg runs (events/s): {', '.join(f'{r:,.0f}' for r in result.river_runs)}; "
            f"River values that differ from trimtab's: {result.river_differ}"
        )
    if against:
        from trimtab.extras import bench_module

        ab = bench_module("ab")

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
    consoles: Annotated[
        int,
        typer.Option(help="Operators watching the console's Live tab (SSE) during the run."),
    ] = 0,
) -> None:
    """The live loop: event batch arriving → adjustment leaving, under many WebSocket sessions."""
    from trimtab.extras import bench_module

    live = bench_module("live")

    watched = f" with {consoles} open consoles" if consoles else ""
    with console.status(f"driving {sessions} live sessions for {seconds:.0f} s{watched}…"):
        result = live.run(
            sessions=sessions, seconds=seconds, interval_ms=interval_ms, consoles=consoles
        )
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
            f"server: a page's first decisions (hello → answer, n={server.get('decides', 0):,})",
            f"{server.get('decide_median_us', 0) / 1000:.2f} ms",
            f"{server.get('decide_p99_us', 0) / 1000:.2f} ms",
            "-",
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
        + (
            f"; {consoles} consoles read {server.get('console_bytes', 0):,} bytes"
            if consoles
            else ""
        )
    )
    if "cpu_s" in server and result.batches_sent:
        console.print(
            f"server CPU: {server['cpu_s']:.2f} s in the run, "
            f"{1000 * server['cpu_s'] / result.batches_sent:.2f} ms per batch"
        )
    size = _tracker_size()
    if size is not None:
        console.print(f"tracker /t.js: {size[0]:,} bytes, {size[1]:,} bytes gzipped (budget 6,144)")


def _tracker_size() -> tuple[int, int] | None:
    import gzip

    from trimtab.collector import TRACKER_PATHS
    from trimtab.minify import minify_js

    for path in TRACKER_PATHS:
        if path.is_file():  # as /t.js serves it: minified
            raw = minify_js(path.read_text(encoding="utf-8")).encode()
            return len(raw), len(gzip.compress(raw, 9))
    return None


@bench_app.command("console")
def bench_console(
    loads: Annotated[int, typer.Option(min=1, help="Console page loads to time.")] = 30,
) -> None:
    """The console's time to first render, in real Chromium against `trimtab demo`.

    Logs in once, then loads /console LOADS times: navigation start → first contentful paint,
    and → the first live figures on screen (the `tt-console-first-render` mark, set when the
    first server-sent event is drawn).
    """
    from trimtab.extras import bench_module

    timing = bench_module("console")
    with console.status(f"loading the console {loads} times in Chromium…"):
        result = timing.run(loads)
    rows = [
        (name, f"{q['median']:.0f} ms", f"{q['p95']:.0f} ms", f"{q['max']:.0f} ms")
        for name, q in result.items()
    ]
    _print_timings(
        f"trimtab bench console ({loads} loads, Chromium 1300×900)",
        rows,
        ("from navigation start to", "median", "p95", "max"),
    )


@bench_app.command("browser")
def bench_browser(
    trials: Annotated[int, typer.Option(help="Fresh readers per trigger.")] = 30,
) -> None:
    """Reader action → change visible, in real Chromium on the demo (1280×800).

    Scroll past 75 %, image dwell 3 s and the third story of a category, each timed in the
    page from the reader's action to the slot's new content; median, p95 and max per trigger.
    """
    from rich.progress import Progress

    from trimtab.extras import bench_module

    browser = bench_module("browser")

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("fresh readers in Chromium", total=trials * 3)
        results = browser.run(trials, progress=lambda name, i: bar.advance(task))
    rows = []
    for r in results:
        rows.append(
            (
                f"{r.name} (n={len(r.latencies_ms)}, missing {r.missing})",
                f"{r.median_ms:.1f} ms",
                f"{r.p95_ms:.1f} ms",
                f"{r.max_ms:.1f} ms",
                "p95 ≤ 50 ms",
            )
        )
        if r.from_action_ms:
            ordered = sorted(r.from_action_ms)
            p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
            rows.append(
                (
                    "  … from leaving the previous story (page load included)",
                    f"{statistics.median(ordered):.1f} ms",
                    f"{p95:.1f} ms",
                    f"{ordered[-1]:.1f} ms",
                    "-",
                )
            )
    _print_timings(
        "trimtab bench browser (reader action → change visible)",
        rows,
        ("trigger", "median", "p95", "max", "target"),
    )


@bench_app.command("bandits")
def bench_bandits(
    campaign: Annotated[
        list[str] | None, typer.Option(help="OBD campaign(s): all, men, women (repeat).")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Open Bandit Dataset folder (default: $TRIMTAB_OBD, else the checkout's "
            "tests/data/obd: the benchmarks run from a source checkout)."
        ),
    ] = None,
    peers: Annotated[bool, typer.Option(help="Also run Vowpal Wabbit and MABWiser.")] = True,
    limit: Annotated[int | None, typer.Option(help="Replay only the first N rows.")] = None,
) -> None:
    """Replay trimtab's policies on real logged data (OBD) next to VW and MABWiser."""
    from trimtab.extras import bench_module

    bandits = bench_module("bandits")

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
    from trimtab.extras import bench_module

    scale = bench_module("scale")

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
    ctx.invoke(bench_live, sessions=200, seconds=15.0, interval_ms=250.0, consoles=0)
    ctx.invoke(bench_browser, trials=30)
    ctx.invoke(bench_bandits, campaign=None, data_dir=None, peers=True, limit=None)
    from trimtab.experiments.cli import bench_stats

    ctx.invoke(bench_stats)
    ctx.invoke(bench_scale, processes=None, seconds=8.0, connections=32)
    from trimtab.models.cli import bench_models

    ctx.invoke(bench_models, quick=False, only=None, obd_dir=None, events=1_000_000)


def _json_default(value: Any) -> Any:
    return str(value)


def main() -> None:
    """The `trimtab` command. An unexpected failure is one line naming its cause
    (TRIMTAB_DEBUG=1 shows the traceback)."""
    try:
        app()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        if os.environ.get("TRIMTAB_DEBUG"):
            raise
        cause = str(exc).splitlines()[0] if str(exc) else ""
        err.print(
            f"[bold red]trimtab failed[/] {type(exc).__name__}"
            + (f": {escape(cause)}" if cause else "")
            + " (TRIMTAB_DEBUG=1 shows where)",
            highlight=False,
        )
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
