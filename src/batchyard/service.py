"""Composition root: builds the store, object store, executor and engine from Settings.

Two ways to open an engine: for `batchyard run` (one user's own jobs; plain jobs run as
that user, directly) and for `batchyard serve` (`serving=True`: every attempt of every
tenant is confined — the sandbox, an unprivileged user, limits — and the server refuses to
start if it cannot confine them, unless the operator passed `--insecure-no-sandbox`).
"""

from __future__ import annotations

import gc
import logging
import os
import stat

from batchyard.adapters.local_executor import LocalExecutor
from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.adapters.s3 import s3_configuration
from batchyard.adapters.store import SqlStore
from batchyard.domain.buckets import Grant
from batchyard.lock import DataDirLock
from batchyard.orchestrator.engine import Engine
from batchyard.ports import ObjectStore
from batchyard.ports.agents import Agent, AgentListener
from batchyard.runner.confinement import Confinement, Limits
from batchyard.runner.package import PackageLimits
from batchyard.runner.runner import RunnerSettings
from batchyard.runner.sandbox import check_sandbox
from batchyard.settings import Settings

log = logging.getLogger(__name__)


def open_objects(settings: Settings, shared_with: int | None = None) -> FsspecObjectStore:
    """The object store; `shared_with`: the group of confined programs, which then may
    write in every folder the store makes in a bucket (mode 2775, that group)."""
    s3 = s3_configuration(
        settings.s3_endpoint_url, settings.s3_region,
        settings.s3_access_key_id.get_secret_value(),
        settings.s3_secret_access_key.get_secret_value(), settings.s3_addressing_style)
    shared = shared_with is not None
    return FsspecObjectStore(settings.object_root, settings.buckets, s3.options, s3.secrets,
                             s3.program_environment, direct_s3=bool(s3.options),
                             folder_mode=0o2775 if shared else None, folder_group=shared_with)


def hidden_paths(settings: Settings, objects: ObjectStore) -> tuple[str, ...]:
    """What sandboxed programs must not see: the data dir, database, local bucket folders."""
    hidden = [str(settings.data_dir.resolve()), *objects.local_folders()]
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        database = os.path.abspath(url[len("sqlite:///"):])
        hidden += [database, f"{database}-wal", f"{database}-shm"]
    return tuple(hidden)


def confinement(settings: Settings, serving: bool) -> Confinement:
    """The confinement policy: always the sandbox under `serve` (unless insecure)."""
    sandbox = settings.sandbox
    enabled = (serving and not settings.insecure_no_sandbox) or sandbox.enabled
    limits = Limits(memory_bytes=settings.memory_per_attempt,
                    max_processes=sandbox.max_processes, disk_bytes=sandbox.disk_bytes)
    return Confinement(sandbox=enabled, user_base=sandbox.user_base,
                       network=sandbox.network == "host", limits=limits,
                       tracking=settings.process_tracking)


def bucket_grants(settings: Settings) -> dict[str, Grant]:
    """The buckets configuration gives to tenants (the rest go to their first user)."""
    return {name: Grant(grant.owner, frozenset(grant.read), frozenset(grant.write))
            for name, grant in settings.bucket_grants.items()}


def private_data_dir(settings: Settings) -> None:
    """The data directory holds the database and the master key: its owner's alone."""
    folder = settings.data_dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    status = folder.stat()
    if stat.S_IMODE(status.st_mode) & 0o077 and status.st_uid == os.geteuid():
        folder.chmod(0o700)


def open_engine(settings: Settings, serving: bool = False) -> Engine:
    """A started engine for these settings; close it (or use `with`) when done.

    For `run` (not `serving`), jobs left active by an engine that ended are Stopped, not
    resumed (see `Engine.start`); they are listed in the engine's `abandoned`.
    """
    policy = confinement(settings, serving)
    root = os.geteuid() == 0
    if policy.sandbox:
        check_sandbox(root=root, user_base=policy.user_base)
    elif serving:
        log.warning("--insecure-no-sandbox: attempts run unconfined as %s; any tenant can "
                    "take over this installation", "root" if root else "this user")
    private_data_dir(settings)
    objects = open_objects(settings, policy.user_base if policy.sandbox and root else None)
    runner_settings = _runner_settings(settings, policy, objects, serving)

    def local_agents(listener: AgentListener) -> list[Agent]:
        return [LocalExecutor(settings.slots, objects, runner_settings, listener)]

    lock = DataDirLock(settings.data_dir.resolve(), "serve" if serving else "run")
    releases = [lock.release]
    try:
        store = SqlStore(settings.resolved_database_url)
        releases.insert(0, store.claim())
        engine = Engine(store, objects, local_agents,
                        closers=tuple(releases), grants=bucket_grants(settings))
        started = engine.start(abandon=not serving)
    except BaseException:
        for release in releases:
            release()
        raise
    _settle_the_heap()
    return started


def _runner_settings(settings: Settings, policy: Confinement, objects: ObjectStore,
                     serving: bool) -> RunnerSettings:
    limits = PackageLimits(max_bytes=settings.package_max_bytes,
                           max_members=settings.package_max_members,
                           max_path=settings.package_max_path)
    return RunnerSettings(
        work_root=settings.work_root, region=settings.region, oss_host=settings.oss_host,
        keep_workdirs=settings.keep_workdirs, cache_root=settings.cache_root,
        hidden=hidden_paths(settings, objects), log_interval=settings.log_interval,
        confinement=policy, package_limits=limits,
        inherit_environment=not serving and not policy.sandbox)


def _settle_the_heap() -> None:
    """Exempt everything made so far (modules, classes, schemas) from garbage collection.

    The engine then allocates many short-lived objects per attempt, and each full
    collection would walk the whole start-up heap again: `gc.freeze()` saves a fifth of the
    CPU time of a thousand short attempts.
    """
    gc.freeze()
