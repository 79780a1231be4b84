"""The instance types this installation offers (`GET /quotas`, `GET /available`).

A BatchCompute `InstanceType` names a resource shape. batchyard runs every instance as a
local process (or a Ray task), so a type here is a promise about the shape an instance may
use, not a VM flavour; the names follow Alibaba's so existing job descriptions work unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceType:
    """One named resource shape."""

    name: str
    cpu_cores: int
    memory_gib: int


INSTANCE_TYPES: tuple[InstanceType, ...] = (
    InstanceType("ecs.sn1.small", 1, 2),
    InstanceType("ecs.sn1.medium", 2, 4),
    InstanceType("ecs.sn1.large", 4, 8),
    InstanceType("ecs.sn1.xlarge", 8, 16),
    InstanceType("ecs.sn2.medium", 2, 8),
    InstanceType("ecs.sn2.large", 4, 16),
    InstanceType("ecs.sn2.xlarge", 8, 32),
)

RESOURCE_TYPES: tuple[str, ...] = ("OnDemand",)
"""Spot and PrePaid are accepted in descriptions but run like OnDemand: none is offered."""

SYSTEM_DISK_TYPES: tuple[str, ...] = ("cloud_efficiency",)
DATA_DISK_TYPES: tuple[str, ...] = ("cloud_efficiency",)


def instance_type(name: str) -> InstanceType | None:
    """The instance type called `name`, or None when this installation has none by that name."""
    return next((shape for shape in INSTANCE_TYPES if shape.name == name), None)
