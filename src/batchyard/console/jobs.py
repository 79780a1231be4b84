"""The jobs list and the job page: what runs, how far it got, and the job's actions.

Everything is read through the read service the API uses (`services.reads`) and changed
through the engine's operations, with the signed-in tenant: another tenant's job id is a 404
page, exactly as in the API. A page reads a bounded number of rows whatever the size of
the job: the tasks with their per-state counts (kept by the store), and one page of one
task's instances for the heat-map.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from batchyard.api.services import Services, services_of
from batchyard.console import drawing
from batchyard.console.live import changes_of
from batchyard.console.sessions import FormViewer, ViewerDependency
from batchyard.console.web import PREFIX, ConsoleRoute, confirmation, render, wants_fragment
from batchyard.domain.records import JobRecord, TaskRecord
from batchyard.domain.states import (
    DELETABLE,
    REPRIORITISABLE,
    STARTABLE,
    STOPPABLE,
    TERMINAL,
    State,
)
from batchyard.errors import BatchyardError, NotFound
from batchyard.ports.reads import Window, instance_number

router = APIRouter(route_class=ConsoleRoute)
JOBS_PER_PAGE = 50
CELLS_PER_PAGE = 1000
"""Instances in one page of a task's heat-map."""
STATE_NAMES = {state.value.lower(): state for state in State}


class BadFilter(BatchyardError):
    code = "InvalidParameter"
    status = 400


def state_filter(text: str) -> State | None:
    """`?state=failed` (any case); "" for every state."""
    if not text:
        return None
    found = STATE_NAMES.get(text.lower())
    if found is None:
        names = ", ".join(state.value for state in STATE_NAMES.values())
        raise BadFilter(f"state {text!r} is not one of {names}")
    return found


# ---- the jobs list --------------------------------------------------------------------------


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_page(request: Request, viewer: ViewerDependency,
                    state: Annotated[str, Query(max_length=20)] = "",
                    name: Annotated[str, Query(max_length=128)] = "",
                    marker: Annotated[str, Query(max_length=64)] = "") -> Response:
    services = services_of(request)
    wanted = state_filter(state)
    window = Window(marker=marker, limit=JOBS_PER_PAGE, state=wanted, name=name.strip())
    page = await run_in_threadpool(services.reads.list_jobs, viewer.tenant, window)
    counts = await run_in_threadpool(services.reads.job_counts, viewer.tenant, name.strip())
    query = {"state": state, "name": name}
    context = {"jobs": page.items, "next_marker": page.next_marker, "counts": counts,
               "total": sum(counts.values()), "state": wanted, "name": name, "marker": marker,
               "query": query}
    block = "rows" if wants_fragment(request) else None
    return render(request, "jobs.html", context, block=block)


@router.get("/jobs/events", response_class=EventSourceResponse)
async def jobs_events(request: Request, viewer: ViewerDependency
                      ) -> AsyncIterator[ServerSentEvent]:
    """`changed` whenever one of the viewer's jobs changed state, was created or deleted
    (coalesced: at most two a second)."""
    async for _ in changes_of(request).tenant_changes(viewer.tenant):
        yield ServerSentEvent(event="changed", raw_data="")


# ---- the job page ---------------------------------------------------------------------------


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: str, viewer: ViewerDependency,
                   task: Annotated[str, Query(max_length=128)] = "",
                   part: Annotated[str, Query(max_length=20)] = "") -> Response:
    services = services_of(request)
    job = await run_in_threadpool(services.reads.job, job_id, viewer.tenant)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    tasks = await run_in_threadpool(_explained_tasks, services, job)
    nodes = drawing.task_nodes(job.description, tasks)
    order = [name for layer in drawing.layers(nodes) for name in layer]
    by_name = {record.name: record for record in tasks}
    ordered = [by_name[name] for name in order if name in by_name]
    chosen = task if task in by_name else (order[0] if order else "")
    fragment = part if wants_fragment(request) and part in {"live", "grid"} else None
    grid = None if fragment == "live" else await run_in_threadpool(
        _grid, services, job, chosen, "", None, viewer.tenant)
    context = {
        "job": job, "tasks": ordered, "chosen": chosen, "grid": grid,
        "dag": drawing.dag_svg(nodes, lambda name: f"{PREFIX}/jobs/{job.id}?task="
                               f"{_quoted(name)}#instances"),
        "description": json.dumps(job.description, indent=2, ensure_ascii=False,
                                  sort_keys=False),
        "can": _allowed(job), "terminal": job.state in TERMINAL,
    }
    return render(request, "job.html", context, block=fragment)


def one_task(services: Services, job_id: str, task: str, tenant: str) -> TaskRecord | None:
    """One task of the job with its counts: a page of one, whatever the job's size."""
    page = services.reads.list_tasks(job_id, Window(task, 1), {task}, tenant)
    return page.items[0] if page.items else None


def _explained_tasks(services: Services, job: JobRecord) -> list[TaskRecord]:
    tasks = services.reads.tasks(job.id, job.tenant)
    return services.engine.explain_tasks(job.id, tasks)


def _allowed(job: JobRecord) -> dict[str, bool]:
    return {"stop": job.state in STOPPABLE, "start": job.state in STARTABLE,
            "delete": job.state in DELETABLE, "priority": job.state in REPRIORITISABLE}


