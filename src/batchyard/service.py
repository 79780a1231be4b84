"""Composition root: builds the store, object store, executor and engine from Settings."""

from __future__ import annotations

from batchyard.adapters.local_executor import LocalExecutor
from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.adapters.store import SqlStore
from batchyard.lock import DataDirLock
from batchyard.orchestrator.engine import Engine
from batchyard.ports import Executor, ObjectStore, OutcomeListener
from batchyard.runner.runner import RunnerSettings
from batchyard.settings import Settings


def open_objects(settings: Settings) -> ObjectStore:
    return FsspecObjectStore(settings.object_root, settings.buckets)


def open_engine(settings: Settings) -> Engine:
    """A started engine for these settings; close it (or use `with`) when done."""
    objects = open_objects(settings)
    runner_settings = RunnerSettings(
        work_root=settings.work_root, region=settings.region, oss_host=settings.oss_host,
        keep_workdirs=settings.keep_workdirs)

    def local_executor(listener: OutcomeListener) -> Executor:
        return LocalExecutor(settings.slots, objects, runner_settings, listener)

    lock = DataDirLock(settings.data_dir.resolve())
    try:
        store = SqlStore(settings.resolved_database_url)
        engine = Engine(store, objects, local_executor, settings.work_root,
                        closers=(lock.release,))
        return engine.start()
    except BaseException:
        lock.release()
        raise
