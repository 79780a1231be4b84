"""Composition root: builds the store, object store, executor and engine from Settings."""

from __future__ import annotations

import gc
import os

from batchyard.adapters.local_executor import LocalExecutor
from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.adapters.s3 import s3_configuration
from batchyard.adapters.store import SqlStore
from batchyard.lock import DataDirLock
from batchyard.orchestrator.engine import Engine
from batchyard.ports import Executor, ObjectStore, OutcomeListener
from batchyard.runner.runner import RunnerSettings
from batchyard.settings import Settings


def open_objects(settings: Settings) -> FsspecObjectStore:
    s3 = s3_configuration(
        settings.s3_endpoint_url, settings.s3_region,
        settings.s3_access_key_id.get_secret_value(),
        settings.s3_secret_access_key.get_secret_value(), settings.s3_addressing_style)
    return FsspecObjectStore(settings.object_root, settings.buckets, s3.options, s3.secrets,
                             s3.program_environment, direct_s3=bool(s3.options))


def hidden_paths(settings: Settings, objects: ObjectStore) -> tuple[str, ...]:
    """What sandboxed programs must not see: the data dir, database, local bucket folders."""
    hidden = [str(settings.data_dir.resolve()), *objects.local_folders()]
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        database = os.path.abspath(url[len("sqlite:///"):])
        hidden += [database, f"{database}-wal", f"{database}-shm"]
    return tuple(hidden)


def open_engine(settings: Settings) -> Engine:
    """A started engine for these settings; close it (or use `with`) when done."""
    objects = open_objects(settings)
    runner_settings = RunnerSettings(
        work_root=settings.work_root, region=settings.region, oss_host=settings.oss_host,
        keep_workdirs=settings.keep_workdirs, cache_root=settings.cache_root,
        hidden=hidden_paths(settings, objects), log_interval=settings.log_interval)

    def local_executor(listener: OutcomeListener) -> Executor:
        return LocalExecutor(settings.slots, objects, runner_settings, listener)

    lock = DataDirLock(settings.data_dir.resolve())
    releases = [lock.release]
    try:
        store = SqlStore(settings.resolved_database_url)
        releases.insert(0, store.claim())
        engine = Engine(store, objects, local_executor, settings.work_root,
                        closers=tuple(releases))
        started = engine.start()
    except BaseException:
        for release in releases:
            release()
        raise
    _settle_the_heap()
    return started


def _settle_the_heap() -> None:
    """Exempt everything made so far (modules, classes, schemas) from garbage collection.

    The engine then allocates many short-lived objects per attempt, and each full
    collection would walk the whole start-up heap again: `gc.freeze()` saves a fifth of the
    CPU time of a thousand short attempts.
    """
    gc.freeze()
