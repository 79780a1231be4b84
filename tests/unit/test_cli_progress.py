"""Terminal rendering of a job: live lines, plain lines, the 80-column summary."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from batchyard.cli.progress import (
    JobView,
    LiveProgress,
    PlainProgress,
    TaskSummary,
    failure_report,
    format_duration,
    job_name,
    log_directories,
    summary_table,
    tail_lines,
    task_order,
)
from batchyard.domain.derivation import Metrics
from batchyard.domain.records import InstanceRecord, JobRecord, TaskRecord
from batchyard.domain.spec import parse_job
from batchyard.domain.states import State

T0 = datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC)
LONG = "a-task-name-of-32-characters-xyz"


def job(state: State = State.RUNNING) -> JobRecord:
    ended = T0 + timedelta(seconds=9) if state is not State.RUNNING else None
    return JobRecord(id="job-0000000000000000000000000000000A", tenant="default",
                     name="log-count", priority=0, state=state, message="", created=T0,
                     started=T0, ended=ended, task_metrics=Metrics(),
                     instance_metrics=Metrics(), description={})


def task(name: str, state: State, metrics: Metrics, seconds: float | None = 2.5) -> TaskRecord:
    ended = T0 + timedelta(seconds=seconds) if seconds is not None else None
    return TaskRecord(job_id="job-1", name=name, state=state, started=T0, ended=ended,
                      instance_metrics=metrics)


def instance(task_name: str, number: int, state: State, retries: int = 0) -> InstanceRecord:
    return InstanceRecord(
        job_id="job-1", task=task_name, instance_id=number, state=state, retry_count=retries,
        attempts=retries + 1, started=T0, ended=T0, exit_code=0 if state is State.FINISHED else 3,
        error_code="" if state is State.FINISHED else "NonZeroExitCode",
        error_message="" if state is State.FINISHED else "the program exited with code 3",
        detail="", stdout_path=f"oss://b/logs/stdout.job-1.{task_name}.{number}",
        stderr_path=f"oss://b/logs/stderr.job-1.{task_name}.{number}", node="local")


def render(renderable: object, width: int = 80) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


def view() -> JobView:
    tasks = [task("split", State.FINISHED, Metrics(finished=1)),
             task("count", State.RUNNING, Metrics(waiting=1, running=2), seconds=None),
             task("merge", State.WAITING, Metrics(waiting=1), seconds=None)]
    return JobView(job(), tasks, observed=T0 + timedelta(seconds=4))


def test_tasks_are_ordered_by_dependencies_not_by_name() -> None:
    description = {"DAG": {"Tasks": {"merge": {}, "count": {}, "split": {}},
                           "Dependencies": {"split": ["count"], "count": ["merge"]}}}
    assert task_order(description) == ["split", "count", "merge"]


def test_live_lines_show_counts_by_state_and_elapsed_time() -> None:
    text = render(LiveProgress(Console(width=80)).render(view()))
    count_line = next(line for line in text.splitlines() if " count " in line)
    assert "1 waiting" in count_line and "2 running" in count_line
    assert "0 finished" in count_line and "0 failed" in count_line
    assert "4.0s" in count_line  # still running: elapsed until the observation
    assert "log-count" in text.splitlines()[0]


def test_live_lines_fit_80_columns() -> None:
    text = render(LiveProgress(Console(width=80)).render(view()))
    assert max(len(line) for line in text.splitlines()) <= 80


def test_plain_progress_prints_only_changes() -> None:
    buffer = io.StringIO()
    progress = PlainProgress(Console(file=buffer, width=80))
    progress.show(view())
    first = buffer.getvalue()
    progress.show(view())
    assert buffer.getvalue() == first
    assert "count: ▶ Running — 1 waiting, 2 running, 0 finished, 0 failed" in first


def test_summary_fits_80_columns_with_the_longest_task_name() -> None:
    finished = JobView(job(State.FAILED), [
        task(LONG, State.FAILED, Metrics(finished=998, failed=2), seconds=3725)],
        observed=T0 + timedelta(hours=2))
    summary = TaskSummary(finished.tasks[0], [instance(LONG, 0, State.FAILED, retries=3)])
    text = render(summary_table(finished, [summary]))
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "998/1000" in text and "1h02m" in text
    assert LONG in text


def test_failure_report_names_instance_error_and_logs() -> None:
    failed = [instance("count", 2, State.FAILED)]
    text = render(failure_report(failed, {("count", 2): "Traceback\nValueError: bad"}))
    assert "count instance 2" in text and "exit code 3" in text
    assert "NonZeroExitCode: the program exited with code 3" in text
    assert "oss://b/logs/stderr.job-1.count.2" in text
    assert "ValueError: bad" in text


def test_log_directories_are_distinct_and_ordered() -> None:
    parameters = {"StdoutRedirectPath": "oss://b/logs/", "StderrRedirectPath": "oss://b/err/"}
    description = {"DAG": {"Tasks": {"a": {"Parameters": parameters},
                                     "b": {"Parameters": parameters}}}}
    assert log_directories(description) == ["oss://b/logs/", "oss://b/err/"]


def test_durations_are_short() -> None:
    assert [format_duration(s) for s in (0.029, 1.42, 59.9, 65, 3725)] == [
        "29ms", "1.4s", "59.9s", "1m05s", "1h02m"]


def test_tail_keeps_the_last_non_empty_lines() -> None:
    assert tail_lines(b"1\n2\n\n3\n4\n5\n6\n\n", count=3) == "4\n5\n6"


def test_a_parsed_description_gives_the_order_logs_and_name_of_its_raw_form() -> None:
    """`run` hands on the description parsed at the edge; the remote commands, the form a
    server shows. Both read alike."""
    def task(out: str) -> dict[str, Any]:
        return {"InstanceCount": 1, "AutoCluster": {"ImageId": "img-1", "InstanceType": "t"},
                "Parameters": {"Command": {"CommandLine": "true", "PackagePath": ""},
                               "StdoutRedirectPath": out, "StderrRedirectPath": "oss://b/err/"}}
    raw = {"Name": "three", "Type": "DAG", "DAG": {
        "Tasks": {"merge": task("oss://b/m/"), "count": task("oss://b/c/"),
                  "split": task("oss://b/s/")},
        "Dependencies": {"split": ["count"], "count": ["merge"]}}}
    parsed = parse_job(raw)
    assert task_order(parsed) == task_order(raw) == ["split", "count", "merge"]
    assert log_directories(parsed) == log_directories(raw) == [
        "oss://b/m/", "oss://b/err/", "oss://b/c/", "oss://b/s/"]
    assert job_name(parsed) == job_name(raw) == "three"
