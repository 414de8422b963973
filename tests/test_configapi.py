"""Config as data: the admin API reads, validates, updates, rolls back and dry-runs the config;
every change is a version with who, when and the diff, in config.sqlite beside the stores."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import yaml
from starlette.testclient import TestClient

from trimtab.collector import create_app
from trimtab.config import load_config
from trimtab.configapi import ConfigVersions
from trimtab.configstore import ConfigStore, diff
from trimtab.runtime import Runtime

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"
ADMIN = {"Authorization": "Bearer sk_test"}


def site_file(tmp_path: Path) -> tuple[Path, dict]:
    data = yaml.safe_load(DEMO.read_text())
    data["site"]["secret_key"] = "sk_test"
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, data


def serve(path: Path, data_dir: Path) -> tuple[TestClient, Runtime]:
    runtime = Runtime(load_config(path), data_dir)
    return TestClient(create_app(runtime, flush_interval_s=0.05)), runtime


def deep_reader(user: str) -> list:
    """A reader who scrolled an article to the end: the demo's deep-reader rule applies."""
    from trimtab.events import decode_batch

    now = time.time() * 1000
    base = {"user_id": user, "session_id": "s"}
    batch = [
        {**base, "kind": "page_view", "event_id": f"p{user}", "ts": now, "page": "/article/a",
         "page_category": "science"},
        {**base, "kind": "scroll", "event_id": f"s{user}", "ts": now + 9000, "depth": 0.9},
    ]  # fmt: skip
    import json

    return decode_batch(json.dumps(batch).encode()).events


def test_read_update_history_and_rollback(tmp_path):
    path, data = site_file(tmp_path)
    client, runtime = serve(path, tmp_path / "data")
    with client:
        first = client.get("/v1/admin/config", headers=ADMIN).json()
        assert first["version"] == 1 and first["config"] == data
        assert first["who"] == f"file {path}"

        changed = copy.deepcopy(data)
        changed["slots"]["cta"]["default"] = "subscribe_offer"
        put = client.put(
            "/v1/admin/config",
            json={"config": changed, "who": "ana", "note": "try the offer", "base_version": 1},
            headers=ADMIN,
        )
        assert put.status_code == 200, put.text
        v2 = put.json()
        assert v2["version"] == 2 and v2["who"] == "ana" and v2["origin"] == "api"
        assert v2["diff"] == [
            {
                "path": "$.slots.cta.default",
                "op": "changed",
                "from": "newsletter",
                "to": "subscribe_offer",
            }
        ]
        # served at once: a reader with no rule matching gets the new default
        assert runtime.engine.decide("u1", "s", ["cta"])[0].variant == "subscribe_offer"

        stale = client.put(
            "/v1/admin/config", json={"config": data, "base_version": 1}, headers=ADMIN
        )
        assert stale.status_code == 409 and stale.json()["version"] == 2

        back = client.post(
            "/v1/admin/config/rollback", json={"version": 1, "who": "bob"}, headers=ADMIN
        )
        assert back.status_code == 200, back.text
        assert back.json()["version"] == 3 and back.json()["origin"] == "rollback"
        assert back.json()["note"] == "rollback to version 1"
        assert runtime.engine.decide("u1", "s", ["cta"])[0].variant == "newsletter"

        history = client.get("/v1/admin/config/versions", headers=ADMIN).json()
        assert history["current"] == 3
        assert [(v["version"], v["who"]) for v in history["versions"]] == [
            (3, "bob"),
            (2, "ana"),
            (1, f"file {path}"),
        ]
        assert client.get("/v1/admin/config/versions/3", headers=ADMIN).json()["config"] == data
        assert client.get("/v1/admin/config/versions/9", headers=ADMIN).status_code == 404
        missing = client.post("/v1/admin/config/rollback", json={"version": 9}, headers=ADMIN)
        assert missing.status_code == 404 and "no config version 9" in missing.json()["error"]
        as_yaml = client.get("/v1/admin/config?format=yaml", headers=ADMIN)
        assert yaml.safe_load(as_yaml.text) == data
    runtime.close()


def test_validation_names_the_json_path_and_changes_nothing(tmp_path):
    path, data = site_file(tmp_path)
    client, runtime = serve(path, tmp_path / "data")
    bad = copy.deepcopy(data)
    bad["slots"]["cta"]["rules"][0]["force"] = "no_such_variant"
    with client:
        checked = client.post("/v1/admin/config/validate", json={"config": bad}, headers=ADMIN)
        assert checked.status_code == 422
        [error] = checked.json()["errors"]
        assert error["path"] == "$.slots.cta.rules[0].force"
        assert "no_such_variant" in error["problem"]
        good = client.post("/v1/admin/config/validate", json={"config": data}, headers=ADMIN)
        assert good.json() == {"valid": True}
        refused = client.put("/v1/admin/config", json={"config": bad}, headers=ADMIN)
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["path"] == "$.slots.cta.rules[0].force"
        assert client.get("/v1/admin/config", headers=ADMIN).json()["version"] == 1
        garbled = client.put("/v1/admin/config", content=b'{"config": 3}', headers=ADMIN)
        assert garbled.status_code == 400 and "$.config" in garbled.json()["error"]
    runtime.close()


