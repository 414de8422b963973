"""What the rules watch, derived from the config: thresholds and event patterns."""

from __future__ import annotations

from pathlib import Path

from trimtab.config import load_config, parse_config
from trimtab.triggers import for_page, watched

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"

FEATURES = {
    "depth": {"kind": "scroll_depth_max"},
    "speed": {"kind": "scroll_velocity"},
    "dwell": {"kind": "hover_ms", "by": "kind"},
    "dwell_total": {"kind": "hover_ms"},
    "filter_then_expand": {"kind": "sequence", "steps": ["click:filter", "custom:expand"]},
    "carts": {"kind": "event_count", "event": "add_to_cart"},
    "cta_clicks": {"kind": "click_count", "by": "kind"},
    "visible": {"kind": "visible_ms", "by": "category"},
}


def config_with(*conditions: dict) -> object:
    rules = [{"condition": c, "force": "b"} for c in conditions]
    slot = {"default": "a", "variants": {"a": {}, "b": {}}, "rules": rules}
    return parse_config({"features": FEATURES, "slots": {"s": slot}})


def test_lower_bounds_become_send_now_thresholds():
    config = config_with(
        {"depth": {"$gte": 0.5}},
        {"$or": [{"speed": {"$gt": 3000}}, {"dwell.image": {"$gte": 2000}}]},
        {"dwell_total": {"$gt": 10_000}, "depth": {"$lt": 0.2}},  # $lt is no crossing to watch
    )
    triggers = for_page(watched(config), {})
    assert triggers["depth"] == [0.4999] and triggers["speed"] == [3000]
    assert triggers["dwell"] == [["kind", "image", 1999.5], ["total", "", 10_000]]


def test_event_patterns_that_change_a_watched_value_at_once():
    config = config_with(
        {"filter_then_expand": True},
        {"carts": {"$gte": 2}},
        {"cta_clicks.cta": {"$gt": 0}},
        {"visible.sport": {"$gt": 5000}},  # visible time is not a trigger
    )
    triggers = for_page(watched(config), {})
    assert triggers["events"] == ["add_to_cart", "click:cta", "custom:expand"]
    assert triggers["depth"] == [] and triggers["dwell"] == []


def test_dwell_counts_what_is_still_missing_and_drops_what_is_done():
    config = config_with({"dwell.image": {"$gt": 3000}}, {"dwell.card": {"$gt": 500}})
    watch = watched(config)
    triggers = for_page(watch, {"dwell": {"image": 2500.0, "card": 800.0}})
    assert triggers["dwell"] == [["kind", "image", 500.0]]


def test_disabled_rules_watch_nothing_and_the_demo_watches_its_rules():
    rules = [{"condition": {"depth": {"$gt": 0.5}}, "force": "b", "enabled": False}]
    slot = {"default": "a", "variants": {"a": {}, "b": {}}, "rules": rules}
    config = parse_config({"features": FEATURES, "slots": {"s": slot}})
    assert for_page(watched(config), {})["depth"] == []
    demo = for_page(watched(load_config(DEMO)), {})
    assert demo["depth"] == [0.75] and demo["speed"] == [2500]
    assert demo["dwell"] == [["kind", "image", 3000]]
