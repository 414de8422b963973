"""`from trimtab import …` gives the embeddable parts; importing trimtab alone stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import trimtab


@pytest.mark.parametrize("name", trimtab.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(trimtab, name) is not None
    assert name in dir(trimtab)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = trimtab.Nope  # type: ignore[attr-defined]  # the point: it does not exist


def test_the_public_names_are_the_defining_modules_objects() -> None:
    from trimtab.config import load_config
    from trimtab.decide import Engine
    from trimtab.features import FeatureProcessor
    from trimtab.runtime import Runtime

    assert trimtab.Engine is Engine and trimtab.load_config is load_config
    assert trimtab.FeatureProcessor is FeatureProcessor and trimtab.Runtime is Runtime


def test_import_trimtab_loads_nothing_heavy() -> None:
    code = "import sys, trimtab; print(sorted({'numpy', 'trimtab.runtime'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_all_lists_exactly_the_lazy_exports() -> None:
    assert set(trimtab.__all__) == {"__version__", *trimtab._EXPORTS}
