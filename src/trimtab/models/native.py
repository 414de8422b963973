"""Live scoring in C, compiled on first use; numpy when there is no compiler.

One user's score is a few microseconds of arithmetic, but a dozen numpy calls on tiny arrays
cost ~20 µs, as much as LightGBM's own single-row ``Booster.predict``. So the served forms
(:mod:`~trimtab.models.trees`, :mod:`~trimtab.models.mlp`, :mod:`~trimtab.models.linear`,
:mod:`~trimtab.models.segments`) are also handed to a small C extension, ``_fastscore.c``
(shipped as source in the package), that reads the user's attributes into the input vector
and evaluates the model in one call — or, for :class:`~trimtab.models.live.LiveModels`, every
served model at once (:func:`compile_bundle`: the union of their columns read once, the
attributes rules read and the decision log's record written into a dict). The trees run in
QuickScorer's order (only the nodes whose test fails are touched, no data-dependent walk),
the network as loops over its small layers, the segment's Gaussian components.
``-O3 -march=native`` without ``-ffast-math`` and with ``-ffp-contract=off``: IEEE
arithmetic in a fixed order (no fused multiply-adds, no reassociation), so the vector
instructions change the speed, never a result.

The extension is built the first time it is needed with the system's C compiler (``$CC`` or
``cc``) against this Python's headers, into ``$TRIMTAB_CACHE_DIR`` (default
``~/.cache/trimtab``), under a name that includes a hash of the source, the flags, the CPU's
features and the Python ABI, so an upgrade rebuilds it, a shared cache never serves a machine
code it cannot run, and concurrent processes never load a half-written file. Nothing is
compiled at install time; wheels stay pure Python.

Without a compiler or Python's headers — or with ``TRIMTAB_NATIVE=0`` — :func:`load` returns
``None`` (with one logged warning saying why) and every model scores with numpy, with the same
results. Either way outputs equal the libraries' own ``predict`` (trees to 1e-9, the MLP to
1e-6; tested), and the C reader gives the same vector as :meth:`Columns.vector` (tested on
random attributes).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from trimtab.features import SummedMap
from trimtab.models.columns import Columns

log = logging.getLogger("trimtab.models")
SOURCE = Path(__file__).with_name("_fastscore.c")
FLAGS = ["-O3", "-fPIC", "-shared", "-fno-strict-aliasing", "-ffp-contract=off", "-std=c11"]
# ops understood by the C reader (see _fastscore.c)
NUMBER, SUM, ONEHOT, EQUALS, PYTHON = range(5)
LINKS = {"identity": 0, "sigmoid": 1, "exp": 2, "softmax": 3}
# what a bundle part is (see _fastscore.c's bundle)
SEGMENT, LIVE, SHADOW = range(3)

_state: dict[str, Any] = {}


class NativeError(RuntimeError):
    """The extension could not be built or loaded (the message says why)."""


def cache_dir() -> Path:
    env = os.environ.get("TRIMTAB_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trimtab"


def _cpu_flags() -> str:
    """This CPU's feature flags (Linux), or "" when they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _flags() -> list[str]:
    """Compiler flags: ``-march=native`` (vector instructions for the tree masks) only when the
    CPU's flags are known, since they are part of the cache key: a cache shared by different
    machines never hands one a library built for instructions it lacks."""
    return [*FLAGS, "-march=native"] if _cpu_flags() else FLAGS


def _target() -> Path:
    key = SOURCE.read_bytes() + " ".join(_flags()).encode() + _cpu_flags().encode()
    digest = hashlib.sha256(key).hexdigest()[:16]
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return cache_dir() / f"_fastscore-{digest}{suffix}"


