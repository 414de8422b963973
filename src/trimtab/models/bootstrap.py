"""Segments for a site that has no logs yet: fitted once on simulated readers.

`trimtab demo` starts with an empty data dir, so there is nothing to cluster. The first start
sends simulated readers of four latent kinds (:data:`trimtab.sim.simulator.READER_GROUPS`)
through the demo config's own features, fits the declared segmentation on their visits and
serves it, so a rule such as ``{segment: deep-readers}`` works from the first page. Later runs
find the version in the registry. A real site fits on its own logs instead
(`trimtab segments fit`).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from trimtab.models.registry import Registry, RegistryError, VersionInfo

log = logging.getLogger("trimtab.models")


def ensure_segments(
    config: Any, data_dir: str | Path, sessions: int = 3000, seed: int = 0
) -> VersionInfo | None:
    """Serve segments fitted on simulated readers unless the registry already has some.

    Returns the version fitted now, or None (already there, nothing declared, or the
    ``models`` extra is missing — then the site simply runs without segments).
    """
    if not config.segments:
        return None
    registry = Registry(Path(data_dir) / "models")
    try:
        if "segments" in registry.names():
            return None
    except RegistryError:
        return None
    try:
        import sklearn  # noqa: F401
    except ImportError:
        log.warning("segments not fitted: the models extra (scikit-learn) is not installed")
        return None
    from trimtab.bus.sqlite import SqliteEventLog
    from trimtab.models.segments import fit, register
    from trimtab.sim.simulator import READER_GROUPS, Simulator

    with tempfile.TemporaryDirectory() as tmp:
        sim = Simulator(seed=seed, n_users=1200, groups=READER_GROUPS)
        events = SqliteEventLog(Path(tmp) / "events.sqlite")
        for visit in sim.sessions(sessions):
            events.append_sync(visit)
        events.close_sync()
        result = fit(config, tmp)
    info, _ = register(result, config, registry.root, stage="live")
    info.note = f"fitted on {sessions:,} simulated visits (seed {seed}), not on real readers"
    return info
