"""Rendering a job for the terminal: live progress, plain progress lines, the final summary.

Everything here turns records into Rich renderables or text; nothing talks to the engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from batchyard.domain.dag import topological_order, upstreams
from batchyard.domain.derivation import Metrics
from batchyard.domain.records import InstanceRecord, JobRecord, TaskRecord
from batchyard.domain.states import State

REFRESH_PER_SECOND = 8
LIVE_MAX_WIDTH = 100
"""The live lines use the terminal's width up to this many columns."""
FAILURES_SHOWN = 10
"""Failed instances described in full in the summary; the rest are counted."""

_STYLE = {
    State.WAITING: "dim",
    State.RUNNING: "cyan",
    State.FINISHED: "green",
    State.FAILED: "red",
    State.STOPPED: "yellow",
}
_SYMBOL = {
    State.WAITING: "○",
    State.RUNNING: "▶",
    State.FINISHED: "✔",
    State.FAILED: "✘",
    State.STOPPED: "■",
}


@dataclass(frozen=True)
class JobView:
    """One observation of a job: the job record and its tasks in topological order."""

    job: JobRecord
    tasks: Sequence[TaskRecord]
    observed: datetime = field(default_factory=lambda: datetime.now(UTC))


def task_order(description: dict[str, Any]) -> list[str]:
    """Task names of a job description, every task after the tasks it depends on."""
    dag = description.get("DAG") or {}
    tasks = dag.get("Tasks") or {}
    return topological_order(upstreams(tasks, dag.get("Dependencies") or {}))


def order_tasks(records: Iterable[TaskRecord], order: Sequence[str]) -> list[TaskRecord]:
    rank = {name: index for index, name in enumerate(order)}
    return sorted(records, key=lambda task: (rank.get(task.name, len(rank)), task.name))


def seconds_between(start: datetime | None, end: datetime | None, now: datetime) -> float:
    """Seconds from `start` to `end` (or `now` while still going); 0 when not started."""
    if start is None:
        return 0.0
    stop = end or now
    if (start.tzinfo is None) != (stop.tzinfo is None):
        start, stop = start.replace(tzinfo=None), stop.replace(tzinfo=None)
    return max(0.0, (stop - start).total_seconds())


def format_duration(seconds: float) -> str:
    """29ms, 12.3s, 3m05s, 2h07m."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, second = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{second:02d}s"
    hours, minute = divmod(minutes, 60)
    return f"{hours}h{minute:02d}m"


def counts_text(metrics: Metrics) -> Text:
    """`2 waiting  1 running  0 finished  0 failed` (+ stopped when any), zeros dimmed."""
    text = Text()
    parts = [(metrics.waiting, "waiting", State.WAITING),
             (metrics.running, "running", State.RUNNING),
             (metrics.finished, "finished", State.FINISHED),
             (metrics.failed, "failed", State.FAILED)]
    if metrics.stopped:
        parts.append((metrics.stopped, "stopped", State.STOPPED))
    for index, (count, label, state) in enumerate(parts):
        if index:
            text.append("  ")
        text.append(f"{count} {label}", style=_STYLE[state] if count else "dim")
    return text


def counts_plain(metrics: Metrics) -> str:
    return counts_text(metrics).plain.replace("  ", ", ")


class LiveProgress:
    """A Rich Live display: a header line and one line per task, redrawn ~8 times a second."""

    def __init__(self, console: Console, started: datetime) -> None:
        self._console = console
        self._started = started
        self._spinners: dict[str, Spinner] = {}
        self._live = Live(console=console, refresh_per_second=REFRESH_PER_SECOND,
                          transient=False, redirect_stdout=False, redirect_stderr=False)

    def __enter__(self) -> LiveProgress:
        self._live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._live.__exit__(kind, error, trace)

    def show(self, view: JobView) -> None:
        self._live.update(self.render(view), refresh=True)

    def render(self, view: JobView) -> RenderableType:
        """Header, then per task: symbol, name, bar (takes the spare width), counts, time."""
        grid = Table.grid(padding=(0, 1), expand=True)
        grid.width = min(self._console.width, LIVE_MAX_WIDTH)
        grid.add_column(width=1, no_wrap=True)
        grid.add_column(no_wrap=True, min_width=max((len(t.name) for t in view.tasks), default=1))
        grid.add_column(ratio=1, min_width=4)
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True, justify="right", min_width=6)
        for task in view.tasks:
            grid.add_row(*self._task_cells(task, view.observed))
        return Group(header_text(view, self._started), grid)

    def _task_cells(self, task: TaskRecord, now: datetime) -> list[RenderableType]:
        metrics = task.instance_metrics
        done = metrics.finished + metrics.failed + metrics.stopped
        bar = ProgressBar(total=max(metrics.total, 1), completed=done,
                          complete_style="red" if metrics.failed else "cyan",
                          finished_style="red" if metrics.failed else "green")
        return [self._symbol(task), Text(task.name, style=_STYLE[task.state]), bar,
                counts_text(metrics), Text(_task_time(task, now), style="dim")]

    def _symbol(self, task: TaskRecord) -> RenderableType:
        if task.state is State.RUNNING:
            return self._spinners.setdefault(task.name, Spinner("dots", style="cyan"))
        return Text(_SYMBOL[task.state], style=_STYLE[task.state])


def _task_time(task: TaskRecord, now: datetime) -> str:
    if task.started is None:
        return ""
    return format_duration(seconds_between(task.started, task.ended, now))


def header_text(view: JobView, started: datetime) -> Text:
    job = view.job
    text = Text()
    text.append(job.name, style="bold")
    text.append(f"  {job.id}  ", style="dim")
    text.append(job.state.value, style=_STYLE[job.state])
    text.append(f"  {format_duration(seconds_between(started, None, view.observed))}", style="dim")
    metrics = job.instance_metrics
    if metrics.total:
        text.append(f"  {metrics.finished}/{metrics.total} finished", style="dim")
    return text


class PlainProgress:
    """Progress for logs and pipes: one line each time a task's state or counts change."""

    def __init__(self, console: Console, started: datetime) -> None:
        self._console = console
        self._started = started
        self._seen: dict[str, tuple[State, Metrics | None]] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        return None

    def show(self, view: JobView) -> None:
        elapsed = format_duration(seconds_between(self._started, None, view.observed))
        if self._changed("", (view.job.state, None)):
            self._emit(f"{elapsed:>7}  job {view.job.name}: {view.job.state.value}")
        for task in view.tasks:
            if self._changed(task.name, (task.state, task.instance_metrics)):
                self._emit(f"{elapsed:>7}  {task.name}: {task.state.value} — "
                           f"{counts_plain(task.instance_metrics)}")

    def _changed(self, key: str, value: tuple[State, Metrics | None]) -> bool:
        if self._seen.get(key) == value:
            return False
        self._seen[key] = value
        return True

    def _emit(self, line: str) -> None:
        self._console.print(line, highlight=False, markup=False, soft_wrap=True)


