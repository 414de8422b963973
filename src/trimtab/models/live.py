"""Live scores and segments: attributes recomputed when a user's features change.

:class:`LiveModels` is a reader of the :class:`~trimtab.features.FeatureProcessor`: whenever
the attributes of a user are read (to decide, to push, for the admin API) it adds

* ``segment`` and ``segment_p`` from the live segmentation (the name given in the config, or
  the id ``s3`` when unnamed; empty below ``segments.min_p``, and before ``min_events`` reading
  events of the user — scrolls, hovers, clicks, content on screen, custom events; not page
  views, consent, context, exposures or navigation: no kind of reader is claimed on too little
  evidence of how they read);
* one attribute per live model, under the model's name (``p_subscribe``);
* ``_models``: the versions behind those values and the scores of ``shadow`` versions (which
  rules never see), as compact JSON — the decision log stores it with every decision.

The values are computed once per feature update: each user has one slot in the compiled
bundle (the numbers of their last scoring, stamped with the state of their applied events, the
local hour, the session and the page view), re-scored in place when the stamp differs, so
deciding again without new events writes the kept numbers out. Scoring is one call of the
compiled scorer for every served model (:mod:`trimtab.models.native`), or numpy without a C
compiler (then cached per user, session and page view under the last event id).

The registry is checked for changes at most once a second. A version that cannot be served —
its file is unreadable, its columns differ from the config's declaration, its arrays are
inconsistent — is refused with a logged message naming the model and the reason, and the last
good version keeps serving (:meth:`LiveModels.status` shows the refusal).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from trimtab.models import native
from trimtab.models.registry import Registry, RegistryError, VersionInfo
from trimtab.models.scorer import Scorer, ScorerError
from trimtab.models.segments import SegmentModel, SegmentsError
from trimtab.models.spec import MODELS_ATTRIBUTE, ModelsConfig, models_of

log = logging.getLogger("trimtab.models")
CHECK_EVERY_S = 1.0
MAX_CACHED = 100_000
_encode = msgspec.json.Encoder().encode


class LiveModels:
    """The scores and segment of each user, for rules, policies and the decision log."""

    def __init__(
        self, config: Any, models_dir: str | Path, check_every_s: float = CHECK_EVERY_S
    ) -> None:
        self.registry = Registry(models_dir)
        self.check_every_s = check_every_s
        self.live: dict[str, Scorer] = {}
        self.shadow: dict[str, Scorer] = {}
        self.segments: SegmentModel | None = None
        self.errors: dict[str, str] = {}
        self.generation = 0
        self._scored = 0  # live models scored (the compiled bundle counts its own)
        self._unscored = 0  # live models not scored: an input was not finite
        self._stamp: tuple[int, int] | None = None
        self._last_check = 0.0
        self._cache: dict[tuple[str, str, str], tuple[Any, int, Any, dict[str, Any]]] = {}
        self._slots: dict[str, Any] = {}  # user -> the compiled bundle's slot (see read)
        self._loaded: dict[tuple[str, str], tuple[int, Any]] = {}  # (name, stage) -> version
        self._bundle: Any | None = None
        self.configure(config)

    # -- configuration --------------------------------------------------------------------
    def configure(self, config: Any) -> None:
        """Take a (re)loaded site config: declarations and segment names."""
        self.config = config
        self.declared: ModelsConfig = (
            models_of(config)
            if (config.models or config.segments)
            else (ModelsConfig(models={}, segments=None))
        )
        decl = self.declared.segments
        self.names = dict(decl.names) if decl is not None else {}
        self.min_p = decl.min_p if decl is not None else 0.0
        self.min_events = decl.min_events if decl is not None else 0
        # Re-check every version the registry marks against the new declarations. What is
        # served now stays served where it still fits them, so a version the registry marks
        # but the new config refuses leaves the last good one serving, as between reloads.
        self.live = {n: s for n, s in self.live.items() if self._fits(n, s)}
        self.shadow = {n: s for n, s in self.shadow.items() if self._fits(n, s)}
        if self.segments is not None and (
            decl is None or self.segments.columns.describe()["columns"] != list(decl.features)
        ):
            self.segments = None
        self._loaded.clear()
        self._stamp = None
        if not self.reload():
            self._refresh()  # names, min_p and min_events are compiled into the bundle

    def _fits(self, name: str, scorer: Scorer) -> bool:
        """Whether a served model still matches the config's declaration of it."""
        decl = self.declared.models.get(name)
        return (
            decl is not None
            and scorer.columns.describe()["columns"] == list(decl.features)
            and scorer.target == decl.target.type
        )

    @property
    def active(self) -> bool:
        return bool(self.live or self.shadow or self.segments)

    def reload(self) -> bool:
        """Load what the registry marks live and shadow; True when something changed."""
        self._last_check = time.monotonic()
        stamp = self.registry.stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            live = self.registry.in_stage("live")
            shadow = self.registry.in_stage("shadow")
        except RegistryError as exc:
            self.errors["registry"] = str(exc)
            log.error("model registry unreadable, keeping the served models: %s", exc)
            return False
        self.errors.pop("registry", None)
        changed = False
        for stage, found, served in (("live", live, self.live), ("shadow", shadow, self.shadow)):
            for name in list(served):
                if name not in found or name not in self.declared.models:
                    del served[name]  # retired, or no longer declared
                    self._loaded.pop((name, stage), None)
                    changed = True
            for name, info in found.items():
                if name == "segments":
                    if stage == "live":
                        changed |= self._load_segments(info)
                    continue
                changed |= self._load_model(name, stage, info, served)
        if "segments" not in live and self.segments is not None:
            self.segments = None
            self._loaded.pop(("segments", "live"), None)
            changed = True
        if changed:
            self._refresh()
        return changed

    def _refresh(self) -> None:
        """A new compiled bundle for what is served; every user is scored afresh."""
        self.generation += 1
        self._cache.clear()
        self._slots = {}
        self._take_counts()
        self._bundle = self._compiled_bundle()

    def _compiled_bundle(self) -> Any | None:
        """Every served model in one compiled object (:func:`native.compile_bundle`): the union
        of their columns read once, each model evaluated, the attributes and the decision
        log's record written in one call; ``None`` if a model lacks a compiled form (numpy
        serves)."""
        parts: list[native.BundlePart] = []
        seg = self.segments
        if seg is not None:
            parts.append(
                native.BundlePart(
                    seg.compiled,
                    seg.columns,
                    native.SEGMENT,
                    b'"segments":{"v":%d,' % seg.version,
                    "segment",
                    "segment_p",
                    labels=tuple(self.names.get(i, i) for i in seg.ids),
                    json_items=tuple(_encode(i) for i in seg.ids),
                    min_p=self.min_p,
                    min_events=self.min_events,
                )
            )
        for stage, served in ((native.LIVE, self.live), (native.SHADOW, self.shadow)):
            for name, scorer in served.items():
                key = name if stage == native.LIVE else f"{name}~shadow"
                multi = scorer.n_outputs > 1
                parts.append(
                    native.BundlePart(
                        scorer.compiled,
                        scorer.columns,
                        stage,
                        _encode(key) + b':{"v":%d,' % scorer.version,
                        name,
                        f"{name}_p" if multi else None,
                        f"{name}_p_by_class" if multi else None,
                        tuple(scorer.classes) if multi else None,
                        tuple(_encode(c) for c in scorer.classes) if multi else None,
                    )
                )
        try:
            return native.compile_bundle(parts, MODELS_ATTRIBUTE)
        except (native.NativeError, ValueError, TypeError) as exc:
            log.warning("live scoring uses numpy (the compiled bundle failed: %s)", exc)
            return None

    def _load_model(
        self, name: str, stage: str, info: VersionInfo, served: dict[str, Scorer]
    ) -> bool:
        key = (name, stage)
        if self._loaded.get(key) == (info.version, info.created):
            return False
        decl = self.declared.models.get(name)
        where = f"model {name} v{info.version} ({stage})"
        try:
            if decl is None:
                raise ScorerError(f"{where}: not declared in the config's models")
            meta, arrays = self.registry.load(info)
            scorer = Scorer.from_file(meta, arrays)
            declared = list(decl.features)
            trained = list(meta.get("columns", {}).get("columns", []))
            if trained != declared:
                raise ScorerError(
                    f"{where}: features {trained} do not match the config's {declared} "
                    f"(retrain: trimtab train … {name})"
                )
            if str(meta.get("target")) != decl.target.type:
                raise ScorerError(
                    f"{where}: target type {meta.get('target')!r} is not the config's "
                    f"{decl.target.type!r}"
                )
        except (ScorerError, RegistryError, OSError) as exc:
            message = str(exc) if str(exc).startswith("model ") else f"{where}: {exc}"
            if self.errors.get(f"{name}:{stage}") != message:
                log.error("refused %s; still serving %s", message, _serving(served.get(name)))
            self.errors[f"{name}:{stage}"] = message
            self._loaded[key] = (info.version, info.created)  # do not retry every second
            return False
        self.errors.pop(f"{name}:{stage}", None)
        served[name] = scorer
        self._loaded[key] = (info.version, info.created)
        log.info("serving %s v%d as %s", name, info.version, stage)
        return True

    def _load_segments(self, info: VersionInfo) -> bool:
        key = ("segments", "live")
        if self._loaded.get(key) == (info.version, info.created):
            return False
        where = f"segments v{info.version} (live)"
        try:
            decl = self.declared.segments
            if decl is None:
                raise SegmentsError("$.segments", "the config declares no segments")
            meta, arrays = self.registry.load(info)
            trained = list(meta.get("columns", {}).get("columns", []))
            if trained != list(decl.features):
                raise SegmentsError(
                    "features",
                    f"{trained} do not match the config's {list(decl.features)} "
                    "(refit: trimtab segments fit …)",
                )
            model = SegmentModel.from_file(meta, arrays)
        except (SegmentsError, RegistryError, OSError) as exc:
            # "segments v2 (live): features: …", not "segments v2: segments: features: …"
            detail = f"{exc.where}: {exc.reason}" if isinstance(exc, SegmentsError) else exc
            message = f"{where}: {detail}"
            if self.errors.get("segments") != message:
                log.error("refused %s; still serving %s", message, (self.segments and
                          f"segments v{self.segments.version}") or "no segments")  # fmt: skip
            self.errors["segments"] = message
            self._loaded[key] = (info.version, info.created)
            return False
        self.errors.pop("segments", None)
        self.segments = model
        self._loaded[key] = (info.version, info.created)
        log.info("serving segments v%d", info.version)
        return True

    def _take_counts(self) -> None:
        """Add what the compiled bundle counted to the totals (before it is replaced)."""
        if self._bundle is not None:
            scored, unscored = self._bundle.counts()
            self._scored += scored
            self._unscored += unscored
            self._bundle = None

    @property
    def scored(self) -> int:
        """Live models scored so far."""
        return self._scored + (self._bundle.counts()[0] if self._bundle is not None else 0)

    @property
    def unscored(self) -> int:
        """Live models left unscored so far: an input was NaN or infinite."""
        return self._unscored + (self._bundle.counts()[1] if self._bundle is not None else 0)

    # -- the reader -----------------------------------------------------------------------
    def read(self, user: Any, page_view_id: str, attrs: dict[str, Any]) -> None:
        """Add scores and segment to ``attrs`` (a :data:`trimtab.features.Derived` reader).

        This runs on every feature update (the first read after it re-scores), so it is kept
        lean. Compiled, each user has one slot in the bundle's form — the doubles of their
        last evaluation and what it was computed from (the state of their applied event ids,
        local hour, session, page view) — evaluated into in place when stale and written out
        as attributes either way: a feature update allocates no cache entry and frees none.
        With numpy, one flat entry per user, session and page view, ``(last event id,
        generation, local hour, values)``, replaced whole when stale."""
        if time.monotonic() - self._last_check >= self.check_every_s:
            self.reload()
        bundle = self._bundle
        if bundle is not None:
            if user is None:
                key, seen, events = attrs.get("id", ""), None, 0
            else:
                key, seen, events = user.user_id, user.seen, user.reading_events
            bundle.read(self._slots, key, seen, events, page_view_id, attrs, MAX_CACHED)
            return
        if not (self.live or self.shadow or self.segments):
            return
        seen = user.seen if user is not None else None
        last = next(reversed(seen), None) if seen else None
        hour = attrs.get("local_hour")
        key = (attrs.get("id", ""), attrs.get("session_id", ""), page_view_id)
        cache = self._cache
        hit = cache.get(key)
        if (
            hit is not None
            # the same id object when no event was applied since: skips a string compare
            and (hit[0] is last or hit[0] == last)
            and hit[1] == self.generation
            and hit[2] == hour
        ):
            attrs.update(hit[3])
            return
        events = user.reading_events if user is not None else 0
        values = self.compute_reference(attrs, events, compiled=True)
        if hit is None and len(cache) >= MAX_CACHED:
            for old in list(cache)[: MAX_CACHED // 2]:
                del cache[old]
        cache[key] = (last, self.generation, hour, values)
        attrs.update(values)

    def compute(self, attrs: Mapping[str, Any], events: int | None = None) -> dict[str, Any]:
        """The attributes these models add for ``attrs`` (no caching); ``events`` is how many
        reading events of the user trimtab has seen (``segments.min_events``)."""
        bundle = self._bundle
        if bundle is not None:  # every model and the record in one compiled call
            out: dict[str, Any] = bundle.compute(attrs, events)
            return out
        return self.compute_reference(attrs, events, compiled=True)

    def compute_reference(
        self, attrs: Mapping[str, Any], events: int | None = None, compiled: bool = False
    ) -> dict[str, Any]:
        """:meth:`compute` model by model in Python, with numpy (the reference the compiled
        bundle is tested against) or each model's own compiled form."""
        out: dict[str, Any] = {}
        record: dict[str, Any] = {}
        segments = self.segments
        assigned: tuple[str, float] | None = None
        if segments is not None:
            assigned = segments.assign(attrs) if compiled else segments.assign_numpy(attrs)
        live = [
            (name, s, s.score(attrs) if compiled else s.score_numpy(attrs))
            for name, s in self.live.items()
        ]
        shadow = [
            (name, s, s.score(attrs) if compiled else s.score_numpy(attrs))
            for name, s in self.shadow.items()
        ]
        if segments is not None and events is not None and events < self.min_events:
            out["segment"] = ""
            skipped = f"{events} reading events so far"
            record["segments"] = {"v": segments.version, "skipped": skipped}
        elif segments is not None and assigned is not None:
            seg_id, p = assigned
            label = self.names.get(seg_id, seg_id) if p >= self.min_p else ""
            out["segment"], out["segment_p"] = label, p
            record["segments"] = {"v": segments.version, "id": seg_id, "p": round(p, 4)}
        for name, scorer, score in live:
            if score is None:
                self._unscored += 1
                record[name] = {"v": scorer.version, "skipped": "non-finite input"}
                continue
            out.update(scorer.attributes(score))
            record[name] = {"v": scorer.version, **scorer.logged(score)}
            self._scored += 1
        for name, scorer, score in shadow:
            record[f"{name}~shadow"] = {
                "v": scorer.version,
                **(scorer.logged(score) if score is not None else {"skipped": "non-finite"}),
            }
        if record:
            out[MODELS_ATTRIBUTE] = _encode(record).decode()
        return out

    def forget(self, user_id: str) -> None:
        """Drop a user's cached scores (erasure)."""
        self._slots.pop(user_id, None)
        for key in [k for k in self._cache if k[0] == user_id]:
            del self._cache[key]

    # -- the admin API --------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What is served, what was refused and why (``GET /v1/admin/models``)."""
        self.reload()
        seg = self.segments
        return {
            "models_dir": str(self.registry.root),
            "declared": sorted(self.declared.models),
            "live": {n: s.version for n, s in self.live.items()},
            "shadow": {n: s.version for n, s in self.shadow.items()},
            "segments": None
            if seg is None
            else {
                "version": seg.version,
                "algorithm": seg.algorithm,
                "segments": [{"id": i, "name": self.names.get(i, "")} for i in seg.ids],
            },
            "refused": dict(self.errors),
            "scored": self.scored,
            "unscored_non_finite": self.unscored,
        }


def _serving(scorer: Scorer | None) -> str:
    return f"v{scorer.version}" if scorer is not None else "nothing"


def attach(processor: Any, config: Any, data_dir: str | Path) -> LiveModels:
    """Serve the registry in ``data_dir/models`` to ``processor``'s readers."""
    live = LiveModels(config, Path(data_dir) / "models")
    processor.derived.append(live.read)
    forget = processor.forget

    def forget_everywhere(user_id: str) -> bool:  # erasure reaches the cached scores too
        live.forget(user_id)
        return bool(forget(user_id))

    processor.forget = forget_everywhere
    return live
