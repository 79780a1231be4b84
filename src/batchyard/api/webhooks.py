"""`/webhooks`: a tenant's signing secret and deliveries; and the outbox of a server.

A job whose `Notification.Topic.Endpoint` is an `http(s)://` address gets its subscribed
events as Standard Webhooks requests (docs/operations.md, "Webhooks"), sent by the outbox
(`adapters.outbox`) that `start_outbox` runs beside the engine. Tenants see and replay their
own deliveries only; a secret is shown once, in the answer that made it.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from batchyard.adapters.outbox import Dispatcher, Outbox, OutboxConfig, Sender
from batchyard.adapters.store import SqlStore
from batchyard.adapters.webhooks import SqlWebhooks, missing_delivery
from batchyard.api.metrics import Metrics, WebhookCounters
from batchyard.api.paging import DEFAULT_ITEM_COUNT, ItemCount
from batchyard.api.services import CallerDependency, Services
from batchyard.documents import time_text
from batchyard.domain.webhooks import (
    SECRET_BYTES,
    DeliveryState,
    check_replay,
    networks,
    webhook_id,
)
from batchyard.errors import BatchyardError
from batchyard.orchestrator.engine import Engine
from batchyard.ports.webhooks import Delivery, WebhookStore
from batchyard.settings import Settings

router = APIRouter(tags=["webhooks"])
DELIVERY_ID_MAX = 2**62


def start_outbox(engine: Engine, settings: Settings, services: Services,
                 metrics: Metrics) -> tuple[SqlWebhooks, Outbox]:
    """The webhook store of the server's database, and its outbox, started: it hears the
    engine's transitions from now on. Close the outbox before the engine."""
    store = engine.store
    if not isinstance(store, SqlStore):
        raise TypeError("webhooks need the SQL store (the events table is their outbox)")
    hooks = SqlWebhooks(store.engine, services.keys.cipher)
    config = OutboxConfig(networks(settings.webhook_allow_networks),
                          tuple(settings.webhook_retry_delays))
    # No connection is kept for another request: each goes to an address checked just
    # before, with its own TLS handshake (a pooled connection to an IP address could carry
    # another host name's request past its certificate check).
    client = httpx.Client(follow_redirects=False, trust_env=False, timeout=config.timeout,
                          limits=httpx.Limits(max_keepalive_connections=0))
    meter = WebhookCounters(metrics.registry, hooks.pending_count)
    sender = Sender(hooks, config, meter, client, engine.clock)
    outbox = Outbox(Dispatcher(store.reads, hooks, engine.clock, batch=config.batch), sender,
                    config.poll)
    engine.listen(outbox)
    return hooks, outbox.start()


def hooks_of(request: Request) -> WebhookStore:
    found: WebhookStore = request.app.state.webhooks
    return found


# ---- the signing secret --------------------------------------------------------------------

@router.get("/webhooks/secret")
def get_secret(request: Request, caller: CallerDependency) -> dict[str, Any]:
    """Whether the caller has a signing secret, and since when (never the secret)."""
    info = hooks_of(request).secret_info(caller.tenant)
    return {"Exists": info.exists, "CreationTime": _time(info.created)}


@router.post("/webhooks/secret", status_code=201)
def rotate_secret(request: Request, caller: CallerDependency) -> dict[str, Any]:
    """A new signing secret (`whsec_…`), shown in this answer only. The one it replaces
    keeps signing beside it for 24 h, so receivers can switch without losing an event."""
    hooks = hooks_of(request)
    replaced = hooks.secret_info(caller.tenant).exists
    now = time.time()
    secret = hooks.rotate_secret(caller.tenant, os.urandom(SECRET_BYTES), now)
    return {"Secret": secret, "CreationTime": _time(now), "Rotated": replaced}


# ---- deliveries ----------------------------------------------------------------------------

def _blank_as_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


class DeliveryQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    State: Annotated[DeliveryState | None, BeforeValidator(_blank_as_none)] = None
    Marker: str = ""
    MaxItemCount: ItemCount = DEFAULT_ITEM_COUNT


class InvalidRange(BatchyardError):
    code = "InvalidTo"
    status = 400


class ReplayRange(BaseModel):
    """`{"From": id, "To": id}`: the caller's failed deliveries with ids in [From, To]."""

    model_config = ConfigDict(extra="forbid")

    From: int = Field(ge=1, le=DELIVERY_ID_MAX)
    To: int = Field(ge=1, le=DELIVERY_ID_MAX)


@router.get("/webhooks/deliveries")
def list_deliveries(request: Request, query: Annotated[DeliveryQuery, Query()],
                    caller: CallerDependency) -> dict[str, Any]:
    """The caller's deliveries, oldest first (`State`: Pending, Delivered or Failed)."""
    page = hooks_of(request).deliveries(caller.tenant, query.State, query.Marker,
                                        query.MaxItemCount)
    return {"Items": [delivery_view(item) for item in page.items],
            "NextMarker": page.marker}


@router.post("/webhooks/deliveries/replay")
def replay_range(request: Request, span: Annotated[ReplayRange, Body()],
                 caller: CallerDependency) -> dict[str, Any]:
    """Send the caller's failed deliveries with ids in [From, To] again, in order (their
    endpoints made active again); `Replayed`: their ids."""
    if span.To < span.From:
        raise InvalidRange(f"To must be at least From ({span.From}) (got {span.To}): "
                           "replay ids From..To, e.g. {\"From\": 3, \"To\": 9}")
    replayed = hooks_of(request).replay(caller.tenant, span.From, span.To, time.time())
    return {"Replayed": [str(number) for number in replayed]}


@router.post("/webhooks/deliveries/{delivery_id}/replay")
def replay_one(request: Request, delivery_id: str, caller: CallerDependency) -> dict[str, Any]:
    """Send one failed delivery again (its endpoint made active again)."""
    number = int(delivery_id) if delivery_id.isdigit() and len(delivery_id) < 19 else 0
    hooks = hooks_of(request)
    found = hooks.delivery(number, caller.tenant) if number else None
    if found is None:
        raise missing_delivery(delivery_id)
    check_replay(found.id, found.state)
    replayed = hooks.replay(caller.tenant, found.id, found.id, time.time())
    return {"Replayed": [str(number) for number in replayed]}


def delivery_view(delivery: Delivery) -> dict[str, Any]:
    """A delivery as the API and `batchyard webhooks deliveries --json` show it."""
    return {
        "Id": str(delivery.id), "WebhookId": webhook_id(delivery.event_id),
        "Endpoint": delivery.url, "JobId": delivery.job_id, "Seq": delivery.seq,
        "Type": delivery.event_type, "State": delivery.state.value,
        "Attempts": delivery.attempts,
        "NextAttemptTime": (_time(delivery.next_attempt)
                            if delivery.state is DeliveryState.PENDING else ""),
        "LastStatus": delivery.last_status or 0, "LastError": delivery.last_error,
        "CreationTime": _time(delivery.created), "UpdateTime": _time(delivery.updated),
    }


def _time(moment: float | None) -> str:
    return "" if moment is None else time_text(datetime.fromtimestamp(moment, UTC))
