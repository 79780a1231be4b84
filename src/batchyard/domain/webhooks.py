"""The rules of webhook deliveries (design §9, Standard Webhooks): which events a job's
`Notification` subscribes to, when a failed delivery is tried again, what an answer means,
which addresses may be called, and the request a delivery sends. Pure: the random source,
the clock and the resolved addresses are passed in.

A delivery is one event for one endpoint (a tenant's URL). It is `Pending` until an answer
settles it: `Delivered` on a 2xx answer, `Failed` once the retry schedule is exhausted, when
its endpoint answered 410 Gone (the endpoint is then `Disabled`) or when the endpoint's
address is refused. A failed delivery is kept, and may be replayed (made `Pending` again).
"""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from batchyard.domain.events import JOB_EVENTS, EventName
from batchyard.errors import StateConflict

RETRY_DELAYS: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
"""Seconds before each attempt of a delivery (Svix's schedule): the first at once, then
5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h after the previous failure; then it failed."""
JITTER = 0.2
"""Each delay is stretched or shrunk by up to this fraction, at random."""
TIMEOUT = 15.0
"""Seconds a receiver has to answer."""
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
"""Random bytes of a signing secret, at least."""
SECRET_OVERLAP = 24 * 3600.0
"""Seconds a rotated-out secret still signs (beside the new one)."""
INSTANCE_EVENTS: frozenset[EventName] = frozenset(
    name for name in JOB_EVENTS if name.value.startswith("OnInstance"))
"""Per-instance events: sent only to a topic that lists them (a job may have 100,000)."""
DEFAULT_EVENTS: frozenset[EventName] = JOB_EVENTS - INSTANCE_EVENTS
"""What a topic without an `Events` list gets: every job and task event."""


class DeliveryState(StrEnum):
    PENDING = "Pending"
    DELIVERED = "Delivered"
    FAILED = "Failed"


DELIVERY_TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    DeliveryState.PENDING: frozenset({DeliveryState.PENDING, DeliveryState.DELIVERED,
                                      DeliveryState.FAILED}),
    DeliveryState.DELIVERED: frozenset(),
    DeliveryState.FAILED: frozenset({DeliveryState.PENDING}),  # a replay
}
"""Which state a delivery may move to from each (Pending -> Pending: a retry scheduled)."""


class EndpointState(StrEnum):
    ACTIVE = "Active"
    DISABLED = "Disabled"


def check_delivery_move(delivery_id: int, source: DeliveryState,
                        target: DeliveryState) -> None:
    """StateConflict unless a delivery may move from `source` to `target`."""
    if target not in DELIVERY_TRANSITIONS[source]:
        hint = ("only a failed delivery can be replayed" if target is DeliveryState.PENDING
                else "it is settled already")
        raise StateConflict(f"delivery {delivery_id} is {source.value}: {hint}")


def check_replay(delivery_id: int, state: DeliveryState) -> None:
    """StateConflict unless the delivery may be replayed (it failed)."""
    if state is not DeliveryState.FAILED:
        raise StateConflict(f"delivery {delivery_id} is {state.value}: only a failed "
                            "delivery can be replayed")


# ---- subscriptions -------------------------------------------------------------------------

@dataclass(frozen=True)
class Topic:
    """A job's `Notification.Topic` that names a web address."""

    endpoint: str
    events: frozenset[EventName]


def topic_of(description: Mapping[str, Any]) -> Topic | None:
    """The webhook topic of a job description: its `Notification.Topic` when the `Endpoint`
    is an `http://` or `https://` address (an MNS-style endpoint of BatchCompute is one too;
    anything else is not ours to call); None when there is none."""
    notification = description.get("Notification")
    topic = notification.get("Topic") if isinstance(notification, dict) else None
    if not isinstance(topic, dict):
        return None
    endpoint = topic.get("Endpoint")
    if not isinstance(endpoint, str) or urlsplit(endpoint.strip()).scheme.lower() not in (
            "http", "https"):
        return None
    listed = topic.get("Events")
    if isinstance(listed, list) and listed:
        events = frozenset(EventName(name) for name in listed
                           if isinstance(name, str) and name in JOB_EVENTS)
    else:
        events = DEFAULT_EVENTS
    return Topic(endpoint.strip(), events)


# ---- answers and the schedule --------------------------------------------------------------

