"""The site config: one YAML or TOML file declaring the site, features, slots and rules.

Loading validates everything the engine will rely on, so a bad config fails at start-up with a
message naming the file, the path inside it and the problem::

    config.yaml: $.slots.hero.rules[1].force: variant 'bold' is not declared
    (declared: standard, urgent)

Rules use GrowthBook's feature-rule fields (``condition``, ``parentConditions``, ``filters``,
``force``, ``coverage``, ``range``, ``hashAttribute``, ``fallbackAttribute``, ``variations``,
``weights``, ``ranges``, ``meta``, ``key``, ``seed``, ``hashVersion``, ``namespace``,
``bucketVersion``), and ``saved_groups`` holds the payload's saved groups, so a GrowthBook
feature payload can be pasted in (``trimtab import growthbook`` does it; docs/ecosystem.md lists
the few fields that are refused, each with a message naming it).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from trimtab.features import FeatureSpec, check_features
from trimtab.store.cache import DEFAULT_MAX_USERS
from trimtab.targeting import ConditionError, compile_condition
from trimtab.validation import ConfigError as ConfigError  # re-exported: callers import it here
from trimtab.validation import convert as _convert


class SiteSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: str = "site"
    name: str = ""
    public_key: str = "pk_dev"
    # The admin key; `env:NAME` reads it from the environment so it stays out of the file.
    secret_key: str = "env:TRIMTAB_SECRET_KEY"
    origins: list[str] = msgspec.field(default_factory=lambda: ["*"])
    consent: Literal["required", "implied"] = "required"
    rate_limit_per_s: float = 50.0
    rate_burst: int = 200
    max_body_bytes: int = 256 * 1024
    decide_deadline_ms: float = 50.0
    # Query parameters of page URLs that are stored (say "page" or "utm_campaign"); every
    # other parameter, and the fragment, is removed before anything is stored.
    keep_query_params: list[str] = []
    # A global holdout: this share of users always sees every slot's default, which measures
    # what all adjustments together are worth.
    holdout: float = 0.0
    holdout_seed: str = "trimtab-holdout"


class IdentitySection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Only signed visitor ids (trimtab.identity) may write to, read from or consent for a
    # profile; unsigned or forged ids are refused (events) or replaced (hello, decide).
    # false: any id is taken as it comes (a public key can then act as any visitor).
    require_signed: bool = True


class StorageSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    data_dir: str = "var/trimtab"
    state: str = "memory"  # memory (SQLite-persisted) | redis://host:port/db
    bus: str = "sqlite"  # sqlite | redis://… | nats://…
    flush_ms: float = 200.0
    # user states kept in memory per process; beyond it the least recently loaded states that
    # are safely stored are evicted (and loaded again when their user comes back)
    max_users_in_memory: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_MAX_USERS
    # scaled: events acknowledged into the local spool while the bus is away; beyond it 503
    max_spooled_events: Annotated[int, msgspec.Meta(ge=1)] = 5_000_000
    # embedded: fsync the event log on every commit, so an acknowledged event survives a crash
    # of the machine too (by default it survives a crash of the process)
    fsync: bool = False


class LimitsSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Bounds on what one client may send and hold (docs/reliability.md, "Limits")."""

    # an event's ts may lie this far behind / ahead of the server's clock, else it is rejected
    clock_skew_past_s: Annotated[float, msgspec.Meta(gt=0)] = 86_400.0
    clock_skew_future_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    # WebSocket hellos: per socket (a token bucket) and per client network (the site's rate
    # limiter, each hello costing hello_cost requests)
    hello_rate_per_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    hello_burst: Annotated[int, msgspec.Meta(ge=1)] = 5
    hello_cost: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    max_slots_per_hello: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 32
    # a WebSocket that has not said hello this long after opening is closed (4408)
    ws_handshake_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    # a WebSocket that sent nothing this long is closed (1001); the tracker reconnects
    ws_idle_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    # largest WebSocket message; larger frames are refused from their header (close 1009)
    ws_max_message_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 256 * 1024
    # an HTTP request's head and body must arrive within this (else the socket is closed)
    http_request_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    # an idle keep-alive HTTP connection is closed after this
    keep_alive_timeout_s: Annotated[int, msgspec.Meta(ge=1)] = 5
    # on shutdown, open requests and sockets get this long before they are cut
    shutdown_timeout_s: Annotated[int, msgspec.Meta(ge=1)] = 10
    # open sockets (HTTP and WebSocket) one client address may hold; 0: no cap (behind a
    # proxy every client shares the proxy's address: cap there instead)
    max_connections_per_client: Annotated[int, msgspec.Meta(ge=0)] = 64


