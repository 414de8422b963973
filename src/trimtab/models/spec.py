"""Model and segment declarations in the site config, validated at start-up.

A predictive model names what it predicts, from which moment, with which features::

    models:
      p_subscribe:
        description: clicks the subscription call to action later in this visit
        at: page_view              # one row per page view (page_view | session_end | exposure)
        after_s: 5                 # observed 5 s into the page
        target: {event: "click:cta", within: session}
        features: [scroll_depth_max, scroll_velocity, log(time_on_page_s), device=*]
        algorithm: lightgbm        # lightgbm | mlp | logistic

    segments:
      features: [scroll_velocity, scroll_depth_max, log(sum(hover_ms_by_kind)), device=mobile]
      algorithm: auto              # gmm | kmeans | hdbscan | auto (the best of the three)
      k: [2, 8]
      conversion: "click:*"        # reported per segment
      names: {s1: deep-readers, s3: late-evening-skimmers}
      min_events: 20               # no kind of reader claimed before 20 reading events

A live model's score becomes an attribute under the model's name (``p_subscribe: {$gt:
0.3}`` in a rule) — for a ``category`` target the most likely class, with its probability
under ``<name>_p`` and every class's under ``<name>_p_by_class``; the live segmentation adds
``segment`` (its name, or its id when unnamed) and ``segment_p`` (the posterior probability of
that segment). Feature columns are written in :mod:`trimtab.models.columns` syntax.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from trimtab.models.columns import ColumnError, parse_columns
from trimtab.validation import ConfigError
from trimtab.validation import convert as _convert

SEGMENT_ATTRIBUTES = ("segment", "segment_p")
CATEGORY_FIELDS = ("category", "element_kind", "element", "slot", "variant", "value", "name")
CATEGORY_SUFFIXES = ("_p", "_p_by_class")  # a category model's other attributes
MODELS_ATTRIBUTE = "_models"  # the model versions behind a user's scores (decision log)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_SEGMENT_ID = re.compile(r"^s[0-9]{1,4}$")


class TargetDecl(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """What a model predicts: events matching ``event`` after the observation.

    ``within`` bounds the outcome window: ``page`` (until the next page view), ``session``
    (until the visit ends) or a number of seconds. ``other_session`` counts only events of a
    later visit ("returns within 7 days": ``{event: page_view, within: 604800,
    other_session: true}``). ``binary`` predicts whether one happens (a probability),
    ``count`` how many (a regression), ``category`` which class the *first* matching event
    names in its field ``by`` ("next category read": ``{event: "click:card", type: category,
    by: category}``) — rows where no such event follows are left out.
    """

    event: str
    within: Literal["page", "session"] | float = "session"
    other_session: bool = False
    type: Literal["binary", "count", "category"] = "binary"
    by: str = ""  # category: the field of the first matching event that names the class


class ModelDecl(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One declared predictive model (see the module docstring)."""

    target: TargetDecl
    features: list[str]
    at: Literal["page_view", "session_end", "exposure"] = "page_view"
    after_s: float = 0.0
    slot: str = ""  # for at: exposure — the slot whose exposures are rows ("*": every slot)
    algorithm: Literal["lightgbm", "mlp", "logistic"] = "lightgbm"
    params: dict[str, Any] = {}
    holdout: float = 0.2
    description: str = ""


