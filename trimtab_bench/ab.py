"""A/B of the feature-update rate between this tree and another git revision, in one run.

``trimtab bench core --against main`` exports ``src/`` of the other revision (``git archive``)
to a temporary directory and times each side's own :class:`~trimtab.features.FeatureProcessor`
on each side's own benchmark declarations and event stream (``trimtab_bench.core``), in
alternating subprocesses on the same machine, so drift in machine load hits both sides alike;
rates are per second of the process's CPU time, which other load on a shared machine disturbs
far less than wall time. The ratio of the medians is what "no more than 10 % slower than
before" is judged on.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

_SNIPPET = """
import json, sys, time
try:
    from trimtab_bench.core import BENCH_FEATURES, synthetic_events
except ImportError:  # a revision from before the benchmarks left the package
    from trimtab.bench.core import BENCH_FEATURES, synthetic_events
from trimtab.config import parse_config
from trimtab.features import FeatureProcessor
n, runs = int(sys.argv[1]), int(sys.argv[2])
slots = {"s": {"default": "a", "variants": {"a": {}}}}
config = parse_config({"features": BENCH_FEATURES, "slots": slots}, "<ab>")
stream = synthetic_events(n, users=2000)
rates = []
for _ in range(runs):
    processor = FeatureProcessor(config.feature_specs())
    started = time.process_time()
    processor.apply(stream)
    rates.append(len(stream) / (time.process_time() - started))
print(json.dumps(rates))
"""


@dataclass(frozen=True)
class ABResult:
    ref: str
    before: list[float]  # events/s of the other revision, every run
    after: list[float]  # events/s of this tree, every run

    @property
    def ratio(self) -> float:
        """This tree's median rate over the other revision's (below 1: slower)."""
        return statistics.median(self.after) / statistics.median(self.before)


def export_src(ref: str, into: Path, repo: Path) -> Path:
    """``src/`` (and ``trimtab_bench/``, where the revision has it) of ``ref`` extracted under
    ``into``, which is returned; raises when git cannot resolve the revision."""
    for paths in (["src", "trimtab_bench"], ["src"]):
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", ref, *paths],
            capture_output=True,
        )
        if archive.returncode == 0:
            break
    archive.check_returncode()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def _rates(tree: Path, events: int, runs: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{tree}"}
    out = subprocess.run(
        [sys.executable, "-c", _SNIPPET, str(events), str(runs)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def run(ref: str, events: int = 200_000, rounds: int = 4, runs: int = 3) -> ABResult:
    """Alternate ``rounds`` times: the other revision, then this tree (``runs`` each)."""
    here = Path(__file__).resolve().parents[1]  # this checkout (src/ and trimtab_bench/)
    repo = here
    before: list[float] = []
    after: list[float] = []
    with tempfile.TemporaryDirectory(prefix="trimtab-ab-") as tmp:
        other = export_src(ref, Path(tmp), repo)
        for _ in range(rounds):
            before += _rates(other, events, runs)
            after += _rates(here, events, runs)
    return ABResult(ref=ref, before=sorted(before), after=sorted(after))
