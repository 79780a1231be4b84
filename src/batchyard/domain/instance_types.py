"""Instance types: the named resource shapes (vCPU, memory, GPUs) a task's VMs have.

A BatchCompute `InstanceType` (`ecs.sn1.medium`) names the VM flavour an AutoCluster rents
or a cluster group keeps. batchyard runs each VM as an agent slot on a machine it has, so a
type is a promise about the shape an instance may use: its memory is the limit an instance
gets under `serve` (where the machine allows), its vCPUs count against the machine's CPUs
in the "strict" capacity mode. The default table is Alibaba's, for the families the
BatchCompute documentation uses (sn1, sn2, n1, n2, e3 and the gn4 GPU family; source: the
ECS "Retired instance types" page, which says they are still sold on the international
site); configuration extends or replaces it (docs/instance-types.md).

Pure: no I/O. The machine's size is measured at the edge and passed in as a `Machine`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from batchyard.domain.fields import closest
from batchyard.domain.spec import MAX_PROBLEMS, JobDescription
from batchyard.errors import ABSENT, Problem

MIB = 1 << 20
GIB = 1 << 30

Capacity = Literal["slots", "strict"]
"""How the local provider counts a machine's VMs. "slots": up to `--slots` VMs whatever
their types (vCPUs are not counted; a type must only fit the machine's memory). "strict":
the vCPUs and memory of the VMs running at once must fit the machine's."""
CAPACITIES: tuple[Capacity, ...] = ("slots", "strict")

UNKNOWN_CODE = "InvalidParameter.InstanceType"
"""The error code of an InstanceType this installation does not have (BatchCompute's
`InvalidParameter.<Field>` form, reference §9.8)."""
INFEASIBLE_CODE = "InfeasibleInstanceType"
"""The error code of an InstanceType no machine here can ever supply (refused at once
rather than left pending forever)."""

LIST_HINT = "`batchyard instance-types` or GET /available lists them all"


@dataclass(frozen=True)
class InstanceType:
    """One named resource shape. `memory_mb` is in MiB (4096 for Alibaba's "4 GiB")."""

    name: str
    vcpu: int
    memory_mb: int
    gpu: int = 0
    family: str = ""

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * MIB

    @property
    def memory_gib(self) -> int | float:
        """Memory in GiB: a whole number when it is one (the SDK reads `MemorySize` as a
        number; `4`, not `4.0`)."""
        gib = self.memory_mb / 1024
        return int(gib) if gib.is_integer() else gib

    def available(self, default: bool = False) -> dict[str, Any]:
        """The type as `GET /available` shows it: BatchCompute's fields (CpuCore, and
        MemorySize in GiB, are numbers), then batchyard's GpuCount, Family and Default
        (extra fields, which the SDK ignores)."""
        return {"InstanceType": self.name, "CpuCore": self.vcpu, "MemorySize": self.memory_gib,
                "Network": {"Classic": False, "Vpc": True}, "GpuCount": self.gpu,
                "Family": self.family, "Default": default}

    def describe(self) -> str:
        """`ecs.sn1.medium (2 vCPU, 4 GiB)`, with GPUs when it has some."""
        gpus = f", {self.gpu} GPU" if self.gpu else ""
        return f"{self.name} ({self.vcpu} vCPU, {_gib(self.memory_bytes)}{gpus})"


def family_of(name: str) -> str:
    """The family a type name shows: `ecs.sn1.medium` -> `sn1`, `ecs.gn4-c4g1.xlarge` ->
    `gn4`; a name of another form is its own family."""
    parts = name.split(".")
    if len(parts) == 3 and parts[0] == "ecs":
        return parts[1].split("-")[0]
    return name


def _table(rows: Iterable[tuple[str, int, int, int]]) -> tuple[InstanceType, ...]:
    """Types from (name, vCPU, memory in GiB, GPUs) rows."""
    return tuple(InstanceType(name, vcpu, gib * 1024, gpu, family_of(name))
                 for name, vcpu, gib, gpu in rows)


DEFAULT_TYPES: tuple[InstanceType, ...] = _table([
    ("ecs.sn1.medium", 2, 4, 0), ("ecs.sn1.large", 4, 8, 0), ("ecs.sn1.xlarge", 8, 16, 0),
    ("ecs.sn1.3xlarge", 16, 32, 0), ("ecs.sn1.7xlarge", 32, 64, 0),
    ("ecs.sn2.medium", 2, 8, 0), ("ecs.sn2.large", 4, 16, 0), ("ecs.sn2.xlarge", 8, 32, 0),
    ("ecs.sn2.3xlarge", 16, 64, 0), ("ecs.sn2.7xlarge", 32, 128, 0),
    ("ecs.sn2.13xlarge", 56, 224, 0),
    ("ecs.n1.tiny", 1, 1, 0), ("ecs.n1.small", 1, 2, 0), ("ecs.n1.medium", 2, 4, 0),
    ("ecs.n1.large", 4, 8, 0), ("ecs.n1.xlarge", 8, 16, 0), ("ecs.n1.3xlarge", 16, 32, 0),
    ("ecs.n1.7xlarge", 32, 64, 0),
    ("ecs.n2.small", 1, 4, 0), ("ecs.n2.medium", 2, 8, 0), ("ecs.n2.large", 4, 16, 0),
    ("ecs.n2.xlarge", 8, 32, 0), ("ecs.n2.3xlarge", 16, 64, 0), ("ecs.n2.7xlarge", 32, 128, 0),
    ("ecs.e3.small", 1, 8, 0), ("ecs.e3.medium", 2, 16, 0), ("ecs.e3.large", 4, 32, 0),
    ("ecs.e3.xlarge", 8, 64, 0), ("ecs.e3.3xlarge", 16, 128, 0),
    ("ecs.gn4-c4g1.xlarge", 4, 30, 1), ("ecs.gn4-c8g1.2xlarge", 8, 30, 1),
    ("ecs.gn4.8xlarge", 32, 48, 1), ("ecs.gn4-c4g1.2xlarge", 8, 60, 2),
    ("ecs.gn4-c8g1.4xlarge", 16, 60, 2), ("ecs.gn4.14xlarge", 56, 96, 2),
])
"""Alibaba's sizes (vCPU, GiB, GPUs) for the sn1, sn2, n1, n2, e3 and gn4 families
(wave2-research §3.1 [E1]). There is no `ecs.sn1.small`: the smallest sn1 is medium."""
FAMILY_ORDER: tuple[str, ...] = ("sn1", "sn2", "n1", "n2", "e3", "gn4")

RESOURCE_TYPES: tuple[str, ...] = ("OnDemand",)
"""Spot and PrePaid are accepted in descriptions but run like OnDemand: none is offered."""
SYSTEM_DISK_TYPES: tuple[str, ...] = ("cloud_efficiency",)
DATA_DISK_TYPES: tuple[str, ...] = ("cloud_efficiency",)

DEFAULT_INSTANCE_TYPE = "ecs.n1.small"
"""The type of a task that names none (no ClusterId and no AutoCluster.InstanceType):
1 vCPU and 2 GiB, which any laptop has — in "strict" mode as many run at once as the
machine has CPUs, the same as the default `--slots`."""


@dataclass(frozen=True)
class Machine:
    """The size of the machine the local provider runs VMs on (measured at the edge)."""

    cpus: int
    memory_bytes: int

    @property
    def sold_memory_bytes(self) -> int:
        """Its memory as sold: the reported memory rounded up to a whole GiB (a machine sold
        as 8 GiB reports about 7.6). What the VMs of strict capacity share."""
        return math.ceil(self.memory_bytes / GIB) * GIB

    def describe(self) -> str:
        """`2 CPUs and 7.6 GiB of memory`."""
        return f"{self.cpus} CPU{'s' if self.cpus != 1 else ''} and " \
               f"{_gib(self.memory_bytes)} of memory"


def shortfall(shape: InstanceType, machine: Machine, capacity: Capacity) -> str:
    """What `machine` lacks to ever run a VM of `shape`: "memory", "vCPUs", or "" (nothing).

    Memory counts in both modes: more than the machine has (its reported memory rounded up
    to a whole GiB, since a machine sold as 8 GiB reports about 7.6) is never there. vCPUs
    count only in "strict" mode; "slots" runs a VM in a slot whatever its vCPUs.
    """
    if shape.memory_bytes > machine.sold_memory_bytes:
        return "memory"
    if capacity == "strict" and shape.vcpu > machine.cpus:
        return "vCPUs"
    return ""


def infeasible(shape: InstanceType, machine: Machine, capacity: Capacity) -> str | None:
    """Why no VM of `shape` can ever run on `machine` (see `shortfall`), or None."""
    lacking = shortfall(shape, machine, capacity)
    if not lacking:
        return None
    counted = "; capacity \"strict\" counts vCPUs, \"slots\" does not" \
        if lacking == "vCPUs" else ""
    return (f"{shape.describe()} needs more {lacking} than this machine has "
            f"({machine.describe()}{counted})")


Feasibility = Callable[[InstanceType], "str | None"]
"""Why a type can never run here, or None (`infeasible` with a machine and capacity bound)."""


def always_feasible(shape: InstanceType) -> str | None:
    """The feasibility of an engine that knows no machine (tests, the rule harness)."""
    return None


class Catalogue:
    """The instance types of this installation, and the default one."""

    def __init__(self, types: Iterable[InstanceType] = DEFAULT_TYPES,
                 default: str = DEFAULT_INSTANCE_TYPE) -> None:
        ordered = sorted(types, key=_order)
        self._types = {shape.name: shape for shape in ordered}
        if len(self._types) != len(ordered):
            raise ValueError("instance type names must be unique")
        if default not in self._types:
            raise ValueError(f"the default instance type {default!r} is not in the catalogue")
        self.default = self._types[default]

    def extended(self, types: Iterable[InstanceType], replace: bool = False,
                 default: str | None = None) -> Catalogue:
        """This catalogue with `types` added (a name already here is redefined), or only
        `types` when `replace`; `default` names the default type (else the current one)."""
        merged = {} if replace else dict(self._types)
        merged.update((shape.name, shape) for shape in types)
        return Catalogue(merged.values(), self.default.name if default is None else default)

    def get(self, name: str) -> InstanceType | None:
        return self._types.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[InstanceType]:
        """The types by family (Alibaba's first, in FAMILY_ORDER), then size."""
        return iter(self._types.values())

    def __len__(self) -> int:
        return len(self._types)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._types)

    def of(self, name: str) -> InstanceType:
        """The type called `name`; the default for "" (a task that names none) and for a
        name this catalogue does not have (a job stored before the configuration changed)."""
        return self._types.get(name, self.default)

    def problem(self, path: str, value: Any) -> Problem | None:
        """None when `value` names a type here; else the problem, naming the valid ones
        briefly: the sizes of the family it seems to mean, or the families, and how to
        list them all."""
        if isinstance(value, str) and value in self._types:
            return None
        if not isinstance(value, str):
            return Problem(UNKNOWN_CODE, path, _clip(value),
                           f"must be the name of an instance type, such as "
                           f"{self.default.name!r} ({LIST_HINT})")
        return Problem(UNKNOWN_CODE, path, _clip(value), self._unknown_rule(value))

    def _unknown_rule(self, name: str) -> str:
        close = closest(name, list(self._types))
        hint = f"did you mean {close}? " if close else ""
        family = [shape.name for shape in self if shape.family == family_of(name)]
        if family:
            listed = f"the {family_of(name)} family has {', '.join(family)}"
        else:
            families = list(dict.fromkeys(shape.family for shape in self))
            listed = f"families: {', '.join(families[:12])}"
        return f"is not an instance type of this installation; {hint}{listed} ({LIST_HINT})"