class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GONE = "gone"
    """410: the receiver asks never to be called again."""


def classify(status: int | None) -> Verdict:
    """What an answer means: its HTTP status, or None when there was none (a timeout, a
    refused connection, a refused address). A redirect is not followed: it is a failure."""
    if status is not None and 200 <= status < 300:
        return Verdict.DELIVERED
    if status == 410:
        return Verdict.GONE
    return Verdict.RETRY


def next_delay(failures: int, random: Callable[[], float],
               delays: Sequence[float] = RETRY_DELAYS) -> float | None:
    """Seconds until the next attempt of a delivery that has failed `failures` times (≥ 1),
    with ±20 % jitter (`random`: uniform in [0, 1)); None when the schedule is exhausted."""
    if failures >= len(delays):
        return None
    return delays[failures] * (1 - JITTER + 2 * JITTER * random())


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delay-seconds or an HTTP date), or None
    when it is absent or not understood."""
    text = (value or "").strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now)


def later_attempt(failures: int, random: Callable[[], float], asked: float | None,
                  delays: Sequence[float] = RETRY_DELAYS) -> float | None:
    """Seconds until the next attempt after a failure: the schedule's delay, or what the
    receiver asked (`Retry-After`) when that is later; None: exhausted."""
    delay = next_delay(failures, random, delays)
    if delay is None:
        return None
    return max(delay, asked) if asked is not None else delay


# ---- addresses -----------------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(cidrs: Iterable[str]) -> list[Network]:
    """The allow-list of configuration as networks (ValueError names a bad one)."""
    return [ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs]


def url_problem(url: str) -> str | None:
    """Why `url` cannot be called at all (not http(s), no host, credentials in it), or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        return f"{url!r} is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return f"{url!r}: only http:// and https:// endpoints are called"
    if not parts.hostname:
        return f"{url!r} names no host"
    if parts.username or parts.password:
        return f"{url!r}: credentials in the URL are not sent; remove them"
    return None


def address_problem(host: str, addresses: Sequence[str],
                    allowed: Sequence[Network]) -> str | None:
    """Why the endpoint host resolved to `addresses` may not be called, or None: every
    address must be public, or within the operator's `webhook_allow_networks`."""
    if not addresses:
        return f"{host} resolves to no address"
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if any(address in network for network in allowed):
            continue
        kind = _private_kind(address)
        if kind is not None:
            return (f"{host} resolves to {address}, a {kind} address: webhooks are not sent "
                    "there unless the operator allows its network (webhook_allow_networks)")
    return None


def _private_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _private_kind(address.ipv4_mapped)
    for kind, test in (("loopback", address.is_loopback), ("link-local", address.is_link_local),
                       ("multicast", address.is_multicast), ("reserved", address.is_reserved),
                       ("unspecified", address.is_unspecified),
                       ("private", address.is_private or not address.is_global)):
        if test:
            return kind
    return None


# ---- the request ---------------------------------------------------------------------------

def webhook_id(event_id: int) -> str:
    """The `webhook-id` of an event: the same for every attempt and every endpoint."""
    return f"evt_{event_id}"


def body(event_type: str, timestamp: str, data: Mapping[str, Any]) -> str:
    """The JSON body of a delivery (Standard Webhooks): `type`, `timestamp` (ISO), `data`."""
    return json.dumps({"type": event_type, "timestamp": timestamp, "data": dict(data)},
                      ensure_ascii=False, separators=(",", ":"))


def secret_text(raw: bytes) -> str:
    """A signing secret as shown to its tenant: `whsec_` and the base64 of its bytes."""
    if len(raw) < SECRET_BYTES:
        raise ValueError(f"a signing secret needs {SECRET_BYTES} random bytes at least")
    return SECRET_PREFIX + base64.b64encode(raw).decode("ascii")


def signing(secrets: Iterable[tuple[str, float | None]], now: float) -> list[str]:
    """The secrets that sign now, newest first: the current one and those rotated out less
    than `SECRET_OVERLAP` ago (`(secret, retired at or None)`, in any order)."""
    found = [(retired, secret) for secret, retired in secrets
             if retired is None or now - retired < SECRET_OVERLAP]
    found.sort(key=lambda item: float("inf") if item[0] is None else item[0], reverse=True)
    return [secret for _, secret in found]
