"""One attempt at running an instance: its identity and everything a runner needs."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    cluster_id: str = ""
    worker_id: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def log_name(self, stream: str) -> str:
        """`stdout.<jobId>.<taskName>.<instanceId>` (reference §4.4)."""
        key = self.key
        return f"{stream}.{key.job_id}.{key.task}.{key.instance_id}"
