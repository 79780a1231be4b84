"""`/jobs/{id}/tasks` and `/jobs/{id}/tasks/{task}/instances`: status of a job's parts."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Query

from batchyard.api.paging import ListQuery
from batchyard.api.representation import instance_view, page_view, task_view
from batchyard.api.services import CallerDependency, Services, ServicesDependency
from batchyard.errors import NotFound
from batchyard.ports.reads import Window, instance_number

router = APIRouter(tags=["tasks"])


def _require_job(services: Services, job_id: str, tenant: str) -> None:
    if not services.reads.owns_job(job_id, tenant):
        raise NotFound(f"job {job_id} does not exist")


def _require_task(services: Services, job_id: str, task: str, tenant: str) -> None:
    _require_job(services, job_id, tenant)
    if not services.reads.has_task(job_id, task, tenant):
        raise NotFound(f"task {task} of job {job_id} does not exist")


@router.get("/jobs/{job_id}/tasks")
def list_tasks(job_id: str, query: Annotated[ListQuery, Query()], caller: CallerDependency,
               services: ServicesDependency) -> dict[str, Any]:
    """The job's tasks by name; `ClusterId` keeps those that run on that cluster."""
    _require_job(services, job_id, caller.tenant)
    names = None
    if query.ClusterId:
        job = services.reads.job(job_id, caller.tenant)
        tasks = job.description["DAG"]["Tasks"] if job is not None else {}
        names = {name for name, task in tasks.items()
                 if task.get("ClusterId") == query.ClusterId}
    page = services.reads.list_tasks(job_id, query.window(), names, caller.tenant)
    items = services.engine.explain_tasks(job_id, page.items)
    return page_view(replace(page, items=items), task_view)


@router.get("/jobs/{job_id}/tasks/{task}")
def get_task(job_id: str, task: str, caller: CallerDependency,
             services: ServicesDependency) -> dict[str, Any]:
    """One task: a page of one, so its cost does not grow with the job's other tasks."""
    _require_job(services, job_id, caller.tenant)
    page = services.reads.list_tasks(job_id, Window(task, 1), {task}, caller.tenant)
    if not page.items:
        raise NotFound(f"task {task} of job {job_id} does not exist")
    return task_view(services.engine.explain_tasks(job_id, page.items)[0])


@router.get("/jobs/{job_id}/tasks/{task}/instances")
def list_instances(job_id: str, task: str, query: Annotated[ListQuery, Query()],
                   caller: CallerDependency, services: ServicesDependency) -> dict[str, Any]:
    """The task's instances by id; `Marker` is an instance id."""
    _require_task(services, job_id, task, caller.tenant)
    page = services.reads.list_instances(job_id, task, query.window(), caller.tenant)
    items = services.engine.explain_instances(job_id, task, page.items)
    return page_view(replace(page, items=items), instance_view)


@router.get("/jobs/{job_id}/tasks/{task}/instances/{instance_id}")
def get_instance(job_id: str, task: str, instance_id: str, caller: CallerDependency,
                 services: ServicesDependency) -> dict[str, Any]:
    _require_task(services, job_id, task, caller.tenant)
    number = instance_number(instance_id)
    record = None
    if number is not None:
        record = services.reads.instance(job_id, task, number, caller.tenant)
    if record is None:
        raise NotFound(f"instance {instance_id} of task {task} of job {job_id} does not exist")
    return instance_view(services.engine.explain_instances(job_id, task, [record])[0])
