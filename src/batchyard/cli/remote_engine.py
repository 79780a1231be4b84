"""The `execution.Engine` protocol over a client (the REST API, or a data directory read
while a `batchyard run` works there), so that `submit --wait` and `watch` follow and
summarise a job with the very code `batchyard run` uses."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from batchyard.cli.backends import Client
from batchyard.cli.remote import ApiError
from batchyard.domain.records import InstanceRecord, JobRecord, TaskRecord
from batchyard.domain.states import TERMINAL, State
from batchyard.errors import BatchyardError, NotFound
from batchyard.ports import ObjectStore

Result = TypeVar("Result")

POLL_SECONDS = 0.25
"""How often the job is asked for while waiting for it to end."""


class RemoteEngine:
    """Polls the server; the object store (for stderr tails) is opened on first use."""

    def __init__(self, client: Client, open_objects: Callable[[], ObjectStore],
                 auto_release: bool = False) -> None:
        self._client = client
        self._open_objects = open_objects
        self._objects: ObjectStore | None = None
        self._auto_release = auto_release
        self._last: JobRecord | None = None

    @property
    def objects(self) -> ObjectStore:
        if self._objects is None:
            self._objects = self._open_objects()
        return self._objects

    def job(self, job_id: str) -> JobRecord:
        """The job; once seen, a job with AutoRelease that is gone was Finished and deleted."""
        try:
            self._last = self._client.job(job_id)
        except BatchyardError as error:
            if not _missing(error) or self._last is None or not self._auto_release:
                raise
            self._last = replace(self._last, state=State.FINISHED)
        return self._last

    def tasks(self, job_id: str) -> list[TaskRecord]:
        return _found(lambda: self._client.tasks(job_id))

    def instances(self, job_id: str, task: str) -> list[InstanceRecord]:
        return _found(lambda: self._client.instances(job_id, task))

    def wait(self, job_id: str, timeout: float | None = None) -> JobRecord:
        """The job once it is Finished, Failed or Stopped, or after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            left = None if deadline is None else deadline - time.monotonic()
            if job.state in TERMINAL or (left is not None and left <= 0):
                return job
            time.sleep(POLL_SECONDS if left is None else min(POLL_SECONDS, left))

    def stop(self, job_id: str) -> None:
        self._client.stop(job_id)


def _missing(error: BatchyardError) -> bool:
    return isinstance(error, NotFound) or (isinstance(error, ApiError) and error.status == 404)


def _found(call: Callable[[], Result]) -> Result:
    """404 answers as NotFound, which the follow-and-summarise code expects for released jobs."""
    try:
        return call()
    except ApiError as error:
        if error.status == 404:
            raise NotFound(error.message) from None
        raise
