"""stdout and stderr of a running attempt, shipped every few seconds (reference §13 #10).

So that `batchyard log -f` (and anyone reading the redirect folder) sees a long program's
output while it runs, not only when it ends. The shared watchdog wakes each running attempt
`interval` seconds after it started and every `interval` after that; a single background
thread does the uploads (the watchdog's actions must not block). An attempt that ends first
costs one scheduled and one cancelled alarm. The final upload at the end of the attempt
always wins: `finish()` waits for an upload in flight and no periodic upload follows it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from batchyard.domain.attempt import AttemptRequest
from batchyard.domain.logs import in_folder as log_url
from batchyard.ports import ObjectStore
from batchyard.runner.watchdog import Alarm, shared_watchdog
from batchyard.runner.workspace import Workspace

_log = logging.getLogger(__name__)


class LiveLogs:
    """Periodic uploads of one attempt's stdout/stderr to their final object names."""

    def __init__(self, objects: ObjectStore, request: AttemptRequest, workspace: Workspace,
                 interval: float) -> None:
        self._objects = objects
        self._targets = (
            (workspace.stdout, log_url(request.stdout_dir, request.log_name("stdout"))),
            (workspace.stderr, log_url(request.stderr_dir, request.log_name("stderr"))))
        self._interval = interval
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}
        self._done = False
        self._alarm: Alarm | None = None

    def start(self, first: float | None = None) -> LiveLogs:
        """Upload every `interval` seconds, the first time after `first` seconds (default:
        `interval`; the agent's spawner starts it only once an attempt ran that long)."""
        self._arm(self._interval if first is None else first)
        return self

    def finish(self) -> None:
        """No upload after this returns (the caller then uploads the final logs)."""
        with self._lock:
            self._done = True
            if self._alarm is not None:
                self._alarm.cancel()

    def sync(self) -> None:
        """Upload the logs that grew since the last upload; then wait for the next turn."""
        with self._lock:
            if self._done:
                return
            for local, url in self._targets:
                self._upload_if_grown(local, url)
            self._arm(self._interval)

    def _arm(self, delay: float) -> None:
        self._alarm = shared_watchdog().schedule(delay, self._due)

    def _due(self) -> None:
        _uploads().put(self.sync)

    def _upload_if_grown(self, local: str, url: str) -> None:
        try:
            size = os.stat(local).st_size
            if size != self._sizes.get(local, 0):
                self._objects.put_file(Path(local), url)
                self._sizes[local] = size
        except Exception as error:  # a live copy is best effort; the final upload reports
            _log.warning("live log upload of %s failed: %s", url, error)


_queue: queue.SimpleQueue[Callable[[], None]] | None = None
_queue_lock = threading.Lock()


def _uploads() -> queue.SimpleQueue[Callable[[], None]]:
    """The queue of the one live-log upload thread (started on first use)."""
    global _queue
    with _queue_lock:
        if _queue is None:
            _queue = queue.SimpleQueue()
            threading.Thread(target=_upload_loop, args=(_queue,), name="batchyard-livelogs",
                             daemon=True).start()
        return _queue


def _upload_loop(jobs: queue.SimpleQueue[Callable[[], None]]) -> None:
    while True:
        try:
            jobs.get()()
        except Exception:  # shared by every attempt: one failure must not stop the others
            _log.exception("live log upload failed")
