"""`/quotas` and `/available`: the instance types and resource kinds this installation offers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from batchyard.api.services import CallerDependency
from batchyard.catalogue import (
    DATA_DISK_TYPES,
    INSTANCE_TYPES,
    RESOURCE_TYPES,
    SYSTEM_DISK_TYPES,
    InstanceType,
)

router = APIRouter(tags=["quotas"])


@router.get("/quotas")
def get_quotas(caller: CallerDependency) -> dict[str, Any]:
    return {
        "AvailableClusterResourceType": list(RESOURCE_TYPES),
        "AvailableClusterInstanceType": [shape.name for shape in INSTANCE_TYPES],
        "AvailableSpotInstanceType": [],
        "AvailableClusterInstanceSystemDiskType": list(SYSTEM_DISK_TYPES),
        "AvailableClusterInstanceDataDiskType": list(DATA_DISK_TYPES),
    }


@router.get("/available")
def get_available(caller: CallerDependency) -> dict[str, Any]:
    return {
        "AvailableClusterInstanceType": [_shape(shape) for shape in INSTANCE_TYPES],
        "AvailableSpotInstanceType": [],
        "AvailablePrepaidInstanceType": [],
        "AvailableResourceType": list(RESOURCE_TYPES),
        "AvailableSystemDiskType": list(SYSTEM_DISK_TYPES),
        "AvailableDataDiskType": list(DATA_DISK_TYPES),
    }


def _shape(shape: InstanceType) -> dict[str, Any]:
    return {"InstanceType": shape.name, "CpuCore": shape.cpu_cores,
            "MemorySize": shape.memory_gib, "Network": {"Classic": False, "Vpc": True}}
