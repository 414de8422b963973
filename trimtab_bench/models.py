"""`trimtab bench models`: models and segments, measured.

1. **Segment recovery** — simulated readers drawn from latent groups
   (:data:`trimtab.sim.simulator.READER_GROUPS`) are logged, `segments fit` (auto) clusters
   their visits, and the adjusted Rand index against the groups is reported per visit and per
   reader (the reader's last visit), over several seeds.
2. **Lift of a segment rule** — the segments are named after the group most of their readers
   belong to (what an operator does after reading `segments show`); a rail rule per segment
   shows that group's favourite category. Fresh visits of the same population then run through
   the real engine twice, with the rules and with the plain default, on the same random
   numbers: rail clicks per 1,000 page views with 95 % intervals, and the paired difference.
3. **Live scoring speed** — one user's segment, a LightGBM model (≥ 100 trees) and the MLP,
   served from a registry, re-scored as serving does after a feature update
   (``LiveModels.read`` on the attributes the feature processor just built from the reader's
   stored state): from the attributes to the attributes rules read and the decision log's
   record; next to LightGBM's own single-row predictions in the same run
   (``Booster.predict`` on a ready numpy row, and the scikit-learn API's ``predict_proba``);
   median and p99.
4. **Decide with a model-score rule** — the core benchmark's rules plus a rule on a live score,
   attributes read through the feature processor (scores cached per feature update), next to
   the GrowthBook SDK on the rules without it.
5. **OBD click model** — the Open Bandit Dataset sample as trimtab logs
   (:mod:`trimtab.models.obd`), LightGBM and the MLP against the logistic baseline on a
   time-based holdout, AUC with bootstrap intervals and the paired AUC difference; then the
   LightGBM model as the DM/DR reward model of `trimtab ope` next to the default ridge.
6. **Training time for 1M events** — a simulated log of ≥ 1,000,000 events: replay to rows,
   LightGBM, the MLP and the baseline, each timed.
7. **Next category read** — a category target on the simulated readers: which category the
   next card opened in the visit belongs to; multiclass log loss, accuracy and macro AUC of
   LightGBM, the MLP and the multinomial baseline, next to always naming the commonest class.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trimtab.bus.sqlite import SqliteEventLog
from trimtab.config import parse_config
from trimtab.sim.simulator import DEFAULT_CATEGORIES, READER_GROUPS, Simulator
from trimtab_bench.timing import Timing, time_calls

Say = Callable[[str], None]

# Reading style over a whole visit, and taste without a minimum of evidence (segments want
# every visit); the site's own features stay as they are.
FEATURES: dict[str, Any] = {
    "scroll_depth_max": {"kind": "scroll_depth_max", "scope": "page"},
    "scroll_velocity": {"kind": "scroll_velocity", "scope": "page"},
    "visit_scroll_velocity": {"kind": "scroll_velocity", "scope": "session", "window": 25},
    "visit_depth": {"kind": "scroll_depth_max", "scope": "session"},
    "hover_ms_by_kind": {"kind": "hover_ms", "by": "kind", "scope": "session"},
    "visible_ms_by_category": {"kind": "visible_ms", "by": "category", "scope": "session"},
    "clicks_by_kind": {"kind": "click_count", "by": "kind", "scope": "session"},
    "taste": {"kind": "interest", "scope": "user", "half_life_s": 86400},
    "page_views": {"kind": "event_count", "event": "page_view", "scope": "user"},
}
SEGMENT_FEATURES = [
    "log(visit_scroll_velocity)",
    "visit_depth",
    *(f"taste_share.{c}" for c in DEFAULT_CATEGORIES),
    "device=mobile",
    "local_hour",
]
CLICK_MODEL: dict[str, Any] = {
    "at": "page_view",
    "after_s": 5,
    "target": {"event": "click:card", "within": "session"},
    "features": [
        "scroll_depth_max",
        "log(scroll_velocity)",
        "log(visit_scroll_velocity)",
        "visit_depth",
        "log(sum(hover_ms_by_kind))",
        "log(sum(visible_ms_by_category))",
        "log(sum(clicks_by_kind))",
        "taste_top_share",
        *(f"taste_share.{c}" for c in DEFAULT_CATEGORIES),
        "page_views",
        "device=*",
        "local_hour",
    ],
    "params": {
        "lightgbm": {"n_estimators": 200},
        "mlp": {"hidden": [32, 16], "epochs": 15},
    },
}
RAIL = {
    "default": "popular",
    "variants": {v: {"rail": v} for v in ("popular", *DEFAULT_CATEGORIES)},
}


def site_config(segment_names: dict[str, str] | None = None, rules: list | None = None):
    return parse_config(
        {
            "site": {"id": "bench-models"},
            "features": FEATURES,
            "slots": {"rail": {**RAIL, "rules": rules or []}},
            "models": {"p_click": CLICK_MODEL},
            "segments": {
                "features": SEGMENT_FEATURES,
                "k": [2, 8],
                "conversion": "click:*",
                **({"names": segment_names} if segment_names else {}),
            },
        },
        "<bench models>",
    )


def write_simulated_log(
    folder: Path, seed: int, sessions: int, users: int = 1500, min_events: int = 0
) -> Simulator:
    """Log ``sessions`` visits (or more, until ``min_events``) of a grouped population."""
    folder.mkdir(parents=True, exist_ok=True)
    sim = Simulator(seed=seed, n_users=users, groups=READER_GROUPS)
    log = SqliteEventLog(folder / "events.sqlite")
    written, batch = 0, []
    for made, events in enumerate(sim.sessions(), 1):
        batch.extend(events)
        if len(batch) >= 20_000:
            written += log.append_sync(batch)
            batch = []
        if made >= sessions and written + len(batch) >= min_events:
            break
    written += log.append_sync(batch)
    log.close_sync()
    sim.events_written = written  # type: ignore[attr-defined]
    return sim


# -- 1. segment recovery ---------------------------------------------------------------------
@dataclass
class Recovery:
    seed: int
    algorithm: str
    k: int
    ari_visits: float
    ari_readers: float
    rows: int
    seconds: float


def segment_recovery(seeds: tuple[int, ...], sessions: int, say: Say) -> list[Recovery]:
    from sklearn.metrics import adjusted_rand_score

    from trimtab.models.segments import fit

    out = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            sim = write_simulated_log(Path(tmp), seed, sessions)
            group = {v.user_id: v.group for v in sim.users}
            say(f"segments: fitting seed {seed}")
            started = time.perf_counter()
            result = fit(site_config(), tmp)
            seconds = time.perf_counter() - started
        truth = [group[u] for u in result.users]
        last = {u: i for i, u in enumerate(result.users)}
        idx = sorted(last.values())
        out.append(
            Recovery(
                seed,
                result.chosen.algorithm,
                result.chosen.k,
                float(adjusted_rand_score(truth, result.labels)),
                float(adjusted_rand_score([truth[i] for i in idx], result.labels[idx])),
                result.rows,
                seconds,
            )
        )
    return out


# -- 2. lift of a segment rule ---------------------------------------------------------------
@dataclass
class Lift:
    page_views: int
    clicks_default: int
    clicks_rules: int
    per_1000_default: tuple[float, float, float]
    per_1000_rules: tuple[float, float, float]
    difference: tuple[float, float, float]
    names: dict[str, str]
    rule_share: float  # page views whose rail a segment rule chose
    by_group: dict[str, tuple[float, float]] = field(default_factory=dict)


def _rate_interval(clicks: int, n: int) -> tuple[float, float, float]:
    p = clicks / n
    half = 1.96 * np.sqrt(p * (1 - p) / n)
    return (1000 * p, 1000 * (p - half), 1000 * (p + half))


def segment_lift(seed: int, train_sessions: int, test_sessions: int, say: Say) -> Lift:
    from trimtab.events import PageView
    from trimtab.models.segments import fit, register
    from trimtab.runtime import Runtime
    from trimtab.sim.drive import _split_pages

    with tempfile.TemporaryDirectory() as tmp:
        train_dir = Path(tmp) / "train"
        sim = write_simulated_log(train_dir, seed, train_sessions)
        group = {v.user_id: v.group for v in sim.users}
        say("lift: fitting segments on the training visits")
        result = fit(site_config(), train_dir)
        names: dict[str, str] = {}
        for j, seg_id in enumerate(result.model.ids):
            members = [
                group[u] for u, lab in zip(result.users, result.labels, strict=True) if lab == j
            ]
            top = Counter(members).most_common(1)[0][0]
            names[seg_id] = top if top not in names.values() else f"{top}-{seg_id}"
        favourite = {g.name: g.favourites[0] for g in READER_GROUPS}
        rules = [
            {
                "id": f"segment-{name}",
                "description": f"readers like you (segment '{name}') open {favourite[name]} most",
                "condition": {"segment": name},
                "force": favourite[name],
            }
            for name in names.values()
            if name in favourite
        ]
        arms: dict[str, Any] = {}
        for arm, arm_rules in (("rules", rules), ("default", [])):
            folder = Path(tmp) / arm
            register(result, site_config(names), folder / "models", stage="live")
            arms[arm] = Runtime(site_config(names, arm_rules), folder)
        say(f"lift: {test_sessions:,} fresh visits through both engines")
        sim.rewind()
        sim.clock_ms = sim.clock_ms + 30 * 86_400_000  # a month later, same readers
        draws = np.random.default_rng([seed, 99])
        clicks = {"rules": 0, "default": 0}
        by_group: dict[str, list[int]] = {}
        ruled = views = 0
        visitors = {v.user_id: v for v in sim.users}
        try:
            for session in sim.sessions(test_sessions):
                visitor = visitors[session[0].user_id]
                for page in _split_pages(session):
                    view = next((e for e in page if type(e) is PageView), None)
                    for runtime in arms.values():
                        runtime.ingest(page)
                    if view is None:
                        continue
                    views += 1
                    u = float(draws.random())
                    row = by_group.setdefault(visitor.group, [0, 0, 0])
                    row[0] += 1
                    for arm, runtime in arms.items():
                        attrs = runtime.processor.features_of(
                            view.user_id, view.session_id, now_ms=sim.clock_ms
                        )
                        decision = runtime.engine.decide_attrs(attrs, ["rail"])[0]
                        p = _rail_click(sim, visitor, decision.variant)
                        hit = u < p
                        clicks[arm] += hit
                        if arm == "rules":
                            ruled += decision.source == "force"
                            row[1] += hit
                        else:
                            row[2] += hit
        finally:
            for runtime in arms.values():
                runtime.close()
    diff = (clicks["rules"] - clicks["default"]) / views
    # paired: each page view has the same reader and the same random number in both arms
    se = _paired_se(clicks, views)
    return Lift(
        page_views=views,
        clicks_default=clicks["default"],
        clicks_rules=clicks["rules"],
        per_1000_default=_rate_interval(clicks["default"], views),
        per_1000_rules=_rate_interval(clicks["rules"], views),
        difference=(1000 * diff, 1000 * (diff - 1.96 * se), 1000 * (diff + 1.96 * se)),
        names=names,
        rule_share=ruled / views,
        by_group={g: (1000 * r[1] / r[0], 1000 * r[2] / r[0]) for g, r in by_group.items()},
    )


def _paired_se(clicks: dict[str, int], views: int) -> float:
    """Standard error of the difference of two click rates on the same page views.

    With one uniform number per page view and click ⇔ u < p, a view clicks in both arms
    with probability min(p_rules, p_default): the arms are positively correlated, so the
    independent-samples variance is an upper bound, used here (conservative).
    """
    p1, p0 = clicks["rules"] / views, clicks["default"] / views
    return float(np.sqrt((p1 * (1 - p1) + p0 * (1 - p0)) / views))


def _rail_click(sim: Simulator, visitor, variant: str) -> float:
    """The simulator's rail response: a category rail is clicked by its fans; the generic
    rail at the reader's average (as in ``trimtab simulate``)."""
    cats = sim.categories
    if variant in cats:
        return sim.click_probability(visitor, cats.index(variant))
    return float(np.mean([sim.click_probability(visitor, k) for k in range(len(cats))]))


