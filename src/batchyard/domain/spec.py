"""BatchCompute job descriptions (reference §3–§4): models, defaults and validation.

`parse_job(raw)` accepts the JSON a user or the official SDK sends, applies the documented
defaults, keeps unknown fields (they are echoed back), and reports *every* problem at once,
each with its JSON path, the offending value, the rule and the BatchCompute error code.
"""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from batchyard.domain.dag import find_cycle, upstreams
from batchyard.errors import ABSENT, Problem, SpecError

JOB_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
TASK_NAME = re.compile(r"^[A-Za-z_-][A-Za-z0-9_-]{0,31}$")
OBJECT_URL = re.compile(r"^(oss|s3)://[a-z0-9][a-z0-9._-]{0,62}(/.*)?$")
MAX_INSTANCE_COUNT = 100_000
MAX_RETRY_COUNT = 100
DEFAULT_TIMEOUT = 86_400  # reference §13 #1


def _stringify_values(value: Any) -> Any:
    """The SDK coerces EnvVars values to strings; so do we (numbers, booleans)."""
    if isinstance(value, dict):
        return {key: item if isinstance(item, str) else _env_text(item)
                for key, item in value.items()}
    return value


def _env_text(item: Any) -> Any:
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int | float):
        return str(item)
    return item  # anything else is reported as a wrong type


EnvVarMap = Annotated[dict[StrictStr, StrictStr], BeforeValidator(_stringify_values)]


