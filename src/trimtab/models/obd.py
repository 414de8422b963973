"""The Open Bandit Dataset as trimtab logs: data nobody here made, through the real pipeline.

Each OBD row (ZOZOTOWN: a user's hashed features, an item shown at a position by the logging
policy with a known propensity, and whether it was clicked) becomes what trimtab would have
logged: a **decision** of the campaign's slot (``all``, ``men`` or ``women``; the variant is
the item, the attributes are the user features and the position, with the exact propensity),
an **exposure** of that decision, and a **click** a millisecond later when there was one. Items
are the slots' variants, with their item features as payload.

:func:`write_logs` writes ``events.sqlite``, ``decisions.sqlite`` and a site config whose
``click`` model (``at: exposure`` of every slot) predicts the click from user, position and
item features. Then the ordinary commands apply::

    trimtab train DIR/obd.yaml click --data-dir DIR --algorithm all
    trimtab ope DIR/obd.yaml --slot all --data-dir DIR --reward-model click

The rows are in their own ids (one user per impression): OBD has no user ids.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from trimtab.bus.sqlite import SqliteEventLog
from trimtab.decide import Decision
from trimtab.decisionlog import SqliteDecisionLog
from trimtab.events import AnyEvent, Click, Exposure

BEHAVIORS = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
USER_FEATURES = ("user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3")
CLICK_MODEL: dict[str, Any] = {
    "description": "clicks the item shown (OBD): user features, position and the item's features",
    "at": "exposure",
    "slot": "*",
    "target": {"event": "click:*", "within": 60},
    "features": [
        *(f"{f}=*" for f in USER_FEATURES),
        "position=*",
        "slot=*",
        "variant=*",
        "item.item_feature_0",
        "item.item_feature_1=*",
        "item.item_feature_2=*",
        "item.item_feature_3=*",
        "affinity.$variant",
    ],
    "algorithm": "lightgbm",
    "holdout": 0.3,
    # Fixed before looking at any result: clicks are rare (~0.5 %), so small trees, slow
    # learning and many rows per leaf.
    "params": {
        "lightgbm": {
            "n_estimators": 300,
            "learning_rate": 0.03,
            "num_leaves": 15,
            "min_child_samples": 100,
            "reg_lambda": 5.0,
        },
        "mlp": {"hidden": [32, 16], "epochs": 30, "weight_decay": 1e-3},
    },
}


def _rows(path: Path) -> Iterator[dict[str, str]]:
    plain = path.with_suffix("")
    if plain.exists():
        with open(plain, newline="") as fh:
            yield from csv.DictReader(fh)
        return
    with gzip.open(path, "rt", newline="") as fh:
        yield from csv.DictReader(fh)


def _items(folder: Path) -> dict[int, dict[str, Any]]:
    with open(folder / "item_context.csv", newline="") as fh:
        return {
            int(r["item_id"]): {
                "item_feature_0": float(r["item_feature_0"]),
                "item_feature_1": r["item_feature_1"],
                "item_feature_2": r["item_feature_2"],
                "item_feature_3": r["item_feature_3"],
            }
            for r in csv.DictReader(fh)
        }


def write_logs(
    obd_root: str | Path,
    out_dir: str | Path,
    behaviors: Sequence[str] = BEHAVIORS,
    campaigns: Sequence[str] = CAMPAIGNS,
) -> Path:
    """Write the trimtab logs and site config for the OBD files; returns the config path."""
    root, out = Path(obd_root), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    events = SqliteEventLog(out / "events.sqlite")
    decisions = SqliteDecisionLog(out / "decisions.sqlite")
    slots: dict[str, Any] = {}
    try:
        for campaign in campaigns:
            items = _items(root / behaviors[0] / campaign)
            variants = {f"{campaign}-{i}": features for i, features in sorted(items.items())}
            slots[campaign] = {
                "description": f"OBD campaign '{campaign}': {len(items)} items",
                "default": next(iter(variants)),
                "variants": variants,
            }
            for behavior in behaviors:
                source = root / behavior / campaign / f"{campaign}.csv.gz"
                batch: list[AnyEvent] = []
                for i, row in enumerate(_rows(source)):
                    batch.extend(_row_events(behavior, campaign, i, row, decisions))
                    if len(batch) >= 5000:
                        events.append_sync(batch)
                        batch = []
                events.append_sync(batch)
                decisions.flush_sync()
    finally:
        events.close_sync()
        decisions.close_sync()
    config = {
        "site": {"id": "obd", "name": "Open Bandit Dataset (ZOZOTOWN sample)"},
        "storage": {"data_dir": str(out)},
        "slots": slots,
        "models": {"click": CLICK_MODEL},
    }
    path = out / "obd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _row_events(
    behavior: str, campaign: str, i: int, row: dict[str, str], log: SqliteDecisionLog
) -> list[AnyEvent]:
    ts = datetime.fromisoformat(row["timestamp"]).timestamp() * 1000.0
    key = f"{behavior}-{campaign}-{i}"
    variant = f"{campaign}-{int(row['item_id'])}"
    attrs: dict[str, Any] = {f: row[f] for f in USER_FEATURES}
    # the user's affinity to each item (OBD's user-item features), kept where it is not 0
    attrs["affinity"] = {
        f"{campaign}-{name.rsplit('_', 1)[1]}": float(value)
        for name, value in row.items()
        if name.startswith("user-item_affinity_") and value not in ("0.0", "0")
    }
    attrs.update(
        {
            "id": key,
            "session_id": key,
            "position": int(row["position"]),
            "campaign": campaign,
            "behavior": behavior,
        }
    )
    decision = Decision(
        slot=campaign,
        variant=variant,
        source="policy",
        rule_id=behavior,
        propensity=float(row["propensity_score"]),
        reason=f"OBD {behavior} logging policy",
        decision_id=key,
    )
    log.record([decision], attrs)
    out: list[AnyEvent] = [
        Exposure(
            event_id=f"x-{key}",
            user_id=key,
            session_id=key,
            ts=ts,
            received=ts,
            slot=campaign,
            variant=variant,
            decision_id=key,
        )
    ]
    if row["click"] == "1":
        out.append(
            Click(
                event_id=f"c-{key}",
                ts=ts + 1.0,
                received=ts + 1.0,
                user_id=key,
                session_id=key,
                element=variant,
                element_kind="item",
                slot=campaign,
            )
        )
    return out