def test_admin_key_is_required(tmp_path):
    path, data = site_file(tmp_path)
    client, runtime = serve(path, tmp_path / "data")
    with client:
        assert client.get("/v1/admin/config").status_code == 401
        wrong = {"Authorization": "Bearer sk_wrong"}
        assert (
            client.put("/v1/admin/config", json={"config": data}, headers=wrong).status_code == 401
        )
        assert client.post("/v1/admin/config/rollback", json={"version": 1}).status_code == 401
    runtime.close()


def test_api_edit_survives_a_restart_until_the_file_changes(tmp_path):
    path, data = site_file(tmp_path)
    client, runtime = serve(path, tmp_path / "data")
    changed = copy.deepcopy(data)
    changed["slots"]["cta"]["default"] = "subscribe_offer"
    with client:
        assert client.put("/v1/admin/config", json={"config": changed}, headers=ADMIN).is_success
    runtime.close()

    client, runtime = serve(path, tmp_path / "data")  # the file did not change: v2 stays
    with client:
        assert client.get("/v1/admin/config", headers=ADMIN).json()["version"] == 2
        assert runtime.config.slots["cta"].default == "subscribe_offer"
    runtime.close()

    edited = copy.deepcopy(data)
    edited["slots"]["cta"]["default"] = "readers_like_you"
    path.write_text(yaml.safe_dump(edited, sort_keys=False))
    client, runtime = serve(path, tmp_path / "data")  # the file changed since: it wins
    with client:
        now = client.get("/v1/admin/config", headers=ADMIN).json()
        assert now["version"] == 3 and now["who"] == f"file {path}"
        assert runtime.config.slots["cta"].default == "readers_like_you"
    runtime.close()


def test_a_file_reload_while_serving_is_recorded_and_other_processes_follow(tmp_path):
    path, data = site_file(tmp_path)
    one = Runtime(load_config(path), tmp_path / "one")
    other = Runtime(load_config(path), tmp_path / "other")
    store = tmp_path / "shared-config.sqlite"
    first, second = ConfigVersions(one, store), ConfigVersions(other, store)
    try:
        edited = copy.deepcopy(data)
        edited["slots"]["hero"]["default"] = next(
            v for v in data["slots"]["hero"]["variants"] if v != data["slots"]["hero"]["default"]
        )
        path.write_text(yaml.safe_dump(edited, sort_keys=False))
        one.reload()  # what the file watcher does
        first.sync()
        latest = first.store.latest()
        assert latest is not None and latest.version == 2 and latest.origin == "file"
        assert latest.diff[0]["path"] == "$.slots.hero.default"

        api = copy.deepcopy(edited)
        api["site"]["holdout"] = 0.1
        first.update(api, who="ana")
        second.sync()  # the other process serves the version the first recorded
        assert other.config.site.holdout == 0.1
        assert second.serving is not None and second.serving.version == 3
    finally:
        first.close()
        second.close()
        one.close()
        other.close()


def test_dry_run_counts_the_logged_decisions_that_would_change(tmp_path):
    path, data = site_file(tmp_path)
    client, runtime = serve(path, tmp_path / "data")
    with client:
        for n in range(6):
            user = f"r{n}"
            if n < 4:  # four deep readers: the deep-reader rule decides their cta
                runtime.ingest(deep_reader(user))
            runtime.engine.decide(user, "s", ["cta", "hero"])
        same = client.post(
            "/v1/admin/config/dry-run", json={"config": data, "last": 100}, headers=ADMIN
        ).json()
        assert same["checked"] == 12 and same["changed"] == 0

        candidate = copy.deepcopy(data)
        candidate["slots"]["cta"]["rules"][0]["force"] = "readers_like_you"
        moved = client.post(
            "/v1/admin/config/dry-run", json={"config": candidate, "last": 100}, headers=ADMIN
        ).json()
        assert moved["changed"] == 4
        assert moved["by_slot"]["cta"] == {"checked": 6, "changed": 4}
        assert moved["by_slot"]["hero"] == {"checked": 6, "changed": 0}
        example = moved["examples"][0]
        assert example["was"]["variant"] == "subscribe_offer"
        assert example["would_be"]["variant"] == "readers_like_you"
        assert runtime.config.slots["cta"].rules[0].force == "subscribe_offer"  # unchanged
        last_two = client.post(
            "/v1/admin/config/dry-run", json={"config": candidate, "last": 2}, headers=ADMIN
        ).json()
        assert last_two["checked"] == 2
        bad = client.post(
            "/v1/admin/config/dry-run", json={"config": candidate, "last": 0}, headers=ADMIN
        )
        assert bad.status_code == 400 and "last" in bad.json()["error"]
    runtime.close()


def test_versions_are_durable_and_identical_documents_make_no_new_version(tmp_path):
    store = ConfigStore(tmp_path / "c.sqlite")
    a = store.record({"x": 1}, "file f", "file")
    assert store.record({"x": 1}, "someone", "api").version == a.version
    b = store.record({"x": 2, "y": [1]}, "ana", "api", "why")
    store.close()
    again = ConfigStore(tmp_path / "c.sqlite")
    got = again.get(b.version)
    assert got is not None and got.data == {"x": 2, "y": [1]} and got.note == "why"
    assert got.diff == diff({"x": 1}, {"x": 2, "y": [1]})
    assert [v.version for v in again.history()] == [2, 1]
    again.close()