@dataclass(frozen=True)
class TaskSummary:
    """A finished task and its instances, as shown in the final table."""

    task: TaskRecord
    instances: Sequence[InstanceRecord]

    @property
    def retries(self) -> int:
        return sum(instance.retry_count for instance in self.instances)


def result_text(view: JobView) -> Text:
    """`log-count job-… Finished in 4.1s`."""
    job = view.job
    took = format_duration(seconds_between(job.started or job.created, job.ended, view.observed))
    return Text.assemble((job.name, "bold"), f" {job.id} ", (job.state.value, _STYLE[job.state]),
                         f" in {took}")


def summary_table(view: JobView, summaries: Sequence[TaskSummary]) -> Table:
    """Task, state, instances finished/failed, retries, duration — fits 80 columns."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    table.add_column("Task", no_wrap=True, overflow="ellipsis", max_width=32)
    table.add_column("State", no_wrap=True)
    table.add_column("Finished", justify="right", no_wrap=True)
    table.add_column("Failed", justify="right", no_wrap=True)
    table.add_column("Retries", justify="right", no_wrap=True)
    table.add_column("Duration", justify="right", no_wrap=True)
    for summary in summaries:
        table.add_row(*_summary_cells(summary, view.observed))
    return table


def _summary_cells(summary: TaskSummary, now: datetime) -> list[RenderableType]:
    task, metrics = summary.task, summary.task.instance_metrics
    duration = seconds_between(task.started, task.ended, now) if task.started else None
    return [task.name, Text(task.state.value, style=_STYLE[task.state]),
            f"{metrics.finished}/{metrics.total}",
            Text(str(metrics.failed), style="red" if metrics.failed else ""),
            str(summary.retries), format_duration(duration) if duration is not None else "—"]


def failure_report(failed: Sequence[InstanceRecord], tails: dict[tuple[str, int], str]
                   ) -> RenderableType:
    """For each failed instance: exit code, error code/message, log objects, stderr tail."""
    parts: list[RenderableType] = [Text("Failed instances", style="bold red")]
    for instance in failed[:FAILURES_SHOWN]:
        parts.append(_failure_lines(instance, tails.get((instance.task, instance.instance_id), "")))
    if len(failed) > FAILURES_SHOWN:
        parts.append(Text(f"… and {len(failed) - FAILURES_SHOWN} more failed instances",
                          style="red"))
    return Group(*parts)


def _failure_lines(instance: InstanceRecord, tail: str) -> Text:
    text = Text()
    text.append(f"✘ {instance.task} instance {instance.instance_id}", style="red")
    exit_code = "none" if instance.exit_code is None else str(instance.exit_code)
    text.append(f"  exit code {exit_code}")
    if instance.retry_count:
        text.append(f", {instance.retry_count} retr{'y' if instance.retry_count == 1 else 'ies'}")
    text.append("\n")
    if instance.error_code or instance.error_message:
        text.append(f"    {instance.error_code}: {instance.error_message}\n".replace(": \n", "\n"))
    text.append(f"    stdout: {instance.stdout_path or '(none)'}\n", style="dim")
    text.append(f"    stderr: {instance.stderr_path or '(none)'}", style="dim")
    if tail:
        text.append("\n    last lines of stderr:\n", style="dim")
        text.append("\n".join(f"      {line}" for line in tail.splitlines()))
    return text


def log_directories(description: dict[str, Any]) -> list[str]:
    """The distinct stdout/stderr redirect directories of a job's tasks, in first-seen order."""
    found: dict[str, None] = {}
    for task in ((description.get("DAG") or {}).get("Tasks") or {}).values():
        parameters = task.get("Parameters") or {} if isinstance(task, dict) else {}
        for key in ("StdoutRedirectPath", "StderrRedirectPath"):
            value = parameters.get(key)
            if isinstance(value, str) and value:
                found.setdefault(value)
    return list(found)


def logs_text(directories: Sequence[str]) -> Text:
    text = Text("Logs: ", style="bold")
    text.append(", ".join(directories) or "(none)")
    if directories:
        text.append(f"\n      list them with: batchyard oss ls {directories[0]}", style="dim")
    return text


def tail_lines(data: bytes, count: int = 5) -> str:
    """The last `count` non-empty lines of a log, decoded leniently."""
    lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return "\n".join(lines[-count:])
