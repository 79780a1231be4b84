"""The clusters pages: each cluster with its groups (desired, actual and busy VMs), its VMs
with their state and what each runs; resize a group, create a cluster from a JSON body,
delete one. The same operations as `PUT/POST/DELETE /clusters` (`engine.clusters`)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from batchyard.api.services import Services, services_of
from batchyard.console.sessions import FormViewer, ViewerDependency
from batchyard.console.submission import Parsed, parse_text
from batchyard.console.web import PREFIX, ConsoleRoute, confirmation, render, wants_fragment
from batchyard.domain.clusters import (
    MAX_DESIRED_VM_COUNT,
    VMState,
    parse_cluster,
    parse_cluster_change,
)
from batchyard.errors import SpecError

router = APIRouter(route_class=ConsoleRoute)
VMS_PER_GROUP_PAGE = 200
EXAMPLE = {
    "Name": "my-cluster", "Description": "", "ImageId": "img-ubuntu",
    "InstanceType": "ecs.sn1.medium",
    "Groups": {"group1": {"DesiredVMCount": 2, "InstanceType": "ecs.sn1.medium"}},
}


@router.get("/clusters", response_class=HTMLResponse)
async def clusters_page(request: Request, viewer: ViewerDependency,
                        marker: Annotated[str, Query(max_length=64)] = "") -> Response:
    services = services_of(request)
    page = await run_in_threadpool(services.engine.clusters.list, viewer.tenant, marker, 50)
    context = {"clusters": page.items, "next_marker": page.next_marker, "marker": marker,
               "example": json.dumps(EXAMPLE, indent=2), "vm_state": VMState}
    return render(request, "clusters.html", context)


@router.get("/clusters/{cluster_id}", response_class=HTMLResponse)
async def cluster_page(request: Request, cluster_id: str, viewer: ViewerDependency) -> Response:
    services = services_of(request)
    context = await run_in_threadpool(_cluster, services, cluster_id, viewer.tenant)
    block = "live" if wants_fragment(request) else None
    return render(request, "cluster.html", context, block=block)


def _cluster(services: Services, cluster_id: str, tenant: str) -> dict[str, Any]:
    clusters = services.engine.clusters
    status = clusters.get(cluster_id, tenant)
    groups = []
    for name, group in status.row.description.Groups.items():
        vms = clusters.vms(cluster_id, name, tenant, "", VMS_PER_GROUP_PAGE).items
        running = services.engine.running_on([vm.id for vm in vms], tenant)
        busy = Counter(vm.id in running for vm in vms)[True]
        groups.append({"name": name, "desired": group.DesiredVMCount,
                       "actual": status.actual(name), "busy": busy,
                       "instance_type": group.InstanceType, "vms": vms,
                       "running": running, "more": len(vms) >= VMS_PER_GROUP_PAGE,
                       "counts": status.vm_counts.get(name, Counter())})
    return {"cluster": status.row, "status": status, "groups": groups,
            "most": MAX_DESIRED_VM_COUNT, "vm_state": VMState}


@router.post("/clusters/{cluster_id}/groups/{group}/resize")
async def resize(request: Request, cluster_id: str, group: str, viewer: FormViewer,
                 desired: Annotated[int, Form(ge=0, le=MAX_DESIRED_VM_COUNT)]) -> Response:
    change = parse_cluster_change({"Groups": {group: {"DesiredVMCount": desired}}})
    services = services_of(request)
    await run_in_threadpool(services.engine.clusters.change, cluster_id, change, viewer.tenant)
    return RedirectResponse(f"{PREFIX}/clusters/{cluster_id}?resized={desired}",
                            status_code=303)


@router.post("/clusters", response_class=HTMLResponse)
async def create(request: Request, viewer: FormViewer,
                 body: Annotated[str, Form(max_length=1024 * 1024)] = "") -> Response:
    services = services_of(request)
    parsed = parse_text(body)
    if parsed.problems:
        return await _refused(request, viewer.tenant, body, parsed)
    try:
        description = parse_cluster(parsed.value)
        cluster_id = await run_in_threadpool(services.engine.clusters.create, description,
                                             viewer.tenant, None)
    except SpecError as error:
        return await _refused(request, viewer.tenant, body, Parsed(None, error.problems))
    return RedirectResponse(f"{PREFIX}/clusters/{cluster_id}", status_code=303)


async def _refused(request: Request, tenant: str, body: str, parsed: Parsed) -> Response:
    services = services_of(request)
    page = await run_in_threadpool(services.engine.clusters.list, tenant, "", 50)
    return render(request, "clusters.html", {
        "clusters": page.items, "next_marker": page.next_marker, "marker": "",
        "example": body, "problems": parsed.problems, "open_form": True,
        "vm_state": VMState}, status=400)


@router.get("/clusters/{cluster_id}/delete", response_class=HTMLResponse)
async def delete_form(request: Request, cluster_id: str, viewer: ViewerDependency) -> Response:
    status = await run_in_threadpool(services_of(request).engine.clusters.get, cluster_id,
                                     viewer.tenant)
    return confirmation(
        request, f"Delete cluster {status.row.name}?", f"{status.row.id}: its VMs finish "
        "what they run, then go; refused while active jobs use it.",
        f"{PREFIX}/clusters/{status.row.id}", "cluster")


@router.post("/clusters/{cluster_id}/delete")
async def delete(request: Request, cluster_id: str, viewer: FormViewer) -> Response:
    await run_in_threadpool(services_of(request).engine.clusters.delete, cluster_id,
                            viewer.tenant)
    return RedirectResponse(f"{PREFIX}/clusters?deleted={cluster_id}", status_code=303)
