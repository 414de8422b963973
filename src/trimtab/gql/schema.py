"""The GraphQL schema (strawberry): what the admin API exposes, read from the live server.

Queries: ``slots`` / ``slot(name)`` (the serving config's slots, variants and rules),
``experiments`` (status and the report's results, the same code as the console and
``trimtab report``), ``visitor(id)`` (features, state and logged decisions of one visitor)
and ``recentDecisions`` (the console's live feed). Subscription: ``decisions`` streams the
decisions this process makes, from the same feed the console's live stream reads.

Every resolver reads the collector found in the context (``info.context["collector"]``); the
limits of what a client may ask are the module's constants (docs/ecosystem.md, "GraphQL").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import msgspec
import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.extensions.add_validation_rules import AddValidationRules
from strawberry.scalars import JSON
from strawberry.types import ExecutionContext, Info

from trimtab.decisionlog import DecisionRecord, read_user
from trimtab.gql.cost import cost_rule
from trimtab.logschema import decision_log_paths

log = logging.getLogger("trimtab.gql")
MAX_DEPTH = 8  # nesting of selections (introspection fields excepted)
MAX_TOKENS = 2_000  # lexical tokens of one document
MAX_ALIASES = 20
MAX_COST = 5_000  # trimtab.gql.cost: fields, lists multiplied by their size
MAX_DECISIONS = 200  # visitor { decisions(limit:) }
MAX_RECENT = 500  # recentDecisions(limit:): the console feed keeps the last 500
# the largest `limit` of each list field that takes one (the cost rule assumes it for a variable)
MAX_LIMITS = {"decisions": MAX_DECISIONS, "recentDecisions": MAX_RECENT}
# fields that read storage or compute cost more than 1: a visitor's state, a decision-log read,
# an experiment's report (cached for a few seconds, but computed from the logs)
WEIGHTS = {"visitor": 10, "decisions": 10, "report": 50, "reportProblem": 50}
POLL_S = 0.1  # how often a subscription looks at the feed for new decisions
MAX_PER_POLL = 200  # decisions one subscription sends per look at most (a flood is sampled)


F = TypeVar("F", bound=Callable[..., Any])


def _resolver(description: str) -> Callable[[F], F]:
    """``strawberry.field`` as a typed decorator (its keyword form is typed ``Any``)."""
    return cast(Callable[[F], F], strawberry.field(description=description))


def _streams(description: str) -> Callable[[F], F]:
    """``strawberry.subscription``, typed the same way."""
    return cast(Callable[[F], F], strawberry.subscription(description=description))


def _collector(info: Info[Any, Any]) -> Any:
    return info.context["collector"]


def _limit(name: str, value: int, most: int) -> int:
    if not 1 <= value <= most:
        raise GraphQLError(f"argument {name!r} must be between 1 and {most}, got {value}")
    return value


MAX_TEXT = 256  # characters of a name or id argument


def _text(name: str, value: str | None) -> str | None:
    """A name or id argument, bounded (it may be hashed, cached or compared)."""
    if value is not None and not 1 <= len(value) <= MAX_TEXT:
        raise GraphQLError(f"argument {name!r} must be 1 to {MAX_TEXT} characters")
    return value


def _json(value: Any) -> JSON:
    return cast(JSON, value)


# -- config ------------------------------------------------------------------------------------
@strawberry.type(description="One variant of a slot: its name and the payload pages render.")
class Variant:
    name: str
    payload: JSON


@strawberry.type(description="One rule of a slot, in its order of evaluation.")
class Rule:
    id: str
    kind: str = strawberry.field(
        description="force | experiment | policy | gate (neither: only its prerequisite gates act)"
    )
    description: str
    why: str = strawberry.field(description="what the reader is told when this rule decides")
    enabled: bool
    condition: JSON | None
    force: str | None
    coverage: float | None
    key: str | None = strawberry.field(description="the experiment key (experiment rules)")
    variations: list[str] | None
    weights: list[float] | None
    hash_attribute: str
    sticky: bool
    policy: JSON | None = strawberry.field(description="the bandit policy (policy rules)")
    declaration: JSON = strawberry.field(
        description="the rule as declared, every field (prerequisites, filters, namespace, …)"
    )


@strawberry.type(description="A place on the page that trimtab decides, with its rules.")
class Slot:
    name: str
    description: str
    default: str
    variants: list[Variant]
    rules: list[Rule]
    max_changes_per_view: int
    min_ms_between_changes: float


def _rule(r: Any) -> Rule:
    if r.variations is not None:
        kind = "experiment"
    elif r.policy:
        kind = "policy"
    elif r.force is not None:
        kind = "force"
    else:
        kind = "gate"
    return Rule(
        id=r.id,
        kind=kind,
        description=r.description,
        why=r.why,
        enabled=r.enabled,
        condition=_json(r.condition),
        force=r.force,
        coverage=r.coverage,
        key=r.key,
        variations=list(r.variations) if r.variations is not None else None,
        weights=list(r.weights) if r.weights is not None else None,
        hash_attribute=r.hash_attribute,
        sticky=bool(getattr(r, "sticky", False)),
        policy=_json(r.policy),
        declaration=_json(msgspec.to_builtins(r)),
    )


def _slot(name: str, s: Any) -> Slot:
    return Slot(
        name=name,
        description=s.description,
        default=s.default,
        variants=[Variant(name=v, payload=_json(p)) for v, p in s.variants.items()],
        rules=[_rule(r) for r in s.rules],
        max_changes_per_view=s.max_changes_per_view,
        min_ms_between_changes=s.min_ms_between_changes,
    )


# -- experiments -------------------------------------------------------------------------------
@strawberry.type(description="An arm of an experiment and how many users it has.")
class ReportArm:
    name: str
    users: int
    weight: float


@strawberry.type(description="The sample ratio check: do the arms have the users they should?")
class SampleRatio:
    ok: bool
    p_value: float | None
    message: str
    threshold: float | None


@strawberry.type(description="One of the report's integrity checks.")
class IntegrityCheck:
    name: str
    status: str = strawberry.field(description="ok | warn | error")
    message: str


@strawberry.type(description="One arm's figures for one metric, against the baseline.")
class ArmResult:
    name: str
    n: int
    mean: float | None
    baseline: bool
    effect: float | None = strawberry.field(description="relative effect against the baseline")
    ci: list[float] | None = strawberry.field(description="its interval (lower, upper)")
    p_value: float | None
    error: str | None = strawberry.field(description="why the effect cannot be computed")


@strawberry.type(description="One metric of an experiment: each arm's result and verdict.")
class MetricResult:
    name: str
    guardrail: bool
    description: str
    verdicts: list[str] = strawberry.field(description="per arm: baseline | better | worse | …")
    arms: list[ArmResult]


@strawberry.type(description="An experiment's report (as `trimtab report` and the console).")
class ExperimentReport:
    users: int
    sequential: bool
    arms: list[ReportArm]
    sample_ratio: SampleRatio
    integrity: list[IntegrityCheck]
    metrics: list[MetricResult]


def _float(x: Any) -> float | None:
    """JSON floats only: NaN and infinities (an effect not computable yet) become null."""
    if x is None:
        return None
    value = float(x)
    return value if value == value and abs(value) != float("inf") else None


def _report(summary: dict[str, Any]) -> ExperimentReport:
    srm = summary["srm"]
    return ExperimentReport(
        users=summary["users"],
        sequential=summary["sequential"],
        arms=[ReportArm(name=a["name"], users=a["users"], weight=a["weight"]) for a in
              summary["arms"]],
        sample_ratio=SampleRatio(
            ok=bool(srm["ok"]),
            p_value=_float(srm["p_value"]),
            message=srm["message"],
            threshold=_float(srm["threshold"]),
        ),
        integrity=[IntegrityCheck(**c) for c in summary["integrity"]],
        metrics=[
            MetricResult(
                name=m["name"],
                guardrail=m["guardrail"],
                description=m["description"],
                verdicts=[str(v) for v in m["verdicts"]],
                arms=[
                    ArmResult(
                        name=a["name"],
                        n=a["n"],
                        mean=_float(a["mean"]),
                        baseline=a["baseline"],
                        effect=_float(a["effect"]),
                        ci=None if a["ci"] is None else [_float(x) or 0.0 for x in a["ci"]],
                        p_value=_float(a["p_value"]),
                        error=a["error"],
                    )
                    for a in m["arms"]
                ],
            )
            for m in summary["metrics"]
        ],
    )  # fmt: skip


@strawberry.type(description="An experiment declared in the config, and its results.")
class Experiment:
    name: str
    key: str
    slots: list[str]
    status: str = strawberry.field(description="running | stopped | shipped | removed")
    variations: list[str]

    @_resolver("Why there is no report (empty when there is one).")
    async def report_problem(self, info: Info[Any, Any]) -> str:
        return (await self._report(info))[1]

    @_resolver("The report's results (computed from the logs, cached).")
    async def report(self, info: Info[Any, Any]) -> ExperimentReport | None:
        summary = (await self._report(info))[0]
        return None if summary is None else _report(summary)

    async def _report(self, info: Info[Any, Any]) -> tuple[dict[str, Any] | None, str]:
        console = _collector(info).console
        result: tuple[dict[str, Any] | None, str] = await console.report(self.name, self.status)
        return result


def _experiments(collector: Any) -> list[Experiment]:
    from trimtab.experiments.spec import experiments_of

    config = collector.runtime.config
    out = []
    for name, spec in experiments_of(config).experiments.items():
        key = spec.key or name
        status = collector.console.experiment_status(config, key, list(spec.slots))
        out.append(
            Experiment(
                name=name,
                key=key,
                slots=list(spec.slots),
                status=status["status"],
                variations=[str(v) for v in status["variations"]],
            )
        )
    return out


# -- visitors and decisions --------------------------------------------------------------------
@strawberry.type(description="A feature's value for a visitor, as rules see it now.")
class Feature:
    name: str
    scope: str = strawberry.field(description="page | session | user | other (attributes)")
    value: JSON | None


@strawberry.type(description="A decision as the decision log keeps it.")
class LoggedDecision:
    decision_id: str
    ts: float = strawberry.field(description="unix seconds")
    user_id: str = strawberry.field(description="the visitor as stored (pseudonymous)")
    session_id: str
    slot: str
    variant: str
    source: str
    rule_id: str
    experiment: str
    variation: int
    propensity: float
    reason: str

    @_resolver("The visitor who got this decision.")
    async def visitor(self, info: Info[Any, Any]) -> Visitor:
        return await _visitor(_collector(info), self.user_id, True, None)


# what a logged decision shows here: the record's fields but the stored features
_LOGGED_FIELDS = tuple(
    name for name in LoggedDecision.__annotations__ if name in DecisionRecord.__struct_fields__
)


@strawberry.type(description="A decision as it was made, from the live feed.")
class LiveDecision:
    seq: int = strawberry.field(description="the feed's sequence number (grows by one)")
    decision_id: str = strawberry.field(description="as logged, shown to the page, exposed")
    ts: float = strawberry.field(description="unix seconds")
    user_id: str = strawberry.field(description="the visitor as stored (pseudonymous)")
    slot: str
    variant: str
    source: str
    rule_id: str
    propensity: float
    reason: str

    @_resolver("The visitor who got this decision.")
    async def visitor(self, info: Info[Any, Any]) -> Visitor:
        return await _visitor(_collector(info), self.user_id, True, None)


def _live(d: dict[str, Any]) -> LiveDecision:
    return LiveDecision(
        seq=d["seq"],
        decision_id=d.get("id", ""),
        ts=d["ts"],
        user_id=d["user"],
        slot=d["slot"],
        variant=d["variant"],
        source=d["source"],
        rule_id=d["rule"],
        propensity=d["p"],
        reason=d["reason"],
    )


@strawberry.type(description="What trimtab knows about one visitor now.")
class Visitor:
    id: str = strawberry.field(description="the visitor as stored (pseudonymous)")
    session_id: str = strawberry.field(description="the session whose features are shown")
    known: bool = strawberry.field(description="whether any state is kept for this visitor")
    sessions: int
    first_seen_ms: float | None
    last_seen_ms: float | None
    features: list[Feature]

    @_resolver("The visitor's logged decisions, newest first.")
    async def decisions(
        self, info: Info[Any, Any], limit: int = 20, slot: str | None = None
    ) -> list[LoggedDecision]:
        _limit("limit", limit, MAX_DECISIONS)
        _text("slot", slot)
        runtime = _collector(info).runtime
        log = runtime.decision_log

        def read() -> list[Any]:
            wanted = MAX_DECISIONS if slot else limit
            rows: list[Any] = log.read(self.id, wanted)
            # other processes on the same data directory (`serve --workers N`) log their own
            own = Path(log.path).resolve()
            others = [p for p in decision_log_paths(runtime.data_dir) if p.resolve() != own]
            if others:
                rows = sorted([*rows, *read_user(others, self.id, wanted)], key=lambda r: -r.ts)[
                    :wanted
                ]
            return rows

        with contextlib.suppress(Exception):  # unwritten rows stay buffered; read what is
            await runtime.decisions_written()
        rows = await asyncio.to_thread(read)
        if slot is not None:
            rows = [r for r in rows if r.slot == slot][:limit]
        return [LoggedDecision(**{name: getattr(r, name) for name in _LOGGED_FIELDS}) for r in rows]


async def _visitor(collector: Any, raw: str, stored: bool, session: str | None) -> Visitor:
    user = raw if stored else collector.gate.user_id(raw)
    if not await collector.prepare({user}):
        raise GraphQLError(f"state unavailable: {collector.degraded}")
    runtime = collector.runtime
    state = runtime.state_of(user)
    if session is None:
        session = collector.feed.sessions.get(user, "")
        if not session and state is not None and state.sessions:
            session = next(reversed(state.sessions))
    attrs: dict[str, Any] = runtime.features_of(user, session or "")
    scopes = {s.name: s.resolved_scope for s in runtime.config.feature_specs()}
    features = [
        Feature(name=name, scope=scopes.get(name, "other"), value=_json(value))
        for name, value in sorted(attrs.items())
    ]
    return Visitor(
        id=user,
        session_id=session or "",
        known=state is not None,
        sessions=state.n_sessions if state is not None else 0,
        first_seen_ms=state.first_ms if state is not None else None,
        last_seen_ms=state.last_ms if state is not None else None,
        features=features,
    )


# -- roots -------------------------------------------------------------------------------------
@strawberry.type
class Query:
    @_resolver("Every slot of the serving config.")
    def slots(self, info: Info[Any, Any]) -> list[Slot]:
        config = _collector(info).runtime.config
        return [_slot(name, s) for name, s in config.slots.items()]

    @_resolver("One slot by name (null when the config has none).")
    def slot(self, info: Info[Any, Any], name: str) -> Slot | None:
        _text("name", name)
        declared = _collector(info).runtime.config.slots.get(name)
        return None if declared is None else _slot(name, declared)

    @_resolver("The config's experiments, with their status and results.")
    def experiments(self, info: Info[Any, Any], name: str | None = None) -> list[Experiment]:
        _text("name", name)
        found = _experiments(_collector(info))
        return [e for e in found if name is None or e.name == name]

    @_resolver(
        "One visitor: `id` as the site knows it (pseudonymised here), or as stored "
        "(`stored: true`, e.g. a `userId` from the decision stream)."
    )
    async def visitor(
        self,
        info: Info[Any, Any],
        id: str,
        stored: bool = False,
        session_id: str | None = None,
    ) -> Visitor:
        _text("id", id)
        _text("sessionId", session_id)
        return await _visitor(_collector(info), id, stored, session_id)

    @_resolver("The latest decisions this process made, oldest first.")
    def recent_decisions(
        self, info: Info[Any, Any], limit: int = 50, slot: str | None = None
    ) -> list[LiveDecision]:
        _limit("limit", limit, MAX_RECENT)
        _text("slot", slot)
        feed = _collector(info).feed
        picked = [d for d in feed.since(0, MAX_RECENT) if slot is None or d["slot"] == slot]
        return [_live(d) for d in picked[-limit:]]


@strawberry.type
class Subscription:
    @_streams(
        "Decisions as this process makes them, optionally of one slot or one "
        "visitor (`userId` as the site knows it, or as stored with `stored: true`). A flood "
        "is sampled: at most 200 per 0.1 s are sent."
    )
    async def decisions(
        self,
        info: Info[Any, Any],
        slot: str | None = None,
        user_id: str | None = None,
        stored: bool = False,
    ) -> AsyncGenerator[LiveDecision, None]:
        _text("slot", slot)
        _text("userId", user_id)
        collector = _collector(info)
        if user_id is not None and not stored:
            user_id = collector.gate.user_id(user_id)
        feed = collector.feed
        secret = collector.runtime.config.secret_key()
        after = feed.seq
        metrics = info.context.get("metrics")
        if metrics is not None:
            metrics.subscriptions.inc()
        try:
            while True:
                if collector.runtime.config.secret_key() != secret:
                    return  # the key this socket was admitted with changed: the stream ends
                if feed.seq > after:
                    fresh = feed.since(after, MAX_PER_POLL)
                    after = feed.seq
                    for d in fresh:
                        if (slot is None or d["slot"] == slot) and (
                            user_id is None or d["user"] == user_id
                        ):
                            yield _live(d)
                await asyncio.sleep(POLL_S)
        finally:
            if metrics is not None:
                metrics.subscriptions.dec()


class Counted(SchemaExtension):
    """Counts each operation by type and outcome (the context's ``metrics``, if any)."""

    def on_operation(self) -> Iterator[None]:
        yield
        ctx = self.execution_context
        metrics = ctx.context.get("metrics") if isinstance(ctx.context, dict) else None
        if metrics is None:
            return
        if ctx.pre_execution_errors:
            outcome = "refused"
        elif ctx.result is not None and ctx.result.errors:
            outcome = "error"
        else:
            outcome = "ok"
        try:
            operation = ctx.operation_type.value
        except Exception:  # no document to tell (a syntax error)
            operation = "unknown"
        metrics.operations.labels(operation, outcome).inc()


class Schema(strawberry.Schema):
    """strawberry's schema, logging what clients get wrong at debug level.

    strawberry logs every error with a traceback; a query refused by a limit, a syntax error
    or a bad argument is the client's and is answered in ``errors``: logging each at ERROR
    would let any key holder fill the server's log. An exception a resolver did not mean
    (a bug) is still logged in full.
    """

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        unexpected = [e for e in errors if e.original_error is not None]
        for error in errors:
            if error.original_error is None:
                log.debug("GraphQL request refused: %s", error.message)
        super().process_errors(unexpected, execution_context)


def build_schema() -> Schema:
    """The schema with its limits: depth, tokens, aliases and cost."""
    return Schema(
        query=Query,
        subscription=Subscription,
        extensions=[
            # factories: an extension keeps per-request state, so each request gets its own
            functools.partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
            functools.partial(MaxAliasesLimiter, max_alias_count=MAX_ALIASES),
            functools.partial(QueryDepthLimiter, max_depth=MAX_DEPTH),
            functools.partial(AddValidationRules, [cost_rule(MAX_COST, MAX_LIMITS, WEIGHTS)]),
            Counted,
        ],
    )


__all__ = ["MAX_COST", "MAX_DEPTH", "build_schema"]
