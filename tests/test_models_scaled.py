"""Training rows from a scaled deployment: the bus log exported to SQLite gives the same rows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trimtab.backends import open_event_bus
from trimtab.bus.sqlite import SqliteEventLog
from trimtab.cli import app
from trimtab.config import parse_config
from trimtab.models import dataset
from trimtab.models.spec import TargetDecl
from trimtab.sim.simulator import Simulator

pytestmark = [pytest.mark.redis, pytest.mark.nats]
CONFIG = parse_config(
    {
        "features": {
            "depth": {"kind": "scroll_depth_max", "scope": "page"},
            "visit_depth": {"kind": "scroll_depth_max", "scope": "session"},
            "attention": {"kind": "interest", "scope": "user"},
        },
        "slots": {"rail": {"default": "a", "variants": {"a": {}}}},
    }
)


@pytest.mark.parametrize("bus", ["redis", "nats"])
def test_exported_bus_log_gives_the_same_training_rows(
    tmp_path: Path, bus, namespace, redis_url, nats_url
):
    from support import drop_namespace

    url = (
        f"{redis_url}?prefix={namespace}"
        if bus == "redis"
        else f"{nats_url}?stream={namespace.upper()}&prefix={namespace}"
    )
    events = [e for visit in Simulator(seed=3, n_users=40).sessions(120) for e in visit]

    async def publish() -> None:
        log = open_event_bus(url, tmp_path)
        for lo in range(0, len(events), 500):
            await log.publish(events[lo : lo + 500])
        await log.close()

    embedded = tmp_path / "embedded"
    embedded.mkdir()
    local = SqliteEventLog(embedded / "events.sqlite")
    local.append_sync(events)
    local.close_sync()
    try:
        asyncio.run(publish())
        exported = tmp_path / "exported"
        done = CliRunner().invoke(app, ["export", "--bus", url, "--data-dir", str(exported)])
        assert done.exit_code == 0, done.output
    finally:
        drop_namespace(url, namespace, tmp_path)
    target = TargetDecl(event="click:*", within="session")
    rows = {}
    for name, folder in (("embedded", embedded), ("exported", exported)):
        data = dataset.build(folder, CONFIG, at="page_view", target=target, after_s=2.0)
        rows[name] = [(r.user_id, r.session_id, r.ts, r.attrs, r.label) for r in data.rows]
    assert len(rows["embedded"]) > 100
    assert rows["exported"] == rows["embedded"]
