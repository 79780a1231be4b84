"""The instance types this installation offers: now `batchyard.domain.instance_types`.

A thin re-export kept while other modules move over (the lead removes it): the built-in
catalogue, without configuration. Code that knows the settings uses `Settings.catalogue()`;
the engine's is `Engine.catalogue`.
"""

from __future__ import annotations

from batchyard.domain.instance_types import (
    DATA_DISK_TYPES,
    DEFAULT_CATALOGUE,
    RESOURCE_TYPES,
    SYSTEM_DISK_TYPES,
    InstanceType,
)

__all__ = ["DATA_DISK_TYPES", "INSTANCE_TYPES", "RESOURCE_TYPES", "SYSTEM_DISK_TYPES",
           "InstanceType", "instance_type"]

INSTANCE_TYPES: tuple[InstanceType, ...] = tuple(DEFAULT_CATALOGUE)


def instance_type(name: str) -> InstanceType | None:
    """The built-in instance type called `name`, or None when there is none by that name."""
    return DEFAULT_CATALOGUE.get(name)
