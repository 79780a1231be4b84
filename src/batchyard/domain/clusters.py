"""BatchCompute clusters (reference §7): the create body, the partial PUT, the states of
clusters and of their VMs, and which VMs a group sheds when it shrinks.

`parse_cluster(raw)` accepts the JSON a user or the official SDK sends for `POST /clusters`,
fills each group's InstanceType from the cluster's, keeps unknown fields (they are echoed
back) and reports every problem at once with its JSON path and §7.3's error code.
`parse_cluster_change(raw)` reads the body of `PUT /clusters/{id}` (every SDK helper sends a
partial one) and `merge(description, change)` applies it. Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterator, Sequence
from enum import StrEnum
from typing import Any, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from batchyard.domain.events import CLUSTER_EVENTS, notification_problems
from batchyard.domain.instance_types import (
    Catalogue,
    Feasibility,
    always_feasible,
    type_problem,
)
from batchyard.domain.spec import (
    ENV_NAME,
    FORBIDDEN_CHARACTERS,
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    EnvVarMap,
)
from batchyard.domain.states import ForbiddenTransition
from batchyard.errors import ABSENT, BatchyardError, Problem, SpecError

CLUSTER_NAME = re.compile(r"^[A-Za-z_-][A-Za-z0-9_-]{0,63}\Z")
"""§2: letters, digits, '-' and '_', not starting with a digit, 1-64 characters."""
GROUP_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
"""1-64 letters, digits, '-' or '_': a group name goes into URLs unencoded (§2)."""
MAX_DESIRED_VM_COUNT = 65536
MAX_OPERATION_LOGS = 100
"""OperationLogs kept per cluster (the newest)."""
CHANGEABLE = ("ImageId", "UserData", "EnvVars", "InputMapping", "Configs.Mounts", "Groups")
CHANGEABLE_IN_GROUP = ("DesiredVMCount", "InstanceType", "SpotStrategy", "SpotPriceLimit")


# ---- states --------------------------------------------------------------------------------

class ClusterState(StrEnum):
    """Lifecycle state of a cluster; a deleted cluster's row is gone (reported `Deleted`)."""

    ACTIVE = "Active"
    DELETING = "Deleting"

    @property
    def meaning(self) -> str:
        return CLUSTER_MEANINGS[self]


CLUSTER_MEANINGS = {
    ClusterState.ACTIVE: "Its groups keep DesiredVMCount VMs each; jobs may run on it.",
    ClusterState.DELETING: ("Deleted by its owner: its VMs are drained and removed, then the "
                            "cluster itself (reads answer InvalidResource.NotFound)."),
}
CLUSTER_TRANSITIONS: dict[ClusterState, frozenset[ClusterState]] = {
    ClusterState.ACTIVE: frozenset({ClusterState.DELETING}),
    ClusterState.DELETING: frozenset(),
}
DELETED = "Deleted"
"""What a cluster whose row was removed is reported as (never stored)."""


class VMState(StrEnum):
    """Lifecycle state of a VM of a cluster group (an agent)."""

    PENDING = "Pending"
    STARTING = "Starting"
    RUNNING = "Running"
    DELETING = "Deleting"
    DELETED = "Deleted"

    @property
    def meaning(self) -> str:
        return VM_MEANINGS[self]


VM_MEANINGS = {
    VMState.PENDING: "Wanted by its group, not placed on a host yet (`reason` says why).",
    VMState.STARTING: "Placed on a host, its agent is starting.",
    VMState.RUNNING: "Its agent is up: it takes one instance at a time.",
    VMState.DELETING: "Leaving: it finishes the instance it runs (drains), then goes.",
    VMState.DELETED: "Gone: its row is removed (never listed).",
}
VM_TRANSITIONS: dict[VMState, frozenset[VMState]] = {
    # Pending -> Starting when placed; -> Deleting when its group shrinks or it is deleted.
    VMState.PENDING: frozenset({VMState.STARTING, VMState.DELETING}),
    # Starting -> Running when its agent is up; -> Pending when it failed to start (placed
    # again); -> Deleting.
    VMState.STARTING: frozenset({VMState.RUNNING, VMState.PENDING, VMState.DELETING}),
    # Running -> Pending when its agent was lost (placed again); -> Deleting.
    VMState.RUNNING: frozenset({VMState.PENDING, VMState.DELETING}),
    VMState.DELETING: frozenset({VMState.DELETED}),
    VMState.DELETED: frozenset(),
}
LIVE_VM_STATES: frozenset[VMState] = frozenset({VMState.PENDING, VMState.STARTING,
                                                 VMState.RUNNING})
