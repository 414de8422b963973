"""The privacy gate: consent first, pseudonymous ids, scrubbing, truncated addresses."""

from __future__ import annotations

import pytest

from trimtab.events import Consent, Custom, PageView, Scroll
from trimtab.privacy import PrivacyGate, scrub_text, scrub_url, truncate_ip

_n = iter(range(10**6))


def ev(kind, user: str = "visitor-1", **fields):
    return kind(event_id=f"e{next(_n)}", user_id=user, session_id="s", ts=1.75e12, **fields)


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("mail ann.lee+news@example.co.uk now", "mail [email] now"),
        ("call +44 20 7946 0958 or (555) 123-4567", "call [phone] or [phone]"),
        ("order 12345 of 3 items", "order 12345 of 3 items"),  # short numbers stay
    ],
)
def test_scrub_text(text, clean):
    assert scrub_text(text) == clean


def test_scrub_url_drops_query_and_fragment():
    assert scrub_url("https://x.test/a/b?email=a@b.co&utm=1#top") == "https://x.test/a/b"
    assert scrub_url("/article/7") == "/article/7"


@pytest.mark.parametrize(
    ("address", "network"),
    [("203.0.113.77", "203.0.113.0"), ("2001:db8:abcd:12::1", "2001:db8:abcd::"), ("?", "unknown")],
)
def test_truncate_ip(address, network):
    assert truncate_ip(address) == network


def test_ids_are_pseudonymous_stable_and_salted():
    a, b = PrivacyGate(b"salt-a"), PrivacyGate(b"salt-b")
    assert a.user_id("visitor-1") == a.user_id("visitor-1") != "visitor-1"
    assert a.user_id("visitor-1") != b.user_id("visitor-1")
    assert a.user_id("visitor-1") != a.user_id("visitor-2")


def test_nothing_is_kept_before_consent_and_the_choice_itself_is_recorded():
    gate = PrivacyGate(b"s", consent="required")
    assert gate.gate(ev(Scroll, depth=0.5)) is None
    assert gate.dropped_without_consent == 1
    choice = gate.gate(ev(Consent, purposes={"analytics": True, "personalization": False}))
    assert choice is not None and choice.user_id != "visitor-1"
    assert gate.gate(ev(Scroll, depth=0.5)) is not None
    assert not gate.personalization_allowed(choice.user_id)


def test_withdrawn_consent_stops_collection():
    gate = PrivacyGate(b"s", consent="required")
    gate.gate(ev(Consent, purposes={"analytics": True}))
    gate.gate(ev(Consent, purposes={"analytics": False}))
    assert gate.gate(ev(Scroll, depth=0.2)) is None


def test_implied_consent_collects_until_the_visitor_says_no():
    gate = PrivacyGate(b"s", consent="implied")
    assert gate.gate(ev(Scroll, depth=0.1)) is not None
    gate.gate(ev(Consent, purposes={"analytics": False}))
    assert gate.gate(ev(Scroll, depth=0.1)) is None


def test_free_text_and_urls_are_scrubbed_before_storage():
    gate = PrivacyGate(b"s", consent="implied")
    view = gate.gate(
        ev(PageView, url="https://x.test/p?email=a@b.co", title="Hi ann@b.co", page="/p?q=1")
    )
    assert (view.url, view.title, view.page) == ("https://x.test/p", "Hi [email]", "/p")
    custom = gate.gate(ev(Custom, name="feedback", value="write me at ann@b.co"))
    assert custom.value == "write me at [email]"


def test_consent_from_an_earlier_visit_is_found_in_stored_state_and_the_cache_is_bounded():
    stored = {}
    gate = PrivacyGate(b"s", consent="required", cache_size=3, stored_consent=stored.get)
    users = [gate.user_id(f"v{i}") for i in range(6)]
    for user in users:
        stored[user] = {"analytics": True, "personalization": True}
    assert all(gate.personalization_allowed(user) for user in users)
    assert len(gate.consents) <= 3  # what it forgot is read from the state again
    assert gate.gate(ev(Scroll, user="v0", depth=0.3)) is not None
