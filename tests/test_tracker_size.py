"""Size budget of the browser tracker: at most 6 KB gzipped, measured as ``/t.js`` serves it
(minified at serve time by :mod:`trimtab.minify`; the source in ``tracker/`` stays readable)."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from starlette.testclient import TestClient

from trimtab.collector import create_app
from trimtab.config import load_config
from trimtab.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
TRACKER = ROOT / "tracker" / "trimtab.js"
DEMO = ROOT / "src" / "trimtab" / "demo" / "config.yaml"
BUDGET_BYTES = 6 * 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The script exactly as ``GET /t.js`` returns it (no gzip asked for)."""
    tmp = tmp_path_factory.mktemp("tracker")
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(yaml.safe_load(DEMO.read_text())))
    runtime = Runtime(load_config(path), tmp / "data")
    with TestClient(create_app(runtime)) as client:
        plain = client.get("/t.js", headers={"accept-encoding": "identity"})
        packed = client.get("/t.js", headers={"accept-encoding": "gzip"})
    runtime.close()
    assert plain.status_code == packed.status_code == 200
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.content == plain.content  # the client decoded the gzip: the same script
    return plain.content


def test_served_tracker_fits_the_gzip_budget(served: bytes) -> None:
    size = len(gzip.compress(served, compresslevel=9))
    source = TRACKER.read_bytes()
    print(
        f"/t.js: {len(served)} bytes, {size} bytes gzipped (budget {BUDGET_BYTES}); "
        f"source {len(source)} bytes, {len(gzip.compress(source, 9))} gzipped"
    )
    assert 0 < size <= BUDGET_BYTES
    assert len(served) < len(source)  # the minifier did its work


def test_served_tracker_parses(served: bytes, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (it is only used to syntax-check the served script)")
    script = tmp_path / "t.js"
    script.write_bytes(served)
    result = subprocess.run([node, "--check", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_tracker_has_no_dependencies_or_modules() -> None:
    """Plain script: no imports, no exports, one IIFE that exposes ``window.trimtab``."""
    source = TRACKER.read_text(encoding="utf-8")
    assert "import " not in source and "export " not in source and "require(" not in source
    assert "W.trimtab = api" in source