class _Model(BaseModel):
    """Fields are named as on the wire; unknown fields are kept and echoed back."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class DockerSpec(_Model):
    Image: StrictStr = ""


class CommandSpec(_Model):
    CommandLine: StrictStr = Field(min_length=1)
    PackagePath: StrictStr = ""
    EnvVars: EnvVarMap = Field(default_factory=dict)
    Docker: DockerSpec = Field(default_factory=lambda: DockerSpec())


class InputMappingConfigSpec(_Model):
    Lock: StrictBool = False
    Locale: StrictStr = "GBK"


class ParametersSpec(_Model):
    Command: CommandSpec
    InputMappingConfig: InputMappingConfigSpec = Field(
        default_factory=lambda: InputMappingConfigSpec())
    StdoutRedirectPath: StrictStr
    StderrRedirectPath: StrictStr


class TaskDescription(_Model):
    InstanceCount: StrictInt = Field(default=1, ge=1, le=MAX_INSTANCE_COUNT)
    MaxRetryCount: StrictInt = Field(default=0, ge=0, le=MAX_RETRY_COUNT)
    Timeout: StrictInt = Field(default=DEFAULT_TIMEOUT, gt=0)
    ClusterId: StrictStr = ""
    AutoCluster: dict[str, Any] = Field(default_factory=dict)
    Parameters: ParametersSpec
    InputMapping: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    OutputMapping: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    LogMapping: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    Mounts: dict[str, Any] | None = None
    WriteSupport: StrictBool | None = None

    @property
    def runs_on_cluster(self) -> str:
        """The cluster id this task runs on, or "" for an AutoCluster (reference §13 #16)."""
        return self.ClusterId

    @property
    def uses_mappings(self) -> bool:
        return bool(self.InputMapping or self.OutputMapping or self.LogMapping
                    or self.mount_entries)

    @property
    def mount_entries(self) -> list[dict[str, Any]]:
        """`Mounts.Entries` (the entries that are objects; others are reported as problems)."""
        entries = (self.Mounts or {}).get("Entries") or []
        if not isinstance(entries, list):
            return []
        return [entry for entry in entries if isinstance(entry, dict)]


class DAGSpec(_Model):
    Tasks: dict[str, TaskDescription]
    Dependencies: dict[StrictStr, list[StrictStr]] = Field(default_factory=dict)


class JobDescription(_Model):
    Name: StrictStr
    Description: StrictStr = ""
    Priority: StrictInt = Field(default=0, ge=0, le=1000)
    Type: StrictStr = "DAG"
    JobFailOnInstanceFail: StrictBool = True
    AutoRelease: StrictBool = False
    Notification: dict[str, Any] | None = None
    DAG: DAGSpec

    def graph(self) -> dict[str, set[str]]:
        """Task name -> the set of its upstream tasks."""
        return upstreams(self.DAG.Tasks, self.DAG.Dependencies)

    def echo(self) -> dict[str, Any]:
        """The description as stored and echoed back (defaults filled, unknown fields kept,
        credentials such as `Mounts.OSS.AccessKeySecret` masked)."""
        masked: dict[str, Any] = _mask(self.model_dump(mode="json", exclude_none=True))
        return masked


CREDENTIAL_FIELDS = frozenset({"AccessKeyId", "AccessKeySecret", "SecurityToken"})
"""Fields of a description (`Mounts.OSS`) never stored or echoed as they were sent."""
MASK = "******"


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: MASK if key in CREDENTIAL_FIELDS and item else _mask(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [_mask(item) for item in value]
    return value


def parse_job(raw: Any) -> JobDescription:
    """Validate a job description; raise SpecError listing every problem found."""
    if not isinstance(raw, dict):
        raise SpecError([Problem("InvalidHttpBody", "$", _clip(raw), "must be a JSON object")])
    problems = _shape_problems(raw)
    problems += _name_problems(raw)
    problems += _graph_problems(raw)
    job = None
    try:
        job = JobDescription.model_validate(raw)
    except ValidationError as error:
        problems += [_problem_from_pydantic(item) for item in error.errors()]
    tasks = job.DAG.Tasks if job is not None else _salvaged_tasks(raw)
    problems += [problem for name, task in tasks.items()
                 for problem in _task_problems(name, task)]
    if problems:
        raise SpecError(_unique(problems))
    assert job is not None
    return job


def _salvaged_tasks(raw: dict[str, Any]) -> dict[str, TaskDescription]:
    """The tasks of a job that failed validation, each with the fields pydantic refused
    dropped (so defaults apply), so that their other rules are still checked and every
    problem is reported at once; tasks missing a required field are left out."""
    salvaged = {}
    for name, task in (_tasks_of(raw) or {}).items():
        if isinstance(task, dict) and (description := _salvaged(task)) is not None:
            salvaged[name] = description
    return salvaged


def _salvaged(raw_task: dict[str, Any], rounds: int = 5) -> TaskDescription | None:
    candidate = copy.deepcopy(raw_task)
    for _ in range(rounds):
        try:
            return TaskDescription.model_validate(candidate)
        except ValidationError as error:
            if not all(_dropped(candidate, item) for item in error.errors()):
                return None
    return None


def _dropped(candidate: dict[str, Any], item: Any) -> bool:
    """Remove the refused field at `item["loc"]` from `candidate`; False if it cannot be."""
    *parents, last = item["loc"] or ("",)
    node: Any = candidate
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if item["type"] == "missing" or not isinstance(node, dict) or last not in node:
        return False
    del node[last]
    return True


def _shape_problems(raw: dict[str, Any]) -> list[Problem]:
    kind = raw.get("Type", "DAG")
    if kind == "DAG":
        return []
    if kind == "App":
        rule = "App jobs are not supported by this installation; use Type \"DAG\""
    else:
        rule = "must be \"DAG\" (or \"App\", which this installation does not run)"
    return [Problem("InvalidType", "Type", kind, rule)]


def _name_problems(raw: dict[str, Any]) -> list[Problem]:
    problems = []
    name = raw.get("Name", ABSENT)
    if isinstance(name, str) and not JOB_NAME.match(name):
        problems.append(Problem("InvalidName", "Name", name,
                                "must be 1-100 characters of letters, digits, '_' or '-'"))
    tasks = _tasks_of(raw)
    if tasks is not None and not tasks:
        problems.append(Problem("MissingTasks", "DAG.Tasks", tasks, "must name at least one task"))
    for task_name in tasks or {}:
        if not TASK_NAME.match(task_name):
            problems.append(Problem(
                "InvalidTaskName", f"DAG.Tasks.{task_name}", task_name,
                "task names are 1-32 characters of letters, digits, '_' or '-', "
                "not starting with a digit"))
    return problems


def _tasks_of(raw: dict[str, Any]) -> dict[str, Any] | None:
    dag = raw.get("DAG")
    tasks = dag.get("Tasks") if isinstance(dag, dict) else None
    return tasks if isinstance(tasks, dict) else None


def _graph_problems(raw: dict[str, Any]) -> list[Problem]:
    tasks = _tasks_of(raw)
    dag = raw.get("DAG")
    dependencies = dag.get("Dependencies", {}) if isinstance(dag, dict) else {}
    if tasks is None or not isinstance(dependencies, dict):
        return []
    problems = []
    for upstream, downstreams in dependencies.items():
        names = [upstream] + (downstreams if isinstance(downstreams, list) else [])
        for name in names:
            if isinstance(name, str) and name not in tasks:
                problems.append(Problem(
                    "InvalidDependencies", f"DAG.Dependencies.{upstream}", name,
                    f"names a task that is not in DAG.Tasks (tasks: {', '.join(sorted(tasks))})"))
    clean = {up: [d for d in downs if isinstance(d, str)]
             for up, downs in dependencies.items() if isinstance(downs, list)}
    cycle = find_cycle(upstreams(tasks, clean))
    if cycle:
        problems.append(Problem("BadDAG", "DAG.Dependencies", " -> ".join(reversed(cycle)),
                                "the dependency graph must not contain a cycle"))
    return problems


def _task_problems(name: str, task: TaskDescription) -> list[Problem]:
    path = f"DAG.Tasks.{name}"
    command = task.Parameters.Command
    problems = []
    if command.PackagePath and not (command.PackagePath.endswith(".tar.gz")
                                    and OBJECT_URL.match(command.PackagePath)):
        problems.append(Problem(
            "InvalidPackagePath", f"{path}.Parameters.Command.PackagePath", command.PackagePath,
            "must be \"\" or an oss:// (or s3://) URL of a gzip tarball ending in .tar.gz"))
    for field in ("StdoutRedirectPath", "StderrRedirectPath"):
        value = getattr(task.Parameters, field)
        if not OBJECT_URL.match(value):
            problems.append(Problem(
                f"Invalid{field}", f"{path}.Parameters.{field}", value,
                "must be an object-store directory URL such as oss://bucket/logs/"))
    if command.Docker.Image:
        problems.append(Problem(
            "InvalidDocker", f"{path}.Parameters.Command.Docker.Image", command.Docker.Image,
            "containers are not supported by this installation yet; use \"\" (run on the host)"))
    if not task.ClusterId and not task.AutoCluster:
        problems.append(Problem(
            "MissingClusterId", f"{path}.ClusterId", task.ClusterId,
            "a task needs a ClusterId or a non-empty AutoCluster "
            "(e.g. {\"InstanceType\": \"ecs.sn1.medium\"})"))
    problems += _mapping_problems(path, task)
    return problems


def _mapping_problems(path: str, task: TaskDescription) -> list[Problem]:
    problems = []
    for url, local in task.InputMapping.items():
        problems += _pair_problems(f"{path}.InputMapping", url, local, "InvalidInputMapping")
    for local, url in task.OutputMapping.items():
        problems += _pair_problems(f"{path}.OutputMapping", url, local, "InvalidOutputMapping")
    for local, url in task.LogMapping.items():
        problems += _pair_problems(f"{path}.LogMapping", url, local, "InvalidLogMapping")
    problems += _mount_problems(f"{path}.Mounts", task)
    problems += _nesting_problems(path, task)
    return problems


def _mount_problems(path: str, task: TaskDescription) -> list[Problem]:
    entries = (task.Mounts or {}).get("Entries") or []
    if not isinstance(entries, list):
        return [Problem("InvalidMounts", f"{path}.Entries", _clip(entries), "must be a list")]
    problems = []
    for index, entry in enumerate(entries):
        where = f"{path}.Entries.{index}"
        if not isinstance(entry, dict):
            problems.append(Problem("InvalidMounts", where, _clip(entry),
                                    "must be an object with Source and Destination"))
            continue
        source, destination = entry.get("Source"), entry.get("Destination")
        if not isinstance(source, str) or not isinstance(destination, str):
            problems.append(Problem("InvalidMounts", where, _clip(entry),
                                    "needs string Source and Destination"))
            continue
        if source.startswith(("nas://", "smb://", "lustre://", "nasplus://")):
            problems.append(Problem(
                "InvalidMounts", f"{where}.Source", source,
                "only oss:// (or s3://) sources can be mounted by this installation"))
            continue
        problems += _pair_problems(where, source, destination, "InvalidMounts")
        if not isinstance(entry.get("WriteSupport", False), bool):
            problems.append(Problem("InvalidMounts", f"{where}.WriteSupport",
                                    _clip(entry.get("WriteSupport")), "must be a boolean"))
    return problems


def _nesting_problems(path: str, task: TaskDescription) -> list[Problem]:
    """Mapped directories must be distinct and not inside one another (each is a mount)."""
    folders = [local.rstrip("/") or "/" for local in task.InputMapping.values()]
    folders += [local.rstrip("/") or "/" for local in task.OutputMapping]
    folders += [str(entry.get("Destination", "")).rstrip("/") or "/"
                for entry in task.mount_entries]
    problems = []
    for index, folder in enumerate(folders):
        for other in folders[index + 1:]:
            if folder == other or _inside(folder, other) or _inside(other, folder):
                problems.append(Problem(
                    "InvalidMapping", path, f"{folder} and {other}",
                    "mapped local directories (InputMapping, OutputMapping, Mounts) must be "
                    "distinct and must not contain one another"))
    return problems


def _inside(child: str, parent: str) -> bool:
    return child.startswith(parent.rstrip("/") + "/")


def _pair_problems(path: str, url: str, local: str, code: str) -> list[Problem]:
    problems = []
    if not OBJECT_URL.match(url):
        problems.append(Problem(code, path, url, "must map an oss:// (or s3://) URL"))
    if not local.startswith("/") or ".." in local.split("/") or "\0" in local:
        problems.append(Problem(code, path, local,
                                "must map an absolute local path without '..'"))
    elif local.rstrip("/") in _SYSTEM_FOLDERS or local.startswith(("/proc/", "/dev/", "/sys/")):
        problems.append(Problem(code, path, local,
                                "cannot map the root folder or a system folder (/proc, /dev, …)"))
    return problems


_SYSTEM_FOLDERS = frozenset({"", "/proc", "/dev", "/sys", "/tmp", "/usr", "/bin", "/lib",
                             "/etc"})




def _problem_from_pydantic(item: Any) -> Problem:
    location = [str(part) for part in item["loc"]]
    path = ".".join(location) or "$"
    field = next((part for part in reversed(location) if part[:1].isupper()), "Parameter")
    value = ABSENT if item["type"] == "missing" else _clip(item.get("input"))
    if item["type"] == "missing":
        return Problem(f"Missing{field}", path, value, "is required")
    return Problem(f"Invalid{field}", path, value, _rule_text(item))


def _rule_text(item: Any) -> str:
    message = str(item["msg"])
    replacements = {"Input should be": "must be", "String should have": "must have"}
    for old, new in replacements.items():
        message = message.replace(old, new)
    return message


def _clip(value: Any) -> Any:
    text = repr(value)
    return value if len(text) <= 200 else text[:200] + "…"


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str, str]] = set()
    result = []
    for problem in problems:
        key = (problem.code, problem.path, repr(problem.value))
        if key not in seen:
            seen.add(key)
            result.append(problem)
    return result
