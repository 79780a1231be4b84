"""The environment a task program starts with (reference §5).

A program of a job with mapped paths runs sandboxed and reaches its data through the
mappings only: it gets no object-store variables or credentials (they would let it read
other jobs' and tenants' data).

Layers, later ones winning: the runner's own environment; the platform variables
(region, OSS host, cluster, worker); the object-store variables `batchyard.oss` reads; the
task's `EnvVars`; then PYTHONPATH with batchyard prepended; and last the identity variables
(`BATCH_COMPUTE_DAG_*`), which user `EnvVars` cannot override: a program must always learn
its true job, task, instance and attempt.
"""

from __future__ import annotations

import os

from batchyard.domain.attempt import AttemptRequest
from batchyard.ports import ObjectStore
from batchyard.runner.reaper import MARKER
from batchyard.runner.settings import RunnerSettings


def program_environment(request: AttemptRequest, objects: ObjectStore,
                        settings: RunnerSettings) -> dict[str, str]:
    """Everything the program of `request` sees in its environment."""
    environment = dict(os.environ)
    environment.update(platform_variables(request, settings))
    if request.uses_mappings:
        _drop_store_access(environment)
    else:
        environment.update(objects.program_environment())
    environment.update(request.env_vars)
    if settings.python_path:
        inherited = environment.get("PYTHONPATH", "")
        environment["PYTHONPATH"] = (f"{settings.python_path}{os.pathsep}{inherited}"
                                     if inherited else settings.python_path)
    environment.update(identity_variables(request))
    environment[MARKER] = str(settings.work_root)
    return environment


STORE_VARIABLES = ("AWS_", "FSSPEC_", "BATCHYARD_OSS_", "OSS_", "ALIBABA_CLOUD_")
"""Prefixes of the variables that reach object storage; sandboxed programs get none."""


def _drop_store_access(environment: dict[str, str]) -> None:
    """A sandboxed program reaches its data through its mappings only: no credentials."""
    for name in [name for name in environment if name.startswith(STORE_VARIABLES)]:
        del environment[name]


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