"""VMs a group counts towards its DesiredVMCount."""


class ForbiddenMove(ForbiddenTransition):
    """A cluster or VM state write whose current state the tables do not allow (a bug of the
    caller, never a race: a race shows as a compare-and-set that moved nothing)."""

    def __init__(self, kind: str, ids: str, source: str, target: str) -> None:
        BatchyardError.__init__(self, f"{kind} {ids} may not move from {source} to {target}")


class ClusterSpecError(SpecError):
    """A cluster body (create or change) is invalid: every problem with its JSON path."""

    def __init__(self, problems: list[Problem], what: str = "cluster description") -> None:
        super().__init__(problems)
        self.message = self.message.replace("the job description", f"the {what}")
        self.args = (self.message,)


def check_cluster_move(cluster_id: str, source: ClusterState, target: ClusterState) -> None:
    if target not in CLUSTER_TRANSITIONS[source]:
        raise ForbiddenMove("cluster", cluster_id, source.value, target.value)


def check_vm_move(vm_id: str, source: VMState, target: VMState) -> None:
    if target not in VM_TRANSITIONS[source]:
        raise ForbiddenMove("VM", vm_id, source.value, target.value)


def vm_sources(target: VMState) -> frozenset[VMState]:
    """The states a VM may move to `target` from (for compare-and-set)."""
    return frozenset(source for source, targets in VM_TRANSITIONS.items() if target in targets)


# ---- which VMs go when a group shrinks -------------------------------------------------------

class VMView(Protocol):
    """What `surplus` needs of a VM (`ports.clusters.VMRow` has it)."""

    @property
    def id(self) -> str: ...
    @property
    def state(self) -> VMState: ...
    @property
    def created(self) -> float: ...


_SHED_ORDER = {VMState.PENDING: 0, VMState.STARTING: 1, VMState.RUNNING: 2}


def surplus(live: Sequence[VMView], desired: int, busy: Collection[str] = ()) -> list[str]:
    """The ids of the VMs to delete so that `desired` of `live` remain: Pending ones first,
    then Starting, then idle Running ones, then Running ones that run an instance (`busy`),
    newest first within each kind (they drain: see docs/states.md)."""
    excess = len(live) - max(desired, 0)
    if excess <= 0:
        return []
    ranked = sorted(live, key=lambda vm: (_SHED_ORDER.get(vm.state, 0), vm.id in busy,
                                          -vm.created, _reversed(vm.id)))
    return [vm.id for vm in ranked[:excess]]


def _reversed(text: str) -> tuple[int, ...]:
    """A key that sorts ids in descending order (ids sort by creation: newest first)."""
    return tuple(-ord(character) for character in text)


# ---- the create body -----------------------------------------------------------------------

class _Model(BaseModel):
    """Fields are named as on the wire; unknown fields are kept and echoed back."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)


class _Change(BaseModel):
    """Only the fields named here may be sent (anything else cannot be changed)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


Price = StrictFloat | StrictInt


class GroupDescription(_Model):
    DesiredVMCount: StrictInt = Field(ge=0, le=MAX_DESIRED_VM_COUNT)
    InstanceType: StrictStr = ""
    """Filled from the cluster's InstanceType when empty (by `parse_cluster`)."""
    ResourceType: Literal["OnDemand", "Spot"] = "OnDemand"
    SpotStrategy: StrictStr = ""
    SpotPriceLimit: Price = Field(default=0.0, ge=0)
    HostnamePrefix: StrictStr = ""
    ImageId: StrictStr = ""
    Mode: StrictStr = ""