# -- 3 and 4. live scoring and decide --------------------------------------------------------
@dataclass
class Speed:
    trees: int
    mlp_layers: list[int]
    scorer: str  # "compiled" or "numpy (why)"
    timings: dict[str, Timing]  # by label, all measured interleaved in one run
    max_diff_trees: float
    max_diff_mlp: float

    @property
    def ours(self) -> Timing:
        return self.timings["ours"]

    def ratio(self, label: str, quantile: str = "median", base: str = "ours") -> float:
        """How many times faster ``base`` is than ``label`` (``median`` or ``p99``)."""
        attr = "median_us" if quantile == "median" else "p99_us"
        return getattr(self.timings[label], attr) / getattr(self.timings[base], attr)


SPEED_LABELS = {
    "ours": "trimtab serving: a feature update, then LiveModels.read (the user's slot "
    "checked, segment + trees + MLP into it, attributes and log record written)",
    "ours_compute": "  LiveModels.compute alone, on the same just-built attributes",
    "ours_stored": "  LiveModels.compute on stored attribute dicts (cache-cold)",
    "ours_trees": "  trees alone, from stored attributes",
    "ours_mlp": "  MLP alone, from stored attributes",
    "ours_segment": "  segment alone, from stored attributes",
    "ours_numpy": "trimtab without the compiled scorer (numpy), stored attributes",
    "booster": "LightGBM Booster.predict, one ready numpy row",
    "booster_1t": "LightGBM Booster.predict(num_threads=1), one ready numpy row",
    "booster_attrs": "LightGBM Booster.predict, from stored attributes (vector + predict)",
    "sklearn": "LightGBM LGBMClassifier.predict_proba, one row",
    "torch": "PyTorch forward, one ready row",
}


