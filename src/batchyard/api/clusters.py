"""`/clusters` (reference §7, §9.5): create (with IdempotentToken), list, get, change (a
partial merge: every SDK helper's body), delete; and the VMs of each group ("cluster
instances"): list, get, delete, recreate. Another tenant's cluster is 404 everywhere."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict
from starlette.concurrency import run_in_threadpool

from batchyard.api.authentication import Caller
from batchyard.api.bodies import json_object
from batchyard.api.cluster_documents import cluster_view, vm_view
from batchyard.api.jobs import body_digest
from batchyard.api.paging import DEFAULT_ITEM_COUNT, CreateQuery
from batchyard.api.paging import _item_count as item_count
from batchyard.api.services import CallerDependency, Services, ServicesDependency
from batchyard.domain.clusters import (
    ClusterChange,
    ClusterDescription,
    parse_cluster,
    parse_cluster_change,
)
from batchyard.ports.store import IdempotencyToken

router = APIRouter(tags=["clusters"])
TOKEN_KIND = "clusters"
"""The kind of a cluster's IdempotentToken: a token is scoped per tenant and kind."""


class PageQuery(BaseModel):
    """`Marker` (an id, inclusive) and `MaxItemCount` (default 50, at most 100)."""

    model_config = ConfigDict(extra="ignore")

    Marker: str = ""
    MaxItemCount: Annotated[int, BeforeValidator(item_count)] = DEFAULT_ITEM_COUNT


def _json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "description": description,
                            "content": {"application/json": {"schema": schema}}}}


CLUSTER_BODY = _json_body(ClusterDescription.model_json_schema(),
                          "A BatchCompute cluster description, as the official SDK sends it")
CHANGE_BODY = _json_body(ClusterChange.model_json_schema(),
                         "The fields to change (a partial merge; Groups may be {})")


@router.post("/clusters", status_code=201, openapi_extra=CLUSTER_BODY)
async def create_cluster(request: Request, query: Annotated[CreateQuery, Query()],
                         caller: CallerDependency,
                         services: ServicesDependency) -> dict[str, Any]:
    """Create a cluster; 201 `{"Id": "cls-…"}`. Its groups get their VMs (Pending at first)."""
    body = await json_object(request)
    return await run_in_threadpool(_create, services, caller, body, query.IdempotentToken)


def _create(services: Services, caller: Caller, body: dict[str, Any], token: str
            ) -> dict[str, Any]:
    """Parse and create (in a thread: a body may be a megabyte)."""
    description = parse_cluster(body)
    stamp = IdempotencyToken(TOKEN_KIND, token, body_digest(body)) if token else None
    return {"Id": services.engine.clusters.create(description, caller.tenant, stamp)}


@router.get("/clusters")
def list_clusters(query: Annotated[PageQuery, Query()], caller: CallerDependency,
                  services: ServicesDependency) -> dict[str, Any]:
    """The caller's clusters, oldest first."""
    page = services.engine.clusters.list(caller.tenant, query.Marker, query.MaxItemCount)
    return {"NextMarker": page.next_marker, "Items": [cluster_view(s) for s in page.items]}


@router.get("/clusters/{cluster_id}")
def get_cluster(cluster_id: str, caller: CallerDependency,
                services: ServicesDependency) -> dict[str, Any]:
    return cluster_view(services.engine.clusters.get(cluster_id, caller.tenant))


@router.put("/clusters/{cluster_id}", openapi_extra=CHANGE_BODY)
async def change_cluster(cluster_id: str, request: Request, caller: CallerDependency,
                         services: ServicesDependency) -> dict[str, Any]:
    """Merge the fields sent into the cluster (ImageId, UserData, EnvVars, InputMapping,
    Configs.Mounts; per group DesiredVMCount, InstanceType, SpotStrategy, SpotPriceLimit);
    resizing is asynchronous: ActualVMCount follows DesiredVMCount."""
    body = await json_object(request)
    await run_in_threadpool(_change, services, caller, cluster_id, body)
    return {}


def _change(services: Services, caller: Caller, cluster_id: str, body: dict[str, Any]) -> None:
    services.engine.clusters.change(cluster_id, parse_cluster_change(body), caller.tenant)


@router.delete("/clusters/{cluster_id}", status_code=204)
def delete_cluster(cluster_id: str, caller: CallerDependency,
                   services: ServicesDependency) -> Response:
    """Refused (409) while active jobs use it; otherwise its VMs drain and go, then it."""
    services.engine.clusters.delete(cluster_id, caller.tenant)
    return Response(status_code=204)


INSTANCES = "/clusters/{cluster_id}/groups/{group}/instances"


@router.get(INSTANCES)
def list_cluster_instances(cluster_id: str, group: str,
                           query: Annotated[PageQuery, Query()], caller: CallerDependency,
                           services: ServicesDependency) -> dict[str, Any]:
    """The group's VMs, oldest first."""
    page = services.engine.clusters.vms(cluster_id, group, caller.tenant, query.Marker,
                                        query.MaxItemCount)
    return {"NextMarker": page.next_marker, "Items": [vm_view(vm) for vm in page.items]}


@router.get(INSTANCES + "/{vm_id}")
def get_cluster_instance(cluster_id: str, group: str, vm_id: str, caller: CallerDependency,
                         services: ServicesDependency) -> dict[str, Any]:
    return vm_view(services.engine.clusters.vm(cluster_id, group, vm_id, caller.tenant))


@router.delete(INSTANCES + "/{vm_id}", status_code=204)
def delete_cluster_instance(cluster_id: str, group: str, vm_id: str, caller: CallerDependency,
                            services: ServicesDependency) -> Response:
    """Remove the VM (drained first); the group's DesiredVMCount goes down by one."""
    services.engine.clusters.delete_vm(cluster_id, group, vm_id, caller.tenant)
    return Response(status_code=204)


@router.post(INSTANCES + "/{vm_id}/recreate", status_code=201)
def recreate_cluster_instance(cluster_id: str, group: str, vm_id: str,
                              caller: CallerDependency,
                              services: ServicesDependency) -> dict[str, Any]:
    """Replace the VM: it is drained and goes, a new Pending one takes its place."""
    services.engine.clusters.recreate_vm(cluster_id, group, vm_id, caller.tenant)
    return {}