class SegmentsDecl(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The site's micro-segmentation (see the module docstring)."""

    features: list[str]
    algorithm: Literal["auto", "gmm", "kmeans", "hdbscan"] = "auto"
    k: tuple[int, int] = (2, 8)
    at: Literal["session_end", "page_view"] = "session_end"
    conversion: str = "click:*"
    names: dict[str, str] = {}
    min_p: float = 0.0  # a posterior below this leaves `segment` empty
    min_events: int = 0  # no segment before this many reading events of the user (READING_TYPES)
    seed: int = 0
    description: str = ""


class ModelsConfig(msgspec.Struct, frozen=True):
    models: dict[str, ModelDecl]
    segments: SegmentsDecl | None


def check(config: Any, source: str) -> ModelsConfig:
    """Validate the config's ``models`` and ``segments``; raise ``ConfigError`` naming the path."""
    from trimtab.features import CONTEXT_ATTRIBUTES

    taken = set(config.features) | set(CONTEXT_ATTRIBUTES) | set(SEGMENT_ATTRIBUTES)
    models: dict[str, ModelDecl] = {}
    for name, raw in (config.models or {}).items():
        where = f"$.models.{name}"
        name = str(name)
        if not _NAME.match(name):
            raise ConfigError(source, where, "a model name is a letter then letters, digits or _")
        if name in taken:
            raise ConfigError(source, where, f"{name!r} is already a feature or attribute name")
        decl = _convert(raw, ModelDecl, where, source, field_in_path=True)
        _check_columns(source, f"{where}.features", decl.features)
        if decl.at == "exposure" and not decl.slot:
            raise ConfigError(source, f"{where}.slot", "at: exposure needs the slot (or '*')")
        if decl.slot and decl.slot != "*" and decl.slot not in config.slots:
            raise ConfigError(source, f"{where}.slot", f"unknown slot {decl.slot!r}")
        if not 0.0 < decl.holdout < 1.0:
            raise ConfigError(source, f"{where}.holdout", "must be between 0 and 1 (exclusive)")
        if decl.after_s < 0:
            raise ConfigError(source, f"{where}.after_s", "must be ≥ 0")
        within = decl.target.within
        if not isinstance(within, str) and within <= 0:
            raise ConfigError(source, f"{where}.target.within", "a window must be > 0 seconds")
        if decl.target.other_session and within in ("page", "session"):
            raise ConfigError(
                source, f"{where}.target.other_session", "needs within: <seconds> (a later visit)"
            )
        _check_pattern(source, f"{where}.target.event", decl.target.event)
        if decl.target.type == "category":
            if decl.target.by not in CATEGORY_FIELDS:
                raise ConfigError(
                    source,
                    f"{where}.target.by",
                    f"a category target names its class by one of {', '.join(CATEGORY_FIELDS)}",
                )
            for suffix in CATEGORY_SUFFIXES:
                if f"{name}{suffix}" in taken:
                    raise ConfigError(
                        source, where, f"{name + suffix!r} is already a feature or attribute name"
                    )
        elif decl.target.by:
            raise ConfigError(
                source,
                f"{where}.target.by",
                "only a category target names a field (type: category)",
            )
        models[name] = decl
    for name, decl in models.items():  # a score is not a feature of another model
        for i, column in enumerate(parse_columns(decl.features)):
            if column.path[0] in models:
                raise ConfigError(
                    source, f"$.models.{name}.features[{i}]", f"{column.text!r} is a model's score"
                )
    segments = None
    if config.segments:
        where = "$.segments"
        segments = _convert(config.segments, SegmentsDecl, where, source, field_in_path=True)
        _check_columns(source, f"{where}.features", segments.features)
        lo, hi = segments.k
        if not 2 <= lo <= hi <= 50:
            raise ConfigError(source, f"{where}.k", "k must satisfy 2 ≤ min ≤ max ≤ 50")
        if not 0.0 <= segments.min_p < 1.0:
            raise ConfigError(source, f"{where}.min_p", "must be at least 0 and below 1")
        if segments.min_events < 0:
            raise ConfigError(source, f"{where}.min_events", "must be 0 or more")
        _check_pattern(source, f"{where}.conversion", segments.conversion)
        seen: dict[str, str] = {}
        for seg_id, seg_name in segments.names.items():
            if not _SEGMENT_ID.match(seg_id):
                raise ConfigError(
                    source,
                    f"{where}.names.{seg_id}",
                    "segment ids look like s1, s2, … (see `trimtab segments show`)",
                )
            if not seg_name or len(seg_name) > 64:
                raise ConfigError(source, f"{where}.names.{seg_id}", "a name of 1–64 characters")
            if seg_name in seen:
                raise ConfigError(
                    source, f"{where}.names.{seg_id}", f"{seg_name!r} also names {seen[seg_name]}"
                )
            seen[seg_name] = seg_id
    return ModelsConfig(models=models, segments=segments)


def models_of(config: Any) -> ModelsConfig:
    """The typed declarations of an already loaded :class:`~trimtab.config.SiteConfig`."""
    return check(config, config.source or "<config>")


_record_decoder = msgspec.json.Decoder(dict[str, Any])


def segment_record(record: str) -> Any:
    """The ``segments`` entry of a ``_models`` record (``None`` when it has none): what a page
    view holds along with the segment it decides on (:mod:`trimtab.live`)."""
    return _record_decoder.decode(record).get("segments") if record else None


def holding_segment(record: str, held: Any) -> str:
    """``record`` with its ``segments`` entry replaced by ``held`` (removed when ``None``), so
    the decision log names the segment a decision really used; ``record`` itself (no copy)
    when it already does. ``""`` when nothing is left."""
    models = _record_decoder.decode(record) if record else {}
    if models.get("segments") == held:
        return record
    models.pop("segments", None)
    if held is not None:
        models = {"segments": held, **models}  # the entry comes first, as live scoring writes it
    return msgspec.json.encode(models).decode() if models else ""


def _check_columns(source: str, where: str, columns: list[str]) -> None:
    if not columns:
        raise ConfigError(source, where, "declare at least one feature")
    try:
        parsed = parse_columns(columns)
    except ColumnError as exc:
        raise ConfigError(source, f"{where}[{exc.index}]", exc.reason) from None
    for i, column in enumerate(parsed):
        if column.path[0] in SEGMENT_ATTRIBUTES or column.path[0].startswith("_"):
            raise ConfigError(
                source, f"{where}[{i}]", f"{column.text!r} is derived from models, not a feature"
            )


def _check_pattern(source: str, where: str, pattern: str) -> None:
    if not pattern or pattern.count(":") > 1:
        raise ConfigError(source, where, "an event pattern is kind:detail (e.g. click:cta)")
