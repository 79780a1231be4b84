"""The pure rules of webhooks (`domain.webhooks`): schedule, jitter, Retry-After, answers,
the address policy, subscriptions, secrets and the delivery state table."""

from __future__ import annotations

import base64
import json
from email.utils import formatdate

import pytest

from batchyard.domain.events import JOB_EVENTS, EventName
from batchyard.domain.webhooks import (
    DEFAULT_EVENTS,
    INSTANCE_EVENTS,
    RETRY_DELAYS,
    DeliveryState,
    Verdict,
    address_problem,
    body,
    check_delivery_move,
    check_replay,
    classify,
    later_attempt,
    networks,
    next_delay,
    retry_after,
    secret_text,
    signing,
    topic_of,
    url_problem,
    webhook_id,
)
from batchyard.errors import StateConflict


def test_the_schedule_is_svix_s_then_exhausted() -> None:
    assert RETRY_DELAYS == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    middle = [next_delay(failures, lambda: 0.5) for failures in range(1, 8)]
    assert middle == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert next_delay(8, lambda: 0.5) is None
    assert next_delay(2, lambda: 0.5, delays=(0, 1)) is None


@pytest.mark.parametrize(("draw", "factor"), [(0.0, 0.8), (0.5, 1.0), (0.999999, 1.2)])
def test_jitter_is_plus_or_minus_twenty_percent(draw: float, factor: float) -> None:
    delay = next_delay(2, lambda: draw)
    assert delay == pytest.approx(300 * factor, rel=1e-5)


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = 1_800_000_000.0
    assert retry_after("120", now) == 120
    assert retry_after(formatdate(now + 600, usegmt=True), now) == pytest.approx(600)
    assert retry_after(formatdate(now - 600, usegmt=True), now) == 0
    assert retry_after(None, now) is None
    assert retry_after("soon", now) is None
    assert retry_after("-5", now) is None


def test_retry_after_makes_the_next_attempt_later_never_sooner() -> None:
    assert later_attempt(1, lambda: 0.5, asked=3600) == 3600
    assert later_attempt(3, lambda: 0.5, asked=1) == 1800
    assert later_attempt(8, lambda: 0.5, asked=10) is None


@pytest.mark.parametrize(("status", "verdict"), [
    (200, Verdict.DELIVERED), (204, Verdict.DELIVERED), (299, Verdict.DELIVERED),
    (410, Verdict.GONE), (429, Verdict.RETRY), (500, Verdict.RETRY), (503, Verdict.RETRY),
    (301, Verdict.RETRY), (302, Verdict.RETRY), (400, Verdict.RETRY), (404, Verdict.RETRY),
    (None, Verdict.RETRY), (100, Verdict.RETRY)])
def test_classify_answers(status: int | None, verdict: Verdict) -> None:
    assert classify(status) is verdict


@pytest.mark.parametrize("url", ["ftp://example.com/", "file:///etc/passwd", "example.com",
                                 "http://", "http://user:pw@example.com/",
                                 "http://example.com:99999/"])
def test_urls_that_are_never_called(url: str) -> None:
    assert url_problem(url)


def test_a_public_url_is_fine() -> None:
    assert url_problem("https://hooks.example.com/batch?x=1") is None


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("10.0.0.1", "private"), ("192.168.1.5", "private"),
    ("172.16.0.1", "private"), ("169.254.169.254", "link-local"), ("224.0.0.1", "multicast"),
    ("0.0.0.0", "unspecified"), ("::1", "loopback"), ("fe80::1", "link-local"),
    ("fd00::1", "private"), ("::ffff:10.0.0.1", "private"), ("100.64.0.1", "private"),
    ("240.0.0.1", "reserved")])
def test_non_public_addresses_are_refused(address: str, kind: str) -> None:
    problem = address_problem("hooks.example", [address], [])
    assert problem is not None and kind in problem and "webhook_allow_networks" in problem