def time_interleaved(
    fns: dict[str, Callable[[int], object] | tuple[Callable[[int], Any], Callable[[Any], object]]],
    n: int,
    block: int = 500,
    warmup: int = 200,
) -> dict[str, Timing]:
    """Time each ``fn(i)`` ``n`` times, in alternating blocks of ``block`` calls, so that a
    change of load on a shared machine reaches every contender alike; ratios of the results
    are then fair within the run. A ``(prepare, fn)`` pair times ``fn(prepare(i))`` only."""
    calls = {name: fn if isinstance(fn, tuple) else (lambda i: i, fn) for name, fn in fns.items()}
    for prepare, fn in calls.values():
        for i in range(warmup):
            fn(prepare(i))
    samples: dict[str, list[int]] = {name: [] for name in fns}
    clock = time.perf_counter_ns
    for lo in range(0, n, block):
        for name, (prepare, fn) in calls.items():
            out = samples[name]
            for i in range(lo, min(n, lo + block)):
                arg = prepare(i)
                start = clock()
                fn(arg)
                out.append(clock() - start)
    return {name: Timing.of(name, s) for name, s in samples.items()}


class Readers:
    """A population's stored feature state, and feature updates applied to it one reader at
    a time — what serving does before it re-scores a user."""

    def __init__(self, config: Any, seed: int = 7, visits: int = 6000, users: int = 5000):
        from trimtab.features import FeatureProcessor

        self.processor = FeatureProcessor(config.feature_specs())
        sim = Simulator(seed=seed, n_users=users, groups=READER_GROUPS)
        self.last: dict[str, Any] = {}  # reader -> their latest event (session, page view)
        for made, events in enumerate(sim.sessions(), 1):
            self.processor.apply(events)
            self.last[events[-1].user_id] = events[-1]
            if made >= visits:
                break
        self.ids = list(self.last)
        self.applied = 0

    def update(self, i: int) -> tuple[Any, str, dict[str, Any]]:
        """Apply one scroll event to reader ``i`` (cycling through all of them) and build
        their attributes as ``features_of`` does before its derived readers run; returns what
        a derived reader is handed: (state, page view, attributes)."""
        from trimtab.events import Scroll

        e = self.last[self.ids[i % len(self.ids)]]
        # ids as a request brings them: new string objects, equal to the stored ones
        user_id, session_id = e.user_id.encode().decode(), e.session_id.encode().decode()
        page_view_id = e.page_view_id.encode().decode()
        self.applied += 1
        ts = e.ts + 1000.0 * self.applied / len(self.ids)
        event = Scroll(
            event_id=f"bench-{self.applied}",
            user_id=user_id,
            session_id=session_id,
            page_view_id=page_view_id,
            ts=ts,
            depth=0.25 + (self.applied % 7) / 10,
            velocity=120.0 + self.applied % 400,
        )
        self.processor.apply((event,))
        return self.processor.own_features(user_id, session_id, page_view_id, now_ms=ts)


