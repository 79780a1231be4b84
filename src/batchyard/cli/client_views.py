"""Rich renderables for the client commands: the jobs table, a job, a task, an instance.

Progress lines and the task summary table come from `progress`; this module adds the
views `batchyard run` does not have. Tables fit 80 columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from batchyard.cli.progress import Whole, counts_text, format_duration, seconds_between
from batchyard.domain.pending import Pending
from batchyard.domain.records import InstanceRecord, JobRecord, TaskRecord
from batchyard.domain.states import State

STATE_STYLE = {State.WAITING: "dim", State.RUNNING: "cyan", State.FINISHED: "green",
               State.FAILED: "red", State.STOPPED: "yellow"}
_JOB_FIXED_WIDTH = 36 + 8 + 4 + 5 + 7 + 4 + 6
"""Every column of the jobs table but Name, with the spaces between columns."""


def state_text(state: State) -> Text:
    return Text(state.value, style=STATE_STYLE[state])


def age(moment: datetime, now: datetime) -> str:
    """12s, 5m, 3h, 2d: how long ago."""
    seconds = int(seconds_between(moment, now, now))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _table(width: int | None = None) -> Table:
    return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=0, width=width)


def jobs_table(jobs: Sequence[JobRecord], console_width: int) -> Table:
    """Id, Name, State, Prio, Tasks and instances done/total, Age — fits the console."""
    now = datetime.now(UTC)
    table = _table()
    table.add_column("Id", no_wrap=True, min_width=36)
    table.add_column("Name", no_wrap=True, overflow="ellipsis",
                     max_width=max(4, console_width - _JOB_FIXED_WIDTH))
    table.add_column("State", no_wrap=True, min_width=8)
    for header, width in (("Prio", 4), ("Tasks", 5), ("Inst", 7), ("Age", 4)):
        table.add_column(header, justify="right", no_wrap=True, min_width=width)
    for job in jobs:
        table.add_row(job.id, job.name, state_text(job.state), str(job.priority),
                      _done(job.task_metrics.finished, job.task_metrics.total),
                      _done(job.instance_metrics.finished, job.instance_metrics.total),
                      age(job.created, now))
    return table


def _done(finished: int, total: int) -> str:
    return f"{finished}/{total}"


def _local(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "—"


def _took(started: datetime | None, ended: datetime | None) -> str:
    if started is None:
        return "—"
    took = format_duration(seconds_between(started, ended, datetime.now(UTC)))
    return took if ended else f"{took} so far"


def _fields(rows: Sequence[tuple[str, str | Text]]) -> RenderableType:
    """Name and value per line; a value (a log URL, an id) is never folded or cut."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(no_wrap=True)
    for name, value in rows:
        grid.add_row(name, value)
    return Whole(grid)


def job_details(job: JobRecord) -> RenderableType:
    """Name, id, state, priority, message, times, tasks and instances by state."""
    rows: list[tuple[str, str | Text]] = [
        ("Job", Text.assemble((job.name, "bold"), f"  {job.id}")),
        ("State", state_text(job.state)), ("Priority", str(job.priority))]
    if job.message:
        rows.append(("Message", job.message))
    rows += [("Created", _local(job.created)), ("Started", _local(job.started)),
             ("Ended", _local(job.ended)), ("Duration", _took(job.started, job.ended)),
             ("Tasks", counts_text(job.task_metrics)),
             ("Instances", counts_text(job.instance_metrics))]
    return _fields(rows)


def task_details(task: TaskRecord, instances: Sequence[InstanceRecord]) -> RenderableType:
    """The task's state and counts, then one row per instance."""
    rows: list[tuple[str, str | Text]] = [
        ("Task", Text.assemble((task.name, "bold"), f"  of {task.job_id}")),
        ("State", state_text(task.state)), ("Duration", _took(task.started, task.ended)),
        ("Instances", counts_text(task.instance_metrics))]
    if task.pending is not None:
        rows.append(("Waiting", pending_text(task.pending)))
    return Group(_fields(rows), Text(), instances_table(instances))


def pending_text(reason: Pending) -> Text:
    """`DependencyNotMet: waits for task split to finish`."""
    return Text.assemble((str(reason.code), "yellow"), f": {reason.message}")


def waiting_tasks(tasks: Sequence[TaskRecord]) -> RenderableType | None:
    """Why each task with Waiting instances has them (None: no task has a reason)."""
    explained = [task for task in tasks if task.pending is not None]
    if not explained:
        return None
    return _fields([(task.name, pending_text(task.pending)) for task in explained
                    if task.pending is not None])


def instances_table(instances: Sequence[InstanceRecord]) -> Table:
    """Id, State, Retries, Exit code, Duration, Error — fits 80 columns."""
    table = _table()
    table.add_column("Id", justify="right", no_wrap=True, min_width=2)
    table.add_column("State", no_wrap=True, min_width=8)
    table.add_column("Retries", justify="right", no_wrap=True)
    table.add_column("Exit", justify="right", no_wrap=True)
    table.add_column("Duration", justify="right", no_wrap=True)
    table.add_column("Error", overflow="ellipsis", no_wrap=True, max_width=48)
    for instance in instances:
        table.add_row(str(instance.instance_id), state_text(instance.state),
                      str(instance.retry_count), _exit(instance),
                      _took(instance.started, instance.ended).replace(" so far", "…"),
                      _error(instance) if instance.pending is None
                      else Text(str(instance.pending.code), style="yellow"))
    return table


def _exit(instance: InstanceRecord) -> str:
    return "—" if instance.exit_code is None else str(instance.exit_code)


def _error(instance: InstanceRecord) -> Text:
    text = ": ".join(part for part in (instance.error_code, instance.error_message) if part)
    return Text(text, style="red" if text else "")


def instance_details(instance: InstanceRecord, kept: Sequence[int] = ()) -> RenderableType:
    """Every field of the instance status, with its log objects and the attempts whose logs
    were kept (`kept`, see `batchyard log --attempt`)."""
    rows: list[tuple[str, str | Text]] = [
        ("Instance", Text.assemble((str(instance.instance_id), "bold"),
                                   f"  of task {instance.task} of {instance.job_id}")),
        ("State", state_text(instance.state)), ("RetryCount", str(instance.retry_count)),
        ("Started", _local(instance.started)), ("Ended", _local(instance.ended)),
        ("Duration", _took(instance.started, instance.ended)),
        ("Result.ExitCode", _exit(instance)),
        ("Result.ErrorCode", instance.error_code or "—"),
        ("Result.ErrorMessage", instance.error_message or "—"),
        ("Result.Detail", instance.detail or "—"),
        ("Node", instance.node or "—"),
        *([("Waiting", pending_text(instance.pending))] if instance.pending else []),
        ("Stdout", instance.stdout_path or "(not uploaded yet)"),
        ("Stderr", instance.stderr_path or "(not uploaded yet)")]
    if kept:
        rows.append(("Attempts kept", ", ".join(map(str, kept))))
    return _fields(rows)
