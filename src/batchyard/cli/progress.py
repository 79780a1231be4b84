"""Rendering a job for the terminal: live progress, plain progress lines, the final summary.

Everything here turns records into Rich renderables or text; nothing talks to the engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.measure import Measurement
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from batchyard.domain.dag import topological_order, upstreams
from batchyard.domain.derivation import Metrics
from batchyard.domain.records import InstanceRecord, JobRecord, TaskRecord
from batchyard.domain.spec import JobDescription
from batchyard.domain.states import TERMINAL, State

REFRESH_PER_SECOND = 8
LIVE_MAX_WIDTH = 100
"""The live lines use the terminal's width up to this many columns."""
FAILURES_SHOWN = 10
"""Failed instances described in full in the summary; the rest are counted."""
PROGRESS_INTERVAL = 10.0
"""Seconds between the summary lines of plain progress (pipes and logs), by default."""
RATE_MIN_INSTANCES = 10
"""A task shows a rate and an ETA only from this many instances: below, they say nothing."""
NAME_MIN_WIDTH = 12
"""The live lines shorten task names to this width before they drop the bar."""
BAR_MIN_WIDTH = 10

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
class Mark:
    """How a job or task state is shown: symbol, words and colour."""

    symbol: str
    label: str
    style: str


WITH_FAILURES = Mark("⚠", State.FINISHED.value, "yellow")
"""Finished, but some instances failed (JobFailOnInstanceFail false): never a plain ✔."""
NOT_RUN = Mark("–", "not run", "dim")
"""A task its ended job never ran (a Failed or Stopped job leaves its downstream waiting)."""


def _mark(state: State) -> Mark:
    return Mark(_SYMBOL[state], state.value, _STYLE[state])


def task_mark(task: TaskRecord, job_state: State) -> Mark:
    """⚠ when a Finished task has failed instances; "not run" when its job ended first."""
    if task.state is State.FINISHED and task.instance_metrics.failed:
        return WITH_FAILURES
    if job_state in TERMINAL and task.started is None and task.state in (State.WAITING,
                                                                          State.STOPPED):
        return NOT_RUN
    return _mark(task.state)


def job_mark(job: JobRecord) -> Mark:
    if job.state is State.FINISHED and job.instance_metrics.failed:
        return WITH_FAILURES
    return _mark(job.state)


def mark_text(mark: Mark) -> Text:
    """`⚠ Finished`, `– not run`: the symbol makes the state readable without colour."""
    return Text(f"{mark.symbol} {mark.label}", style=mark.style)


@dataclass(frozen=True)
class JobView:
    """One observation of a job: the job record and its tasks in topological order.

    Everything drawn from one observation comes from this one snapshot (never a second read).
    """

    job: JobRecord
    tasks: Sequence[TaskRecord]
    observed: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def elapsed(self) -> float:
        """Seconds since the job was created, until it ended (or until now): the one clock
        of the live header, the plain lines and the result line, whoever started watching."""
        return seconds_between(self.job.created, self.job.ended, self.observed)

    @property
    def instance_metrics(self) -> Metrics:
        """Instances by state, summed over the tasks shown (the job's own counts without)."""
        if not self.tasks:
            return self.job.instance_metrics
        return sum_metrics(task.instance_metrics for task in self.tasks)


def sum_metrics(parts: Iterable[Metrics]) -> Metrics:
    total: dict[State, int] = dict.fromkeys(State, 0)
    for metrics in parts:
        for state in State:
            total[state] += metrics.count(state)
    return Metrics.from_counts(total)


Description = JobDescription | Mapping[str, Any]
"""A job description parsed at the edge (`run`), or as a server shows it (the remote
commands: the server parsed it)."""


def job_name(description: Description) -> str:
    if isinstance(description, JobDescription):
        return description.Name
    return str(description.get("Name", ""))


def task_order(description: Description) -> list[str]:
    """Task names of a job description, every task after the tasks it depends on."""
    if isinstance(description, JobDescription):
        return topological_order(description.graph())
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


def rate_text(metrics: Metrics, seconds: float) -> str:
    """`120/s, ETA 35s`: ended instances over the running time, and the rest at that pace.

    Empty when it would mean nothing: few instances, none ended yet, under a second, or
    nothing left to do.
    """
    ended = metrics.finished + metrics.failed + metrics.stopped
    left = metrics.waiting + metrics.running
    if metrics.total < RATE_MIN_INSTANCES or ended == 0 or seconds < 1 or left == 0:
        return ""
    rate = ended / seconds
    pace = f"{rate:.0f}/s" if rate >= 10 else f"{rate:.1f}/s" if rate >= 0.1 else (
        f"{rate * 60:.1f}/min")
    eta = left / rate
    return f"{pace}, ETA {f'{eta:.0f}s' if eta < 60 else format_duration(eta)}"


