"""The runnable examples in the statistics engine's docstrings stay true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import trimtab.experiments.stats as stats_pkg

MODULES = [stats_pkg.__name__] + [
    f"{stats_pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(stats_pkg.__path__)
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