class ClusterDescription(_Model):
    Name: StrictStr
    Description: StrictStr = ""
    ImageId: StrictStr = Field(min_length=1)
    InstanceType: StrictStr = ""
    Groups: dict[StrictStr, GroupDescription]
    UserData: EnvVarMap = Field(default_factory=dict)
    EnvVars: EnvVarMap = Field(default_factory=dict)
    InputMapping: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    Configs: dict[StrictStr, Any] = Field(default_factory=dict)
    Notification: dict[StrictStr, Any] = Field(default_factory=dict)
    Bootstrap: StrictStr = ""
    ScheduleType: Literal["", "LowLatency", "Poll", "Push"] = ""
    PasswordInherit: StrictBool = False
    DependencyIsvService: StrictStr = ""

    def echo(self) -> dict[str, Any]:
        """The description as stored and shown (defaults filled, unknown fields kept)."""
        return self.model_dump(mode="json")

    def instance_type_of(self, group: str) -> str:
        return self.Groups[group].InstanceType or self.InstanceType


def parse_cluster(raw: Any) -> ClusterDescription:
    """Validate a create-cluster body; raise SpecError listing every problem found. Each
    group's empty InstanceType becomes the cluster's."""
    problems = _raw_problems(raw)
    if problems:
        raise ClusterSpecError(problems)
    problems = _group_problems(raw) + _name_problems(raw)
    problems += notification_problems(raw.get("Notification"), CLUSTER_EVENTS, _clip)
    cluster = None
    try:
        cluster = ClusterDescription.model_validate(raw)
    except ValidationError as error:
        problems += [_problem(item) for item in error.errors()]
    if cluster is not None:
        cluster = _with_group_types(cluster)
        problems += _type_problems(cluster) + _environment_problems(cluster.EnvVars)
    if problems:
        raise ClusterSpecError(_unique(problems))
    assert cluster is not None
    return cluster


def _with_group_types(cluster: ClusterDescription) -> ClusterDescription:
    groups = {name: group.model_copy(update={"InstanceType": group.InstanceType
                                             or cluster.InstanceType})
              for name, group in cluster.Groups.items()}
    return cluster.model_copy(update={"Groups": groups})


def _raw_problems(raw: Any) -> list[Problem]:
    """A body that is no object, nests too deep, holds numbers no database keeps or text
    with NUL characters (checked first and alone: validation recurses)."""
    if not isinstance(raw, dict):
        return [Problem("InvalidHttpBody", "$", _clip(raw), "must be a JSON object")]
    for path, value, depth in _walk(raw):
        if depth > MAX_DEPTH:
            return [Problem("InvalidJsonFormat", "$", f"more than {MAX_DEPTH} levels",
                            f"objects and arrays may nest at most {MAX_DEPTH} levels deep")]
        rule = _value_rule(value)
        if rule:
            return [Problem(_code_for(path.split(".")), path or "$", _clip(value), rule)]
    return []


def _walk(raw: Any) -> Iterator[tuple[str, Any, int]]:
    """Every value and key of `raw` with its path and depth, without recursion."""
    stack: list[tuple[str, Any, int]] = [("", raw, 1)]
    while stack:
        path, value, depth = stack.pop()
        yield path, value, depth
        if isinstance(value, dict):
            for key, item in value.items():
                inner = f"{path}.{key}" if path else str(key)
                yield inner, key, depth
                stack.append((inner, item, depth + 1))
        elif isinstance(value, list):
            stack.extend((f"{path}.{index}", item, depth + 1)
                         for index, item in enumerate(value))


def _value_rule(value: Any) -> str:
    if isinstance(value, bool):
        return ""
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        return f"integers must fit in a signed 64-bit integer ({INT64_MIN} to {INT64_MAX})"
    if isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite (NaN and Infinity are not JSON numbers)"
    if isinstance(value, str) and FORBIDDEN_CHARACTERS.search(value):
        return "text must not contain NUL characters or unpaired UTF-16 surrogates"
    return ""


def _group_problems(raw: dict[str, Any]) -> list[Problem]:
    groups = raw.get("Groups", ABSENT)
    if groups is ABSENT:
        return [Problem("MissingGroups", "Groups", ABSENT,
                        "is required: an object naming at least one group, e.g. "
                        '{"group1": {"DesiredVMCount": 2}}')]
    if not isinstance(groups, dict) or not groups:
        return [Problem("InvalidGroups", "Groups", _clip(groups),
                        "must be an object naming at least one group, e.g. "
                        '{"group1": {"DesiredVMCount": 2}}')]
    return [problem for name, group in groups.items()
            for problem in _one_group_problems(name, group)]


