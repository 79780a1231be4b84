"""The environment a task program starts with (reference §5).

Built from nothing: the server's own environment (its `BATCHYARD_S3_*` credentials, its
database URL, whatever its operator exported) never reaches a program. Layers, later ones
winning:

1. a minimal base — `PATH` (the interpreter batchyard runs on first, so `python` is the one
   that can `import batchyard.oss`), `HOME` (the working directory), `LANG`, `TMPDIR`, `SHELL`.
   `batchyard run` without `--sandbox` is the exception: there the user runs their own jobs
   on their own machine, as themselves, and the program inherits the user's environment,
   minus batchyard's own settings (`BATCHYARD_*`), as `xargs` or Slurm's `--export=ALL` do;
2. the platform variables (region, OSS host, cluster, worker);
3. the object-store variables `batchyard.oss` reads, for the buckets the program may reach
   (none for a program with mapped paths: it reaches its data through the mappings);
4. the cluster's and the task's `EnvVars`;
5. PYTHONPATH with batchyard prepended;
6. last, the identity variables (`BATCH_COMPUTE_DAG_*`), which user `EnvVars` cannot
   override: a program must always learn its true job, task, instance and attempt.
"""

from __future__ import annotations

import os
import shutil
import sys
from functools import cache

from batchyard.domain.attempt import AttemptRequest
from batchyard.runner.reaper import MARKER
from batchyard.runner.settings import RunnerSettings

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SETTINGS_PREFIX = "BATCHYARD_"
"""batchyard's own configuration (credentials among it): never inherited by a program."""


def program_environment(request: AttemptRequest, store_variables: dict[str, str],
                        settings: RunnerSettings, workdir: str,
                        sandboxed: bool) -> dict[str, str]:
    """Everything the program of `request` sees in its environment."""
    inherit = settings.inherit_environment and not sandboxed
    environment = base_environment(workdir, inherit)
    environment.update(platform_variables(request, settings))
    if not request.uses_mappings:
        environment.update(store_variables)
    environment.update(request.env_vars)
    if settings.python_path:
        inherited = environment.get("PYTHONPATH", "")
        environment["PYTHONPATH"] = (f"{settings.python_path}{os.pathsep}{inherited}"
                                     if inherited else settings.python_path)
    environment.update(identity_variables(request))
    if not sandboxed:  # found again by the restart reaper (a sandbox dies with its engine)
        environment[MARKER] = str(settings.work_root)
    return environment


def base_environment(workdir: str, inherit: bool) -> dict[str, str]:
    """The minimal environment, or the user's own for unconfined `batchyard run`."""
    if inherit:
        return dict(_inherited())
    interpreter = os.path.dirname(sys.executable)
    return {"PATH": f"{interpreter}:{SYSTEM_PATH}" if interpreter else SYSTEM_PATH,
            "HOME": workdir, "LANG": "C.UTF-8", "TMPDIR": "/tmp", "SHELL": _shell()}


@cache
def _shell() -> str:
    """The bash that runs command lines, for `SHELL`: set, bash does not look the user up in
    the password database at every start (~0.1 ms of its CPU per instance)."""
    return shutil.which("bash", path=SYSTEM_PATH) or "/bin/sh"


@cache
def _inherited() -> tuple[tuple[str, str], ...]:
    """The user's environment minus batchyard's settings, read once per process."""
    return tuple((name, value) for name, value in os.environ.items()
                 if not name.startswith(SETTINGS_PREFIX))


def platform_variables(request: AttemptRequest, settings: RunnerSettings) -> dict[str, str]:
    """Where the program runs; a task's EnvVars may override these."""
    return {
        "BATCH_COMPUTE_OSS_HOST": settings.oss_host,
        "BATCH_COMPUTE_REGION": settings.region,
        "BATCH_COMPUTE_CLUSTER_ID": request.cluster_id,
        "BATCH_COMPUTE_WORKER_ID": request.worker_id,
    }


def identity_variables(request: AttemptRequest) -> dict[str, str]:
    """Who the program is; nothing may override these."""
    key = request.key
    return {
        "BATCH_COMPUTE_DAG_JOB_ID": key.job_id,
        "BATCH_COMPUTE_DAG_TASK_ID": key.task,
        "BATCH_COMPUTE_DAG_INSTANCE_ID": str(key.instance_id),
        "BATCH_COMPUTE_DAG_INSTANCE_COUNT": str(request.instance_count),
        "BATCH_COMPUTE_DAG_ATTEMPT": str(key.attempt),
        "BATCH_COMPUTE_DAG_INSTANCE_RETRY": str(request.retry_count),
    }
