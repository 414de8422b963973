"""The model registry: every trained version, its data window, metrics and stage.

Layout under ``<data_dir>/models``::

    registry.json                  the index (written atomically)
    <name>/v<N>/model.npz          the served arrays and their metadata (numpy only)
    <name>/v<N>/native.*           the library's own model (LightGBM text, torch weights)
    <name>/v<N>/*.png              plots

A version is ``shadow`` (scored and logged with every decision, not visible to rules), ``live``
(its score is an attribute rules and policies read) or ``retired``. Promoting a version to
live retires the previous live one; :meth:`Registry.rollback` brings back the version that was
live before. Segmentations are registered under the name ``segments``.

>>> import tempfile
>>> reg = Registry(tempfile.mkdtemp())
>>> v1 = reg.add("p_click", "logistic", {"w": np.zeros(2)}, {"features": ["a"]}, stage="live")
>>> v2 = reg.add("p_click", "lightgbm", {"w": np.ones(2)}, {"features": ["a"]}, stage="live")
>>> [(v.version, v.stage) for v in reg.versions("p_click")]
[(1, 'retired'), (2, 'live')]
>>> reg.rollback("p_click").version
1
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np

Stage = Literal["shadow", "live", "retired"]
STAGES = ("shadow", "live", "retired")
INDEX = "registry.json"


class RegistryError(ValueError):
    """A registry operation that cannot be done (unknown model or version, bad file)."""


class VersionInfo(msgspec.Struct, kw_only=True):
    """One registered version, as the index keeps it."""

    name: str
    version: int
    kind: str
    stage: str
    created: float
    file: str
    config_hash: str = ""
    features: list[str] = []
    window: dict[str, float] = {}
    rows: dict[str, int] = {}
    metrics: dict[str, Any] = {}
    baseline: dict[str, Any] = {}
    plots: list[str] = []
    history: list[tuple[str, float]] = []  # (stage, when) transitions
    note: str = ""


class _Index(msgspec.Struct):
    models: dict[str, list[VersionInfo]] = {}


_decoder = msgspec.json.Decoder(_Index)
_encoder = msgspec.json.Encoder()


def _packed(meta: Mapping[str, Any]) -> np.ndarray:
    return np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)


def read_model_file(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata and arrays of a ``model.npz`` (no pickles are ever loaded)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # a damaged zip raises BadZipFile, EOFError, ValueError…
        raise RegistryError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    packed = arrays.pop("__meta__", None)
    if packed is None:
        raise RegistryError(f"{path} has no metadata: not a trimtab model file")
    try:
        meta = json.loads(packed.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{path}: unreadable metadata: {exc}") from None
    return meta, arrays


class Registry:
    """Versions of named models in one folder (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def index_path(self) -> Path:
        return self.root / INDEX

    # -- reading ------------------------------------------------------------------------
    def _read(self) -> _Index:
        try:
            raw = self.index_path.read_bytes()
        except FileNotFoundError:
            return _Index()
        try:
            return _decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise RegistryError(f"{self.index_path} is damaged: {exc}") from None

    def stamp(self) -> tuple[int, int]:
        """Changes whenever the index is rewritten (the live engine polls it)."""
        try:
            st = self.index_path.stat()
        except FileNotFoundError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    def names(self) -> list[str]:
        return sorted(self._read().models)

    def versions(self, name: str) -> list[VersionInfo]:
        return list(self._read().models.get(name, []))

    def get(self, name: str, version: int | None = None) -> VersionInfo:
        """A version (the live one, else the newest, when ``version`` is None)."""
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise RegistryError(f"no model {name!r} in {self.root} (registered: {known})")
        if version is None:
            live = [v for v in versions if v.stage == "live"]
            return live[-1] if live else versions[-1]
        for v in versions:
            if v.version == version:
                return v
        have = ", ".join(str(v.version) for v in versions)
        raise RegistryError(f"model {name!r} has no version {version} (versions: {have})")

    def in_stage(self, stage: str) -> dict[str, VersionInfo]:
        """name -> the version in ``stage`` (newest when several)."""
        out = {}
        for name, versions in self._read().models.items():
            for v in versions:
                if v.stage == stage:
                    out[name] = v
        return out

    def load(self, info: VersionInfo) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return read_model_file(self.root / info.file)

    def folder(self, name: str, version: int) -> Path:
        return self.root / name / f"v{version}"

    # -- writing ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _editing(self) -> Iterator[_Index]:
        """Read-modify-write the index under a lock; written atomically at the end."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            index = self._read()
            yield index
            tmp = self.index_path.with_suffix(".tmp")
            tmp.write_bytes(_encoder.encode(index))
            os.replace(tmp, self.index_path)

    def next_version(self, name: str) -> int:
        versions = self.versions(name)
        return max((v.version for v in versions), default=0) + 1

    def add(
        self,
        name: str,
        kind: str,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any],
        *,
        stage: str = "shadow",
        files: Mapping[str, bytes] | None = None,
        version: int | None = None,
        **info: Any,
    ) -> VersionInfo:
        """Store a new version (arrays + metadata in ``model.npz``, extra files beside it)."""
        if stage not in ("shadow", "live"):
            raise RegistryError(f"a new version starts as shadow or live, not {stage!r}")
        with self._editing() as index:
            versions = index.models.setdefault(name, [])
            number = version or max((v.version for v in versions), default=0) + 1
            if any(v.version == number for v in versions):
                raise RegistryError(f"model {name!r} already has a version {number}")
            folder = self.folder(name, number)
            folder.mkdir(parents=True, exist_ok=True)
            full_meta = {**meta, "name": name, "version": number, "kind": kind}
            # no pickles, as read_model_file never loads one
            np.savez(
                folder / "model.npz", allow_pickle=False, __meta__=_packed(full_meta), **arrays
            )
            for filename, content in (files or {}).items():
                (folder / filename).write_bytes(content)
            now = time.time()
            entry = VersionInfo(
                name=name,
                version=number,
                kind=kind,
                stage="retired",
                created=now,
                file=str((folder / "model.npz").relative_to(self.root)),
                features=list(meta.get("columns", {}).get("columns", meta.get("features", []))),
                **info,
            )
            versions.append(entry)
            _set_stage(versions, entry, stage, now)
        return entry

    def set_stage(self, name: str, version: int, stage: str) -> VersionInfo:
        """Move a version to ``shadow``, ``live`` or ``retired`` (live retires the old live)."""
        if stage not in STAGES:
            raise RegistryError(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
        with self._editing() as index:
            versions = index.models.get(name) or []
            entry = next((v for v in versions if v.version == version), None)
            if entry is None:
                raise RegistryError(f"model {name!r} has no version {version}")
            _set_stage(versions, entry, stage, time.time())
            return entry

    def rollback(self, name: str) -> VersionInfo:
        """Retire the live version and make live again the one that was live before it."""
        with self._editing() as index:
            versions = index.models.get(name) or []
            current = next((v for v in versions if v.stage == "live"), None)
            earlier = [
                (when, v)
                for v in versions
                if v is not current
                for stage, when in v.history
                if stage == "live"
            ]
            if not earlier:
                raise RegistryError(f"model {name!r} has no earlier live version to go back to")
            _, previous = max(earlier, key=lambda pair: pair[0])
            now = time.time()
            _set_stage(versions, previous, "live", now)
            return previous


def _set_stage(versions: list[VersionInfo], entry: VersionInfo, stage: str, now: float) -> None:
    """One live and one shadow per name: the one displaced is retired."""
    if stage in ("live", "shadow"):
        for other in versions:
            if other is not entry and other.stage == stage:
                other.stage = "retired"
                other.history.append(("retired", now))
    if entry.stage != stage:
        entry.stage = stage
        entry.history.append((stage, now))
