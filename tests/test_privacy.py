"""The privacy gate: consent first, pseudonymous ids, scrubbing, truncated addresses."""

from __future__ import annotations

import pytest

from trimtab.config import parse_config
from trimtab.decide import Engine
from trimtab.events import DECISION_ID, Consent, Custom, Exposure, Hover, PageView, Scroll
from trimtab.privacy import PrivacyGate, scrub_label, scrub_text, scrub_url, truncate_ip

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


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("/u/ann%40example.com/profile", "/u/[email]/profile"),
        ("/u/ann%2540example.com", "/u/[email]"),  # encoded twice
        ("/call/%2B44%2020%207946%200958", "/call/[phone]"),
        ("50% off, 100%", "50% off, 100%"),  # a lone % is text, left alone
        ("/a%20b/c", "/a%20b/c"),  # encodings without personal data stay as they were
    ],
)
def test_scrub_text_sees_through_percent_encodings(text, clean):
    assert scrub_text(text) == clean


def test_scrub_url_keeps_only_allowed_query_params_and_drops_credentials():
    url = "https://ann:pw@x.test/list?page=2&email=a@b.co&q=ann%40b.co#top"
    assert scrub_url(url) == "https://x.test/list"
    assert scrub_url(url, keep_params={"page", "q"}) == "https://x.test/list?page=2&q=[email]"
    assert scrub_url("/p?page=3", keep_params={"page"}) == "/p?page=3"


@pytest.mark.parametrize(
    ("label", "kept"), [("sport", "sport"), ("a@b.co", ""), ("+44 20 7946 0958", "")]
)
def test_labels_holding_personal_data_are_dropped(label, kept):
    assert scrub_label(label) == kept


def test_labels_and_element_ids_never_carry_personal_data_into_keys():
    gate = PrivacyGate(b"s", consent="implied")
    hover = gate.gate(
        ev(Hover, element="ann@b.co", category="ann@b.co", element_kind="+44 20 7946 0958",
           dwell_ms=5.0, page="/u/ann%40b.co", page_category="bob@b.co")
    )  # fmt: skip
    assert (hover.element, hover.category, hover.element_kind) == ("[email]", "", "")
    assert (hover.page, hover.page_category) == ("/u/[email]", "")
    custom = gate.gate(ev(Custom, name="sent to ann@b.co", value=1.0))
    assert custom.name == "sent to [email]"


def test_a_refused_consent_is_kept_without_its_page_a_granted_one_scrubbed():
    gate = PrivacyGate(b"s", consent="required")
    refused = gate.gate(
        ev(Consent, purposes={"analytics": False}, page="/p?e=a@b.co", page_category="news",
           page_view_id="pv1")
    )  # fmt: skip
    assert (refused.page, refused.page_category, refused.page_view_id) == ("", "", "")
    granted = gate.gate(ev(Consent, purposes={"analytics": True}, page="/p?e=a@b.co#x"))
    assert granted.page == "/p"


def test_an_exposure_keeps_an_engine_decision_id_that_looks_like_a_phone_number():
    """Ids are checked against the engine's grammar, not scrubbed as text (digits can look
    like a phone number)."""
    gate = PrivacyGate(b"s", consent="implied")
    config = parse_config({"slots": {"hero": {"default": "a", "variants": {"a": {}}}}})
    made = Engine(config)._new_id()
    assert DECISION_ID.fullmatch(made)
    for kept in ("4a3b123456-12", made):
        exposure = gate.gate(ev(Exposure, slot="hero", variant="a", decision_id=kept))
        assert exposure.decision_id == kept
    for foreign in ("ann@b.co", "+44 20 7946 0958", "x" * 40):
        exposure = gate.gate(ev(Exposure, slot="hero", variant="a", decision_id=foreign))
        assert exposure.decision_id == ""


def test_server_made_ids_pass_untouched():
    """A decision id (hex and digits joined by a hyphen) is not a phone number: an exposure
    keeps it, or it would point at no logged decision."""
    gate = PrivacyGate(b"s", consent="implied")
    exposure = gate.gate(
        ev(Exposure, slot="cta", variant="subscribe_offer", decision_id="587f104635-40f6")
    )
    assert exposure.decision_id == "587f104635-40f6"
    hover = gate.gate(ev(Hover, element="img-2024-01-15", category="news", dwell_ms=5.0))
    assert (hover.element, hover.category) == ("img-2024-01-15", "news")
