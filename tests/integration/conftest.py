"""Fixtures: a real engine on a temp data dir (SQLite file, local object store, processes)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.adapters.store import SqlStore
from batchyard.orchestrator.engine import Engine
from batchyard.ports.reads import JobQueries
from batchyard.ports.store import StateStore
from batchyard.service import open_engine
from batchyard.settings import Settings
from batchyard.testing import MemoryStore


def make_task(command: str, count: int = 1, **fields: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "InstanceCount": count,
        "AutoCluster": {"ImageId": "img-ubuntu", "InstanceType": "ecs.sn1.medium"},
        "Parameters": {
            "Command": {"CommandLine": command, "PackagePath": ""},
            "StdoutRedirectPath": "oss://test/logs/",
            "StderrRedirectPath": "oss://test/logs/",
        },
    }
    task.update(fields)
    return task


def make_job(tasks: dict[str, dict[str, Any]], dependencies: dict[str, list[str]] | None = None,
             **fields: Any) -> dict[str, Any]:
    job: dict[str, Any] = {"Name": "test", "Priority": 0, "Type": "DAG",
                           "JobFailOnInstanceFail": True,
                           "DAG": {"Tasks": tasks, "Dependencies": dependencies or {}}}
    job.update(fields)
    return job


def settings_for(data_dir: Path, slots: int = 4) -> Settings:
    return Settings(data_dir=data_dir, slots=slots)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def each_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    """The MemoryStore, then the SQL store on SQLite, then on PostgreSQL (the session's
    throwaway cluster): what the store contract suites run over."""
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = SqlStore(url)
    yield opened
    opened.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    """The SQL store on SQLite, then on a throwaway PostgreSQL (a module may define its own
    `store` instead)."""
    url = (f"sqlite:///{tmp_path / 'state.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))
    opened = SqlStore(url)
    yield opened
    opened.close()


@pytest.fixture
def reads(store: SqlStore) -> JobQueries:
    """The read service of `store`."""
    return store.reads


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database: a SQLite file, then the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with open_engine(settings_for(tmp_path / "data")) as running:
        yield running


@pytest.fixture
def one_slot_engine(tmp_path: Path) -> Iterator[Engine]:
    with open_engine(settings_for(tmp_path / "data", slots=1)) as running:
        yield running


def upload_package(objects: FsspecObjectStore, url: str, files: dict[str, str]) -> None:
    """A .tar.gz of `files` (name -> text), stored as `url`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    objects.put_bytes(url, buffer.getvalue())
