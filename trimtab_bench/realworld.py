"""A real-world-shaped GrowthBook payload for `trimtab bench core --payload realworld`.

Generated (seeded, so every run and machine gets the same payload) to look like a product's
flag set rather than a micro-benchmark: 60 features of mixed value types (booleans, strings,
numbers, JSON objects); kill switches and gates that other features depend on (prerequisites,
gates included); experiments sharing namespaces and hash filters; saved groups of user ids and
countries; rollouts by bucket range on two hash attributes; version and regex targeting.
"""

from __future__ import annotations

import random
from typing import Any

COUNTRIES = ["US", "DE", "FR", "GB", "BR", "IN", "JP", "ES", "IT", "CA", "MX", "NL"]
EU = ["DE", "FR", "ES", "IT", "NL"]
PLANS = ["free", "starter", "pro", "enterprise"]
BROWSERS = ["chrome", "firefox", "safari", "edge"]
N_FEATURES = 60


def realworld_payload(seed: int = 7) -> dict[str, Any]:
    """The payload: ``{"features": …, "savedGroups": …}`` as GrowthBook's API serves it."""
    rnd = random.Random(seed)
    groups: dict[str, list[Any]] = {
        "beta-testers": sorted({f"user-{rnd.randrange(5000)}" for _ in range(300)}),
        "internal": [f"user-{i}" for i in range(0, 5000, 97)],
        "eu": list(EU),
        "big-accounts": sorted({f"co-{rnd.randrange(400)}" for _ in range(40)}),
    }
    features: dict[str, Any] = {}
    # 8 kill switches and gates: booleans, rolled out by range or switched on by targeting
    for i in range(8):
        rules: list[dict[str, Any]] = [
            {"id": f"ks{i}-internal", "condition": {"id": {"$inGroup": "internal"}}, "force": True},
            {
                "id": f"ks{i}-rollout",
                "force": True,
                "range": [0.0, round(rnd.uniform(0.3, 0.9), 2)],
                "hashAttribute": "id" if i % 2 else "company",
                "hashVersion": 2,
                "seed": f"ks-{i}",
            },
        ]
        if i % 3 == 0:
            rules.insert(0, {"condition": {"country": {"$inGroup": "eu"}}, "force": i % 2 == 0})
        features[f"switch-{i}"] = {"defaultValue": False, "rules": rules}
    # 14 experiments in two namespaces and behind hash filters, some on prerequisites
    for i in range(14):
        namespace = ["checkout" if i % 2 else "onboarding", (i // 2) * 0.14, (i // 2) * 0.14 + 0.14]
        variations: list[Any] = ["control", "treatment"] if i % 3 else ["control", "red", "green"]
        rule: dict[str, Any] = {
            "id": f"exp{i}",
            "key": f"exp-{i}",
            "variations": variations,
            "weights": [1 / len(variations)] * len(variations),
            "coverage": round(rnd.uniform(0.5, 1.0), 2),
            "hashAttribute": "id",
            "hashVersion": 2,
            "seed": f"exp-{i}",
            "meta": [{"key": str(v)} for v in variations],
            "phase": "1",
        }
        if i % 4 == 0:
            rule["filters"] = [
                {"attribute": "id", "seed": "layer-1", "hashVersion": 2, "ranges": [[0, 0.6]]}
            ]
        else:
            rule["namespace"] = namespace
        if i % 3 == 1:
            rule["condition"] = {
                "plan": {"$in": ["pro", "enterprise"]},
                "appVersion": {"$vgte": "2.1.0"},
            }
        exp_rules: list[dict[str, Any]] = [rule]
        if i % 5 == 2:
            exp_rules.insert(
                0,
                {
                    "parentConditions": [
                        {"id": f"switch-{i % 8}", "condition": {"value": True}, "gate": True}
                    ]
                },
            )
        features[f"experiment-{i}"] = {"defaultValue": "control", "rules": exp_rules}
    # the rest: configuration values with targeting, prerequisites and rollouts
    for i in range(N_FEATURES - len(features)):
        kind = i % 4
        default: Any = [False, "classic", 10, {"layout": "grid", "columns": 3}][kind]
        other: Any = [True, "modern", 25, {"layout": "list", "columns": 1}][kind]
        third: Any = [True, "compact", 50, {"layout": "cards", "columns": 2}][kind]
        rules = [
            {"condition": {"id": {"$inGroup": "beta-testers"}}, "force": other},
            {
                "condition": {
                    "$or": [
                        {"company": {"$inGroup": "big-accounts"}},
                        {"plan": "enterprise", "seats": {"$gte": 50}},
                    ]
                },
                "force": third,
            },
            {
                "parentConditions": [
                    {"id": f"switch-{i % 8}", "condition": {"value": True}},
                    *(
                        [{"id": f"experiment-{i % 14}", "condition": {"value": {"$ne": "control"}}}]
                        if i % 3 == 0
                        else []
                    ),
                ],
                "condition": {"browser": {"$in": BROWSERS[: 1 + i % 4]}, "mobile": i % 2 == 0},
                "force": other,
            },
            {
                "condition": {"country": {"$in": rnd.sample(COUNTRIES, 4)}},
                "force": other,
                "range": [0.0, round(rnd.uniform(0.1, 0.6), 2)],
                "hashAttribute": "id",
                "seed": f"cfg-{i}",
                "hashVersion": 2,
            },
            {"condition": {"email": {"$regex": "@example\\.(com|org)$"}}, "force": third},
        ]
        features[f"config-{i}"] = {"defaultValue": default, "rules": rules[: 2 + i % 4]}
    return {"features": features, "savedGroups": groups}


def realworld_attributes(n: int, seed: int = 5) -> list[dict[str, Any]]:
    """``n`` users as an application would pass them to a GrowthBook SDK."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        attrs: dict[str, Any] = {
            "id": f"user-{rnd.randrange(5000) if i % 4 == 0 else 5000 + i}",
            "company": f"co-{rnd.randrange(400)}",
            "country": rnd.choice(COUNTRIES),
            "plan": rnd.choice(PLANS),
            "seats": rnd.randrange(1, 200),
            "browser": rnd.choice(BROWSERS),
            "mobile": rnd.random() < 0.4,
            "appVersion": f"{rnd.randrange(1, 4)}.{rnd.randrange(10)}.{rnd.randrange(5)}",
            "email": f"u{i}@" + rnd.choice(["example.com", "mail.test", "example.org"]),
            "loggedIn": rnd.random() < 0.7,
        }
        if i % 10 == 0:
            del attrs["company"]  # some users have no company: the hash attribute is missing
        out.append(attrs)
    return out
