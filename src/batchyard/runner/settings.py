"""What a runner needs to know about the machine it runs attempts on."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _batchyard_parent() -> str:
    """The folder holding the `batchyard` package, so programs can `import batchyard.oss`."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass(frozen=True)
class RunnerSettings:
    """Runner configuration; built once by the composition root from `Settings`."""

    work_root: Path
    """Attempts run in `work_root/<job>/<task>/<instance>/attempt-<n>/workdir`."""
    region: str = "local"
    """Given to programs as BATCH_COMPUTE_REGION."""
    oss_host: str = "localhost"
    """Given to programs as BATCH_COMPUTE_OSS_HOST."""
    keep_workdirs: bool = False
    """Keep the attempt folder after success too (it is always kept after a failure)."""
    python_path: str = field(default_factory=_batchyard_parent)
    """Prepended to the programs' PYTHONPATH."""
    kill_grace: float = 2.0
    """Seconds between SIGTERM and SIGKILL when an attempt exceeds its Timeout."""

    def __post_init__(self) -> None:
        # Absolute once here, so every attempt's cwd is right whatever the process cwd becomes.
        object.__setattr__(self, "work_root", Path(os.path.abspath(self.work_root)))