def build(target: Path | None = None) -> Path:
    """Compile the extension (if not already there); returns the shared library's path."""
    target = target or _target()
    if target.exists():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise NativeError("no C compiler (cc) on PATH")
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        raise NativeError(f"Python's headers are not installed ({include}/Python.h)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        run = subprocess.run(
            [compiler, *_flags(), f"-I{include}", str(SOURCE), "-o", tmp, "-lm"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if run.returncode != 0:
            raise NativeError(f"{compiler} failed: {run.stderr.strip()[-800:]}")
        os.replace(tmp, target)  # atomic: another process sees all of it or nothing
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load() -> ModuleType | None:
    """The compiled extension, built on first use; ``None`` when it cannot be (logged once)."""
    if "module" in _state:
        loaded: ModuleType | None = _state["module"]
        return loaded
    module = None
    if os.environ.get("TRIMTAB_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        _state["why"] = "TRIMTAB_NATIVE=0"
    else:
        try:
            path = build()
            loader = importlib.machinery.ExtensionFileLoader("_fastscore", str(path))
            spec = importlib.util.spec_from_file_location("_fastscore", path, loader=loader)
            if spec is None:
                raise NativeError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            loader.exec_module(module)
            module.summed_map(SummedMap)  # sum(map) columns read the sum the map keeps
        except (NativeError, OSError, ImportError, subprocess.SubprocessError) as exc:
            _state["why"] = str(exc)
            log.warning("live scoring uses numpy (no compiled scorer: %s)", exc)
            module = None
    _state["module"] = module
    return module


def status() -> str:
    """``"compiled"`` or ``"numpy (reason)"`` — what serves live scores in this process."""
    return "compiled" if load() is not None else f"numpy ({_state.get('why', '?')})"


def _bytes(a: Any, dtype: Any) -> bytes:
    return np.ascontiguousarray(a, dtype=dtype).tobytes()


Op = tuple[int, bool, int, str, str | None, Any, Callable[[Any], Any]]
_ops_cache: dict[str, tuple[Op, ...]] = {}


def reader_ops(columns: Columns) -> tuple[Op, ...]:
    """The C reader's program for ``columns``: one op per declared column. Equal columns get
    the same tuple, so :func:`score_all` reads them once for every model over them."""
    key = json.dumps(columns.describe(), sort_keys=True)
    cached = _ops_cache.get(key)
    if cached is not None:
        return cached
    if len(_ops_cache) > 1000:  # models come and go with versions; keep the table small
        _ops_cache.clear()
    ops: list[Op] = []
    for column, where, reader in columns.plan():
        path = column.path
        simple = len(path) <= 2 and not any(part.startswith("$") for part in path)
        k1 = sys.intern(path[0])  # the same object for every column under this key
        k2 = sys.intern(path[1]) if len(path) == 2 else None
        if isinstance(where, dict):  # path=*: level text -> position
            kind = ONEHOT if simple else PYTHON
            ops.append((kind, False, -1, k1, k2, dict(where), reader))
            continue
        if not simple:
            kind = PYTHON
        elif column.equals is not None:
            kind = EQUALS
        elif column.total:
            kind = SUM
        else:
            kind = NUMBER
        extra = column.equals if kind == EQUALS else None
        ops.append((kind, column.log, where, k1, k2, extra, reader))
    _ops_cache[key] = program = tuple(ops)
    return program


def score_all(models: tuple[Any, ...], attrs: Mapping[str, Any]) -> list[Any]:
    """``[m.score(attrs) for m in models]`` for compiled models, in one call, reading each
    distinct set of columns once (segments: ``(component, posterior)``; ``None`` when an
    input is not finite)."""
    module = load()
    if module is None:
        raise NativeError("no compiled scorer")
    scores: list[Any] = module.score_all(models, attrs)
    return scores


def compile_model(columns: Columns, model: Any) -> Any | None:
    """The C form of a served model (trees, MLP or linear) reading ``columns``; ``None``
    without the extension."""
    module = load()
    if module is None:
        return None
    from trimtab.models.linear import Linear
    from trimtab.models.mlp import MLP
    from trimtab.models.trees import TreeEnsemble

    ops = reader_ops(columns)
    if isinstance(model, TreeEnsemble):
        form = model.scan_form()
        return module.forest(
            ops,
            model.n_features,
            model.n_outputs,
            LINKS[model.link],
            model.sigmoid,
            _bytes(form["feature_start"], np.int32),
            _bytes(form["feature_special"], np.uint8),
            _bytes(form["threshold"], np.float64),
            _bytes(form["tree"], np.int32),
            _bytes(form["mask"], np.uint64),
            _bytes(form["missing"], np.uint8),
            _bytes(form["default_left"], np.uint8),
            _bytes(form["leaf_offset"], np.int32),
            _bytes(form["leaf_count"], np.int32),
            _bytes(form["tree_output"], np.int32),
            _bytes(form["leaf_value"], np.float64),
            _bytes(form["constants"], np.float64),
            _bytes(form["bound_start"], np.int32),
            _bytes(form["bound"], np.float64),
            _bytes(form["row_start"], np.int32),
            _bytes(form["table"], np.uint64),
        )
    if isinstance(model, MLP | Linear):
        weights, biases = model.layers()
        sizes = (weights[0].shape[0], *(w.shape[1] for w in weights))
        return module.dense(
            ops,
            LINKS[model.link],
            tuple(int(s) for s in sizes),
            tuple(_bytes(w, np.float64) for w in weights),
            tuple(_bytes(b, np.float64) for b in biases),
        )
    return None


def compile_mixture(
    columns: Columns, k: int, d: int, a: np.ndarray, c: np.ndarray, bias: np.ndarray
) -> Any | None:
    """The C form of a segmentation: ``assign(attrs) -> (component, posterior) | None``."""
    module = load()
    if module is None:
        return None
    return module.mixture(
        reader_ops(columns),
        k,
        d,
        _bytes(a, np.float64),
        _bytes(c, np.float64),
        _bytes(bias, np.float64),
    )


def union_program(programs: Sequence[tuple[tuple[Any, ...], int]]) -> UnionProgram:
    """One reader program over the union of several models' columns, so that each attribute
    is read once per user: the ops (positions in the union vector), its width, and per model
    (``(ops, n_in)`` in ``programs``) where each of its inputs sits in the union vector."""
    ops: list[tuple[Any, ...]] = []
    slots: dict[Hashable, Any] = {}
    width = 0
    indexes: list[bytes] = []
    for program, n_in in programs:
        index = [-1] * n_in
        for kind, log, pos, k1, k2, extra, reader in program:
            if isinstance(extra, dict):  # path=*: level -> position in the model's vector
                key: Hashable = ("=*", k1, k2, tuple(extra)) if kind == ONEHOT else reader
                levels = slots.get(key)
                if levels is None:
                    levels = slots[key] = {level: width + j for j, level in enumerate(extra)}
                    width += len(extra)
                    if kind == ONEHOT:
                        fallback = reader
                    else:  # the Python reader answers the model's position: translate it
                        remap = {extra[level]: levels[level] for level in extra}
                        fallback = _translated(reader, remap)
                    ops.append((kind, False, -1, k1, k2, levels, fallback))
                for level, at in extra.items():
                    index[at] = levels[level]
                continue
            key = (kind, log, k1, k2, extra) if kind != PYTHON else reader
            slot = slots.get(key)
            if slot is None:
                slot = slots[key] = width
                width += 1
                ops.append((kind, log, slot, k1, k2, extra, reader))
            index[pos] = slot
        if min(index, default=0) < 0:
            raise NativeError("a model input that no column reads")
        indexes.append(_bytes(index, np.int32))
    return UnionProgram(tuple(ops), max(width, 1), indexes)


class UnionProgram(NamedTuple):
    ops: tuple[tuple[Any, ...], ...]
    width: int
    indexes: list[bytes]


def _translated(reader: Callable[[Any], Any], remap: dict[int, int]) -> Callable[[Any], Any]:
    def position(attrs: Any) -> int | None:
        found = reader(attrs)
        return None if found is None else remap.get(found)

    return position


class BundlePart(NamedTuple):
    """One model of a bundle, as :class:`~trimtab.models.live.LiveModels` serves it."""

    compiled: Any  # the model's compiled form
    columns: Columns
    role: int  # SEGMENT, LIVE or SHADOW
    head: bytes  # the decision log record's entry up to its values: b'"p":{"v":3,'
    name: str | None = None  # the attribute (segment: "segment")
    name_p: str | None = None  # segment_p, or a multiclass model's <name>_p
    name_by: str | None = None  # a multiclass model's <name>_p_by_class
    labels: tuple[str, ...] | None = None  # segment labels by component, or class names
    json_items: tuple[bytes, ...] | None = None  # segment ids, or class names, as JSON
    min_p: float = 0.0
    min_events: int = 0


def compile_bundle(parts: Sequence[BundlePart], models_key: str) -> Any | None:
    """Every served model in one compiled object: ``bundle.score(attrs, events, out)`` reads
    the union of their columns once, evaluates each model and writes the attributes rules
    read, plus the decision log's record under ``models_key``, into the dict ``out``; it
    returns how many live models an input that is not finite left unscored;
    ``bundle.read(slots, key, seen, events, page_view_id, attrs, max)`` does the same for
    :meth:`LiveModels.read` through the user's slot in ``slots`` (kept numbers written out, or
    evaluated into in place when stale). ``None`` without the extension or when a model has no
    compiled form."""
    module = load()
    if module is None or not parts or any(p.compiled is None for p in parts):
        return None
    union = union_program([(reader_ops(p.columns), len(p.columns)) for p in parts])
    specs = tuple(
        (
            p.compiled,
            index,
            p.role,
            p.head,
            p.name,
            p.name_p,
            p.name_by,
            p.labels,
            p.json_items,
            float(p.min_p),
            int(p.min_events),
        )
        for p, index in zip(parts, union.indexes, strict=True)
    )
    return module.bundle(union.ops, union.width, models_key, specs)
