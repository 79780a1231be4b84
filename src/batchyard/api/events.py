"""`/events`: the caller's events, oldest first after a cursor, as pages or as a live stream.

Every committed change of a job, task or instance (and each priority change) is a row of the
events table, written in the transaction of the change; this router reads them through the
read port (`JobQueries.events_since`: a keyset read on the event id). An item is the §10
message of the event (`documents.event_view`) with `Id`, `Type` and `Time`; the cursor is the
`Id` of the last item read, opaque to clients, valid across server restarts.

The stream (`GET /events/stream`, server-sent events) polls the database every
`POLL_INTERVAL` seconds rather than waking on a transition listener: a priority change is no
transition (listeners never hear of it) and submissions commit on other threads, while the
database sees every event of every writer in order. A poll is one indexed read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from batchyard.api.paging import DEFAULT_ITEM_COUNT, MAX_ITEM_COUNT, ItemCount
from batchyard.api.services import CallerDependency, Services, ServicesDependency
from batchyard.documents import event_view
from batchyard.errors import NotFound
from batchyard.ports.reads import EventPage

router = APIRouter(tags=["events"])
POLL_INTERVAL = 0.5
"""Seconds between two reads of a stream that found nothing new."""


class EventQuery(BaseModel):
    """`since` (a cursor; blank: from the oldest event), `MaxItemCount`, `JobId`."""

    model_config = ConfigDict(extra="ignore")

    since: str = ""
    MaxItemCount: ItemCount = DEFAULT_ITEM_COUNT
    JobId: str = ""


def read_events(services: Services, tenant: str, cursor: str, limit: int,
                job_id: str) -> EventPage:
    """A page of the tenant's events after `cursor`; NotFound for a `job_id` that is not the
    tenant's (asked only when the page is empty: a job with events exists)."""
    page = services.reads.events_since(tenant, cursor, limit, job_id or None)
    if job_id and not page.items and not services.reads.owns_job(job_id, tenant):
        raise NotFound(f"job {job_id} does not exist")
    return page


@router.get("/events")
def list_events(query: Annotated[EventQuery, Query()], caller: CallerDependency,
                services: ServicesDependency) -> dict[str, Any]:
    """The caller's events after `since`, oldest first: `Items`, `Cursor` (pass it as
    `since` to read on; it is the last item's `Id`, or `since` when nothing is new) and
    `NextMarker` (the same cursor when more events are there already, else "")."""
    page = read_events(services, caller.tenant, query.since, query.MaxItemCount, query.JobId)
    return {"Items": [event_view(item) for item in page.items], "Cursor": page.cursor,
            "NextMarker": page.cursor if page.more else ""}


async def first_page(query: Annotated[EventQuery, Query()], caller: CallerDependency,
                     services: ServicesDependency,
                     last_event_id: Annotated[str, Header()] = "") -> EventPage:
    """A stream's first page, read before the stream begins: a bad cursor or job is a
    plain 400 or 404 answer, not a stream that breaks."""
    return await run_in_threadpool(read_events, services, caller.tenant,
                                   last_event_id or query.since, MAX_ITEM_COUNT, query.JobId)


@router.get("/events/stream", response_class=EventSourceResponse)
async def stream_events(query: Annotated[EventQuery, Query()], caller: CallerDependency,
                        services: ServicesDependency,
                        first: Annotated[EventPage, Depends(first_page)]
                        ) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events: each of the caller's events as it commits, `event:` its name,
    `id:` its cursor, `data:` the item of `GET /events` (JSON). Resumes after the
    `Last-Event-ID` header (what an EventSource sends when it reconnects), else after
    `since`; runs until the client goes (FastAPI sends a keep-alive comment meanwhile)."""
    page = first
    while True:
        for item in page.items:
            view = event_view(item)
            yield ServerSentEvent(id=item.cursor, event=view["Type"] or "Event",
                                  raw_data=json.dumps(view, ensure_ascii=False))
        if not page.more:
            await asyncio.sleep(POLL_INTERVAL)
        page = await run_in_threadpool(services.reads.events_since, caller.tenant, page.cursor,
                                       MAX_ITEM_COUNT, query.JobId or None)