def counts_text(metrics: Metrics) -> Text:
    """`2 waiting  1 running  0 finished  0 failed` (+ stopped when any), zeros dimmed."""
    text = Text()
    for index, (count, label, state) in enumerate(_count_parts(metrics)):
        if index:
            text.append("  ")
        text.append(f"{count} {label}", style=_STYLE[state] if count else "dim")
    return text


def compact_counts_text(metrics: Metrics) -> Text:
    """`3▶ 10✔ 1✘`: the non-zero counts with their state's symbol, for narrow terminals."""
    text = Text()
    for count, _, state in _count_parts(metrics):
        if count:
            text.append(f"{' ' if text else ''}{count}{_SYMBOL[state]}", style=_STYLE[state])
    return text if text else Text("0", style="dim")


def _count_parts(metrics: Metrics) -> list[tuple[int, str, State]]:
    parts = [(metrics.waiting, "waiting", State.WAITING),
             (metrics.running, "running", State.RUNNING),
             (metrics.finished, "finished", State.FINISHED),
             (metrics.failed, "failed", State.FAILED)]
    if metrics.stopped:
        parts.append((metrics.stopped, "stopped", State.STOPPED))
    return parts


def counts_plain(metrics: Metrics) -> str:
    return counts_text(metrics).plain.replace("  ", ", ")


@dataclass(frozen=True)
class Layout:
    """What the live lines show at a given width: how wide the names are, whether there is
    a bar, whether counts are compact (`3▶ 10✔ 1✘`) and whether rate/ETA is shown."""

    name_width: int
    bar: bool
    compact: bool
    rate: bool


def live_layout(width: int, name: int, counts: int, compact: int, clock: int,
                rate: int) -> Layout:
    """The richest layout with a bar that fits `width` with whole names, else with names
    shortened to NAME_MIN_WIDTH; else no bar (names shrink further). The counts compact
    first, then rate/ETA goes; the counts and the time always stay.

    Arguments are the widths of the widest name, full counts, compact counts, time and rate.
    """
    layouts = [Layout(0, bar, compacted, with_rate and rate > 0)
               for compacted, with_rate, bar in ((False, True, True), (True, True, True),
                                                 (True, False, True), (True, False, False))]
    rooms = [width - _used(layout, counts, compact, clock, rate) for layout in layouts]
    for wanted in (name, min(name, NAME_MIN_WIDTH)):
        for layout, room in zip(layouts[:-1], rooms, strict=False):
            if room >= wanted:
                return replace(layout, name_width=min(name, room))
    return replace(layouts[-1], name_width=max(1, min(name, rooms[-1])))


def _used(layout: Layout, counts: int, compact: int, clock: int, rate: int) -> int:
    """Columns taken by everything but the name: symbol, counts, time, bar, rate, spaces."""
    used = 2 + 1 + (compact if layout.compact else counts) + 1 + clock
    return used + (BAR_MIN_WIDTH + 1 if layout.bar else 0) + (rate + 1 if layout.rate else 0)


def fold(tasks: Sequence[TaskRecord], job_state: State, rows: int
         ) -> tuple[list[TaskRecord], str]:
    """The tasks to show in `rows` lines, and a line counting the others ("" when none).

    Running and failed tasks stay visible; finished, waiting and not-run ones fold first.
    """
    if len(tasks) <= rows:
        return list(tasks), ""
    keep = max(rows - 1, 0)
    ranked = sorted(range(len(tasks)), key=lambda at: (_fold_rank(tasks[at], job_state), at))
    shown = sorted(ranked[:keep])
    folded: dict[str, int] = {}
    for at in ranked[keep:]:
        label = task_mark(tasks[at], job_state).label
        folded[label] = folded.get(label, 0) + 1
    words = ", ".join(f"{count} {label.lower()}" for label, count in folded.items())
    return [tasks[at] for at in shown], f"… {words} tasks"


def _fold_rank(task: TaskRecord, job_state: State) -> int:
    mark = task_mark(task, job_state)
    if task.state in (State.RUNNING, State.FAILED):
        return 0
    if mark is WITH_FAILURES or (task.state is State.STOPPED and mark is not NOT_RUN):
        return 1
    return 2 if task.state is State.WAITING and mark is not NOT_RUN else 3


