"""Config as data: every version of the site config, who made it, when, and what changed.

Versions live in ``config.sqlite`` beside the other stores. A version holds the config as
written (the YAML or JSON document, not the expanded defaults), where it came from
(``file`` — the YAML file changed; ``api`` — an edit through the admin API or the console;
``rollback`` — an earlier version made current again), who and why, and its difference from
the version before as a list of JSON paths::

    [{"path": "$.slots.cta.rules[0].force", "op": "changed", "from": "a", "to": "b"}]

How the YAML file and the API coexist (docs/concepts.md, "Config as data"): the last change
wins, whichever side made it. An edit of the file is recorded as a ``file`` version and
served; an API edit is recorded and served, and survives restarts as long as the file is not
edited after it. Nothing writes the YAML file: ``GET /v1/admin/config?format=yaml`` gives the
current version to commit to git.

>>> store = ConfigStore(":memory:")
>>> first = store.record({"slots": {}}, who="file config.yaml", origin="file")
>>> second = store.record({"slots": {"cta": {"default": "a"}}}, who="ana", origin="api")
>>> (second.version, second.diff[0]["path"], second.diff[0]["op"])
(2, '$.slots.cta', 'added')
>>> store.record({"slots": {"cta": {"default": "a"}}}, who="bob", origin="api").version
2
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from trimtab.store.sqlite import connect_sqlite

Origin = Literal["file", "api", "rollback"]
_encode = msgspec.json.Encoder(order="sorted")
_plain = msgspec.json.Encoder()
_decode_data = msgspec.json.Decoder(dict[str, Any])
_decode_diff = msgspec.json.Decoder(list[dict[str, Any]])


class ConfigVersion(msgspec.Struct, kw_only=True):
    """One recorded version of the config."""

    version: int
    at: float  # unix seconds
    who: str
    origin: str
    note: str
    digest: str  # sha256 of the canonical JSON of ``data``
    data: dict[str, Any]
    diff: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        """Everything but the document itself (the history list)."""
        return {
            "version": self.version,
            "at": self.at,
            "who": self.who,
            "origin": self.origin,
            "note": self.note,
            "digest": self.digest,
            "changes": len(self.diff),
            "diff": self.diff,
        }


def canonical(data: Mapping[str, Any]) -> bytes:
    """The config document as JSON with sorted keys: equal documents, equal bytes."""
    return _encode.encode(data)


def digest(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(data)).hexdigest()


def diff(old: Any, new: Any, path: str = "$") -> list[dict[str, Any]]:
    """The changes from ``old`` to ``new`` as JSON paths (the paths validation errors use).

    >>> diff({"a": 1, "b": [1, 2]}, {"a": 2, "b": [1], "c": True})
    [{'path': '$.a', 'op': 'changed', 'from': 1, 'to': 2}, {'path': '$.b[1]', 'op': 'removed', 'from': 2}, {'path': '$.c', 'op': 'added', 'to': True}]
    """  # noqa: E501
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[dict[str, Any]] = []
        for key in old:
            where = f"{path}.{key}"
            if key not in new:
                out.append({"path": where, "op": "removed", "from": old[key]})
            else:
                out += diff(old[key], new[key], where)
        for key in new:
            if key not in old:
                out.append({"path": f"{path}.{key}", "op": "added", "to": new[key]})
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            where = f"{path}[{i}]"
            if i >= len(new):
                out.append({"path": where, "op": "removed", "from": old[i]})
            elif i >= len(old):
                out.append({"path": where, "op": "added", "to": new[i]})
            else:
                out += diff(old[i], new[i], where)
        return out
    if type(old) is not type(new) or old != new:
        return [{"path": path, "op": "changed", "from": old, "to": new}]
    return []


class ConfigStore:
    """The versions in one SQLite file (safe to share between the processes of one machine)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn = connect_sqlite(path, synchronous="FULL")
        self._lock = threading.Lock()
        self._conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS config_versions (
                version INTEGER PRIMARY KEY,
                at REAL NOT NULL,
                who TEXT NOT NULL,
                origin TEXT NOT NULL,
                note TEXT NOT NULL,
                digest TEXT NOT NULL,
                data BLOB NOT NULL,
                diff BLOB NOT NULL
            );
            """
        )

    def record(
        self, data: Mapping[str, Any], who: str, origin: Origin, note: str = ""
    ) -> ConfigVersion:
        """Store ``data`` as the new current version; the current one when it is the same.

        The check and the write are one transaction, so two processes recording the same
        file change make one version.
        """
        sha = digest(data)
        blob = _plain.encode(data)  # as written (key order kept); the digest is of sorted keys
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    "SELECT * FROM config_versions ORDER BY version DESC LIMIT 1"
                ).fetchone()
                latest = _version(row) if row else None
                if latest is not None and latest.digest == sha:
                    self._conn.execute("COMMIT")
                    return latest
                changes = diff(latest.data if latest else {}, dict(data))
                number = (latest.version if latest else 0) + 1
                at = time.time()
                self._conn.execute(
                    "INSERT INTO config_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        number,
                        at,
                        who[:200],
                        origin,
                        note[:2000],
                        sha,
                        blob,
                        _encode.encode(changes),
                    ),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return ConfigVersion(
            version=number,
            at=at,
            who=who[:200],
            origin=origin,
            note=note[:2000],
            digest=sha,
            data=_decode_data.decode(blob),
            diff=changes,
        )

    def latest(self) -> ConfigVersion | None:
        return self._one("SELECT * FROM config_versions ORDER BY version DESC LIMIT 1", ())

    def latest_number(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT max(version) FROM config_versions").fetchone()
        return int(row[0] or 0)

    def get(self, version: int) -> ConfigVersion | None:
        if not 0 <= version < 2**63:  # beyond SQLite's integers: no such version (not a 500)
            return None
        return self._one("SELECT * FROM config_versions WHERE version = ?", (version,))

    def last_of(self, origin: Origin) -> ConfigVersion | None:
        return self._one(
            "SELECT * FROM config_versions WHERE origin = ? ORDER BY version DESC LIMIT 1",
            (origin,),
        )

    def history(self, limit: int = 50) -> list[ConfigVersion]:
        """The newest versions first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM config_versions ORDER BY version DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_version(row) for row in rows]

    def _one(self, sql: str, args: tuple[Any, ...]) -> ConfigVersion | None:
        with self._lock:
            row = self._conn.execute(sql, args).fetchone()
        return _version(row) if row else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _version(row: Iterable[Any]) -> ConfigVersion:
    version, at, who, origin, note, sha, data, changes = row
    return ConfigVersion(
        version=int(version),
        at=float(at),
        who=who,
        origin=origin,
        note=note,
        digest=sha,
        data=_decode_data.decode(data),
        diff=_decode_diff.decode(changes),
    )


__all__ = ["ConfigStore", "ConfigVersion", "canonical", "diff", "digest"]
