"""Size budget of the browser tracker: at most 6 KB gzipped, as served (no minification step)."""

from __future__ import annotations

import gzip
from pathlib import Path

TRACKER = Path(__file__).resolve().parents[1] / "tracker" / "trimtab.js"
BUDGET_BYTES = 6 * 1024


def test_tracker_fits_the_gzip_budget() -> None:
    source = TRACKER.read_bytes()
    size = len(gzip.compress(source, compresslevel=9))
    print(f"tracker/trimtab.js: {len(source)} bytes, {size} bytes gzipped (budget {BUDGET_BYTES})")
    assert 0 < size <= BUDGET_BYTES


def test_tracker_has_no_dependencies_or_modules() -> None:
    """Plain script: no imports, no exports, one IIFE that exposes ``window.trimtab``."""
    source = TRACKER.read_text(encoding="utf-8")
    assert "import " not in source and "export " not in source and "require(" not in source
    assert "W.trimtab = api" in source