class LiveProgress:
    """A Rich Live display: a header line and one line per task, redrawn ~8 times a second."""

    def __init__(self, console: Console) -> None:
        self._console = console
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
        """Header, then per task: symbol, name, bar (the spare width), counts, rate, time.

        Fits the terminal's width (names shortened, then the bar dropped) and height
        (finished and waiting tasks folded into one line).
        """
        width = min(self._console.width, LIVE_MAX_WIDTH)
        tasks, folded = fold(view.tasks, view.job.state, max(self._console.height - 2, 2))
        rows = [_TaskRow(task, view) for task in tasks]
        layout = live_layout(width, *(max((row.widths[at] for row in rows), default=1)
                                      for at in range(5)))
        grid = Table.grid(padding=(0, 1), expand=layout.bar)
        grid.width = width if layout.bar else None
        grid.add_column(width=1, no_wrap=True)
        grid.add_column(no_wrap=True, overflow="ellipsis", width=layout.name_width)
        if layout.bar:
            grid.add_column(ratio=1, min_width=BAR_MIN_WIDTH)
        grid.add_column(no_wrap=True)
        if layout.rate:
            grid.add_column(no_wrap=True, style="dim")
        grid.add_column(no_wrap=True, justify="right")
        for row in rows:
            grid.add_row(*row.cells(self._symbol(row.task, row.mark), layout))
        parts: list[RenderableType] = [header_text(view, width), grid]
        if folded:
            parts.append(Text(folded, style="dim"))
        return Group(*parts)

    def _symbol(self, task: TaskRecord, mark: Mark) -> RenderableType:
        if task.state is State.RUNNING:
            return self._spinners.setdefault(task.name, Spinner("dots", style="cyan"))
        return Text(mark.symbol, style=mark.style)


class _TaskRow:
    """The texts of one live line, measured before the layout is chosen."""

    def __init__(self, task: TaskRecord, view: JobView) -> None:
        self.task = task
        self.mark = task_mark(task, view.job.state)
        seconds = seconds_between(task.started, task.ended, view.observed)
        self.counts = counts_text(task.instance_metrics)
        self.compact = compact_counts_text(task.instance_metrics)
        self.clock = format_duration(seconds) if task.started else ""
        self.rate = rate_text(task.instance_metrics, seconds) if task.ended is None else ""
        self.widths = (len(task.name), self.counts.cell_len, self.compact.cell_len,
                       max(len(self.clock), 1), len(self.rate))

    def cells(self, symbol: RenderableType, layout: Layout) -> list[RenderableType]:
        metrics = self.task.instance_metrics
        cells: list[RenderableType] = [symbol, Text(self.task.name, style=self.mark.style)]
        if layout.bar:
            done = metrics.finished + metrics.failed + metrics.stopped
            cells.append(ProgressBar(total=max(metrics.total, 1), completed=done,
                                     complete_style="red" if metrics.failed else "cyan",
                                     finished_style="yellow" if metrics.failed else "green"))
        cells.append(self.compact if layout.compact else self.counts)
        if layout.rate:
            cells.append(self.rate)
        cells.append(Text(self.clock, style="dim"))
        return cells


def header_text(view: JobView, width: int = LIVE_MAX_WIDTH) -> Text:
    """`log-count  job-…  Running  4.1s  57/120 finished, 2 failed` (counts from the task
    lines); narrower, the words go, then the id (the Submitted line shows it)."""
    job, mark, metrics = view.job, job_mark(view.job), view.instance_metrics
    counts, wordy = Text(), Text()
    if metrics.total:
        counts.append(f"  {metrics.finished}/{metrics.total}", style="dim")
        wordy.append(f"  {metrics.finished}/{metrics.total} finished", style="dim")
    if metrics.failed:
        counts.append(f" {metrics.failed}✘", style="red")
        wordy.append(f", {metrics.failed} failed", style="red")
    for with_id, shown in ((True, wordy), (True, counts), (False, wordy), (False, counts)):
        text = Text.assemble((job.name, "bold"), (f"  {job.id}" if with_id else "", "dim"),
                             "  ", (mark.label, mark.style),
                             (f"  {format_duration(view.elapsed)}", "dim"), shown)
        if text.cell_len <= width:
            return text
    text.truncate(width, overflow="ellipsis")
    return text