def _order(shape: InstanceType) -> tuple[int, int, int, int, str]:
    """Alibaba's families in FAMILY_ORDER, each by size; then the others, by size."""
    rank = FAMILY_ORDER.index(shape.family) if shape.family in FAMILY_ORDER else \
        len(FAMILY_ORDER)
    return rank, shape.vcpu, shape.memory_mb, shape.gpu, shape.name


DEFAULT_CATALOGUE = Catalogue()


def check_job_types(spec: JobDescription, catalogue: Catalogue,
                    feasible: Feasibility = always_feasible) -> list[Problem]:
    """The problems with the instance types of a job's tasks: an AutoCluster.InstanceType
    the catalogue does not have (UNKNOWN_CODE), or a type — named, or the default for a
    task that names none — that no machine here can ever supply (INFEASIBLE_CODE).

    Tasks with a ClusterId are not checked here: their VMs are their cluster's. At most
    MAX_PROBLEMS are described (each with the valid names), then one counts the rest.
    """
    problems: list[Problem] = []
    left_out = 0
    for name, task in spec.DAG.Tasks.items():
        if task.ClusterId or _fits(task.AutoCluster, catalogue, feasible):
            continue
        if len(problems) >= MAX_PROBLEMS:
            left_out += 1
            continue
        problems.append(_type_problem(f"DAG.Tasks.{name}.AutoCluster.InstanceType",
                                      task.AutoCluster.get("InstanceType", ABSENT),
                                      catalogue, feasible))
    if left_out:
        problems.append(Problem(UNKNOWN_CODE, "DAG.Tasks", f"{left_out} more tasks",
                                f"only the first {MAX_PROBLEMS} tasks with a wrong instance "
                                "type are listed; fix them to see the rest"))
    return problems


