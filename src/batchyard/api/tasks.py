"""`/jobs/{id}/tasks` and `/jobs/{id}/tasks/{task}/instances`: status of a job's parts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from batchyard.adapters import listing
from batchyard.api.paging import ListQuery
from batchyard.api.representation import instance_view, page_view, task_view
from batchyard.api.services import CallerDependency, Services, ServicesDependency
from batchyard.errors import NotFound

router = APIRouter(tags=["tasks"])


def _require_job(services: Services, job_id: str, tenant: str) -> None:
    if not listing.owns_job(services.database, job_id, tenant):
        raise NotFound(f"job {job_id} does not exist")


def _require_task(services: Services, job_id: str, task: str, tenant: str) -> None:
    _require_job(services, job_id, tenant)
    if not listing.has_task(services.database, job_id, task):
        raise NotFound(f"task {task} of job {job_id} does not exist")


@router.get("/jobs/{job_id}/tasks")
def list_tasks(job_id: str, query: Annotated[ListQuery, Query()], caller: CallerDependency,
               services: ServicesDependency) -> dict[str, Any]:
    """The job's tasks by name; `ClusterId` keeps those that run on that cluster."""
    _require_job(services, job_id, caller.tenant)
    names = None
    if query.ClusterId:
        description = services.engine.job(job_id, caller.tenant).description
        names = {name for name, task in description["DAG"]["Tasks"].items()
                 if task.get("ClusterId") == query.ClusterId}
    page = listing.list_tasks(services.database, job_id, query.window(), names)
    return page_view(page, task_view)


@router.get("/jobs/{job_id}/tasks/{task}")
def get_task(job_id: str, task: str, caller: CallerDependency,
             services: ServicesDependency) -> dict[str, Any]:
    for record in services.engine.tasks(job_id, caller.tenant):
        if record.name == task:
            return task_view(record)
    raise NotFound(f"task {task} of job {job_id} does not exist")


@router.get("/jobs/{job_id}/tasks/{task}/instances")
def list_instances(job_id: str, task: str, query: Annotated[ListQuery, Query()],
                   caller: CallerDependency, services: ServicesDependency) -> dict[str, Any]:
    """The task's instances by id; `Marker` is an instance id."""
    _require_task(services, job_id, task, caller.tenant)
    page = listing.list_instances(services.database, job_id, task, query.window())
    return page_view(page, instance_view)


@router.get("/jobs/{job_id}/tasks/{task}/instances/{instance_id}")
def get_instance(job_id: str, task: str, instance_id: str, caller: CallerDependency,
                 services: ServicesDependency) -> dict[str, Any]:
    _require_task(services, job_id, task, caller.tenant)
    number = listing.instance_number(instance_id)
    record = None
    if number is not None:
        record = listing.instance(services.database, job_id, task, number)
    if record is None:
        raise NotFound(f"instance {instance_id} of task {task} of job {job_id} does not exist")
    return instance_view(record)
