"""The wheel carries everything the server needs: built, installed into a fresh venv, served.

A source checkout finds the tracker in ``tracker/``; an installed wheel must find it inside the
package (``trimtab/static/trimtab.js``), along with the demo site and ``py.typed``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SERVE_TRACKER = """
import sys, pathlib
import trimtab
from starlette.testclient import TestClient
from trimtab.collector import create_app
from trimtab.config import load_config
from trimtab.runtime import Runtime

here = pathlib.Path(trimtab.__file__).resolve()
assert here.is_relative_to(pathlib.Path(sys.argv[1]).resolve()), here
config = load_config(here.parent / "demo" / "config.yaml")
with TestClient(create_app(Runtime(config, sys.argv[2]))) as client:
    response = client.get("/t.js")
    assert response.status_code == 200, response.status_code
    sys.stdout.write(response.text)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a clean copy: setuptools builds in the source tree, and a build/ folder left
    # there by an earlier build (of other code) would leak stale files into this wheel.
    source = tmp_path_factory.mktemp("source") / "trimtab"
    junk = shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "var", "*.egg-info", "node_modules", "__pycache__",
        ".pytest_cache", ".ruff_cache", ".mypy_cache", "artifacts",
    )  # fmt: skip
    shutil.copytree(ROOT, source, symlinks=True, ignore=junk)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
         "-w", str(out), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    (built,) = out.glob("trimtab-*.whl")
    return built


def test_wheel_contains_tracker_demo_and_type_marker(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "trimtab/static/trimtab.js" in names
    assert "trimtab/py.typed" in names
    assert "trimtab/demo/config.yaml" in names
    assert "trimtab/demo/site/templates/article.html" in names
    packed = zipfile.ZipFile(wheel).read("trimtab/static/trimtab.js")
    assert packed == (ROOT / "tracker" / "trimtab.js").read_bytes()
    # the benchmarks stay in the checkout: nothing of them is installed
    assert not [n for n in names if "bench" in n.split("/")[0] or "/bench/" in n]


def test_installed_wheel_serves_the_tracker(wheel: Path, tmp_path: Path) -> None:
    """A fresh venv holding only the wheel (dependencies reached through a .pth file)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
         str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    # Third-party dependencies come from the test venv, after the fresh venv's own packages,
    # so `import trimtab` finds the installed wheel, never the editable checkout.
    deps = sysconfig.get_paths()["purelib"]
    (site / "zz_test_deps.pth").write_text(deps + "\n")
    done = subprocess.run(
        [str(python), "-c", SERVE_TRACKER, str(site), str(tmp_path / "data")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    # the tracker as the checkout serves it (minified when served)
    from trimtab.minify import minify_js

    assert done.stdout == minify_js((ROOT / "tracker" / "trimtab.js").read_text())
    # the installed package has no benchmarks: `trimtab bench` says where they run
    code = (
        "from trimtab.extras import BenchmarksMissing, bench_module\n"
        "try:\n    bench_module('core')\nexcept BenchmarksMissing as exc:\n    print(exc)\n"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert "source checkout" in done.stdout, done.stderr[-2000:]