def test_the_allow_list_lets_its_networks_through() -> None:
    allowed = networks(["127.0.0.1/32", "10.0.0.0/8"])
    assert address_problem("h", ["127.0.0.1"], allowed) is None
    assert address_problem("h", ["10.2.3.4"], allowed) is None
    assert address_problem("h", ["127.0.0.2"], allowed) is not None


def test_every_resolved_address_must_pass() -> None:
    assert address_problem("h", ["93.184.216.34", "10.0.0.1"], []) is not None
    assert address_problem("h", ["93.184.216.34"], []) is None
    assert address_problem("h", [], []) is not None


def test_a_bad_network_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        networks(["10.0.0.0/33"])


def job(topic: object) -> dict[str, object]:
    return {"Name": "j", "Notification": {"Topic": topic}}


def test_a_topic_with_events_gets_exactly_those() -> None:
    topic = topic_of(job({"Endpoint": "https://h.example/x",
                          "Events": ["OnJobFinished", "OnInstanceFailed"]}))
    assert topic is not None and topic.endpoint == "https://h.example/x"
    assert topic.events == {EventName.JOB_FINISHED, EventName.INSTANCE_FAILED}


def test_a_topic_without_events_gets_job_and_task_events_not_instance_ones() -> None:
    topic = topic_of(job({"Endpoint": "http://h.example/"}))
    assert topic is not None and topic.events == DEFAULT_EVENTS
    assert not DEFAULT_EVENTS & INSTANCE_EVENTS
    assert DEFAULT_EVENTS | INSTANCE_EVENTS == JOB_EVENTS
    assert EventName.PRIORITY_CHANGE in DEFAULT_EVENTS


@pytest.mark.parametrize("notification", [
    None, "x", {"Topic": "x"}, {"Topic": {}}, {"Topic": {"Endpoint": ""}},
    {"Topic": {"Endpoint": "mns://queue"}}, {"Topic": {"Endpoint": 5}}])
def test_no_webhook_topic(notification: object) -> None:
    assert topic_of({"Notification": notification}) is None


def test_secrets_are_whsec_base64_of_24_bytes_or_more() -> None:
    raw = bytes(range(24))
    text = secret_text(raw)
    assert text.startswith("whsec_") and base64.b64decode(text[6:]) == raw
    with pytest.raises(ValueError):
        secret_text(b"short")


def test_a_rotated_out_secret_signs_for_24_hours_newest_first() -> None:
    now = 1_000_000.0
    kept = [("old", now - 3600), ("new", None), ("ancient", now - 25 * 3600)]
    assert signing(kept, now) == ["new", "old"]
    assert signing([], now) == []


def test_the_body_and_the_id() -> None:
    text = body("OnJobFinished", "2026-01-01T00:00:00.000000Z", {"Seq": 3})
    assert json.loads(text) == {"type": "OnJobFinished",
                                "timestamp": "2026-01-01T00:00:00.000000Z", "data": {"Seq": 3}}
    assert webhook_id(42) == "evt_42"


def test_delivery_moves() -> None:
    check_delivery_move(1, DeliveryState.PENDING, DeliveryState.DELIVERED)
    check_delivery_move(1, DeliveryState.PENDING, DeliveryState.PENDING)
    check_delivery_move(1, DeliveryState.FAILED, DeliveryState.PENDING)
    with pytest.raises(StateConflict, match="only a failed delivery"):
        check_delivery_move(1, DeliveryState.DELIVERED, DeliveryState.PENDING)
    with pytest.raises(StateConflict, match="settled"):
        check_delivery_move(1, DeliveryState.FAILED, DeliveryState.DELIVERED)


def test_only_a_failed_delivery_is_replayed() -> None:
    check_replay(1, DeliveryState.FAILED)
    for state in (DeliveryState.PENDING, DeliveryState.DELIVERED):
        with pytest.raises(StateConflict, match="only a failed delivery"):
            check_replay(1, state)
