"""Feature columns: how a model or a segmentation reads numbers out of a user's attributes.

A column is written as text in the config, over the attributes rules see:

* ``scroll_depth_max`` — the number at that path (``hover_ms_by_kind.image`` reads into a
  map); ``true``/``false`` count 1/0; absent, text or a map counts 0;
* ``device=mobile`` — 1 when the value there is ``mobile``, else 0;
* ``device=*`` — one 0/1 column per value seen in the training data (its *levels*);
* ``sum(hover_ms_by_kind)`` — the sum of the numbers of a map;
* ``log(x)`` — ``log(1 + max(x, 0))`` of a number or a sum, for heavy-tailed dwell times;
* ``$name`` in a path is replaced by the value of attribute ``name``: ``affinity.$variant``
  reads the user's affinity for the variant shown (exposure rows, reward models).

>>> cols = Columns(parse_columns(["scroll_depth_max", "device=*", "log(sum(hover))"]),
...                levels={"device=*": ["desktop", "mobile"]})
>>> cols.names
['scroll_depth_max', 'device=desktop', 'device=mobile', 'log(sum(hover))']
>>> [round(v, 3) for v in cols.vector({"device": "mobile", "hover": {"a": 1.0, "b": 0.718}})]
[0.0, 0.0, 1.0, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trimtab.features import SummedMap


class ColumnError(ValueError):
    """A column declaration that cannot be read: its index and the reason."""

    def __init__(self, index: int, reason: str) -> None:
        self.index, self.reason = index, reason
        super().__init__(f"feature {index}: {reason}")


@dataclass(frozen=True)
class Column:
    """One declared column (before ``=*`` expansion)."""

    text: str
    path: tuple[str, ...]
    equals: str | None = None  # "path=value"; "*" expands to the levels
    total: bool = False  # sum(path)
    log: bool = False  # log(...)

    @property
    def expands(self) -> bool:
        return self.equals == "*"


def parse_columns(texts: Sequence[str]) -> list[Column]:
    """Parse column declarations; :class:`ColumnError` names the bad one."""
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ColumnError(i, "a feature column is a non-empty string")
        body, log, total = text.strip(), False, False
        if body.startswith("log(") and body.endswith(")"):
            body, log = body[4:-1].strip(), True
        if body.startswith("sum(") and body.endswith(")"):
            body, total = body[4:-1].strip(), True
        name, eq, value = body.partition("=")
        name = name.strip()
        if not name or any(not part for part in name.split(".")) or "(" in name or " " in name:
            raise ColumnError(i, f"{text!r} is not an attribute path (e.g. hover_ms_by_kind.image)")
        if eq and (log or total):
            raise ColumnError(i, f"{text!r}: log() and sum() take a number, not a comparison")
        if eq and not value.strip():
            raise ColumnError(i, f"{text!r}: write path=value, or path=* for every value")
        out.append(Column(text, tuple(name.split(".")), value.strip() if eq else None, total, log))
    if len({c.text for c in out}) != len(out):
        raise ColumnError(len(out) - 1, "a feature column is declared twice")
    return out


def as_text(value: Any) -> str:
    """How a value is compared with ``path=value``: booleans as true/false."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _lookup(attrs: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = attrs
    for part in path:
        if not isinstance(value, Mapping):
            return None
        if part[0] == "$":
            part = as_text(attrs.get(part[1:]))
        value = value.get(part)
    return value


def _number(value: Any) -> float:
    if value is True:
        return 1.0
    if value is False or value is None:
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    return 0.0


def _reader(column: Column, level: str | None = None) -> Callable[[Mapping[str, Any]], float]:
    path, wanted = column.path, level if level is not None else column.equals
    if wanted is not None:

        def equals(attrs: Mapping[str, Any]) -> float:
            value = _lookup(attrs, path)
            return 1.0 if value is not None and as_text(value) == wanted else 0.0

        return equals
    total, log = column.total, column.log
    if len(path) == 1 and not total and not log:
        key = path[0]

        def plain(attrs: Mapping[str, Any]) -> float:
            value = attrs.get(key)
            if type(value) is float:
                return value
            return _number(value)

        return plain
    if len(path) <= 2 and not total and not any(part[0] == "$" for part in path):
        first, second = path[0], (path[1] if len(path) == 2 else None)
        log1p = math.log1p

        def shallow(attrs: Mapping[str, Any]) -> float:  # the common case, kept fast
            value = attrs.get(first)
            if second is not None:
                if type(value) is dict or type(value) is SummedMap:
                    value = value.get(second)
                else:
                    value = None
            x = value if type(value) is float else _number(value)
            if log:
                return log1p(x) if x > 0.0 else (x if x != x else 0.0)
            return x

        return shallow

    def number(attrs: Mapping[str, Any]) -> float:
        value = _lookup(attrs, path)
        if total:
            if type(value) is dict or type(value) is SummedMap:
                try:  # a map of numbers: the builtin sum (booleans count 1/0)
                    x = float(sum(value.values()))
                except TypeError:  # text among the values: numbers only
                    x = sum(_number(v) for v in value.values())
            elif isinstance(value, Mapping):
                x = sum(_number(v) for v in value.values())
            else:
                x = _number(value)
        else:
            x = _number(value)
        if log:
            return math.log1p(x) if x > 0.0 else (x if x != x else 0.0)  # NaN stays NaN
        return x

    return number