def type_problem(path: str, value: Any, catalogue: Catalogue,
                 feasible: Feasibility = always_feasible) -> Problem | None:
    """The problem with one named InstanceType at `path` (unknown: UNKNOWN_CODE with the
    valid names; no machine here can supply it: INFEASIBLE_CODE), or None."""
    if _fits({"InstanceType": value}, catalogue, feasible):
        return None
    return _type_problem(path, value, catalogue, feasible)


def _fits(auto_cluster: dict[str, Any], catalogue: Catalogue, feasible: Feasibility) -> bool:
    """Whether the type an AutoCluster names (or the default) is known and feasible: cheap,
    for every task; the problem, with its hints, is only made for those that do not fit."""
    value = auto_cluster.get("InstanceType", "")
    if value == "":
        return feasible(catalogue.default) is None
    return isinstance(value, str) and value in catalogue and \
        feasible(catalogue.of(value)) is None


def _type_problem(path: str, value: Any, catalogue: Catalogue,
                  feasible: Feasibility) -> Problem:
    if value in (ABSENT, ""):
        return _default_problem(path, value, catalogue.default, feasible)
    unknown = catalogue.problem(path, value)
    if unknown is not None:
        return unknown
    return Problem(INFEASIBLE_CODE, path, value,
                   _infeasible_rule(feasible(catalogue.of(value)) or "?"))


def _default_problem(path: str, value: Any, default: InstanceType,
                     feasible: Feasibility) -> Problem:
    return Problem(INFEASIBLE_CODE, path, value,
                   f"no InstanceType given, and the default one can never run here: "
                   f"{feasible(default)}; name a smaller type or configure "
                   "default_instance_type")


def _infeasible_rule(reason: str) -> str:
    return f"can never run here: {reason}; choose a smaller type ({LIST_HINT})"


def _gib(size: int) -> str:
    gib = size / GIB
    return f"{gib:.0f} GiB" if gib.is_integer() else f"{gib:.1f} GiB"


def _clip(value: Any) -> Any:
    text = repr(value)
    return value if len(text) <= 100 else text[:100] + "…"