def live_speed(n: int, say: Say) -> Speed:
    """One user's live scoring as serving runs it after a feature update — an event applied
    to one of ~3,500 readers' stored state and their attributes built by the feature
    processor (untimed, as LightGBM's ready row), then :meth:`LiveModels.read` (the user's
    slot checked, the attributes read, the segment, the trees, the MLP evaluated into the
    slot, the attributes rules read plus the decision log's record written) — on models
    served from a registry, timed interleaved with LightGBM's own single-row ``predict`` on a
    ready row."""
    import lightgbm as lgb
    import torch

    from trimtab.models import dataset, native
    from trimtab.models.columns import Columns, parse_columns
    from trimtab.models.live import LiveModels
    from trimtab.models.mlp import torch_predict, train_mlp
    from trimtab.models.registry import Registry
    from trimtab.models.segments import fit, register
    from trimtab.models.spec import models_of
    from trimtab.models.train import LIGHTGBM_DEFAULTS
    from trimtab.models.trees import TreeEnsemble

    config = parse_config(
        {
            "site": {"id": "bench-models"},
            "features": FEATURES,
            "slots": {"rail": RAIL},
            "models": {"p_click": CLICK_MODEL, "p_click_mlp": CLICK_MODEL},
            "segments": {"features": SEGMENT_FEATURES, "k": [2, 8], "conversion": "click:*"},
        },
        "<bench models>",
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_simulated_log(Path(tmp), 5, 2500)
        say("speed: building rows and fitting the models")
        decl = models_of(config).models["p_click"]
        rows = dataset.build(tmp, config, at="page_view", target=decl.target, after_s=5.0).rows
        segmentation = fit(config, tmp, algorithm="gmm", k_range=(4, 4))
        cols = Columns.learn(parse_columns(decl.features), (r.attrs for r in rows))
        x = cols.matrix([r.attrs for r in rows])
        y = np.array([r.label for r in rows])
        params = {**LIGHTGBM_DEFAULTS, "n_estimators": 100, "n_jobs": 1}
        clf = lgb.LGBMClassifier(**params).fit(x, y)
        booster = clf.booster_
        mlp_model, net = train_mlp(x, y, "binary", hidden=(32, 16), epochs=5)
        models = Path(tmp) / "models"
        register(segmentation, config, models, stage="live")
        meta = {"columns": cols.describe(), "target": "binary"}
        registry = Registry(models)
        forest = TreeEnsemble.from_lightgbm(booster).to_arrays()
        registry.add("p_click", "lightgbm", forest, meta, stage="live")
        registry.add("p_click_mlp", "mlp", mlp_model.to_arrays(), meta, stage="live")
        live = LiveModels(config, models, check_every_s=3600.0)
    if set(live.live) != {"p_click", "p_click_mlp"} or live.segments is None:
        raise RuntimeError(f"speed: the models were not served: {live.status()['refused']}")
    trees, mlp, segments = live.live["p_click"], live.live["p_click_mlp"], live.segments
    attrs_list = [r.attrs for r in rows[:5000]]
    m = len(attrs_list)
    compute = live.compute  # what LiveModels.read calls on a feature update

    def stored(i: int) -> dict[str, Any]:
        return attrs_list[i % m]

    def ours_numpy(i: int) -> None:
        live.compute_reference(attrs_list[i % m], 100)

    def one_thread(row: np.ndarray) -> None:  # no OpenMP threads waiting for a core
        booster.predict(row, num_threads=1)

    def booster_attrs(i: int) -> None:
        booster.predict(np.array([cols.vector(attrs_list[i % m])]))

    vectors = [np.array(cols.vector(a)) for a in attrs_list[:2000]]
    k = len(vectors)
    rows2d = [v[None, :] for v in vectors]
    z = [
        torch.from_numpy(((v - net.trimtab_mean) / net.trimtab_scale).astype(np.float32))[None]
        for v in vectors
    ]

    def torch_one(i: int) -> None:
        with torch.no_grad():
            net(z[i % k])

    say("speed: replaying 6,000 visits of 5,000 readers into the feature processor")
    readers = Readers(config)
    read = live.read  # what features_of runs after building the attributes

    def serve(arg: tuple[Any, str, dict[str, Any]]) -> None:
        read(*arg)

    def compute_fresh(arg: tuple[Any, str, dict[str, Any]]) -> None:
        compute(arg[2], arg[0].reading_events)

    say(f"speed: timing one user at a time ({native.status()} scorer), interleaved")
    from trimtab.tuning import tune_for_serving

    previous = tune_for_serving()  # the GC schedule `trimtab serve` runs with
    timings = time_interleaved(
        {
            # the feature update and the attributes built untimed, as LightGBM's row is
            "ours": (readers.update, serve),
            "ours_compute": (readers.update, compute_fresh),
            "ours_stored": (stored, compute),
            "ours_trees": lambda i: trees.score(attrs_list[i % m]),
            "ours_mlp": lambda i: mlp.score(attrs_list[i % m]),
            "ours_segment": lambda i: segments.assign(attrs_list[i % m]),
            "ours_numpy": ours_numpy,
            "booster": (lambda i: rows2d[i % k], booster.predict),
            "booster_1t": (lambda i: rows2d[i % k], one_thread),
            "booster_attrs": booster_attrs,
            "torch": torch_one,
        },
        n,
    )
    timings["sklearn"] = time_calls(
        "predict_proba", lambda i: clf.predict_proba(rows2d[i % k]), max(n // 10, 500)
    )
    gc.set_threshold(*previous)
    gc.unfreeze()
    # the outputs rules read — from stored attributes, and as serving adds them after updates
    served = [compute(a) for a in attrs_list[:k]]
    updated = [readers.update(i) for i in range(k)]
    stack = np.array(vectors + [cols.vector(a) for _, _, a in updated])
    for arg in updated:
        read(*arg)
    served += [a for _, _, a in updated]
    served_trees = np.array([s["p_click"] for s in served])
    served_mlp = np.array([s["p_click_mlp"] for s in served])
    return Speed(
        trees=trees.model.n_trees,
        mlp_layers=[w.shape[1] for w in mlp_model.weights],
        scorer=native.status(),
        timings=timings,
        max_diff_trees=float(np.max(np.abs(served_trees - booster.predict(stack)))),
        max_diff_mlp=float(np.max(np.abs(served_mlp - torch_predict(net, stack)))),
    )


@dataclass
class DecideSpeed:
    with_score_rule: Timing
    growthbook: Timing | None
    cold: Timing  # the feature update's re-scoring included

    @property
    def ratio(self) -> float | None:
        return (
            None
            if self.growthbook is None
            else self.growthbook.median_us / self.with_score_rule.median_us
        )


def decide_with_score(n: int, say: Say) -> DecideSpeed:
    """bench core's 3 slots / 20 rules + a rule on a live LightGBM score, through features_of."""
    import lightgbm as lgb

    from trimtab.decide import Engine
    from trimtab.features import FeatureProcessor
    from trimtab.models.columns import Columns, parse_columns
    from trimtab.models.live import LiveModels
    from trimtab.models.registry import Registry
    from trimtab.models.trees import TreeEnsemble
    from trimtab.tuning import tune_for_serving
    from trimtab_bench.core import bench_attributes, bench_rules

    config_data, gb_features = bench_rules()
    score_rule = {"id": "score", "condition": {"p_score": {"$gt": 0.9}}, "force": "d"}
    config_data["slots"]["slot0"]["rules"].insert(0, score_rule)
    config_data["models"] = {
        "p_score": {"target": {"event": "click:*"}, "features": [f"f{j}" for j in range(10)]}
    }
    config = parse_config(config_data, "<bench>")
    attrs_list = bench_attributes(n + 200)
    rng = np.random.default_rng(0)
    x = rng.random((5000, 10))
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1},
        lgb.Dataset(x, (x[:, 0] + x[:, 1] > 1).astype(int)),
        100,
    )
    trees = TreeEnsemble.from_lightgbm(booster)
    with tempfile.TemporaryDirectory() as tmp:
        cols = Columns(parse_columns([f"f{j}" for j in range(10)]))
        Registry(tmp).add(
            "p_score",
            "lightgbm",
            trees.to_arrays(),
            {"columns": cols.describe(), "target": "binary"},
            stage="live",
        )
        live = LiveModels(config, tmp, check_every_s=3600.0)
    processor = FeatureProcessor(config.feature_specs())
    processor.derived.append(live.read)
    # the bench attributes stand in for the processor's features: same shape, same values
    from trimtab.features import UserState

    for a in attrs_list:
        processor.states[a["id"]] = UserState(user_id=a["id"], values=dict(a), seen={"e": None})
    engine = Engine(config, processor.features_of, log=lambda d, a: None)
    slots = list(config.slots)
    ids = [(a["id"], a["session_id"]) for a in attrs_list]
    say("decide: first reads score every user (the feature update's cost)")
    previous = tune_for_serving()
    cold = time_calls("decide + score", lambda i: engine.decide(*ids[i], slots), n, warmup=0)
    contenders: dict[str, Callable[[int], object]] = {
        "warm": lambda i: engine.decide(*ids[i], slots)
    }
    try:
        from growthbook import GrowthBook
    except ImportError:  # the baseline is a dev dependency
        GrowthBook = None
    if GrowthBook is not None:
        sdk = GrowthBook(features=gb_features, attributes=attrs_list[0])

        def growthbook(i: int) -> None:
            sdk.set_attributes(attrs_list[i])
            for slot in slots:
                sdk.eval_feature(slot)

        contenders["growthbook"] = growthbook
    # alternating blocks: a change of load on the shared machine reaches both alike
    timings = time_interleaved(contenders, n)
    warm = timings["warm"]
    gb = timings.get("growthbook")
    gc.set_threshold(*previous)
    gc.unfreeze()
    return DecideSpeed(with_score_rule=warm, growthbook=gb, cold=cold)