def _one_group_problems(name: str, group: Any) -> list[Problem]:
    path = f"Groups.{name}"
    if not GROUP_NAME.match(name):
        return [Problem(f"InvalidGroups.{_clip_name(name)}", path, _clip(name),
                        "group names are 1-64 letters, digits, '_' or '-'")]
    if not isinstance(group, dict):
        return [Problem(f"InvalidGroups.{name}", path, _clip(group),
                        'must be an object such as {"DesiredVMCount": 2}')]
    return []


def _name_problems(raw: dict[str, Any]) -> list[Problem]:
    name = raw.get("Name", ABSENT)
    if isinstance(name, str) and not CLUSTER_NAME.match(name):
        return [Problem("InvalidName", "Name", _clip(name),
                        "must be 1-64 letters, digits, '_' or '-', not starting with a digit")]
    return []


def _type_problems(cluster: ClusterDescription) -> list[Problem]:
    return [Problem("MissingInstanceType", f"Groups.{name}.InstanceType", ABSENT,
                    "is required when the cluster has no InstanceType")
            for name, group in cluster.Groups.items() if not group.InstanceType]


def _environment_problems(variables: dict[str, str]) -> list[Problem]:
    return [Problem("InvalidEnvVars", f"EnvVars.{name}", _clip(name),
                    "names are letters, digits, '-', '.' or '_', not starting with a digit")
            for name in variables if not ENV_NAME.match(name)]


def check_instance_types(description: ClusterDescription, catalogue: Catalogue,
                         feasible: Feasibility = always_feasible) -> list[Problem]:
    """A problem for each group whose InstanceType the catalogue does not have, or no
    machine here can ever supply (the one place where cluster types are checked: the
    caller passes its catalogue and machine), as a job's AutoCluster types are."""
    found = []
    if description.InstanceType:
        found.append(type_problem("InstanceType", description.InstanceType, catalogue,
                                  feasible))
    for name, group in description.Groups.items():
        if group.InstanceType != description.InstanceType:
            found.append(type_problem(f"Groups.{name}.InstanceType", group.InstanceType,
                                      catalogue, feasible))
    return [problem for problem in found if problem is not None]


# ---- the partial PUT (§7.3) ------------------------------------------------------------------

class GroupChange(_Change):
    DesiredVMCount: StrictInt | None = Field(default=None, ge=0, le=MAX_DESIRED_VM_COUNT)
    InstanceType: StrictStr | None = None
    SpotStrategy: StrictStr | None = None
    SpotPriceLimit: Price | None = Field(default=None, ge=0)


class ConfigsChange(_Change):
    Mounts: dict[StrictStr, Any] | None = None


class ClusterChange(_Change):
    """What a PUT changes; a field left None (or an empty ImageId, which `modify_cluster`
    sends for a field it was never given) stays as it is."""

    ImageId: StrictStr | None = None
    UserData: EnvVarMap | None = None
    EnvVars: EnvVarMap | None = None
    InputMapping: dict[StrictStr, StrictStr] | None = None
    Configs: ConfigsChange | None = None
    Groups: dict[StrictStr, GroupChange] = Field(default_factory=dict)


def parse_cluster_change(raw: Any) -> ClusterChange:
    """Validate the body of `PUT /clusters/{id}`; raise SpecError listing every problem.
    Groups may be absent or `{}` (the SDK's helpers send one or the other)."""
    problems = _raw_problems(raw)
    if problems:
        raise ClusterSpecError(problems, "cluster change")
    groups = raw.get("Groups", {})
    if not isinstance(groups, dict):
        raise ClusterSpecError([Problem("InvalidGroups", "Groups", _clip(groups),
                                        "must be an object of group name -> changes")])
    problems = [problem for name, group in groups.items()
                for problem in _one_group_problems(name, group)]
    change = None
    try:
        change = ClusterChange.model_validate(raw)
    except ValidationError as error:
        problems += [_problem(item) for item in error.errors()]
    if change is not None:
        problems += _environment_problems(change.EnvVars or {})
    if problems:
        raise ClusterSpecError(_unique(problems), "cluster change")
    assert change is not None
    return change


