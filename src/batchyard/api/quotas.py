"""`/quotas` and `/available`: the instance types and resource kinds this installation offers
(the engine's catalogue: the built-in types as configured, docs/instance-types.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from batchyard.api.services import CallerDependency, ServicesDependency
from batchyard.domain.instance_types import DATA_DISK_TYPES, RESOURCE_TYPES, SYSTEM_DISK_TYPES

router = APIRouter(tags=["quotas"])


@router.get("/quotas")
def get_quotas(caller: CallerDependency, services: ServicesDependency) -> dict[str, Any]:
    return {
        "AvailableClusterResourceType": list(RESOURCE_TYPES),
        "AvailableClusterInstanceType": list(services.engine.catalogue.names),
        "AvailableSpotInstanceType": [],
        "AvailableClusterInstanceSystemDiskType": list(SYSTEM_DISK_TYPES),
        "AvailableClusterInstanceDataDiskType": list(DATA_DISK_TYPES),
    }


@router.get("/available")
def get_available(caller: CallerDependency, services: ServicesDependency) -> dict[str, Any]:
    catalogue = services.engine.catalogue
    return {
        "AvailableClusterInstanceType": [shape.available(shape == catalogue.default)
                                         for shape in catalogue],
        "AvailableSpotInstanceType": [],
        "AvailablePrepaidInstanceType": [],
        "AvailableResourceType": list(RESOURCE_TYPES),
        "AvailableSystemDiskType": list(SYSTEM_DISK_TYPES),
        "AvailableDataDiskType": list(DATA_DISK_TYPES),
    }
