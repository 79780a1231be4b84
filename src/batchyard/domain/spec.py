"""BatchCompute job descriptions (reference §3–§4): models, defaults and validation.

`parse_job(raw)` accepts the JSON a user or the official SDK sends, applies the documented
defaults, keeps unknown fields (they are echoed back), and reports *every* problem at once,
each with its JSON path, the offending value, the rule and the BatchCompute error code.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, get_args, get_origin

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
from batchyard.domain.events import JOB_EVENTS, notification_problems
from batchyard.domain.fields import known_fields, misspelt
from batchyard.errors import ABSENT, Problem, SpecError

JOB_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}\Z")
TASK_NAME = re.compile(r"^[A-Za-z_-][A-Za-z0-9_-]{0,31}\Z")
OBJECT_URL = re.compile(
    r"^(?P<scheme>oss|s3)://(?P<bucket>[a-z0-9][a-z0-9._-]{0,62})"
    r"(?P<key>(?:/(?!\.{1,2}(?:/|\Z))[^/\\\x00]*)*)\Z")
"""An object-store URL: `oss://` or `s3://`, a bucket name, then a key whose `/`-separated
segments are never `.` or `..` and hold no backslash or NUL. A runner that resolves such a
key as a path could leave the bucket (`oss://b/../other-bucket/x`); refusing them at
submission means they never reach it."""
OBJECT_URL_RULE = ("an oss:// (or s3://) URL such as oss://bucket/folder/, without '.' or '..' "
                   "path segments, backslashes or NUL characters")
MAX_INSTANCE_COUNT = 100_000
MAX_RETRY_COUNT = 100
DEFAULT_TIMEOUT = 86_400  # reference §13 #1
MAX_TIMEOUT = 7 * 24 * 3600
"""Longest accepted Timeout, in seconds: one week. BatchCompute documents no maximum (its
defaults are 3600 and 86400). Without one, a Timeout of 10**10 is longer than a thread can
wait (the shared watchdog thread died of it) and 10**400 is no float at all (its program ran
untracked)."""
MAX_DEPTH = 64
"""Deepest nesting of objects and arrays in a job description (the job object is level 1;
BatchCompute's own fields need 8, e.g. `DAG.Tasks.t.Mounts.Entries[0]`). Deeper structures
exhaust Python's recursion in validation, copying and serialisation; the bound is checked
first, by a walk that does not recurse."""
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
"""Every integer anywhere in a job (unknown fields too) must fit a signed 64-bit integer:
what databases, the JSON libraries of other clients and the OS store and compute with."""
FORBIDDEN_CHARACTERS = re.compile("[\x00\ud800-\udfff]")
"""Characters refused in every string (and key) of a job: NUL, which ends a string for exec,
file paths and PostgreSQL text, and unpaired UTF-16 surrogates, which are not text at all (no
UTF-8 encoding exists for them, so nothing could store, run or answer them)."""
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*\Z")
"""An environment variable name: Kubernetes' rule, which exec accepts and shells mostly do
(letters, digits, '-', '.' and '_', not starting with a digit; never '=')."""
MAX_ARG_STRLEN = 128 * 1024
"""Linux's limit on one exec string, counting its terminating NUL: `bash -c CommandLine`
and every `NAME=value` of the environment must each be shorter (in UTF-8 bytes)."""
MAX_EXEC_BYTES = 1024 * 1024
"""Limit on CommandLine plus all EnvVars together (UTF-8 bytes, one NUL each): exec fails
beyond ARG_MAX (usually 2 MiB) and batchyard adds its own variables, so a job gets half."""
MAX_PROBLEMS = 100
"""Most problems listed for one job (then one more saying how many were left out): a 1 MiB
body can hold 100 000 faults, and an answer listing each would be tens of megabytes."""
MAX_PATH_CHARACTERS = 500
"""Longest JSON path shown in a problem (keys are user text of any length)."""


def _stringify_values(value: Any) -> Any:
    """The SDK coerces EnvVars values to strings; so do we (numbers, booleans)."""
    if isinstance(value, dict):
        return {key: item if isinstance(item, str) else _env_text(item)
                for key, item in value.items()}
    return value


def _env_text(item: Any) -> Any:
    if isinstance(item, bool):
        return "true" if item else "false"
    if (isinstance(item, float) and math.isfinite(item)) or _is_int64(item):
        return str(item)
    return item  # anything else is reported as a wrong type (or a number out of range)


def _is_int64(value: Any) -> bool:
    """An int (not a bool) that fits a signed 64-bit integer."""
    return (isinstance(value, int) and not isinstance(value, bool)
            and INT64_MIN <= value <= INT64_MAX)


EnvVarMap = Annotated[dict[StrictStr, StrictStr], BeforeValidator(_stringify_values)]


class _Model(BaseModel):
    """Fields are named as on the wire; unknown fields are kept and echoed back."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    batchcompute_only: ClassVar[frozenset[str]] = frozenset()
    """Fields BatchCompute defines here that batchyard does not model: accepted and echoed
    like any unknown field, but never reported as a typo (see `fields`)."""


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
    Timeout: StrictInt = Field(default=DEFAULT_TIMEOUT, gt=0, le=MAX_TIMEOUT)
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
        """The cluster id this task runs on, or "" for an AutoCluster or a task naming
        neither (it runs on VMs of its own, of `instance_type`; reference §13 #16)."""
        return self.ClusterId

    @property
    def instance_type(self) -> str:
        """The InstanceType its AutoCluster names; "" when it names none (the default type
        then) or when the task runs on a cluster (a non-empty ClusterId wins, §13 #16)."""
        name = "" if self.ClusterId else self.AutoCluster.get("InstanceType", "")
        return name if isinstance(name, str) else ""

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
    batchcompute_only: ClassVar[frozenset[str]] = frozenset({"App"})
    """`App` holds the program of an App job (reference §8), refused here by its `Type`."""

    def graph(self) -> dict[str, set[str]]:
        """Task name -> the set of its upstream tasks."""
        return upstreams(self.DAG.Tasks, self.DAG.Dependencies)

    def echo(self) -> dict[str, Any]:
        """The description as stored and echoed back (defaults filled, unknown fields kept,
        credentials such as `Mounts.OSS.AccessKeySecret` masked)."""
        masked: dict[str, Any] = _mask(self.model_dump(mode="json", exclude_none=True))
        return masked


@dataclass(frozen=True)
class ObjectUse:
    """One object-store URL a job names: its JSON path, the URL, and whether the job writes
    there (else it only reads), so that a caller can check who owns the bucket."""

    path: str
    url: str
    writes: bool


def object_urls(job: JobDescription) -> list[ObjectUse]:
    """Every object-store URL a valid job names. Reads: PackagePath, InputMapping keys and
    Mounts sources (WriteSupport writes to a private copy, never back to the store); writes:
    the stdout/stderr redirect paths, OutputMapping and LogMapping values."""
    return [use for name, task in job.DAG.Tasks.items()
            for use in _task_object_urls(f"DAG.Tasks.{name}", task)]


def _task_object_urls(path: str, task: TaskDescription) -> list[ObjectUse]:
    parameters = task.Parameters
    uses = [ObjectUse(f"{path}.Parameters.Command.PackagePath", parameters.Command.PackagePath,
                      False)] if parameters.Command.PackagePath else []
    uses += [ObjectUse(f"{path}.InputMapping.{url}", url, False) for url in task.InputMapping]
    entries = (task.Mounts or {}).get("Entries") or []
    uses += [ObjectUse(f"{path}.Mounts.Entries.{index}.Source", entry["Source"], False)
             for index, entry in enumerate(entries)]
    uses += [ObjectUse(f"{path}.Parameters.{field}", getattr(parameters, field), True)
             for field in ("StdoutRedirectPath", "StderrRedirectPath")]
    uses += [ObjectUse(f"{path}.OutputMapping.{local}", url, True)
             for local, url in task.OutputMapping.items()]
    uses += [ObjectUse(f"{path}.LogMapping.{local}", url, True)
             for local, url in task.LogMapping.items()]
    return uses


def bucket_of(url: str) -> str:
    """The bucket an object-store URL names (`oss://bucket/key` -> `bucket`); ValueError if
    `url` is not one (see OBJECT_URL)."""
    match = OBJECT_URL.match(url)
    if match is None:
        raise ValueError(f"not an object-store URL: {url!r}")
    return match.group("bucket")


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
    """Validate a job description; raise SpecError listing every problem found.

    Nesting is checked first and alone: every later step may recurse into the structure."""
    too_deep = _depth_problem(raw)
    if too_deep is not None:
        raise SpecError([too_deep])
    if not isinstance(raw, dict):
        raise SpecError([Problem("InvalidHttpBody", "$", _clip(raw), "must be a JSON object")])
    problems = _shape_problems(raw)
    problems += _name_problems(raw)
    problems += _graph_problems(raw)
    job = None
    try:
        job = JobDescription.model_validate(raw)
    except ValidationError as error:
        problems += [_problem_from_pydantic(item, raw) for item in error.errors()]
    tasks = job.DAG.Tasks if job is not None else _salvaged_tasks(raw)
    problems += [problem for name, task in tasks.items()
                 for problem in _task_problems(name, task)]
    problems += notification_problems(raw.get("Notification"), JOB_EVENTS, _clip)
    problems += _value_problems(raw)
    if problems:
        raise SpecError(_reported(_unique(problems)))
    assert job is not None
    return job


def _depth_problem(raw: Any) -> Problem | None:
    """InvalidJsonFormat when objects and arrays nest deeper than MAX_DEPTH (checked with a
    stack, not recursion, and without descending past the bound)."""
    stack: list[tuple[Any, int]] = [(raw, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_DEPTH:
            return Problem("InvalidJsonFormat", "$", f"more than {MAX_DEPTH} levels",
                           f"objects and arrays may nest at most {MAX_DEPTH} levels deep")
        stack.extend((child, depth + 1) for child in children)
    return None


def _value_problems(raw: dict[str, Any]) -> list[Problem]:
    """Numbers out of range and strings with forbidden characters, anywhere in the job:
    known fields, free-form objects (AutoCluster, Notification, Mounts) and unknown fields
    alike, since all are stored and echoed back."""
    problems = []
    for parts, value in _walk(raw):
        rule = _number_rule(value) or _text_rule(value)
        if rule:
            path = ".".join(str(part) for part in parts) or "$"
            problems.append(Problem(_code_for(parts), path, _clip(value), rule))
    return problems


Parts = tuple[str | int, ...]


def _walk(raw: Any) -> Iterator[tuple[Parts, Any]]:
    """Every value in `raw` and every object key (at the path it names), breadth first,
    without recursion."""
    queue: deque[tuple[Parts, Any]] = deque([((), raw)])
    while queue:
        parts, value = queue.popleft()
        yield parts, value
        if isinstance(value, dict):
            for key, item in value.items():
                yield (*parts, key), key
                queue.append(((*parts, key), item))
        elif isinstance(value, list):
            queue.extend(((*parts, index), item) for index, item in enumerate(value))


def _number_rule(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and not _is_int64(value):
        return (f"integers must fit in a signed 64-bit integer "
                f"({INT64_MIN} to {INT64_MAX})")
    if isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite (NaN and Infinity are not JSON numbers)"
    return ""


def _text_rule(value: Any) -> str:
    if isinstance(value, str) and FORBIDDEN_CHARACTERS.search(value):
        return "text must not contain NUL characters or unpaired UTF-16 surrogates"
    return ""


def _code_for(parts: Parts) -> str:
    """`Invalid<Field>` for the deepest field of the job's schema on `parts` (everything
    inside a free-form field such as AutoCluster belongs to it); `InvalidParameter` once
    the path leaves the schema (an unknown field)."""
    model: type[BaseModel] | None = JobDescription
    code, keyed = "InvalidParameter", False
    for part in parts:
        if keyed:  # the key of a map of models: the task name in DAG.Tasks.<name>
            keyed = False
        elif model is None:
            break
        elif (field := model.model_fields.get(str(part))) is None:
            return "InvalidParameter"
        else:
            code = f"Invalid{part}"
            model, keyed = _nested_model(field.annotation)
    return code


def _nested_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds, and whether it holds a map of them (keyed by name)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    arguments = get_args(annotation)
    if get_origin(annotation) is dict and isinstance(arguments[-1], type) \
            and issubclass(arguments[-1], BaseModel):
        return arguments[-1], True
    return None, False


def _reported(problems: list[Problem]) -> list[Problem]:
    """At most MAX_PROBLEMS problems, then one that counts the rest; paths clipped to
    MAX_PATH_CHARACTERS. Forbidden characters in paths and rules are escaped: both may quote
    user keys (task names, EnvVars names), and an answer must encode as UTF-8."""
    shown = [Problem(problem.code, _escaped(_clipped(problem.path)), problem.value,
                     _escaped(problem.rule)) for problem in problems[:MAX_PROBLEMS]]
    left_out = len(problems) - MAX_PROBLEMS
    if left_out > 0:
        shown.append(Problem(
            "InvalidParameter", "$", f"{left_out} more problems",
            f"only the first {MAX_PROBLEMS} problems are listed; fix them to see the rest"))
    return shown


def _clipped(path: str) -> str:
    return path if len(path) <= MAX_PATH_CHARACTERS else path[:MAX_PATH_CHARACTERS] + "…"


def _escaped(text: str) -> str:
    return FORBIDDEN_CHARACTERS.sub(
        lambda found: found.group().encode("unicode_escape").decode("ascii"), text)


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
    candidate: dict[str, Any] | None = raw_task  # never changed: see _without
    for _ in range(rounds):
        try:
            return TaskDescription.model_validate(candidate)
        except ValidationError as error:
            for item in error.errors():
                missing = item["type"] == "missing"
                candidate = None if missing else _without(candidate, tuple(item["loc"]))
                if candidate is None:
                    return None
    return None


def _without(node: Any, location: tuple[Any, ...]) -> dict[str, Any] | None:
    """`node` without the field at `location`, or None if there is none. Only the objects on
    the way to it are copied (shallowly): the user's structure is neither changed nor copied
    whole."""
    if not location or not isinstance(node, dict) or location[0] not in node:
        return None
    first, rest = location[0], location[1:]
    if not rest:
        return {key: value for key, value in node.items() if key != first}
    inner = _without(node[first], rest)
    return None if inner is None else {**node, first: inner}


def _shape_problems(raw: dict[str, Any]) -> list[Problem]:
    kind = raw.get("Type", "DAG")
    if kind == "DAG":
        return []
    if kind == "App":
        rule = "App jobs are not supported by this installation; use Type \"DAG\""
    else:
        rule = "must be \"DAG\" (or \"App\", which this installation does not run)"
    return [Problem("InvalidType", "Type", _clip(kind), rule)]


def _name_problems(raw: dict[str, Any]) -> list[Problem]:
    problems = []
    name = raw.get("Name", ABSENT)
    if isinstance(name, str) and not JOB_NAME.match(name):
        problems.append(Problem("InvalidName", "Name", _clip(name),
                                "must be 1-100 characters of letters, digits, '_' or '-'"))
    tasks = _tasks_of(raw)
    if tasks is not None and not tasks:
        problems.append(Problem("MissingTasks", "DAG.Tasks", tasks, "must name at least one task"))
    for task_name in tasks or {}:
        if not TASK_NAME.match(task_name):
            problems.append(Problem(
                "InvalidTaskName", f"DAG.Tasks.{task_name}", _clip(task_name),
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
    rule = f"names a task that is not in DAG.Tasks (tasks: {_listed(sorted(tasks))})"
    for upstream, downstreams in dependencies.items():
        names = [upstream] + (downstreams if isinstance(downstreams, list) else [])
        for name in names:
            if isinstance(name, str) and name not in tasks:
                problems.append(Problem("InvalidDependencies", f"DAG.Dependencies.{upstream}",
                                        _clip(name), rule))
    clean = {up: [d for d in downs if isinstance(d, str)]
             for up, downs in dependencies.items() if isinstance(downs, list)}
    cycle = find_cycle(upstreams(tasks, clean))
    if cycle:
        problems.append(Problem("BadDAG", "DAG.Dependencies",
                                _clip(" -> ".join(reversed(cycle))),
                                "the dependency graph must not contain a cycle"))
    return problems


def _listed(names: list[str], most: int = 10) -> str:
    """The first `most` names, comma-separated: a rule quoting every task of a job with
    thousands of them, once per problem, would make the answer huge."""
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown}, … ({len(names)} tasks)"


def _task_problems(name: str, task: TaskDescription) -> list[Problem]:
    path = f"DAG.Tasks.{name}"
    command = task.Parameters.Command
    problems = []
    if command.PackagePath and not (command.PackagePath.endswith(".tar.gz")
                                    and OBJECT_URL.match(command.PackagePath)):
        problems.append(Problem(
            "InvalidPackagePath", f"{path}.Parameters.Command.PackagePath",
            _clip(command.PackagePath),
            f"must be \"\" or a gzip tarball ending in .tar.gz at {OBJECT_URL_RULE}"))
    for field in ("StdoutRedirectPath", "StderrRedirectPath"):
        value = getattr(task.Parameters, field)
        if not OBJECT_URL.match(value):
            problems.append(Problem(
                f"Invalid{field}", f"{path}.Parameters.{field}", _clip(value),
                f"must be an object-store directory: {OBJECT_URL_RULE}"))
    if command.Docker.Image:
        problems.append(Problem(
            "InvalidDocker", f"{path}.Parameters.Command.Docker.Image", _clip(command.Docker.Image),
            "containers are not supported by this installation yet; use \"\" (run on the host)"))
    problems += _environment_problems(f"{path}.Parameters.Command", command)
    problems += _mapping_problems(path, task)
    return problems


def _environment_problems(path: str, command: CommandSpec) -> list[Problem]:
    """What exec would refuse: bad variable names, a string of MAX_ARG_STRLEN bytes or
    more, more than MAX_EXEC_BYTES in all."""
    problems = []
    line_size = _exec_size(command.CommandLine)
    if line_size >= MAX_ARG_STRLEN:
        problems.append(Problem(
            "InvalidCommandLine", f"{path}.CommandLine", f"{line_size} bytes",
            f"must be shorter than {MAX_ARG_STRLEN} bytes in UTF-8 (Linux's limit on one "
            f"exec argument); it is {line_size} bytes"))
    total = line_size + 1
    for name, value in command.EnvVars.items():
        where = f"{path}.EnvVars.{name}"
        if not ENV_NAME.match(name):
            problems.append(Problem(
                "InvalidEnvVars", where, _clip(name),
                "variable names are letters, digits, '-', '.' and '_', not starting with a "
                "digit (no '=')"))
        size = _exec_size(f"{name}={value}")
        total += size + 1
        if size >= MAX_ARG_STRLEN:
            problems.append(Problem(
                "InvalidEnvVars", where, f"{size} bytes",
                f"NAME=value must be shorter than {MAX_ARG_STRLEN} bytes in UTF-8 (Linux's "
                f"limit on one environment string); it is {size} bytes"))
    if total > MAX_EXEC_BYTES:
        problems.append(Problem(
            "InvalidEnvVars", f"{path}.EnvVars", f"{total} bytes",
            f"CommandLine and all EnvVars together must take at most {MAX_EXEC_BYTES} bytes "
            f"(UTF-8, one NUL each); they take {total} bytes"))
    return problems


def _exec_size(text: str) -> int:
    """Bytes `text` takes in exec (unpaired surrogates, refused elsewhere, counted too)."""
    return len(text.encode("utf-8", "surrogatepass"))


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
                "InvalidMounts", f"{where}.Source", _clip(source),
                "only oss:// (or s3://) sources can be mounted by this installation"))
            continue
        problems += _pair_problems(where, source, destination, "InvalidMounts")
        if not isinstance(entry.get("WriteSupport", False), bool):
            problems.append(Problem("InvalidMounts", f"{where}.WriteSupport",
                                    _clip(entry.get("WriteSupport")), "must be a boolean"))
    return problems


def _nesting_problems(path: str, task: TaskDescription) -> list[Problem]:
    """Mapped directories must be distinct and not inside one another (each is a mount).

    Each folder that repeats another or lies inside one is reported once. The folders are
    sorted by their segments, which puts every folder right after the folders containing it,
    instead of comparing every pair: 40 000 mappings (a 1 MiB body) took minutes pair by
    pair."""
    folders = [local.rstrip("/") or "/" for local in task.InputMapping.values()]
    folders += [local.rstrip("/") or "/" for local in task.OutputMapping]
    folders += [str(entry.get("Destination", "")).rstrip("/") or "/"
                for entry in task.mount_entries]
    problems = []
    for folder, other in _overlapping(folders):
        problems.append(Problem(
            "InvalidMapping", path, _clip(f"{folder} and {other}"),
            "mapped local directories (InputMapping, OutputMapping, Mounts) must be "
            "distinct and must not contain one another"))
    return problems


def _overlapping(folders: list[str]) -> Iterator[tuple[str, str]]:
    """(folder, the folder it repeats or lies in) for each such folder, in O(n log n)."""
    open_folders: list[tuple[str, ...]] = []  # each inside the one before it
    for segments in sorted(_segments(folder) for folder in folders):
        while open_folders and not _starts_with(segments, open_folders[-1]):
            open_folders.pop()
        if open_folders:
            yield _joined(segments), _joined(open_folders[-1])
        open_folders.append(segments)


def _segments(folder: str) -> tuple[str, ...]:
    """"/a/b" -> ("", "a", "b"); "/" -> ("",), which starts every absolute path."""
    return ("",) if folder == "/" else tuple(folder.split("/"))


def _joined(segments: tuple[str, ...]) -> str:
    return "/".join(segments) or "/"


def _starts_with(segments: tuple[str, ...], prefix: tuple[str, ...]) -> bool:
    """Whether `prefix` is `segments` or a folder containing it (costs len(prefix))."""
    return len(prefix) <= len(segments) and segments[:len(prefix)] == prefix


def _pair_problems(path: str, url: str, local: str, code: str) -> list[Problem]:
    problems = []
    if not OBJECT_URL.match(url):
        problems.append(Problem(code, path, _clip(url), f"must map {OBJECT_URL_RULE}"))
    if not local.startswith("/") or ".." in local.split("/") or "\0" in local:
        problems.append(Problem(code, path, _clip(local),
                                "must map an absolute local path without '..'"))
    elif local.rstrip("/") in _SYSTEM_FOLDERS or local.startswith(("/proc/", "/dev/", "/sys/")):
        problems.append(Problem(code, path, _clip(local),
                                "cannot map the root folder or a system folder (/proc, /dev, …)"))
    return problems


_SYSTEM_FOLDERS = frozenset({"", "/proc", "/dev", "/sys", "/tmp", "/usr", "/bin", "/lib",
                             "/etc"})




def _problem_from_pydantic(item: Any, raw: dict[str, Any]) -> Problem:
    """Missing<Field> for an absent field (naming a misspelling of it the object holds);
    Invalid<Field> named after the schema field that holds the value (never after a user's
    key, such as an EnvVars name)."""
    location = [str(part) for part in item["loc"]]
    path = ".".join(location) or "$"
    if item["type"] == "missing":
        return Problem(f"Missing{location[-1] if location else 'Parameter'}", path, ABSENT,
                       "is required" + _found_instead(raw, tuple(item["loc"])))
    return Problem(_code_for(tuple(item["loc"])), path, _clip(item.get("input")),
                   _rule_text(item))


def _found_instead(raw: dict[str, Any], location: tuple[Any, ...]) -> str:
    """`; found ComandLine` when the object that misses a field holds a misspelling of it."""
    parent: Any = raw
    for part in location[:-1]:
        parent = parent.get(part) if isinstance(parent, dict) else None
    model = _model_at(location[:-1])
    if not isinstance(parent, dict) or model is None:
        return ""
    found = misspelt(parent, str(location[-1]), known_fields(model))
    return f"; found {found}" if found else ""


def _model_at(parts: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model of the job's schema that holds the object at `parts`, if any."""
    model: type[BaseModel] | None = JobDescription
    keyed = False
    for part in parts:
        if keyed:
            keyed = False
            continue
        field = model.model_fields.get(str(part)) if model is not None else None
        if field is None:
            return None
        model, keyed = _nested_model(field.annotation)
    return None if keyed else model


def _rule_text(item: Any) -> str:
    message = str(item["msg"])
    replacements = {"Input should be": "must be", "String should have": "must have"}
    for old, new in replacements.items():
        message = message.replace(old, new)
    return message


def _clip(value: Any) -> Any:
    """The value, or the start of its text when long (an integer with more than 4300
    digits has no text, so it is described)."""
    try:
        text = repr(value)
    except ValueError:
        return "(a number too long to show)"
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
