"""Serving needs numpy only: without scikit-learn, LightGBM and torch the engine still runs,
live models and segments included; training says what to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from test_models_live import config_file, register_models

BLOCK = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("sklearn", "lightgbm", "torch"):
                raise ImportError(f"{name} is not installed (blocked by the test)")
            return None

    sys.meta_path.insert(0, Block())
    """
)


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_engine_serves_models_and_segments_without_the_extra(tmp_path: Path):
    register_models(tmp_path / "data" / "models")
    config = config_file(tmp_path)
    done = run(
        f"""
        import time
        from trimtab.config import load_config
        from trimtab.runtime import Runtime
        from trimtab.collector import create_app
        from trimtab.events import Context, PageView, Scroll
        runtime = Runtime(load_config({str(config)!r}), {str(tmp_path / "data")!r})
        create_app(runtime)
        s = dict(user_id="u", session_id="s", page_category="news")
        t = time.time() * 1000
        runtime.ingest([Context(event_id="c", ts=t, device="mobile", **s),
                        Scroll(event_id="x", ts=t + 1, depth=0.9, velocity=4000.0, **s)])
        print({{d.slot: d.variant for d in runtime.decide("u", "s")}})
        runtime.close()
        for name in ("sklearn", "lightgbm", "torch"):
            assert name not in sys.modules, name
        """
    )
    assert done.returncode == 0, done.stderr
    assert "{'cta': 'offer', 'rail': 'short'}" in done.stdout


def test_training_without_the_extra_says_what_to_install(tmp_path: Path):
    args = ["trimtab", "train", str(config_file(tmp_path)), "p_subscribe", "--data-dir", "."]
    done = run(
        f"""
        from trimtab.cli import main
        sys.argv = {args!r}
        main()
        """
    )
    assert done.returncode == 2
    assert "training needs the models extra" in done.stderr and "trimtab[models]" in done.stderr
