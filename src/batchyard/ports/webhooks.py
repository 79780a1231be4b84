"""The webhook port: endpoints, deliveries, the outbox's cursor and the signing secrets.

The events table is the outbox (every event is written in its state change's transaction);
the dispatcher turns each new event into deliveries, one per subscribed endpoint, and moves
its cursor past the events IN THE SAME TRANSACTION (`enqueue`), so a crash anywhere neither
loses an event nor delivers one twice to an endpoint. The sender then settles each delivery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from batchyard.domain.webhooks import DeliveryState, EndpointState


@dataclass(frozen=True)
class NewDelivery:
    """One event for one endpoint, as the dispatcher makes it."""

    event_id: int
    tenant: str
    url: str
    job_id: str
    seq: int
    event_type: str
    event_time: float
    data: dict[str, Any]
    """The §10 message (`domain.events.message`): what the request's `data` is."""


@dataclass(frozen=True)
class Endpoint:
    id: int
    tenant: str
    url: str
    state: EndpointState
    reason: str
    """Why it is disabled ("" while active)."""


@dataclass(frozen=True)
class Delivery:
    id: int
    event_id: int
    endpoint_id: int
    tenant: str
    url: str
    job_id: str
    seq: int
    event_type: str
    event_time: float
    data: dict[str, Any]
    state: DeliveryState
    attempts: int
    next_attempt: float
    last_status: int | None
    last_error: str
    created: float
    updated: float


@dataclass(frozen=True)
class Attempted:
    """What one attempt of a delivery found out, to be recorded."""

    delivery_id: int
    state: DeliveryState
    next_attempt: float
    """When it is tried again (a Pending delivery); its settling time otherwise."""
    status: int | None
    error: str


@dataclass(frozen=True)
class DeliveryPage:
    items: list[Delivery]
    marker: str
    """The next page's marker ("" when this is the last)."""


@dataclass(frozen=True)
class SecretInfo:
    """Whether a tenant has a signing secret, and since when (never the secret itself)."""

    exists: bool
    created: float | None


class WebhookStore(Protocol):
    """Endpoints, deliveries, the outbox cursor and the signing secrets, in the state
    database. Every method is one short transaction; safe to call from several threads."""

    def cursor(self) -> str:
        """The id of the last event the dispatcher has handled ("" before the first)."""
        ...

    def enqueue(self, deliveries: Sequence[NewDelivery], cursor: str, now: float) -> int:
        """Insert the deliveries (creating their endpoints as Active) and move the cursor to
        `cursor`, in one transaction; a delivery already there (same event and endpoint) is
        skipped, one for a disabled endpoint is Failed at once (kept for a replay). How many
        were given."""
        ...

    def due(self, now: float, busy: Sequence[int], limit: int) -> list[Delivery]:
        """The deliveries to attempt now: for each endpoint not in `busy`, its oldest
        Pending delivery (by event id), when its next attempt is due."""
        ...

    def record(self, attempted: Attempted, now: float) -> None:
        """Record an attempt: its answer, one more attempt, the new state."""
        ...

    def disable(self, endpoint_id: int, reason: str, now: float) -> int:
        """Disable an endpoint and fail its Pending deliveries with `reason`; how many."""
        ...

    def pending_count(self) -> int:
        """Deliveries still Pending (the outbox backlog)."""
        ...

    def deliveries(self, tenant: str, state: DeliveryState | None, marker: str,
                   limit: int) -> DeliveryPage:
        """A tenant's deliveries (of one state, if given), oldest first, after `marker`."""
        ...

    def delivery(self, delivery_id: int, tenant: str) -> Delivery | None: ...

    def replay(self, tenant: str, first: int, last: int, now: float) -> list[int]:
        """Make the tenant's Failed deliveries with ids in [first, last] Pending again, due
        now (their endpoint made Active again); their ids, in order."""
        ...

    def endpoints(self, tenant: str) -> list[Endpoint]: ...

    def rotate_secret(self, tenant: str, raw: bytes, now: float) -> str:
        """A new signing secret for the tenant from `raw` random bytes (its text, shown
        once); the current one is retired now and signs for 24 h more."""
        ...

    def secret_info(self, tenant: str) -> SecretInfo: ...

    def signing_secrets(self, tenant: str, now: float) -> list[str]:
        """The secrets that sign the tenant's requests now, newest first ([] when none)."""
        ...


class WebhookMeter(Protocol):
    """Told of each attempt's result (`delivered`, `retry`, `failed`, `gone`, `refused`)."""

    def attempted(self, result: str) -> None: ...
