"""Clusters and their VMs as BatchCompute REST JSON (reference §7.2, §7.4, §9.9): numbers stay
numbers, objects are never null, OperationLogs is an array, times are
`2016-11-01T15:25:02.837728Z`. The API answers with these and `batchyard clusters --json`
prints them. Imports neither sqlalchemy nor FastAPI.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from batchyard.documents import owner_id, time_text
from batchyard.domain.clusters import GroupDescription, VMState
from batchyard.orchestrator.clusters import ClusterStatus
from batchyard.ports.clusters import VMRow

INPUT_MAPPING_CONFIG = {"Locale": "GBK", "Lock": False}
"""The InputMappingConfig shown when the description has none (the job default, §4.2)."""


def moment(seconds: float) -> str:
    return time_text(datetime.fromtimestamp(seconds, UTC))


def cluster_view(status: ClusterStatus) -> dict[str, Any]:
    """`GET /clusters/{id}` and each item of `GET /clusters`."""
    row, description = status.row, status.row.description
    extra = description.model_extra or {}
    return {
        "Id": row.id, "Name": row.name, "Owner": row.tenant, "OwnerId": owner_id(row.tenant),
        "Description": description.Description, "CreationTime": moment(row.created),
        "State": row.state.value, "InstanceType": description.InstanceType,
        "ImageId": description.ImageId, "UserData": dict(description.UserData),
        "EnvVars": dict(description.EnvVars), "InputMapping": dict(description.InputMapping),
        "InputMappingConfig": _object(extra.get("InputMappingConfig"), INPUT_MAPPING_CONFIG),
        "Notification": dict(description.Notification), "Configs": dict(description.Configs),
        "WriteSupport": extra.get("WriteSupport") is True, "Bootstrap": description.Bootstrap,
        "SecurityGroup": _text(extra.get("SecurityGroup")),
        "ScheduleType": description.ScheduleType,
        "Groups": {name: group_view(status, name, group)
                   for name, group in description.Groups.items()},
        "OperationLogs": list(row.operation_logs),
        "Metrics": metrics_view(status),
    }


def group_view(status: ClusterStatus, name: str, group: GroupDescription) -> dict[str, Any]:
    extra = group.model_extra or {}
    return {"DesiredVMCount": group.DesiredVMCount, "ActualVMCount": status.actual(name),
            "InstanceType": group.InstanceType, "ResourceType": group.ResourceType,
            "SpotStrategy": group.SpotStrategy, "SpotPriceLimit": group.SpotPriceLimit,
            "Disks": _object(extra.get("Disks"), {})}


def metrics_view(status: ClusterStatus, group: str | None = None) -> dict[str, Any]:
    """The cluster's VMs by state: BatchCompute's four counts (StartingCount counts Pending
    and Starting VMs, StoppingCount the Deleting ones; StoppedCount is always 0: a deleted
    VM is gone) and, beside them, PendingCount (not placed on a host yet)."""
    return {"RunningCount": status.count(VMState.RUNNING, group),
            "StartingCount": status.count(VMState.PENDING, group)
            + status.count(VMState.STARTING, group),
            "StoppingCount": status.count(VMState.DELETING, group),
            "StoppedCount": 0,
            "PendingCount": status.count(VMState.PENDING, group)}


def vm_view(vm: VMRow) -> dict[str, Any]:
    """A VM of a cluster group (§7.4), plus its group, type, host and why it is Pending."""
    return {"Id": vm.id, "Hint": "", "State": vm.state.value, "IpAddress": vm.ip_address,
            "HostName": vm.host_name, "CreationTime": moment(vm.created),
            "ErrorCode": vm.error_code, "ErrorMessage": vm.error_message,
            "InstancePassword": "", "ClusterId": vm.cluster_id, "GroupName": vm.group,
            "InstanceType": vm.instance_type, "Host": vm.host, "Reason": vm.reason,
            "UpdateTime": moment(vm.updated)}


def _object(value: Any, default: dict[str, Any]) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else dict(default)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""