def _quoted(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


async def owned_job(request: Request, job_id: str, viewer: ViewerDependency) -> str:
    """The id of one of the viewer's jobs (checked before an event stream begins)."""
    if not await run_in_threadpool(services_of(request).reads.owns_job, job_id, viewer.tenant):
        raise NotFound(f"job {job_id} does not exist")
    return job_id


@router.get("/jobs/{job_id}/events", response_class=EventSourceResponse)
async def job_events(request: Request, job_id: Annotated[str, Depends(owned_job)],
                     viewer: ViewerDependency) -> AsyncIterator[ServerSentEvent]:
    """`changed` each time the job changed (at most four a second, however many of its
    instances moved); `ended` once it is Finished, Failed or Stopped (the page then stops
    listening)."""
    services = services_of(request)
    async for _ in changes_of(request).job_changes(job_id):
        yield ServerSentEvent(event="changed", raw_data="")
        state = await run_in_threadpool(services.reads.job_state, job_id, viewer.tenant)
        if state is None or state in TERMINAL:
            yield ServerSentEvent(event="ended", raw_data="")
            return


# ---- the instance heat-map ------------------------------------------------------------------


def _grid(services: Services, job: JobRecord, task: str, marker: str, state: State | None,
          tenant: str) -> dict[str, Any]:
    """One page of the task's instances as a heat-map, with its paging links."""
    if not task:
        return {"task": "", "map": "", "next_marker": "", "count": 0, "state": state,
                "marker": marker}
    page = services.reads.list_instances(job.id, task, Window(marker, CELLS_PER_PAGE, state),
                                         tenant)
    cells = [(instance.instance_id, instance.state) for instance in page.items]
    base = f"{PREFIX}/jobs/{job.id}/tasks/{_quoted(task)}/instances/"
    return {"task": task, "next_marker": page.next_marker, "count": len(cells),
            "first": cells[0][0] if cells else None, "last": cells[-1][0] if cells else None,
            "map": drawing.heat_map(cells, lambda number: f"{base}{number}"),
            "state": state, "marker": marker}


@router.get("/jobs/{job_id}/tasks/{task}/instances", response_class=HTMLResponse)
async def instances_page(request: Request, job_id: str, task: str, viewer: ViewerDependency,
                         marker: Annotated[str, Query(max_length=12)] = "",
                         state: Annotated[str, Query(max_length=20)] = "",
                         go: Annotated[str, Query(max_length=12)] = "") -> Response:
    """A page of the task's heat-map; `go=N` jumps to the page that starts at instance N."""
    services = services_of(request)
    job = await run_in_threadpool(services.reads.job, job_id, viewer.tenant)
    record = None if job is None else await run_in_threadpool(
        one_task, services, job_id, task, viewer.tenant)
    if job is None or record is None:
        raise NotFound(f"task {task} of job {job_id} does not exist")
    start = go.strip() or marker
    if start and instance_number(start) is None:
        raise BadFilter(f"instance {start!r} is not an instance id (0, 1, 2, …)")
    grid = await run_in_threadpool(_grid, services, job, task, start, state_filter(state),
                                   viewer.tenant)
    context = {"job": job, "task": record, "grid": grid}
    block = "grid" if wants_fragment(request) else None
    return render(request, "instances.html", context, block=block)


# ---- actions --------------------------------------------------------------------------------


def _back(job_id: str, note: str) -> Response:
    return RedirectResponse(f"{PREFIX}/jobs/{job_id}?done={note}", status_code=303)


@router.post("/jobs/{job_id}/stop")
async def stop(job_id: str, request: Request, viewer: FormViewer) -> Response:
    await run_in_threadpool(services_of(request).engine.stop, job_id, viewer.tenant)
    return _back(job_id, "stopped")


@router.post("/jobs/{job_id}/start")
async def start(job_id: str, request: Request, viewer: FormViewer) -> Response:
    await run_in_threadpool(services_of(request).engine.restart, job_id, viewer.tenant)
    return _back(job_id, "started")


@router.post("/jobs/{job_id}/priority")
async def priority(job_id: str, request: Request, viewer: FormViewer,
                   value: Annotated[int, Form(ge=0, le=1000, alias="priority")]) -> Response:
    await run_in_threadpool(services_of(request).engine.change_priority, job_id, value,
                            viewer.tenant)
    return _back(job_id, "priority")


@router.get("/jobs/{job_id}/delete", response_class=HTMLResponse)
async def delete_form(job_id: str, request: Request, viewer: ViewerDependency) -> Response:
    services = services_of(request)
    job = await run_in_threadpool(services.reads.job, job_id, viewer.tenant)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return confirmation(
        request, f"Delete job {job.name}?", f"{job.id} and the record of its tasks and "
        "instances go for good; its logs and outputs stay in the object store.",
        f"{PREFIX}/jobs/{job.id}", "job")


@router.post("/jobs/{job_id}/delete")
async def delete(job_id: str, request: Request, viewer: FormViewer) -> Response:
    await run_in_threadpool(services_of(request).engine.delete, job_id, viewer.tenant)
    return RedirectResponse(f"{PREFIX}/jobs?deleted={job_id}", status_code=303)