def merge(description: ClusterDescription, change: ClusterChange) -> ClusterDescription:
    """`description` with `change` applied; SpecError (`InvalidGroups.<name>`) for a group
    the cluster does not have."""
    missing = [Problem(f"InvalidGroups.{name}", f"Groups.{name}", name,
                       f"the cluster has no such group (it has {', '.join(description.Groups)})")
               for name in change.Groups if name not in description.Groups]
    if missing:
        raise ClusterSpecError(missing, "cluster change")
    updates: dict[str, Any] = {name: getattr(change, name)
                               for name in ("UserData", "EnvVars", "InputMapping")
                               if getattr(change, name) is not None}
    if change.ImageId:
        updates["ImageId"] = change.ImageId
    if change.Configs is not None and change.Configs.Mounts is not None:
        updates["Configs"] = {**description.Configs, "Mounts": change.Configs.Mounts}
    if change.Groups:
        updates["Groups"] = {
            name: group.model_copy(update=_group_update(change.Groups.get(name)))
            for name, group in description.Groups.items()}
    return description.model_copy(update=updates)


def _group_update(change: GroupChange | None) -> dict[str, Any]:
    return {} if change is None else change.model_dump(exclude_none=True)


def change_summary(change: ClusterChange) -> str:
    """What a change sets besides its groups, for the OperationLogs (`ImageId img-x,
    EnvVars`), or "" when it sets nothing else."""
    parts = [f"ImageId {change.ImageId}"] if change.ImageId else []
    parts += [name for name in ("UserData", "EnvVars", "InputMapping")
              if getattr(change, name) is not None]
    if change.Configs is not None and change.Configs.Mounts is not None:
        parts.append("Configs.Mounts")
    return ", ".join(parts)


# ---- problems ------------------------------------------------------------------------------

def _problem(item: Any) -> Problem:
    """Missing<Field> for an absent field; InvalidGroups.<name> for a group that is not an
    object; Invalid<Field> (the schema field holding the value) otherwise."""
    location = [str(part) for part in item["loc"]]
    path = ".".join(location) or "$"
    if item["type"] == "missing":
        return Problem(f"Missing{location[-1]}", path, ABSENT, "is required")
    if item["type"] == "extra_forbidden":
        return Problem(_code_for(location[:-1]) if location[0] == "Groups" else
                       "InvalidParameter", path, _clip(item.get("input")), _unchangeable(location))
    return Problem(_code_for(location), path, _clip(item.get("input")), _rule_text(item))


def _unchangeable(location: list[str]) -> str:
    if location[0] == "Groups":
        return f"cannot be changed; a group changes only {', '.join(CHANGEABLE_IN_GROUP)}"
    return (f"cannot be changed; PUT /clusters/{{id}} changes only {', '.join(CHANGEABLE)}"
            f" (and per group {', '.join(CHANGEABLE_IN_GROUP)})")


def _code_for(location: Sequence[str]) -> str:
    """`InvalidGroups.<name>` for a group itself, `Invalid<Field>` for a group's field,
    `Invalid<Field>` for the top-level field holding anything deeper."""
    if not location or not location[0]:
        return "InvalidParameter"
    if location[0] == "Groups" and len(location) == 2:
        return f"InvalidGroups.{_clip_name(location[1])}"
    if location[0] == "Groups" and len(location) > 2:
        return f"Invalid{location[2]}"
    return f"Invalid{location[0]}"


def _rule_text(item: Any) -> str:
    message = str(item["msg"])
    for old, new in {"Input should be": "must be", "String should have": "must have"}.items():
        message = message.replace(old, new)
    return message


def _clip(value: Any) -> Any:
    try:
        text = repr(value)
    except ValueError:
        return "(a number too long to show)"
    return value if len(text) <= 200 else text[:200] + "…"


def _clip_name(name: str) -> str:
    return FORBIDDEN_CHARACTERS.sub("?", name[:64])


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    result = []
    for problem in problems:
        if (problem.code, problem.path) not in seen:
            seen.add((problem.code, problem.path))
            result.append(problem)
    return result
