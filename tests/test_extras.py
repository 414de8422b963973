"""Optional parts: the core works without them; using one without its extra names the extra.

Each case runs in a fresh interpreter where the extra's modules cannot be imported (a
``None`` in ``sys.modules`` makes ``import`` fail as for a module not installed).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

EXTRA_MODULES = ("redis", "nats", "duckdb", "matplotlib", "gymnasium")
BLOCK_ALL = f"import sys\nfor m in {EXTRA_MODULES!r}:\n    sys.modules[m] = None\n"


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_ALL + code], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("module", "extra"),
    [
        ("trimtab.store.redis", "scale"),
        ("trimtab.bus.redis", "scale"),
        ("trimtab.bus.nats", "scale"),
        ("trimtab.experiments.html", "reports"),
        ("trimtab.sim.plots", "reports"),
        ("trimtab.sim.env", "sim"),
    ],
)
def test_a_part_without_its_extra_names_the_extra(module: str, extra: str) -> None:
    code = (
        "from trimtab.extras import MissingExtra\n"
        f"try:\n    import {module}\nexcept MissingExtra as exc:\n    print(exc)\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert f"pip install 'trimtab[{extra}]'" in result.stdout


def test_reports_without_duckdb_name_the_extra() -> None:
    code = (
        "from trimtab.extras import MissingExtra\n"
        "from trimtab.experiments import metrics\n"  # importable: duckdb is needed only to run
        "try:\n    metrics.require('duckdb', 'reports', 'experiment reports')\n"
        "except MissingExtra as exc:\n    print(exc)\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "experiment reports need duckdb: pip install 'trimtab[reports]'"


def test_the_core_serves_decides_and_embeds_without_any_extra(tmp_path) -> None:
    code = (
        "import trimtab.cli, trimtab.collector, trimtab.runtime, trimtab.backends\n"
        "from trimtab import Runtime, load_config\n"
        "from trimtab.demo.server import DEMO_CONFIG\n"
        f"rt = Runtime(load_config(DEMO_CONFIG), {str(tmp_path)!r})\n"
        "print(len(rt.decide('u', 's')) > 0)\n"
        "rt.close()\n"
        "from trimtab.backends import open_state_store\n"
        "try:\n    open_state_store('redis://127.0.0.1:6379/0', '.')\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "True"
    assert "pip install 'trimtab[scale]'" in lines[1]


def test_the_command_line_starts_without_any_extra() -> None:
    result = _run(
        "import sys\nfrom trimtab.cli import main\nsys.argv = ['trimtab', '--help']\nmain()"
    )
    assert "report" in result.stdout and "serve" in result.stdout, result.stderr


def test_bench_core_without_the_dev_tools_runs_and_says_what_it_left_out() -> None:
    code = (
        "import sys\n"
        "sys.modules['growthbook'] = sys.modules['river'] = None\n"
        "from trimtab.cli import main\n"
        "sys.argv = ['trimtab', 'bench', 'core', '--quick']\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "feature updates" in result.stdout and "decide 3 slots" in result.stdout
    assert "GrowthBook comparison needs the GrowthBook SDK, a dev dependency" in result.stdout
    assert "River" not in result.stdout