class PlainProgress:
    """Progress for logs and pipes: a line when the job or a task changes state, and at most
    one summary line (instance counts, rate, ETA) every `interval` seconds.

    `clock` (seconds, monotonic) is injectable so the throttle can be tested.
    """

    def __init__(self, console: Console, interval: float = PROGRESS_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._console = console
        self._interval = interval
        self._clock = clock
        self._seen: dict[str, Mark] = {}
        self._summarised: float | None = None

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        return None

    def show(self, view: JobView) -> None:
        elapsed = format_duration(view.elapsed)
        job = view.job
        mark = job_mark(job)
        if self._changed("", mark):
            self._emit(f"{elapsed:>7}  job {job.name}: {mark.symbol} {mark.label}")
        for task in view.tasks:
            mark = task_mark(task, job.state)
            if self._changed(task.name, mark):
                self._emit(f"{elapsed:>7}  {task.name}: {mark.symbol} {mark.label} — "
                           f"{counts_plain(task.instance_metrics)}")
        if job.state not in TERMINAL and self._summary_due():
            self._emit(f"{elapsed:>7}  {summary_line(view)}")

    def _changed(self, key: str, mark: Mark) -> bool:
        if self._seen.get(key) == mark:
            return False
        self._seen[key] = mark
        return True

    def _summary_due(self) -> bool:
        now = self._clock()
        if self._summarised is None:
            self._summarised = now  # the state lines just printed say it all
            return False
        if now - self._summarised < self._interval:
            return False
        self._summarised = now
        return True

    def _emit(self, line: str) -> None:
        self._console.print(line, highlight=False, markup=False, soft_wrap=True)


def summary_line(view: JobView) -> str:
    """`instances: 40 waiting, 3 running, 57 finished, 0 failed; 4.8/s, ETA 9s`."""
    metrics = view.instance_metrics
    seconds = seconds_between(view.job.started, None, view.observed)
    pace = rate_text(metrics, seconds)
    return f"instances: {counts_plain(metrics)}{'; ' + pace if pace else ''}"


class Whole:
    """Renders a table at its natural width even when the console is narrower, so no cell
    (a task name, an id, a path) is cut or folded; print it with `crop=False`."""

    def __init__(self, renderable: RenderableType) -> None:
        self._renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        natural = Measurement.get(console, options.update(max_width=10_000), self._renderable)
        yield from console.render(self._renderable,
                                  options.update(width=max(options.max_width, natural.maximum)))


@dataclass(frozen=True)
class TaskSummary:
    """A finished task and its instances, as shown in the final table."""

    task: TaskRecord
    instances: Sequence[InstanceRecord]

    @property
    def retries(self) -> int:
        return sum(instance.retry_count for instance in self.instances)


def result_text(view: JobView) -> Text:
    """`✔ log-count job-… Finished in 4.1s`, `⚠ … Finished with 2 failed instances in 4.1s`."""
    job, mark = view.job, job_mark(view.job)
    failures = job.instance_metrics.failed if mark is WITH_FAILURES else 0
    plural = "s" if failures != 1 else ""
    return Text.assemble((f"{mark.symbol} ", mark.style), (job.name, "bold"), f" {job.id} ",
                         (mark.label, mark.style),
                         (f" with {failures} failed instance{plural}" if failures else "",
                          mark.style),
                         f" in {format_duration(view.elapsed)}")


def summary_table(view: JobView, summaries: Sequence[TaskSummary]) -> RenderableType:
    """Task, state, instances finished/failed, retries, duration: 80 columns for names up to
    32 characters; a longer name widens the table rather than being cut (print with
    `crop=False`)."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    table.add_column("Task", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Finished", justify="right", no_wrap=True)
    table.add_column("Failed", justify="right", no_wrap=True)
    table.add_column("Retries", justify="right", no_wrap=True)
    table.add_column("Duration", justify="right", no_wrap=True)
    for summary in summaries:
        table.add_row(*_summary_cells(summary, view))
    return Whole(table)


def _summary_cells(summary: TaskSummary, view: JobView) -> list[RenderableType]:
    task, metrics = summary.task, summary.task.instance_metrics
    duration = seconds_between(task.started, task.ended, view.observed) if task.started else None
    return [task.name, mark_text(task_mark(task, view.job.state)),
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


def log_directories(description: Description) -> list[str]:
    """The distinct stdout/stderr redirect directories of a job's tasks, in first-seen order."""
    found: dict[str, None] = {}
    for value in _redirect_paths(description):
        if isinstance(value, str) and value:
            found.setdefault(value)
    return list(found)


def _redirect_paths(description: Description) -> Iterable[object]:
    if isinstance(description, JobDescription):
        for task in description.DAG.Tasks.values():
            yield from (task.Parameters.StdoutRedirectPath, task.Parameters.StderrRedirectPath)
        return
    for task in ((description.get("DAG") or {}).get("Tasks") or {}).values():
        parameters = task.get("Parameters") or {} if isinstance(task, dict) else {}
        yield from (parameters.get("StdoutRedirectPath"), parameters.get("StderrRedirectPath"))


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