def _level_position(
    path: tuple[str, ...], positions: Mapping[str, int]
) -> Callable[[Mapping[str, Any]], int | None]:
    def position(attrs: Mapping[str, Any]) -> int | None:
        value = _lookup(attrs, path)
        return None if value is None else positions.get(as_text(value))

    return position


class Columns:
    """Declared columns with their levels: attributes → a fixed-order vector of floats."""

    def __init__(
        self, columns: Sequence[Column], levels: Mapping[str, Sequence[str]] | None = None
    ):
        self.columns = list(columns)
        self.levels = {k: list(v) for k, v in (levels or {}).items()}
        names: list[str] = []
        numbers: list[tuple[int, Callable[[Mapping[str, Any]], float]]] = []
        one_hots: list[tuple[tuple[str, ...], dict[str, int]]] = []  # path, level -> position
        plan: list[tuple[Column, int | dict[str, int], Callable[[Mapping[str, Any]], Any]]] = []
        for column in self.columns:
            if column.expands:
                base = column.text[:-2]
                positions = {}
                for level in self.levels.get(column.text, []):
                    positions[level] = len(names)
                    names.append(f"{base}={level}")
                one_hots.append((column.path, positions))
                plan.append((column, positions, _level_position(column.path, positions)))
            else:
                read = _reader(column)
                numbers.append((len(names), read))
                plan.append((column, len(names), read))
                names.append(column.text)
        self.names = names
        self._numbers = numbers
        self._one_hots = one_hots
        self._width = len(names)
        self._plan = plan

    def plan(self) -> list[tuple[Column, int | dict[str, int], Callable[[Mapping[str, Any]], Any]]]:
        """Each declared column, where it goes (its position, or level → position for ``=*``)
        and its reader (attributes → value; for ``=*``, → the position of the value's level or
        ``None``): what the compiled scorer runs (:mod:`trimtab.models.native`)."""
        return list(self._plan)

    @classmethod
    def learn(
        cls, columns: Sequence[Column], rows: Iterable[Mapping[str, Any]], max_levels: int = 200
    ) -> Columns:
        """Columns whose ``=*`` levels are the values seen in ``rows`` (the most frequent
        ``max_levels``, sorted), so a model's inputs are fixed at training."""
        expanding = [c for c in columns if c.expands]
        counts: dict[str, dict[str, int]] = {c.text: {} for c in expanding}
        if expanding:
            for attrs in rows:
                for c in expanding:
                    value = _lookup(attrs, c.path)
                    if value is not None and not isinstance(value, Mapping | list):
                        seen = counts[c.text]
                        text = as_text(value)
                        seen[text] = seen.get(text, 0) + 1
        levels = {}
        for text, seen in counts.items():
            top = sorted(seen, key=lambda v: (-seen[v], v))[:max_levels]
            levels[text] = sorted(top)
        return cls(columns, levels)

    def __len__(self) -> int:
        return len(self.names)

    def vector(self, attrs: Mapping[str, Any]) -> list[float]:
        """The values in column order (a list: cheaper than an array for one user)."""
        out = [0.0] * self._width
        for i, read in self._numbers:
            out[i] = read(attrs)
        for path, positions in self._one_hots:  # one lookup per declared column
            value = _lookup(attrs, path)
            if value is not None:
                j = positions.get(as_text(value))
                if j is not None:
                    out[j] = 1.0
        return out

    def matrix(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Rows × columns, float64."""
        out = np.empty((len(rows), self._width))
        vector = self.vector
        for i, attrs in enumerate(rows):
            out[i] = vector(attrs)
        return out

    def describe(self) -> dict[str, Any]:
        """What a model file stores about its inputs."""
        return {"columns": [c.text for c in self.columns], "levels": self.levels}

    @classmethod
    def from_description(cls, data: Mapping[str, Any]) -> Columns:
        return cls(parse_columns(list(data["columns"])), data.get("levels") or {})