class FeatureDecl(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    kind: str
    # page: reset by every page view; session: this visit; user: this reader. Unset: the
    # kind's natural scope (page for scroll and time on page, user for interest, else session).
    scope: Literal["page", "session", "user"] | None = None
    by: Literal["element", "kind", "category", "total"] = "total"
    event: str = ""
    window: int = 9
    half_life_s: float = 600.0
    steps: list[str] = []
    within_s: float = 30.0
    min_evidence: int = 0
    description: str = ""


class PrerequisiteDecl(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A GrowthBook prerequisite: slot ``id``'s value must pass ``condition`` (on ``value``);
    a failed ``gate`` shows the slot's default instead of skipping the rule."""

    id: str
    condition: dict[str, Any] = {}
    gate: bool = False


class HashFilterDecl(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A GrowthBook hash filter: the user's hash of ``attribute`` must fall in one range."""

    attribute: str = "id"
    seed: str = ""
    hash_version: int = msgspec.field(default=2, name="hashVersion")
    ranges: list[tuple[float, float]] = []


class MetaDecl(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What GrowthBook knows of one variation: its key (sticky buckets, tracking), its name,
    and whether it passes the user on to the next rule."""

    key: str = ""
    name: str = ""
    passthrough: bool = False


class RuleDecl(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One GrowthBook-style feature rule (or a trimtab ``policy`` rule)."""

    id: str = ""
    description: str = ""
    # What the reader is told, in plain language ("Because you read to the end of this
    # article"); ``{attribute}`` is replaced by the value the rule saw.
    why: str = ""
    enabled: bool = True
    condition: dict[str, Any] | None = None
    parent_conditions: list[PrerequisiteDecl] | None = msgspec.field(
        default=None, name="parentConditions"
    )
    filters: list[HashFilterDecl] | None = None
    force: str | None = None
    coverage: float | None = None
    hash_attribute: str = msgspec.field(default="id", name="hashAttribute")
    hash_version: int = msgspec.field(default=1, name="hashVersion")
    # hashes by this attribute when the user has no hashAttribute (rollouts; sticky experiments)
    fallback_attribute: str | None = msgspec.field(default=None, name="fallbackAttribute")
    seed: str | None = None
    key: str | None = None
    variations: list[str] | None = None
    weights: list[float] | None = None
    ranges: list[tuple[float, float]] | None = None  # explicit bucket ranges (over weights)
    meta: list[MetaDecl] | None = None
    namespace: tuple[str, float, float] | None = None
    range: tuple[float, float] | None = None
    name: str = ""
    policy: dict[str, Any] | None = None
    # Sticky assignment: once bucketed, a user keeps the variation (even if weights, coverage or
    # the condition change) until bucketVersion is raised.
    sticky: bool = False
    bucket_version: int = msgspec.field(default=0, name="bucketVersion")


class SlotDecl(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    default: str
    variants: dict[str, dict[str, Any]]
    rules: list[RuleDecl] = []
    description: str = ""
    # What a failed prerequisite gate shows ("": the default; GrowthBook shows null, which an
    # import declares as a variant with value null)
    blocked: str = ""
    # Stability on an open page (docs/concepts.md, "Stable slots"): after its first render a
    # slot changes only when a rule ranked above the one shown starts to apply, at most this
    # many times per page view, and not sooner than this after its previous change.
    max_changes_per_view: int = 2
    min_ms_between_changes: float = 1500.0


class SiteConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    site: SiteSection = msgspec.field(default_factory=SiteSection)
    storage: StorageSection = msgspec.field(default_factory=StorageSection)
    limits: LimitsSection = msgspec.field(default_factory=LimitsSection)
    identity: IdentitySection = msgspec.field(default_factory=IdentitySection)
    features: dict[str, FeatureDecl] = {}
    slots: dict[str, SlotDecl] = {}
    # Metric and experiment declarations are validated by trimtab.experiments.spec.
    metrics: dict[str, Any] = {}
    experiments: dict[str, Any] = {}
    # Predictive models and micro-segments are validated by trimtab.models.spec.
    models: dict[str, Any] = {}
    segments: dict[str, Any] = {}
    # GrowthBook saved groups: ``{"$inGroup": "name"}`` in a condition tests membership
    saved_groups: dict[str, list[Any]] = {}
    source: str = ""  # the file it came from (set by the loader)

    def feature_specs(self) -> list[FeatureSpec]:
        return [
            FeatureSpec(
                name=name,
                kind=d.kind,
                scope=d.scope,
                by=d.by,
                event=d.event,
                window=d.window,
                half_life_s=d.half_life_s,
                steps=tuple(d.steps),
                within_s=d.within_s,
                min_evidence=d.min_evidence,
                description=d.description,
            )
            for name, d in self.features.items()
        ]

    def secret_key(self) -> str:
        """The admin key, resolved from the environment when written as ``env:NAME``."""
        key = self.site.secret_key
        if key.startswith("env:"):
            return os.environ.get(key[4:], "")
        return key


def _read(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), "$", f"not valid TOML: {exc}") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "$", f"not valid YAML: {exc}") from None


def parse_config(data: Any, source: str = "<config>") -> SiteConfig:
    """Validate a config already parsed into Python objects."""
    if not isinstance(data, dict):
        raise ConfigError(source, "$", "the config must be a mapping at the top level")
    known = {
        "site",
        "storage",
        "limits",
        "identity",
        "features",
        "slots",
        "metrics",
        "experiments",
        "models",
        "segments",
        "saved_groups",
    }
    for key in data:
        if key not in known:
            raise ConfigError(
                source, f"$.{key}", f"unknown section (known: {', '.join(sorted(known))})"
            )
    config = SiteConfig(
        site=_convert(data.get("site") or {}, SiteSection, "$.site", source),
        storage=_convert(data.get("storage") or {}, StorageSection, "$.storage", source),
        limits=_convert(data.get("limits") or {}, LimitsSection, "$.limits", source),
        identity=_convert(data.get("identity") or {}, IdentitySection, "$.identity", source),
        features=_convert_named(data.get("features"), FeatureDecl, "$.features", source),
        slots=_convert_named(data.get("slots"), SlotDecl, "$.slots", source),
        metrics=_mapping(data.get("metrics"), "$.metrics", source),
        experiments=_mapping(data.get("experiments"), "$.experiments", source),
        models=_mapping(data.get("models"), "$.models", source),
        segments=_mapping(data.get("segments"), "$.segments", source),
        saved_groups=_convert(
            data.get("saved_groups") or {}, dict[str, list[Any]], "$.saved_groups", source
        ),
    )
    config.source = source
    _check(config, source)
    return config


def _mapping(value: Any, where: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(source, where, f"expected a mapping of names, got {type(value).__name__}")
    return value


def _convert_named(value: Any, kind: type, where: str, source: str) -> dict[str, Any]:
    """Convert a mapping of named entries one by one, so errors name the entry."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(source, where, f"expected a mapping of names, got {type(value).__name__}")
    return {
        str(name): _convert(item, kind, f"{where}.{name}", source) for name, item in value.items()
    }


def load_config(path: str | os.PathLike[str]) -> SiteConfig:
    """Read, parse and validate a site config file (YAML or TOML)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(p), "$", "file not found")
    return parse_config(_read(p), str(p))


def read_config_data(path: str | os.PathLike[str]) -> Any:
    """A config file's document as written (YAML or TOML), before validation."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(p), "$", "file not found")
    return _read(p)


def _check(config: SiteConfig, source: str) -> None:
    """Semantic checks msgspec's types cannot express."""
    # Each subsystem validates its own section: features here, policies, metrics and
    # experiments, models and segments in their packages (imported only when declared).
    check_features(config.feature_specs(), source)
    if not config.slots:
        raise ConfigError(source, "$.slots", "declare at least one slot")
    if not 0.0 <= config.site.holdout < 1.0:
        raise ConfigError(source, "$.site.holdout", "must be at least 0 and below 1")
    for slot_name, slot in config.slots.items():
        _check_slot(source, f"$.slots.{slot_name}", slot, config.saved_groups)
    _check_prerequisites(config, source)
    if any(rule.policy is not None for slot in config.slots.values() for rule in slot.rules):
        from trimtab.bandits import serving

        for slot_name, slot in config.slots.items():
            for i, rule in enumerate(slot.rules):
                if rule.policy is not None:
                    where = f"$.slots.{slot_name}.rules[{i}].policy"
                    serving.check_policy_rule(source, where, rule, slot)
        serving.check_policy_names(source, config.slots)
    if config.metrics or config.experiments:
        from trimtab.experiments import spec

        spec.check(config, source)
    if config.models or config.segments:
        from trimtab.models import spec as models_spec

        models_spec.check(config, source)


def _check_prerequisites(config: SiteConfig, source: str) -> None:
    """Prerequisites name declared slots, never one decided by a policy, and form no cycle."""
    needs: dict[str, set[str]] = {}
    where: dict[str, str] = {}
    for slot_name, slot in config.slots.items():
        for i, rule in enumerate(slot.rules):
            for j, parent in enumerate(rule.parent_conditions or ()):
                at = f"$.slots.{slot_name}.rules[{i}].parentConditions[{j}]"
                target = config.slots.get(parent.id)
                if target is None:
                    raise ConfigError(source, f"{at}.id", f"no slot named {parent.id!r}")
                if any(r.policy is not None for r in target.rules):
                    raise ConfigError(
                        source,
                        f"{at}.id",
                        f"slot {parent.id!r} is decided by a learning policy: a prerequisite "
                        "needs a value rules decide",
                    )
                try:
                    compile_condition(parent.condition, config.saved_groups, strict=True)
                except ConditionError as exc:
                    inner = f".{exc.path}" if exc.path and not exc.path.startswith("[") else ""
                    raise ConfigError(source, f"{at}.condition{inner}", exc.reason) from None
                needs.setdefault(slot_name, set()).add(parent.id)
                where.setdefault(slot_name, f"$.slots.{slot_name}.rules[{i}].parentConditions")
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            cycle = " -> ".join((*path[path.index(name) :], name))
            raise ConfigError(source, where[name], f"prerequisites form a cycle ({cycle})")
        if name in done:
            return
        for parent in sorted(needs.get(name, ())):
            visit(parent, (*path, name))
        done.add(name)

    for name in sorted(needs):
        visit(name, ())


def _check_slot(
    source: str, where: str, slot: SlotDecl, saved_groups: dict[str, list[Any]] | None = None
) -> None:
    declared = ", ".join(slot.variants) or "none"
    if slot.max_changes_per_view < 0:
        raise ConfigError(source, f"{where}.max_changes_per_view", "must be 0 or more")
    if slot.min_ms_between_changes < 0:
        raise ConfigError(source, f"{where}.min_ms_between_changes", "must be 0 or more")
    if not slot.variants:
        raise ConfigError(source, f"{where}.variants", "declare at least one variant")
    if slot.default not in slot.variants:
        raise ConfigError(
            source,
            f"{where}.default",
            f"variant {slot.default!r} is not declared (declared: {declared})",
        )
    if slot.blocked and slot.blocked not in slot.variants:
        raise ConfigError(
            source,
            f"{where}.blocked",
            f"variant {slot.blocked!r} is not declared (declared: {declared})",
        )
    seen_ids: set[str] = set()
    for i, rule in enumerate(slot.rules):
        at = f"{where}.rules[{i}]"
        if rule.id:
            if rule.id in seen_ids:
                raise ConfigError(source, f"{at}.id", f"rule id {rule.id!r} is used twice")
            seen_ids.add(rule.id)
        kinds = [k for k in ("force", "variations", "policy") if getattr(rule, k) is not None]
        if len(kinds) > 1 or (not kinds and not rule.parent_conditions):
            raise ConfigError(source, at, "a rule needs exactly one of force, variations or policy")
        if rule.condition is not None:
            try:
                compile_condition(rule.condition, saved_groups or {}, strict=True)
            except ConditionError as exc:
                inner = f".{exc.path}" if exc.path and not exc.path.startswith("[") else exc.path
                raise ConfigError(source, f"{at}.condition{inner}", exc.reason) from None
        if rule.force is not None and rule.force not in slot.variants:
            raise ConfigError(
                source,
                f"{at}.force",
                f"variant {rule.force!r} is not declared (declared: {declared})",
            )
        if rule.coverage is not None and not 0.0 <= rule.coverage <= 1.0:
            raise ConfigError(source, f"{at}.coverage", "must be between 0 and 1")
        if rule.hash_version not in (1, 2):
            raise ConfigError(source, f"{at}.hashVersion", "must be 1 or 2")
        for j, hash_filter in enumerate(rule.filters or ()):
            if hash_filter.hash_version not in (1, 2):
                raise ConfigError(source, f"{at}.filters[{j}].hashVersion", "must be 1 or 2")
            if not hash_filter.ranges:
                raise ConfigError(source, f"{at}.filters[{j}].ranges", "give at least one range")
        if rule.policy is not None and rule.parent_conditions:
            raise ConfigError(
                source, f"{at}.parentConditions", "a policy rule cannot have prerequisites"
            )
        if rule.variations is not None:
            _check_experiment(source, at, rule, slot, declared)
        elif rule.sticky:
            raise ConfigError(source, f"{at}.sticky", "only experiment rules can be sticky")


def _check_experiment(source: str, at: str, rule: RuleDecl, slot: SlotDecl, declared: str) -> None:
    variations = rule.variations or []
    if len(variations) < 2:
        raise ConfigError(source, f"{at}.variations", "an experiment needs at least two variations")
    for j, v in enumerate(variations):
        if v not in slot.variants:
            raise ConfigError(
                source,
                f"{at}.variations[{j}]",
                f"variant {v!r} is not declared (declared: {declared})",
            )
    if rule.weights is not None:
        if len(rule.weights) != len(variations):
            raise ConfigError(
                source,
                f"{at}.weights",
                f"{len(rule.weights)} weights for {len(variations)} variations",
            )
        if any(w < 0 for w in rule.weights) or abs(sum(rule.weights) - 1.0) > 1e-6:
            raise ConfigError(source, f"{at}.weights", "weights must be ≥ 0 and sum to 1")
    if rule.meta is not None and len(rule.meta) != len(variations):
        raise ConfigError(
            source, f"{at}.meta", f"{len(rule.meta)} meta entries for {len(variations)} variations"
        )
    if rule.ranges is not None:
        if len(rule.ranges) != len(variations):
            raise ConfigError(
                source,
                f"{at}.ranges",
                f"{len(rule.ranges)} ranges for {len(variations)} variations",
            )
        if any(not 0.0 <= lo <= hi <= 1.0 for lo, hi in rule.ranges):
            raise ConfigError(source, f"{at}.ranges", "each range must satisfy 0 ≤ start ≤ end ≤ 1")
    if rule.namespace is not None:
        _, start, end = rule.namespace
        if not 0.0 <= start <= end <= 1.0:
            raise ConfigError(source, f"{at}.namespace", "range must satisfy 0 ≤ start ≤ end ≤ 1")