# -- 5. OBD ----------------------------------------------------------------------------------
@dataclass
class ObdResult:
    rows_train: int
    rows_test: int
    clicks_test: int
    auc: dict[str, tuple[float, float, float]]
    pr_auc: dict[str, float]
    log_loss: dict[str, float]
    brier: dict[str, float]
    difference: dict[str, tuple[float, float, float]]  # model − logistic, paired bootstrap
    ope: dict[str, dict[str, tuple[float, float, float]]]
    seconds: dict[str, float]


def obd(data_root: Path, say: Say, ope_slot: str = "all") -> ObdResult:
    from trimtab.bandits import logeval
    from trimtab.config import load_config
    from trimtab.models.metrics import paired_auc_difference
    from trimtab.models.obd import write_logs
    from trimtab.models.reward import RewardModel
    from trimtab.models.train import train

    out_auc: dict[str, tuple[float, float, float]] = {}
    pr, ll, br, diffs, seconds = {}, {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        say("OBD: writing the sample as trimtab logs")
        config = load_config(write_logs(data_root, tmp))
        results = {}
        for algorithm in ("lightgbm", "mlp", "logistic"):
            say(f"OBD: training the click model ({algorithm})")
            started = time.perf_counter()
            results[algorithm] = train(
                config,
                "click",
                tmp,
                algorithm=algorithm,
                stage="live" if algorithm == "lightgbm" else "shadow",
                n_boot=1000,
            )
            seconds[algorithm] = time.perf_counter() - started
        base = results["logistic"]
        _, y = base.test
        for algorithm, r in results.items():
            m = r.metrics
            out_auc[algorithm] = (m["auc"], *m["auc_ci"])
            pr[algorithm], ll[algorithm], br[algorithm] = m["pr_auc"], m["log_loss"], m["brier"]
            if algorithm != "logistic":
                x_test, _ = r.test
                diffs[algorithm] = tuple(
                    vars(
                        paired_auc_difference(
                            y,
                            r.scorer.model.predict_many(x_test),
                            base.scorer.model.predict_many(x_test),
                        )
                    ).values()
                )
        say("OBD: off-policy evaluation, ridge vs LightGBM reward model")
        variants = list(config.slots[ope_slot].variants)
        from trimtab.attribution import Reward

        rounds = logeval.load_rounds(Path(tmp), ope_slot, Reward(event="click:*", window_s=60.0))
        q = RewardModel(
            results["lightgbm"].scorer, ope_slot, variants, config.slots[ope_slot].variants
        )
        q.prefetch([r.features for r in rounds])
        ope_out: dict[str, dict[str, tuple[float, float, float]]] = {}
        clicked = Counter(r.variant for r in rounds if r.reward > 0)
        best = clicked.most_common(1)[0][0] if clicked else variants[0]
        for name, target in (
            ("uniform", logeval.uniform()),
            (f"always:{best}", logeval.always(best)),
        ):
            ridge = logeval.evaluate(rounds, variants, target)
            model = logeval.evaluate(rounds, variants, target, reward_model=q)
            ope_out[name] = {
                "IPS": (ridge["IPS"].value, ridge["IPS"].lower, ridge["IPS"].upper),
                "DM ridge": (ridge["DM"].value, ridge["DM"].lower, ridge["DM"].upper),
                "DR ridge": (ridge["DR"].value, ridge["DR"].lower, ridge["DR"].upper),
                "DM LightGBM": (model["DM"].value, model["DM"].lower, model["DM"].upper),
                "DR LightGBM": (model["DR"].value, model["DR"].lower, model["DR"].upper),
            }
    return ObdResult(
        rows_train=base.rows_train,
        rows_test=base.rows_test,
        clicks_test=int(y.sum()),
        auc=out_auc,
        pr_auc=pr,
        log_loss=ll,
        brier=br,
        difference=diffs,  # type: ignore[arg-type]
        ope=ope_out,
        seconds=seconds,
    )


# -- 7. next category read -------------------------------------------------------------------
NEXT_CATEGORY: dict[str, Any] = {
    "at": "page_view",
    "after_s": 5,
    "target": {"event": "click:card", "within": "session", "type": "category", "by": "category"},
    "features": [c for c in CLICK_MODEL["features"] if c != "device=*"] + ["device=*"],
    "params": CLICK_MODEL["params"],
}


@dataclass
class CategoryResult:
    classes: list[str]
    rows_train: int
    rows_test: int
    metrics: dict[str, dict[str, Any]]  # by algorithm
    baseline: dict[str, Any]
    compiled_max_diff: dict[str, float]
    seconds: dict[str, float]


def next_category(seed: int, sessions: int, say: Say) -> CategoryResult:
    """ "Next category read" on simulated readers of the latent groups: the category of the
    next card opened in the visit, by LightGBM, the MLP and the multinomial baseline."""
    from trimtab.models.train import train

    config = parse_config(
        {
            "site": {"id": "bench-models"},
            "features": FEATURES,
            "slots": {"rail": RAIL},
            "models": {"next_category": NEXT_CATEGORY},
        },
        "<bench models>",
    )
    metrics: dict[str, dict[str, Any]] = {}
    diffs: dict[str, float] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_simulated_log(Path(tmp), seed, sessions)
        for algorithm in ("lightgbm", "mlp", "logistic"):
            say(f"next category: {algorithm}")
            started = time.perf_counter()
            r = train(config, "next_category", tmp, algorithm=algorithm, stage=None, n_boot=300)
            seconds[algorithm] = time.perf_counter() - started
            metrics[algorithm] = r.metrics
            diffs[algorithm] = r.compiled_max_diff
    return CategoryResult(
        classes=list(r.scorer.classes),
        rows_train=r.rows_train,
        rows_test=r.rows_test,
        metrics=metrics,
        baseline=r.baseline,
        compiled_max_diff=diffs,
        seconds=seconds,
    )


# -- 6. training time ------------------------------------------------------------------------
@dataclass
class TrainingTime:
    events: int
    rows: int
    seconds: dict[str, float]
    auc: dict[str, float]


def training_time(events: int, say: Say) -> TrainingTime:
    from trimtab.models.train import train

    with tempfile.TemporaryDirectory() as tmp:
        say(f"training time: logging ≥ {events:,} simulated events")
        sim = write_simulated_log(Path(tmp), 7, 1000, users=20_000, min_events=events)
        config = site_config()
        seconds: dict[str, float] = {}
        auc: dict[str, float] = {}
        rows = 0
        for algorithm in ("lightgbm", "mlp", "logistic"):
            say(f"training time: {algorithm}")
            started = time.perf_counter()
            r = train(config, "p_click", tmp, algorithm=algorithm, n_boot=100)
            seconds[algorithm] = time.perf_counter() - started
            seconds[f"{algorithm}: replay"] = r.seconds["dataset"]
            seconds[f"{algorithm}: fit"] = r.seconds["fit"]
            auc[algorithm] = r.metrics["auc"]
            rows = r.rows_train + r.rows_test
    return TrainingTime(sim.events_written, rows, seconds, auc)  # type: ignore[attr-defined]


def median(values: list[float]) -> float:
    return statistics.median(values)
