"""Version strings made comparable as plain strings, for ``$veq``/``$vgt``/... conditions.

A version such as ``v1.2.3-rc.1+build7`` loses its ``v`` prefix and build metadata, splits on
``.`` and ``-``, and each numeric part is left-padded with spaces, so ordinary string order
matches SemVer order (``" 9" < "10"``). A release without a pre-release tag gets a ``~`` part,
the highest printable ASCII character, so ``1.0.0`` sorts after ``1.0.0-beta``.

>>> padded_version("1.2.3") > padded_version("1.2.3-rc.1") > padded_version("1.2.3-beta.11")
True
>>> padded_version("v10.0.0+build") == padded_version("10.0.0")
True
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from trimtab.targeting.jsvalues import is_number, js_number_to_string

__all__ = ["padded_version"]

_PREFIX_AND_BUILD = re.compile(r"^v|\+.*$", re.DOTALL)
_SEPARATORS = re.compile(r"[-.]")


def padded_version(version: Any) -> str:
    """The comparable form of a version; numbers are formatted as JS would, anything else
    that is not a non-empty string counts as ``"0"``."""
    if is_number(version):
        version = js_number_to_string(version)
    if not version or not isinstance(version, str):
        version = "0"
    return _padded(version)


@lru_cache(maxsize=4096)
def _padded(version: str) -> str:
    parts = _SEPARATORS.split(_PREFIX_AND_BUILD.sub("", version))
    if len(parts) == 3:
        parts.append("~")
    return "-".join(p.rjust(5) if p.isascii() and p.isdigit() else p for p in parts)
