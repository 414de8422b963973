"""Config errors and validation at the edge, shared by every subsystem that owns a section.

msgspec roots the path of a bad field at ``$`` of the value it converted; :func:`reroot` moves
it under the place that value sits in the whole document (a batch element, a config section),
so every error names the exact path from the top.

>>> import msgspec
>>> class Slot(msgspec.Struct):
...     n: int
>>> try:
...     msgspec.convert({"n": "x"}, Slot)
... except msgspec.ValidationError as exc:
...     reroot(str(exc), "$.slots.hero")
('$.slots.hero.n', 'Expected `int`, got `str`')
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


class ConfigError(ValueError):
    """An invalid site config: ``file: path: problem``."""

    def __init__(self, file: str, path: str, problem: str) -> None:
        self.file, self.path, self.problem = file, path, problem
        super().__init__(f"{file}: {path}: {problem}")


def reroot(message: str, root: str) -> tuple[str, str]:
    """``(path, reason)`` of a msgspec validation message, its path moved under ``root``."""
    reason, sep, at = message.rpartition(" - at `")
    if not sep:
        return root, message
    return root + at.rstrip("`")[1:], reason


def convert(
    value: Any, kind: type[T], where: str, source: str, *, field_in_path: bool = False
) -> T:
    """``msgspec.convert`` whose error is a :class:`ConfigError` at the path under ``where``.

    With ``field_in_path`` an unknown field is named in the path (``….colour: unknown
    field``) rather than in the message.
    """
    try:
        return msgspec.convert(value, kind, strict=False)
    except msgspec.ValidationError as exc:
        path, reason = reroot(str(exc), where)
        if reason.startswith("Object contains unknown field"):
            if field_in_path:
                field = reason.rpartition(" ")[2].strip("`")
                path, reason = f"{path}.{field}", "unknown field"
            else:
                reason = reason.replace("Object contains unknown field", "unknown field")
        raise ConfigError(source, path, reason) from None
