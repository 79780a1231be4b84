"""What a runner needs to know about the machine it runs attempts on."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from batchyard.runner.confinement import Confinement
from batchyard.runner.package import PackageLimits


def _batchyard_parent() -> str:
    """The folder holding the `batchyard` package, so programs can `import batchyard.oss`."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass(frozen=True)
class RunnerSettings:
    """Runner configuration; built once by the composition root from `Settings`."""

    work_root: Path
    """Attempts run in `work_root/<job>/<task>/<instance>.attempt-<n>/workdir`."""
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
    cache_root: Path | None = None
    """Input views shared by the attempts of this machine; default `<work_root>/../cache`."""
    hidden: tuple[str, ...] = ()
    """Host paths a sandboxed program must not see (data dir, database, bucket folders);
    `work_root` and `cache_root` are always hidden."""
    log_interval: float = 5.0
    """Seconds between two shipments of the LogMapping files while a program runs."""
    confinement: Confinement = field(default_factory=Confinement)
    """Sandbox, user, network and limits of attempts (see `confinement`)."""
    package_limits: PackageLimits = field(default_factory=PackageLimits)
    """What a PackagePath tarball may cost (bytes, members, path length)."""
    inherit_environment: bool = False
    """Unsandboxed programs inherit this process's environment (minus BATCHYARD_*): the
    `batchyard run` of a user's own jobs; never under `serve`."""

    def __post_init__(self) -> None:
        # Absolute once here, so every attempt's cwd is right whatever the process cwd becomes.
        object.__setattr__(self, "work_root", Path(os.path.abspath(self.work_root)))
        cache = self.cache_root or self.work_root.parent / "cache"
        object.__setattr__(self, "cache_root", Path(os.path.abspath(cache)))

    @property
    def cache_folder(self) -> str:
        return str(self.cache_root)

    @cached_property
    def runtime_paths(self) -> tuple[str, ...]:
        """What a sandboxed program needs from the host to run `python` and `batchyard.oss`:
        the interpreter's prefixes and the folder holding batchyard (bound read-only)."""
        paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, self.python_path]
        real = [os.path.realpath(path) for path in paths if path]
        return tuple(path for path in dict.fromkeys(real) if path != "/" and os.path.isdir(path))

    @property
    def hidden_paths(self) -> tuple[str, ...]:
        """Every path hidden from sandboxed programs, absolute, without duplicates."""
        paths = [str(self.work_root), self.cache_folder, *self.hidden]
        return tuple(dict.fromkeys(os.path.abspath(path) for path in paths))
