"""`batchyard log`: the stdout/stderr objects of a job's instances, printed or followed.

Logs are read from the object store the server writes to (the CLI opens it with the same
settings, `--data-dir` and `--bucket`); the API only says where they are. The runner uploads
a running attempt's logs every `log_interval` seconds and once more when it ends; a retry
replaces them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from batchyard.cli.backends import Client
from batchyard.cli.progress import order_tasks
from batchyard.domain.records import InstanceRecord
from batchyard.domain.states import TERMINAL
from batchyard.errors import BatchyardError
from batchyard.ports import ObjectStore

FOLLOW_INTERVAL_SECONDS = 1.0
STREAMS = ("stdout", "stderr")


@dataclass(frozen=True)
class Selection:
    """The instances `batchyard log` shows: a whole job, one task, or one instance."""

    job_id: str
    task: str | None = None
    instance_id: int | None = None
    order: Sequence[str] = ()
    """Task names in dependency order (`progress.task_order` of the description)."""

    def instances(self, client: Client) -> list[InstanceRecord]:
        """The selected instances, task by task in the job's dependency order."""
        if self.task is not None and self.instance_id is not None:
            return [client.instance(self.job_id, self.task, self.instance_id)]
        if self.task is not None:
            return client.instances(self.job_id, self.task)
        tasks = order_tasks(client.tasks(self.job_id), self.order)
        return [instance for task in tasks
                for instance in client.instances(self.job_id, task.name)]


def log_url(description: dict[str, Any], instance: InstanceRecord, stream: str) -> str:
    """Where the instance's log is (or will be): the recorded path, else the one the runner
    will write — `<RedirectPath>/<stream>.<jobId>.<task>.<instanceId>` (reference §4.4)."""
    recorded = instance.stdout_path if stream == "stdout" else instance.stderr_path
    if recorded:
        return recorded
    tasks = (description.get("DAG") or {}).get("Tasks") or {}
    parameters = (tasks.get(instance.task) or {}).get("Parameters") or {}
    folder = str(parameters.get(f"{stream.capitalize()}RedirectPath") or "")
    if not folder:
        return ""
    folder = folder if folder.endswith("/") else folder + "/"
    return f"{folder}{stream}.{instance.job_id}.{instance.task}.{instance.instance_id}"


@dataclass
class Source:
    """One log object being printed, and how many of its bytes are out already."""

    task: str
    instance_id: int
    stream: str
    url: str
    printed: int = 0
    found: bool = False

    @property
    def title(self) -> str:
        return f"==> {self.task}/{self.instance_id} {self.stream}: {self.url or '(no path)'} <=="


class LogPrinter:
    """Writes log bytes to `out`, with a `==> task/id stream: url <==` line before each log
    when more than one is selected (as `tail` does); notes go to `note`."""

    def __init__(self, objects: ObjectStore, out: BinaryIO, note: Callable[[str], None],
                 titled: bool) -> None:
        self._objects = objects
        self._out = out
        self._note = note
        self._titled = titled
        self._last: Source | None = None

    def print_new(self, source: Source) -> None:
        """Print the bytes of the object not printed yet (all of it when a retry replaced it)."""
        data = self._read(source)
        if data is None:
            return
        source.found = True
        if len(data) < source.printed:
            self._note(f"{source.task}/{source.instance_id} {source.stream}: replaced by a "
                       "new attempt; printing it from the start")
            source.printed = 0
        if len(data) > source.printed or (self._titled and not source.printed and not data):
            self._write(source, data[source.printed:])
            source.printed = len(data)

    def _read(self, source: Source) -> bytes | None:
        try:
            if source.url and self._objects.exists(source.url):
                return self._objects.read_bytes(source.url)
        except BatchyardError as error:
            self._note(f"{error.message} (the CLI reads logs from the server's object store: "
                       "give it the server's --data-dir / --bucket settings)")
            return None
        return None

    def _write(self, source: Source, data: bytes) -> None:
        if self._titled and self._last is not source:
            self._out.write(("\n" if self._last else "").encode() + source.title.encode()
                            + b"\n")
        self._last = source
        self._out.write(data)
        self._out.flush()


def sources(description: dict[str, Any], instances: Sequence[InstanceRecord],
            streams: Sequence[str]) -> list[Source]:
    return [Source(instance.task, instance.instance_id, stream,
                   log_url(description, instance, stream))
            for instance in instances for stream in streams]


def print_logs(printer: LogPrinter, logs: Sequence[Source]) -> list[Source]:
    """Print what is new in every log; the logs not found (yet) are returned."""
    for source in logs:
        printer.print_new(source)
    return [source for source in logs if not source.found]


def follow(client: Client, selection: Selection, printer: LogPrinter,
           logs: Sequence[Source], interval: float = FOLLOW_INTERVAL_SECONDS) -> None:
    """Print new bytes every `interval` seconds until every selected instance (or the job)
    has ended; the last round reads the logs after the end is seen, so nothing is missed."""
    while True:
        instances = selection.instances(client)
        ended = all(instance.state in TERMINAL for instance in instances) or (
            client.job(selection.job_id).state in TERMINAL)
        print_logs(printer, logs)
        if ended:
            return
        time.sleep(interval)
