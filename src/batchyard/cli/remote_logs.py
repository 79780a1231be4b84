"""`batchyard log`: the stdout/stderr objects of a job's instances, printed or followed.

Logs are read from the object store the server writes to (the CLI opens it with the same
settings, `--data-dir` and `--bucket`); the API only says where they are. The runner uploads
a running attempt's logs every `log_interval` seconds and once more when it ends; a retry
replaces them. An attempt that did not succeed also leaves copies named
`<log>.attempt-<n>` (`domain.logs`), n counting the instance's attempts from 1: `--attempt n`
reads those.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from batchyard.cli.backends import Client
from batchyard.cli.progress import order_tasks
from batchyard.domain.logs import ATTEMPT_SUFFIX, instance_log
from batchyard.domain.records import InstanceRecord
from batchyard.domain.states import TERMINAL
from batchyard.errors import BatchyardError
from batchyard.ports import ObjectStore

FOLLOW_INTERVAL_SECONDS = 1.0


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


@dataclass
class Source:
    """One log object being printed, and how many of its bytes are out already."""

    task: str
    instance_id: int
    stream: str
    url: str
    printed: int = 0
    found: bool = False
    attempt: int | None = None
    """The earlier attempt whose copy this is (`url` ends with `.attempt-<n>`), or None."""

    @property
    def name(self) -> str:
        """`count/2 stderr`, `count/2 stderr (attempt 1)`."""
        attempt = f" (attempt {self.attempt})" if self.attempt is not None else ""
        return f"{self.task}/{self.instance_id} {self.stream}{attempt}"

    @property
    def title(self) -> str:
        return f"==> {self.name}: {self.url or '(no path)'} <=="

    @property
    def empty_title(self) -> str:
        return f"==> {self.name}: (empty) <=="


class LogPrinter:
    """Writes log bytes to `out`, with a `==> task/id stream: url <==` line before each log
    when more than one is selected (as `tail` does); notes go to `note`. An empty log is
    `==> task/id stream: (empty) <==` when `mark_empty`, else skipped until it has bytes (as
    when following: it may still get some)."""

    def __init__(self, objects: ObjectStore, out: BinaryIO, note: Callable[[str], None],
                 titled: bool, mark_empty: bool = True) -> None:
        self._objects = objects
        self._out = out
        self._note = note
        self._titled = titled
        self._mark_empty = mark_empty
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
        if len(data) > source.printed:
            self._write(source, data[source.printed:])
            source.printed = len(data)
        elif not data and self._titled and self._mark_empty and self._last is not source:
            self._write_title(source.empty_title)
            self._last = source

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
            self._write_title(source.title)
        self._last = source
        self._out.write(data)
        self._out.flush()

    def _write_title(self, title: str) -> None:
        self._out.write(("\n" if self._last else "").encode() + title.encode() + b"\n")
        self._out.flush()


def sources(description: dict[str, Any], instances: Sequence[InstanceRecord],
            streams: Sequence[str], attempt: int | None = None) -> list[Source]:
    """The logs of `instances`: the current ones, or the copies kept of attempt `attempt`."""
    return [_source(description, instance, stream, attempt)
            for instance in instances for stream in streams]


def _source(description: dict[str, Any], instance: InstanceRecord, stream: str,
            attempt: int | None) -> Source:
    url = instance_log(description, instance, stream, attempt)
    return Source(instance.task, instance.instance_id, stream, url, attempt=attempt)


def kept_attempts(objects: ObjectStore, log: str) -> list[int]:
    """The attempts whose copies of the log object `log` exist (`<log>.attempt-<n>`)."""
    folder, _, name = log.rpartition("/")
    if not folder:
        return []
    pattern = re.compile(re.escape(name + ATTEMPT_SUFFIX) + r"([0-9]+)$")
    try:
        listed = objects.list(folder + "/")
    except BatchyardError:
        return []
    found = (pattern.match(info.url.rpartition("/")[2]) for info in listed if not info.is_dir)
    return sorted(int(match.group(1)) for match in found if match)


def missing_note(objects: ObjectStore, source: Source, instance: InstanceRecord) -> str:
    """Why a log is not there: not uploaded yet, or no copy kept of the attempt asked for
    (naming the attempts that have one)."""
    if source.attempt is None:
        return (f"{source.name}: no log yet — the instance is {instance.state.value}; logs "
                "are uploaded once it runs, every few seconds (-f waits for them)")
    kept = kept_attempts(objects, source.url.removesuffix(f"{ATTEMPT_SUFFIX}{source.attempt}"))
    which = (f"attempts with logs kept: {', '.join(map(str, kept))}" if kept
             else "no attempt of it has logs kept (only attempts that did not succeed do)")
    return f"{source.name}: no such log — {which}"


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
