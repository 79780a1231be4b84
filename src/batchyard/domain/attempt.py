"""One attempt at running an instance: its identity and everything a runner needs."""

from __future__ import annotations

from dataclasses import dataclass, field

from batchyard.domain.logs import log_name


@dataclass(frozen=True, order=True)
class AttemptKey:
    job_id: str
    task: str
    instance_id: int
    attempt: int
    """1 for the first run of the instance, 2 for the next one, and so on."""

    def __str__(self) -> str:
        return f"{self.job_id}/{self.task}/{self.instance_id}#{self.attempt}"


@dataclass(frozen=True)
class PathMapping:
    """One mapped path of an attempt (reference §4.4): an object-store URL and a local path.

    For an input (InputMapping, Mounts.Entries) the URL is a prefix made visible at `path`,
    read-only unless `writable`; for an output (OutputMapping) `path` is a directory uploaded
    to the prefix after the program; for a log (LogMapping) `path` is a file shipped to the
    folder `url` while the program runs and at its end.
    """

    url: str
    path: str
    writable: bool = False


@dataclass(frozen=True)
class BucketAccess:
    """A bucket an attempt's program may reach itself (through `batchyard.oss`)."""

    name: str
    writable: bool


@dataclass(frozen=True)
class AttemptRequest:
    """What a runner needs to execute one attempt, anywhere (local process, Ray worker)."""

    key: AttemptKey
    instance_count: int
    command_line: str
    package_path: str
    env_vars: dict[str, str]
    timeout: int
    stdout_dir: str
    """Object-store directory URL (ends with '/') receiving stdout.<job>.<task>.<instance>."""
    stderr_dir: str
    retry_count: int = 0
    tenant: str = "default"
    buckets: tuple[BucketAccess, ...] = ()
    """The tenant's buckets: the only ones a confined program can reach by itself."""
    cluster_id: str = ""
    worker_id: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    inputs: tuple[PathMapping, ...] = ()
    """InputMapping and Mounts.Entries, visible before the program starts."""
    outputs: tuple[PathMapping, ...] = ()
    """OutputMapping: uploaded recursively after every attempt."""
    logs: tuple[PathMapping, ...] = ()
    """LogMapping: shipped while the program runs and once more at its end."""
    memory_bytes: int = 0
    """The memory the attempt may use (its InstanceType's), enforced where the attempt runs
    confined in a slot with a memory cgroup; 0: the agent's default limit."""
    instance_type: str = ""
    """The InstanceType `memory_bytes` comes from, named in messages ("" for none)."""

    @property
    def uses_mappings(self) -> bool:
        """Whether the attempt needs a sandbox (its own mount namespace)."""
        return bool(self.inputs or self.outputs or self.logs)

    def log_name(self, stream: str) -> str:
        """`stdout.<jobId>.<taskName>.<instanceId>` (reference §4.4)."""
        key = self.key
        return log_name(stream, key.job_id, key.task, key.instance_id)
