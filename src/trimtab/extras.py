"""Optional parts and the extras that bring them.

The core install serves, decides and learns; heavier parts come with an extra:

* ``trimtab[scale]`` — the Redis and NATS backends (``redis``, ``nats-py``);
* ``trimtab[reports]`` — experiment reports and charts (``duckdb``, ``matplotlib``);
* ``trimtab[sim]`` — the simulator as a Gymnasium environment (``gymnasium``);
* ``trimtab[models]`` — training models and segments;
* ``trimtab[openfeature]`` — the in-process OpenFeature provider (``openfeature-sdk``);
* ``trimtab[otel]`` — OpenTelemetry spans of flag evaluations (optional: without it, none);
* ``trimtab[graphql]`` — the GraphQL API at ``/graphql`` (``strawberry-graphql``).

Using a part whose extra is missing raises :class:`MissingExtra`, which names the extra.

>>> try:
...     require("trimtab_no_such_module", "reports", "experiment reports")
... except MissingExtra as exc:
...     print(exc)
experiment reports need trimtab_no_such_module: pip install 'trimtab[reports]'
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType


class MissingExtra(ImportError):
    """An optional part was used without the extra that installs its dependencies."""


def missing(exc: ModuleNotFoundError, extra: str, purpose: str) -> ImportError:
    """The error to raise for ``exc``: :class:`MissingExtra` naming ``extra`` when the missing
    module is a dependency the extra brings, else ``exc`` itself (a real bug)."""
    name = exc.name or ""
    if name.split(".")[0] not in _EXTRA_MODULES.get(extra, ()):
        return exc
    return MissingExtra(f"{purpose} need {name}: pip install 'trimtab[{extra}]'", name=name)


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``; :class:`MissingExtra` naming ``extra`` when it is not installed."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module.split(".")[0] and exc.name != module:
            raise
        raise MissingExtra(
            f"{purpose} need {module}: pip install 'trimtab[{extra}]'", name=module
        ) from None


# the top-level modules each extra installs
_EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "scale": ("redis", "nats"),
    "reports": ("duckdb", "matplotlib"),
    "sim": ("gymnasium",),
    "models": ("sklearn", "lightgbm", "torch"),
    "openfeature": ("openfeature",),
    "otel": ("opentelemetry",),
    "graphql": ("strawberry",),
}


class BenchmarksMissing(ImportError):
    """``trimtab bench`` outside a checkout: the benchmarks are not part of the package."""


def bench_module(name: str) -> ModuleType:
    """A module of the benchmarks (``trimtab_bench.<name>``).

    The benchmarks live beside the package in a source checkout (``trimtab_bench/``) and are
    not installed with it: an editable install finds them next to ``src/``; an installed wheel
    has none and says so.
    """
    qualified = f"trimtab_bench.{name}"
    try:
        return importlib.import_module(qualified)
    except ModuleNotFoundError as exc:
        if exc.name not in ("trimtab_bench", qualified):
            raise
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "trimtab_bench" / "__init__.py").is_file():
        raise BenchmarksMissing(
            "the benchmarks run from a source checkout of trimtab (make install there); "
            "they are not part of the installed package"
        ) from None
    sys.path.append(str(checkout))
    return importlib.import_module(qualified)
