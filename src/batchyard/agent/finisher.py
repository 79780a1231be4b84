"""Concluding ended fast-path attempts: logs uploaded, folders removed, then reported.

Logs that go to a bucket in a local folder are hard-linked there (microseconds): those
attempts are concluded on the spawner loop itself, right after the turn they ended in,
and reported in one call — handing them to another thread would cost more than the work.
Logs bound for a remote store (S3, OSS) can take long to upload, so those attempts go to a
few finisher threads, and the loop goes on starting and reaping meanwhile; each finisher
takes everything that ended since it last looked and reports it in one call.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from batchyard.agent.attempts import Attempt
from batchyard.domain.attempt import AttemptRequest
from batchyard.domain.outcome import Outcome
from batchyard.domain.spec import bucket_of
from batchyard.errors import ObjectStoreError
from batchyard.ports import ObjectStore
from batchyard.runner.runner import broken, conclude
from batchyard.runner.settings import RunnerSettings
from batchyard.runner.workspace import prepare_workspace

_log = logging.getLogger(__name__)

Concluded = list[tuple[Attempt, Outcome]]
_MOST_FOLDERS = 4096
"""Redirect folders whose locality is remembered (typically one or two per job)."""
_MOST_AT_ONCE = 256
"""Attempts concluded before the batch is reported (their slots are free only then)."""


class Finishers:
    """`count` threads concluding attempts put in by `finish`, reporting to `done`."""

    def __init__(self, count: int, objects: ObjectStore, settings: RunnerSettings,
                 done: Callable[[Concluded], None]) -> None:
        self._objects = objects
        self._settings = settings
        self._done = done
        self._queue: queue.SimpleQueue[Attempt | None] = queue.SimpleQueue()
        self._buckets: dict[str, bool] = {}
        """Whether the logs of a redirect folder stay local, by folder."""
        self._threads = [threading.Thread(target=self._run, name=f"batchyard-finisher-{n}",
                                          daemon=True) for n in range(count)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def finish(self, attempts: list[Attempt]) -> None:
        """Conclude these attempts: here if their logs stay local, else on a finisher."""
        local = []
        for attempt in attempts:
            if self._local(attempt.request):
                local.append(attempt)
            else:
                self._queue.put(attempt)
        if local:
            self._done([(attempt, self._conclude(attempt)) for attempt in local])

    def _local(self, request: AttemptRequest) -> bool:
        """Whether both logs of `request` go to buckets in local folders (asked once each)."""
        return self._local_bucket(request.stdout_dir) and self._local_bucket(request.stderr_dir)

    def _local_bucket(self, url: str) -> bool:
        try:
            return self._buckets[url]
        except KeyError:
            pass
        try:
            local = self._objects.bucket_folder(bucket_of(url)) is not None
        except (ValueError, ObjectStoreError):
            local = False
        if len(self._buckets) < _MOST_FOLDERS:
            self._buckets[url] = local
        return local

    def stop(self) -> None:
        """Conclude what is queued, then end the threads."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._take()
            if not batch:
                continue
            try:
                self._done([(attempt, self._conclude(attempt)) for attempt in batch])
            except Exception:  # the next batch must still be reported
                _log.exception("reporting %d attempts failed", len(batch))

    def _take(self) -> tuple[list[Attempt], bool]:
        """What ended since the last look, and whether this thread should stop after it."""
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < _MOST_AT_ONCE:
            try:
                attempt = self._queue.get_nowait()
            except queue.Empty:
                break
            if attempt is None:
                return batch, True
            batch.append(attempt)
        return batch, False

    def _conclude(self, attempt: Attempt) -> Outcome:
        started = attempt.started or datetime.now(UTC)
        try:
            if attempt.live is not None:
                attempt.live.finish()
            if attempt.error is not None:
                return broken(attempt.error, started)
            workspace = attempt.workspace or prepare_workspace(
                str(self._settings.work_root), attempt.request.key)
            assert attempt.verdict is not None
            return conclude(attempt.request, self._objects, self._settings, workspace,
                            attempt.verdict, started)
        except Exception as error:  # a bug or broken machine must still yield an Outcome
            _log.exception("concluding attempt %s failed", attempt.request.key)
            return broken(error, started)

