"""`trimtab bench core`: event decode, feature updates and decide, next to two baselines.

The decide comparison runs the *same* rules on the *same* attributes through trimtab's engine
and through the PyPI ``growthbook`` SDK (imported only here, as the baseline), in one run. The
feature updates run the same 10 declarations on the same events through trimtab's processor
and through River's online statistics (:mod:`trimtab_bench.river`), in one run.
"""

from __future__ import annotations

import gc
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from trimtab.config import SiteConfig, parse_config
from trimtab.decide import Engine
from trimtab.events import decode_batch, encode
from trimtab.features import FeatureProcessor
from trimtab.sim.synthetic import CATEGORIES, synthetic_events
from trimtab.tuning import tune_for_serving
from trimtab_bench.timing import Timing, time_calls, time_pair

__all__ = [
    "BENCH_FEATURES",
    "CoreResult",
    "bench_attributes",
    "bench_rules",
    "run",
    "synthetic_events",
]


@dataclass(frozen=True)
class CoreResult:
    decode: Timing
    events_per_s: float
    apply_runs: list[float]
    river_runs: list[float] | None  # River's per-key aggregates (feature_extraction.Agg)
    river_stats_runs: list[float] | None  # River statistics in hand-written per-key tables
    river_differ: int | None
    decide: Timing
    growthbook: Timing | None
    slots: int
    rules: int
    features: int
    decide_cpu: Timing | None = None  # the same calls on the thread's CPU clock
    growthbook_cpu: Timing | None = None

    @property
    def ratio(self) -> float | None:
        if self.growthbook is None:
            return None
        return self.growthbook.median_us / self.decide.median_us

    @property
    def p99_ratio(self) -> float | None:
        if self.growthbook is None:
            return None
        return self.growthbook.p99_us / self.decide.p99_us

    @property
    def river_events_per_s(self) -> float | None:
        return None if not self.river_runs else self.river_runs[len(self.river_runs) // 2]

    @property
    def river_stats_events_per_s(self) -> float | None:
        runs = self.river_stats_runs
        return None if not runs else runs[len(runs) // 2]

    @property
    def river_ratio(self) -> float | None:
        river = self.river_events_per_s
        return None if river is None else self.events_per_s / river


# The feature set of a realistic site: the demo's declarations, with the demo's scopes.
BENCH_FEATURES: dict[str, dict[str, Any]] = {
    "scroll_depth_max": {"kind": "scroll_depth_max", "scope": "page"},
    "scroll_velocity": {"kind": "scroll_velocity", "scope": "page"},
    "hover_ms_by_element": {"kind": "hover_ms", "by": "element", "scope": "page"},
    "hover_ms_by_kind": {"kind": "hover_ms", "by": "kind", "scope": "page"},
    "visible_ms_by_category": {"kind": "visible_ms", "by": "category", "scope": "session"},
    "clicks_by_kind": {"kind": "click_count", "by": "kind", "scope": "session"},
    "time_on_page_s": {"kind": "time_on_page", "scope": "page"},
    "interest": {"kind": "interest", "scope": "user"},
    "filter_then_expand": {
        "kind": "sequence",
        "scope": "session",
        "steps": ["click:filter", "click:expand"],
        "within_s": 30,
    },
    "page_views": {"kind": "event_count", "event": "page_view", "scope": "user"},
}


def bench_rules() -> tuple[dict[str, Any], dict[str, Any]]:
    """Three slots with 20 rules in all, as trimtab config and as a GrowthBook payload."""
    variants = ["a", "b", "c", "d"]
    # Conditions that fail for most users, as in real targeting: the engine walks many rules.
    conditions: list[dict[str, Any]] = [
        {"f0": {"$gt": 0.97}},
        {"f1": {"$lt": 0.02}, "device": "mobile"},
        {"$or": [{"f2": {"$gt": 0.99}}, {"f3": {"$gt": 0.99}}]},
        {"cat0": {"$in": ["politics", "travel"]}, "f4": {"$gt": 0.9}},
        {"local_hour": {"$gte": 23}, "device": "tablet"},
        {"f5": {"$gte": 0.95}, "f6": {"$lte": 0.1}},
        {"cat1": "science", "f7": {"$gt": 0.8}},
    ]
    slots: dict[str, Any] = {}
    gb_features: dict[str, Any] = {}
    rule_counts = [7, 7, 6]
    for s, count in enumerate(rule_counts):
        name = f"slot{s}"
        rules: list[dict[str, Any]] = []
        for r in range(count - 2):
            rules.append(
                {
                    "id": f"{name}-r{r}",
                    "condition": conditions[(r + s) % 7],
                    "force": variants[r % 4],
                }
            )
        rules.append(
            {
                "id": f"{name}-rollout",
                "condition": {"returning": True, "f8": {"$gt": 0.5}},
                "force": "b",
                "coverage": 0.3,
                "hashAttribute": "id",
            }
        )
        rules.append(
            {
                "id": f"{name}-test",
                "key": f"{name}-test",
                "variations": ["a", "b"],
                "weights": [0.5, 0.5],
                "coverage": 1.0,
                "hashAttribute": "id",
            }
        )
        slots[name] = {"default": "a", "variants": {v: {"v": v} for v in variants}, "rules": rules}
        gb_rules = []
        for rule in rules:
            gb = {k: v for k, v in rule.items() if k != "id"}
            if "variations" in gb:
                gb["variations"] = [v for v in gb["variations"]]
            gb_rules.append(gb)
        gb_features[name] = {"defaultValue": "a", "rules": gb_rules}
    config = {"features": BENCH_FEATURES, "slots": slots}
    return config, gb_features


def bench_attributes(n: int, seed: int = 3) -> list[dict[str, Any]]:
    """``n`` attribute dicts with 30 features each (numbers, categories, nested maps)."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        attrs: dict[str, Any] = {f"f{j}": rnd.random() for j in range(20)}
        attrs.update({f"cat{j}": rnd.choice(CATEGORIES) for j in range(4)})
        attrs["hover_ms_by_kind"] = {"image": rnd.random() * 5000, "card": rnd.random() * 3000}
        attrs["device"] = rnd.choice(["mobile", "desktop", "tablet"])
        attrs["local_hour"] = rnd.randrange(24)
        attrs["returning"] = rnd.random() < 0.5
        attrs["id"] = f"user-{i}"
        attrs["session_id"] = f"user-{i}-s"
        out.append(attrs)
    return out


def run(quick: bool = False) -> CoreResult:
    n = 2_000 if quick else 20_000
    # 1. decode + validate a 20-event batch
    events = synthetic_events(20, users=5, seed=1, t0=time.time() * 1000)
    batch = encode(events)
    decode = time_calls("decode 20-event batch", lambda i: decode_batch(batch), n)

    # 2. feature updates, events/s of CPU time (median of runs over fresh processors)
    config: SiteConfig = parse_config(bench_rules()[0], "<bench>")
    stream = synthetic_events(50_000 if quick else 200_000, users=2_000)
    # ... alternating with River on the same declarations and events, so load drift hits both
    baseline = _river_module()
    dicts = baseline.RiverAgg.dicts(stream) if baseline is not None else []
    runs: list[float] = []
    river_runs: list[float] = []
    agg_runs: list[float] = []
    for _ in range(3 if quick else 5):
        processor = FeatureProcessor(config.feature_specs())
        start = time.process_time()  # CPU time: the machine's other load does not count
        processor.apply(stream)
        runs.append(len(stream) / (time.process_time() - start))
        if baseline is not None:
            agg_runs += baseline.agg_rate(dicts, 1)
            river_runs += baseline.river_rate(stream, 1)
    runs.sort()
    river_runs.sort()
    agg_runs.sort()
    river_differ = baseline.disagreements(stream, processor) if baseline is not None else None

    # 3. decide: 3 slots, 20 rules, 30 features, decisions logged to the in-memory buffer
    logged: list[Any] = []
    engine = Engine(config, log=lambda decisions, attrs: logged.append((decisions, attrs)))
    # Every call is a different user, so no bucket is ever served from the engine's cache;
    # the process runs with the serving GC schedule, as `trimtab serve` does.
    attrs_list = bench_attributes(n + 200)
    previous_gc = tune_for_serving()
    slots = list(config.slots)

    def decide_one(i: int) -> None:
        engine.decide_attrs(attrs_list[i], slots)
        if len(logged) >= 1000:
            logged.clear()  # what the decision log's flush does

    gb_one = _growthbook_caller(bench_rules()[1], {}, attrs_list, slots)
    decide_cpu = gb_cpu = None
    if gb_one is None:
        decide = time_calls("decide 3 slots / 20 rules", decide_one, n)
        gb_timing = None
    else:
        # call by call, alternating with the SDK: the machine's load weighs on both alike
        decide, gb_timing, decide_cpu, gb_cpu = time_pair(
            ("decide 3 slots / 20 rules", "GrowthBook SDK, same rules"), (decide_one, gb_one), n
        )
    gc.set_threshold(*previous_gc)
    gc.unfreeze()
    rules = sum(len(s.rules) for s in config.slots.values())
    return CoreResult(
        decode=decode,
        events_per_s=runs[len(runs) // 2],
        apply_runs=runs,
        river_runs=agg_runs or None,
        river_stats_runs=river_runs or None,
        river_differ=river_differ,
        decide=decide,
        growthbook=gb_timing,
        slots=len(slots),
        rules=rules,
        features=len(attrs_list[0]),
        decide_cpu=decide_cpu,
        growthbook_cpu=gb_cpu,
    )


def _river_module() -> Any:
    """:mod:`trimtab_bench.river` when River (a dev dependency) is installed, else None."""
    try:
        import river  # noqa: F401
    except ImportError:
        return None
    from trimtab_bench import river as baseline

    return baseline


def _growthbook_caller(
    features: dict[str, Any],
    saved_groups: dict[str, Any],
    attrs_list: list[dict[str, Any]],
    slots: list[str],
) -> Any:
    """``one(i)``: the GrowthBook SDK evaluating every slot for user ``i`` (None without
    the SDK, a dev dependency). Its warnings (a gate-only rule is logged as "invalid" on each
    evaluation) are silenced, as a production logging setup would."""
    try:
        from growthbook import GrowthBook
    except ImportError:
        return None
    logging.getLogger("growthbook").setLevel(logging.ERROR)
    gb = GrowthBook(features=features, attributes=attrs_list[0], savedGroups=saved_groups)

    def one(i: int) -> None:
        gb.set_attributes(attrs_list[i])
        for slot in slots:
            gb.eval_feature(slot)

    return one


def _growthbook_timing(
    features: dict[str, Any], attrs_list: list[dict[str, Any]], slots: list[str], n: int
) -> Timing | None:
    one = _growthbook_caller(features, {}, attrs_list, slots)
    return None if one is None else time_calls("GrowthBook SDK, same rules", one, n)


@dataclass(frozen=True)
class PayloadResult:
    """`trimtab bench core --payload realworld`: the served engine on a real-world-shaped
    GrowthBook payload, next to the GrowthBook SDK on the same payload."""

    features: int
    rules: int
    prerequisites: int
    decide: Timing
    growthbook: Timing | None
    differ: int | None
    compared: int  # users × features compared with the SDK
    decide_cpu: Timing | None = None
    growthbook_cpu: Timing | None = None

    @property
    def ratio(self) -> float | None:
        return (
            None if self.growthbook is None else self.growthbook.median_us / self.decide.median_us
        )

    @property
    def p99_ratio(self) -> float | None:
        return None if self.growthbook is None else self.growthbook.p99_us / self.decide.p99_us


def run_payload(quick: bool = False, users: int = 1000) -> PayloadResult:
    """Import the real-world payload (:mod:`trimtab_bench.realworld`) as a trimtab config, serve
    it with the engine (decisions logged to the in-memory buffer), and time every feature for
    one user against the SDK, call by call; then count differing values on ``users`` users."""
    from trimtab.gbpayload import import_payload, variant_value
    from trimtab_bench.realworld import realworld_attributes, realworld_payload

    payload = realworld_payload()
    config = parse_config(import_payload(payload), "<realworld>")
    logged: list[Any] = []
    engine = Engine(config, log=lambda decisions, attrs: logged.append((decisions, attrs)))
    n = 300 if quick else 3000
    attrs_list = realworld_attributes(n + 200, seed=9)
    keys = list(payload["features"])

    def decide_one(i: int) -> None:
        engine.decide_attrs(attrs_list[i], keys)
        if len(logged) >= 1000:
            logged.clear()

    previous_gc = tune_for_serving()
    gb_one = _growthbook_caller(payload["features"], payload["savedGroups"], attrs_list, keys)
    decide_cpu = gb_cpu = None
    if gb_one is None:
        decide, gb_timing = time_calls("decide, real-world payload", decide_one, n), None
    else:
        decide, gb_timing, decide_cpu, gb_cpu = time_pair(
            ("decide, real-world payload", "GrowthBook SDK, same payload"), (decide_one, gb_one), n
        )
    gc.set_threshold(*previous_gc)
    gc.unfreeze()
    differ: int | None = None
    compared = 0
    try:
        from growthbook import GrowthBook
    except ImportError:
        pass
    else:
        differ = 0
        gb = GrowthBook(features=payload["features"], savedGroups=payload["savedGroups"])
        for attrs in realworld_attributes(users, seed=11):
            gb.set_attributes(attrs)
            for d in engine.decide_attrs(dict(attrs), keys):
                compared += 1
                if gb.eval_feature(d.slot).value != variant_value(config.slots[d.slot], d.variant):
                    differ += 1
    slots = config.slots.values()
    return PayloadResult(
        features=len(keys),
        rules=sum(len(s.rules) for s in slots),
        prerequisites=sum(bool(r.parent_conditions) for s in slots for r in s.rules),
        decide=decide,
        growthbook=gb_timing,
        differ=differ,
        compared=compared,
        decide_cpu=decide_cpu,
        growthbook_cpu=gb_cpu,
    )


def same_choices(samples: int = 1000) -> int | None:
    """How many (user, slot) choices differ between trimtab and the SDK (should be 0); None
    without the SDK (a dev dependency)."""
    try:
        from growthbook import GrowthBook
    except ImportError:
        return None

    config_data, gb_features = bench_rules()
    engine = Engine(parse_config(config_data, "<bench>"))
    gb = GrowthBook(features=gb_features)
    differ = 0
    for attrs in bench_attributes(samples, seed=11):
        gb.set_attributes(attrs)
        for d in engine.decide_attrs(attrs):
            if gb.eval_feature(d.slot).value != d.variant:
                differ += 1
    return differ
