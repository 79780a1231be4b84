"""The instance page: its attempts with their phases, why it waits, and its logs — the tail
followed live while it runs (SSE, resumable by byte offset), the whole log downloadable
afterwards from the object store, so it outlives the VM that wrote it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from markupsafe import escape
from starlette.concurrency import run_in_threadpool

from batchyard.api.services import Services, services_of
from batchyard.console.jobs import one_task
from batchyard.console.live import changes_of
from batchyard.console.logs import log_object, tail
from batchyard.console.sessions import ViewerDependency
from batchyard.console.web import ConsoleRoute, duration, render, wants_fragment
from batchyard.domain.phases import phases
from batchyard.domain.records import AttemptRecord, InstanceRecord, JobRecord, TaskRecord
from batchyard.domain.spec import bucket_of
from batchyard.domain.states import TERMINAL
from batchyard.errors import BatchyardError, NotFound
from batchyard.ports.reads import instance_number

router = APIRouter(route_class=ConsoleRoute)
STREAMS = ("stdout", "stderr")
SHOWN_BYTES = 64 * 1024
"""The end of a log shown in the page itself (the rest: download, or the live tail)."""
DOWNLOAD_CHUNK = 1024 * 1024


class LogRefused(BatchyardError):
    code = "Forbidden"
    status = 403


@dataclass(frozen=True)
class Found:
    job: JobRecord
    task: TaskRecord
    instance: InstanceRecord


def _find(services: Services, job_id: str, task: str, number: str, tenant: str) -> Found:
    """The tenant's instance, or NotFound (another tenant's reads as missing)."""
    instance_id = instance_number(number)
    job = services.reads.job(job_id, tenant)
    record = None if job is None or instance_id is None else \
        services.reads.instance(job_id, task, instance_id, tenant)
    task_record = one_task(services, job_id, task, tenant) if record is not None else None
    if job is None or record is None or task_record is None:
        raise NotFound(f"instance {number} of task {task} of job {job_id} does not exist")
    explained = services.engine.explain_instances(job_id, task, [record])[0]
    return Found(job, task_record, explained)


@dataclass(frozen=True)
class AttemptView:
    record: AttemptRecord
    waiting: str
    staging: str
    running: str
    logs: dict[str, str]
    """stream → the download link of this attempt's log ("" when it has none)."""


def _attempt_views(found: Found, attempts: list[AttemptRecord], base: str) -> list[AttemptView]:
    views = []
    queued = found.task.started
    now = datetime.now(UTC)
    last = len(attempts)
    for record in attempts:
        phase = phases(record, queued, now)
        suffix = "" if record.attempt == last else f"?attempt={record.attempt}"
        links = {stream: f"{base}/logs/{stream}{suffix}" for stream in STREAMS}
        views.append(AttemptView(record, _seconds(phase.waiting), _seconds(phase.staging),
                                 _seconds(phase.running), links))
        queued = record.ended
    return views


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    start = datetime.fromtimestamp(0, UTC)
    return duration(start, datetime.fromtimestamp(value, UTC))


def _base(found: Found) -> str:
    from urllib.parse import quote

    return (f"/console/jobs/{found.job.id}/tasks/{quote(found.task.name, safe='')}"
            f"/instances/{found.instance.instance_id}")


@router.get("/jobs/{job_id}/tasks/{task}/instances/{number}", response_class=HTMLResponse)
async def instance_page(request: Request, job_id: str, task: str, number: str,
                        viewer: ViewerDependency) -> Response:
    services = services_of(request)
    found = await run_in_threadpool(_find, services, job_id, task, number, viewer.tenant)
    attempts = await run_in_threadpool(services.reads.attempts, job_id, task,
                                       found.instance.instance_id, viewer.tenant)
    base = _base(found)
    fragment = wants_fragment(request)
    logs = {}
    for stream in STREAMS:
        logs[stream] = None if fragment else await run_in_threadpool(
            _log_end, services, found, stream, viewer.tenant)
    context = {"job": found.job, "task": found.task, "instance": found.instance,
               "attempts": _attempt_views(found, attempts, base), "base": base, "logs": logs,
               "live": found.instance.state not in TERMINAL}
    return render(request, "instance.html", context, block="facts" if fragment else None)


@dataclass(frozen=True)
class LogEnd:
    url: str
    text: str
    size: int
    """Bytes of the log so far: where the live tail goes on."""
    cut: bool
    """Only the end is shown."""
    problem: str = ""
    """Why the log cannot be shown ("": it can)."""


def _log_end(services: Services, found: Found, stream: str, tenant: str) -> LogEnd:
    try:
        url = _log_url(services, found, stream, None, tenant)
    except LogRefused as refused:
        return LogEnd("", "", 0, False, str(refused))
    objects = services.engine.objects
    size = objects.size(url) if url else None
    if not size:
        return LogEnd(url, "", 0, False)
    start = max(0, size - SHOWN_BYTES)
    data = objects.read_range(url, start, size - start)
    if start:  # from the first whole line
        data = data[data.find(b"\n") + 1:] if b"\n" in data else data
    return LogEnd(url, data.decode("utf-8", "replace"), size, start > 0)


