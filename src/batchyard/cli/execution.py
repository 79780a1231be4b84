"""Following a submitted job until it ends, and collecting what the final summary shows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from batchyard.cli.progress import (
    FAILURES_SHOWN,
    REFRESH_PER_SECOND,
    JobView,
    TaskSummary,
    order_tasks,
    tail_lines,
)
from batchyard.domain.records import InstanceRecord, JobRecord, TaskRecord
from batchyard.domain.states import TERMINAL, State
from batchyard.errors import BatchyardError, NotFound
from batchyard.ports import ObjectStore

STOP_GRACE_SECONDS = 30.0
"""How long Ctrl-C waits for the stopped job's instances to be killed and recorded."""

EXIT_FINISHED = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_FAILED_INSTANCES = 3
"""The job Finished, but some of its instances failed (JobFailOnInstanceFail false)."""
EXIT_INTERRUPTED = 130


class Engine(Protocol):
    """The part of `batchyard.service.Engine` the command line uses."""

    @property
    def objects(self) -> ObjectStore: ...
    def job(self, job_id: str) -> JobRecord: ...
    def tasks(self, job_id: str) -> list[TaskRecord]: ...
    def instances(self, job_id: str, task: str) -> list[InstanceRecord]: ...
    def wait(self, job_id: str, timeout: float | None = None) -> JobRecord: ...
    def stop(self, job_id: str) -> None: ...


class Display(Protocol):
    def show(self, view: JobView) -> None: ...


def observe(engine: Engine, job_id: str, order: Sequence[str],
            previous: JobView | None = None, timeout: float | None = 0) -> JobView:
    """The job (after waiting up to `timeout` seconds for it to end, or until it ends when
    `timeout` is None) and its tasks in `order`.

    A job with AutoRelease is deleted once Finished: its final record still comes from
    `engine.wait`, and its tasks are those last seen.
    """
    job = engine.wait(job_id, timeout=timeout)
    try:
        tasks = order_tasks(engine.tasks(job_id), order)
    except NotFound:
        tasks = list(previous.tasks) if previous is not None else []
    return JobView(job, tasks)


def watch(engine: Engine, job_id: str, order: Sequence[str], display: Display | None,
          interval: float = 1 / REFRESH_PER_SECOND) -> JobView:
    """Show the job every `interval` seconds (~8 times a second by default; a server is
    asked less often) until it is Finished, Failed or Stopped.

    Without a display, just wait for the end (nothing is shown meanwhile).
    """
    if display is None:
        return observe(engine, job_id, order, timeout=None)
    view = observe(engine, job_id, order)
    while True:
        display.show(view)
        if view.job.state in TERMINAL:
            return view
        view = observe(engine, job_id, order, view, timeout=interval)


def stop(engine: Engine, job_id: str) -> None:
    """Stop the job (Ctrl-C) and give its instances a moment to be recorded as Stopped."""
    try:
        engine.stop(job_id)
    except BatchyardError:
        return  # it ended on its own meanwhile
    engine.wait(job_id, timeout=STOP_GRACE_SECONDS)


def summarize(engine: Engine, view: JobView) -> list[TaskSummary]:
    return [TaskSummary(task, _instances(engine, view.job.id, task.name)) for task in view.tasks]


def _instances(engine: Engine, job_id: str, task: str) -> list[InstanceRecord]:
    try:
        return engine.instances(job_id, task)
    except NotFound:
        return []  # released (AutoRelease) meanwhile


def failed_instances(summaries: Sequence[TaskSummary]) -> list[InstanceRecord]:
    return [instance for summary in summaries for instance in summary.instances
            if instance.state is State.FAILED]


def stderr_tails(store: ObjectStore,
                 failed: Sequence[InstanceRecord]) -> dict[tuple[str, int], str]:
    """The last lines of stderr of the failed instances the summary describes."""
    tails = {}
    for instance in failed[:FAILURES_SHOWN]:
        if not instance.stderr_path:
            continue
        try:
            tails[(instance.task, instance.instance_id)] = tail_lines(
                store.read_bytes(instance.stderr_path))
        except (BatchyardError, OSError):
            continue  # the log could not be uploaded; the report says where it should be
    return tails


def exit_status(job: JobRecord, allow_failed_instances: bool = False) -> int:
    """The exit status of a command that waited for `job` to end.

    0 Finished with every instance finished; 3 Finished with failed instances (a job with
    JobFailOnInstanceFail false), 0 instead when `allow_failed_instances`; 1 Failed or
    Stopped. The one rule for `run`, `submit --wait` and any other command that waits.
    """
    if job.state is not State.FINISHED:
        return EXIT_FAILED
    if job.instance_metrics.failed and not allow_failed_instances:
        return EXIT_FAILED_INSTANCES
    return EXIT_FINISHED