def _log_url(services: Services, found: Found, stream: str, attempt: int | None,
             tenant: str) -> str:
    """Where the log is; refused unless the tenant may read that bucket (the path came from
    its own job, so this only matters if a grant was taken away since)."""
    url = log_object(found.instance, found.job.description, stream, attempt)
    if not url:
        return ""
    readable = {access.name for access in services.engine.buckets.reachable(tenant)}
    if bucket_of(url) not in readable:
        raise LogRefused(f"the log {url} is in a bucket this tenant may not read")
    return url


def _stream(stream: str) -> str:
    if stream not in STREAMS:
        raise NotFound(f"log {stream!r} does not exist: it is stdout or stderr")
    return stream


@router.get("/jobs/{job_id}/tasks/{task}/instances/{number}/logs/{stream}")
async def download_log(request: Request, job_id: str, task: str, number: str, stream: str,
                       viewer: ViewerDependency,
                       attempt: Annotated[int | None, Query(ge=1, le=10_000)] = None
                       ) -> Response:
    """The whole log (of `attempt`, an earlier failed attempt's copy), as a text file."""
    services = services_of(request)
    found = await run_in_threadpool(_find, services, job_id, task, number, viewer.tenant)
    url = await run_in_threadpool(_log_url, services, found, _stream(stream), attempt,
                                  viewer.tenant)
    size = await run_in_threadpool(services.engine.objects.size, url) if url else None
    if size is None:
        raise NotFound(f"{found.instance.task}/{found.instance.instance_id} has no {stream} "
                       "log yet" + (f" for attempt {attempt}" if attempt else ""))
    name = f"{stream}.{found.job.id}.{found.task.name}.{found.instance.instance_id}" + (
        f".attempt-{attempt}" if attempt else "") + ".txt"
    return StreamingResponse(
        _chunks(services, url, size), media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{_safe_name(name)}"',
                 "Content-Length": str(size)})


def _chunks(services: Services, url: str, size: int) -> Iterator[bytes]:
    for start in range(0, size, DOWNLOAD_CHUNK):
        yield services.engine.objects.read_range(url, start, min(DOWNLOAD_CHUNK, size - start))


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


async def live_source(request: Request, job_id: str, task: str, number: str,
                      viewer: ViewerDependency) -> tuple[Found, dict[str, str]]:
    """The instance and its logs' URLs, checked before the event stream begins (so a
    refusal is an error page, not a broken stream)."""
    services = services_of(request)
    found = await run_in_threadpool(_find, services, job_id, task, number, viewer.tenant)
    urls = {}
    for stream in STREAMS:
        try:
            urls[stream] = await run_in_threadpool(_log_url, services, found, stream, None,
                                                   viewer.tenant)
        except LogRefused:
            urls[stream] = ""  # the page says why; the stream follows the other log
    return found, urls


@router.get("/jobs/{job_id}/tasks/{task}/instances/{number}/live",
            response_class=EventSourceResponse)
async def live(request: Request, viewer: ViewerDependency,
               source: Annotated[tuple[Found, dict[str, str]], Depends(live_source)],
               stdout: Annotated[int, Query(ge=0)] = 0, stderr: Annotated[int, Query(ge=0)] = 0,
               last_event_id: Annotated[str | None, Header()] = None
               ) -> AsyncIterator[ServerSentEvent]:
    """One stream for the instance page (a browser holds few connections per server):
    `stdout` and `stderr` events carry the logs' new bytes as escaped text, `changed` says
    the job changed (the page re-reads the instance), `end` that the instance ended and its
    logs stopped growing. Each log event's id is `<stdout offset>-<stderr offset>`: a
    reconnecting browser sends the last back (`Last-Event-ID`) and goes on from there."""
    services = services_of(request)
    found, urls = source
    offsets = _resumed(last_event_id) or {"stdout": stdout, "stderr": stderr}
    instance = found.instance

    async def finished() -> bool:
        record = await run_in_threadpool(services.reads.instance, instance.job_id,
                                         instance.task, instance.instance_id, viewer.tenant)
        return record is None or record.state in TERMINAL

    events: asyncio.Queue[tuple[str, int, str] | None] = asyncio.Queue(maxsize=16)

    async def follow(stream: str) -> None:
        async for offset, text in tail(services.engine.objects, urls[stream],
                                       offsets[stream], finished):
            await events.put((stream, offset, text))

    async def changes() -> None:
        async for _ in changes_of(request).job_changes(instance.job_id, interval=1.0):
            await events.put(("changed", 0, ""))

    followers = [asyncio.create_task(follow(stream)) for stream in STREAMS if urls[stream]]
    watcher = asyncio.create_task(changes())
    done = asyncio.gather(*followers)
    done.add_done_callback(lambda _: events.put_nowait(None))
    try:
        while (event := await events.get()) is not None:
            kind, offset, text = event
            if kind == "changed":
                yield ServerSentEvent(event="changed", raw_data="")
                continue
            offsets[kind] = offset
            yield ServerSentEvent(event=kind, id=f"{offsets['stdout']}-{offsets['stderr']}",
                                  raw_data=str(escape(text)))
        yield ServerSentEvent(event="end", raw_data="")
    finally:
        for task in (*followers, watcher):
            task.cancel()


def _resumed(last_event_id: str | None) -> dict[str, int] | None:
    """The offsets of a `Last-Event-ID` `<stdout>-<stderr>`, or None."""
    parts = (last_event_id or "").split("-")
    if len(parts) != 2 or not all(part.isdigit() and len(part) < 16 for part in parts):
        return None
    return {"stdout": int(parts[0]), "stderr": int(parts[1])}
