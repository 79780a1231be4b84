"""What `run` and `submit --wait` print and how they exit: the exit-status rule, ⚠ and "not
run", one clock, never a wrapped URL, throttled plain lines, narrow terminals, tall DAGs,
rate and ETA, and the `--json` document."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from datetime import timedelta

import pytest
from rich.console import Console

from batchyard.cli.client_views import instance_details
from batchyard.cli.documents import json_text, run_document
from batchyard.cli.execution import (
    EXIT_FAILED,
    EXIT_FAILED_INSTANCES,
    EXIT_FINISHED,
    exit_status,
)
from batchyard.cli.progress import (
    JobView,
    LiveProgress,
    PlainProgress,
    TaskSummary,
    failure_report,
    fold,
    live_layout,
    logs_text,
    rate_text,
    result_text,
    summary_table,
)
from batchyard.cli.reporting import emit
from batchyard.domain.derivation import Metrics
from batchyard.domain.records import JobRecord
from batchyard.domain.states import State
from tests.unit.test_cli_progress import T0, instance, job, task

URL = "oss://a-bucket/" + "/".join(["deeply-nested-folder"] * 8) + "/stderr.job-1.count.12"
LONG_NAME = "t" * 200


def finished_job(failed: int = 0, state: State = State.FINISHED) -> JobRecord:
    return replace(job(state), instance_metrics=Metrics(finished=5, failed=failed))


def console(width: int, terminal: bool, height: int = 40) -> Console:
    return Console(file=io.StringIO(), width=width, height=height, force_terminal=terminal,
                   color_system=None)


def text_of(console: Console) -> str:
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


# --- exit status ------------------------------------------------------------------------

@pytest.mark.parametrize(("record", "allowed", "status"), [
    (finished_job(), False, EXIT_FINISHED),
    (finished_job(failed=2), False, EXIT_FAILED_INSTANCES),
    (finished_job(failed=2), True, EXIT_FINISHED),
    (finished_job(failed=2, state=State.FAILED), False, EXIT_FAILED),
    (finished_job(failed=2, state=State.FAILED), True, EXIT_FAILED),
    (finished_job(state=State.STOPPED), True, EXIT_FAILED),
])
def test_exit_status_tells_a_finished_job_with_failures_apart(
        record: JobRecord, allowed: bool, status: int) -> None:
    assert exit_status(record, allow_failed_instances=allowed) == status
    assert EXIT_FAILED_INSTANCES == 3


# --- marks: ⚠ and not run ---------------------------------------------------------------

def failures_view() -> JobView:
    tasks = [task("split", State.FINISHED, Metrics(finished=1)),
             task("count", State.FINISHED, Metrics(finished=3, failed=1))]
    return JobView(finished_job(failed=1), tasks, observed=T0 + timedelta(seconds=9))


def test_a_finished_task_or_job_with_failures_shows_a_warning_not_a_tick() -> None:
    view = failures_view()
    summaries = [TaskSummary(one, []) for one in view.tasks]
    table = render(summary_table(view, summaries))
    assert re.search(r"count\s+⚠ Finished", table) and re.search(r"split\s+✔ Finished", table)
    result = render(result_text(view))
    assert result.startswith("⚠ log-count") and "Finished with 1 failed instance in" in result
    live = render(LiveProgress(Console(width=80)).render(view))
    assert re.search(r"⚠ count ", live) and re.search(r"✔ split ", live)
    plain = io.StringIO()
    PlainProgress(Console(file=plain, width=80)).show(view)
    assert "count: ⚠ Finished" in plain.getvalue() and "split: ✔ Finished" in plain.getvalue()
    assert "job log-count: ⚠ Finished" in plain.getvalue()


def test_the_tasks_a_failed_job_never_ran_say_not_run() -> None:
    tasks = [task("split", State.FAILED, Metrics(failed=1)),
             task("merge", State.WAITING, Metrics(waiting=1), seconds=None)]
    tasks[1] = replace(tasks[1], started=None)
    view = JobView(job(State.FAILED), tasks, observed=T0 + timedelta(seconds=9))
    table = render(summary_table(view, [TaskSummary(one, []) for one in tasks]))
    assert re.search(r"merge\s+– not run", table) and "Waiting" not in table
    assert re.search(r"– merge ", render(LiveProgress(Console(width=80)).render(view)))
    plain = io.StringIO()
    PlainProgress(Console(file=plain, width=80)).show(view)
    assert "merge: – not run" in plain.getvalue()
    running = JobView(job(State.RUNNING), tasks, observed=view.observed)
    assert "merge: ○ Waiting" in plain_lines(running)  # while the job runs it only waits


def plain_lines(view: JobView) -> str:
    buffer = io.StringIO()
    PlainProgress(Console(file=buffer, width=80)).show(view)
    return buffer.getvalue()


# --- one clock --------------------------------------------------------------------------

def test_the_live_header_plain_lines_and_result_line_share_the_jobs_clock() -> None:
    record = replace(job(State.FINISHED), created=T0 - timedelta(seconds=2),
                     started=T0, ended=T0 + timedelta(seconds=4.1))
    view = JobView(record, [task("a", State.FINISHED, Metrics(finished=1))],
                   observed=T0 + timedelta(seconds=30))  # watching began long after the end
    assert "in 6.1s" in render(result_text(view))
    assert "  6.1s" in render(LiveProgress(Console(width=80)).render(view)).splitlines()[0]
    assert plain_lines(view).startswith("   6.1s  job log-count")


# --- never a wrapped URL, id or path ----------------------------------------------------

@pytest.mark.parametrize("width", [60, 80, 120])
@pytest.mark.parametrize("terminal", [False, True])
def test_a_200_character_url_is_always_whole_on_one_line(width: int, terminal: bool) -> None:
    assert len(URL) >= 200
    failed = replace(instance(LONG_NAME, 12, State.FAILED), stdout_path=URL, stderr_path=URL)
    view = JobView(finished_job(failed=1), [task(LONG_NAME, State.FINISHED,
                                                 Metrics(finished=4, failed=1))],
                   observed=T0 + timedelta(seconds=9))
    out = console(width, terminal)
    for renderable in (result_text(view), summary_table(view, [TaskSummary(view.tasks[0], [])]),
                       failure_report([failed], {(LONG_NAME, 12): f"cannot read {URL}"}),
                       logs_text([URL])):
        emit(out, renderable)
    lines = text_of(out).splitlines()
    assert sum(URL in line for line in lines) == 2 + 1 + 2  # stdout, stderr, tail; logs line
    assert sum(LONG_NAME in line for line in lines) == 2  # the table, the failure
    assert any(f"stdout: {URL}" in line for line in lines)
    assert sum(view.job.id in line for line in lines) == 1


@pytest.mark.parametrize("width", [60, 80])
@pytest.mark.parametrize("terminal", [False, True])
def test_the_instance_view_keeps_its_log_urls_whole(width: int, terminal: bool) -> None:
    shown = replace(instance("count", 12, State.FAILED), stdout_path=URL, stderr_path=URL)
    out = Console(file=io.StringIO(), width=width, force_terminal=terminal, color_system=None,
                  soft_wrap=True)  # as `reporting.console()` makes them
    out.print(instance_details(shown))
    assert sum(line.split() == ["Stdout", URL] or line.split() == ["Stderr", URL]
               for line in text_of(out).splitlines()) == 2


def test_plain_lines_never_wrap_when_piped() -> None:
    view = JobView(job(), [task(LONG_NAME, State.RUNNING, Metrics(running=1), seconds=None)],
                   observed=T0 + timedelta(seconds=1))
    out = console(60, terminal=False)
    PlainProgress(out).show(view)
    assert any(LONG_NAME in line for line in text_of(out).splitlines())


# --- throttled plain progress -----------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def running_view(finished: int, seconds: float) -> JobView:
    metrics = Metrics(waiting=100 - finished - 4, running=4, finished=finished)
    tasks = [task("count", State.RUNNING, metrics, seconds=None)]
    record = replace(job(), instance_metrics=metrics)
    return JobView(record, tasks, observed=T0 + timedelta(seconds=seconds))


def test_plain_progress_prints_state_changes_and_a_summary_every_interval() -> None:
    buffer, clock = io.StringIO(), FakeClock()
    progress = PlainProgress(Console(file=buffer, width=80), interval=10, clock=clock)
    progress.show(running_view(0, 0))
    assert buffer.getvalue().count("\n") == 2  # the job and the task: their states
    for second in range(1, 10):  # counts change every poll, states do not
        clock.now += 1
        progress.show(running_view(second * 5, second))
    assert buffer.getvalue().count("\n") == 2
    clock.now += 1
    progress.show(running_view(50, 10))
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[2].endswith("instances: 46 waiting, 4 running, 50 finished, 0 failed; "
                             "5.0/s, ETA 10s"), lines[2]
    clock.now += 5
    progress.show(running_view(60, 15))
    assert len(buffer.getvalue().splitlines()) == 3  # within the interval: nothing


def test_a_state_change_is_printed_at_once_whatever_the_interval() -> None:
    buffer, clock = io.StringIO(), FakeClock()
    progress = PlainProgress(Console(file=buffer, width=80), interval=3600, clock=clock)
    progress.show(running_view(0, 0))
    done = replace(running_view(100, 20), job=finished_job())
    progress.show(JobView(done.job, [replace(done.tasks[0], state=State.FINISHED)],
                          observed=done.observed))
    assert "job log-count: ✔ Finished" in buffer.getvalue()
    assert "count: ✔ Finished" in buffer.getvalue()


# --- narrow terminals and tall DAGs -----------------------------------------------------

def wide_view() -> JobView:
    tasks = [task("split-the-input-files", State.FINISHED, Metrics(finished=1)),
             task("count-words-in-every-chunk", State.RUNNING,
                  Metrics(waiting=60, running=3, finished=10, failed=1), seconds=None)]
    return JobView(job(), tasks, observed=T0 + timedelta(seconds=12))


def live(view: JobView, width: int, height: int = 40) -> list[str]:
    out = console(width, terminal=True, height=height)
    out.print(LiveProgress(out).render(view))
    return text_of(out).splitlines()


def test_at_80_columns_names_are_whole_and_counts_compact() -> None:
    lines = live(wide_view(), 80)
    assert all(len(line) <= 80 for line in lines)
    running = next(line for line in lines if "count-words-in-every-chunk" in line)
    assert "60○ 3▶ 10✔ 1✘" in running and "━" in running and "12.0s" in running


def test_narrower_names_shorten_before_the_bar_goes_then_the_bar_goes() -> None:
    at_50 = live(wide_view(), 50)
    assert all(len(line) <= 50 for line in at_50)
    running = next(line for line in at_50 if "count-words" in line)
    assert "…" in running and "━" in running and "3▶ 10✔ 1✘" in running
    at_40 = live(wide_view(), 40)
    assert all(len(line) <= 40 for line in at_40)
    running = next(line for line in at_40 if "count-words" in line)
    assert "━" not in running and "3▶ 10✔ 1✘" in running and running.endswith("12.0s")


def test_the_layout_gives_up_full_counts_then_rate_then_name_width_then_the_bar() -> None:
    def layout(width: int) -> tuple[int, bool, bool, bool]:
        found = live_layout(width, name=26, counts=42, compact=14, clock=5, rate=15)
        return found.name_width, found.bar, found.compact, found.rate

    assert layout(120) == (26, True, False, True)
    assert layout(95) == (26, True, True, True)
    assert layout(70) == (26, True, True, False)
    assert layout(46) == (12, True, True, False)
    assert layout(40) == (17, False, True, False)
    assert layout(20) == (1, False, True, False)
    assert live_layout(100, name=26, counts=42, compact=14, clock=5, rate=0).compact is False


def test_a_dag_taller_than_the_terminal_folds_finished_and_waiting_tasks() -> None:
    tasks = [task(f"done-{at:02d}", State.FINISHED, Metrics(finished=1)) for at in range(40)]
    tasks += [task("busy", State.RUNNING, Metrics(running=1), seconds=None),
              task("broken", State.FAILED, Metrics(failed=1))]
    tasks += [task(f"later-{at}", State.WAITING, Metrics(waiting=1), seconds=None)
              for at in range(10)]
    shown, folded = fold(tasks, State.RUNNING, rows=5)
    assert [one.name for one in shown][:2] == ["busy", "broken"] and len(shown) == 4
    assert folded.startswith("… ") and "finished" in folded
    lines = live(JobView(job(), tasks, observed=T0 + timedelta(seconds=3)), 80, height=12)
    assert len(lines) <= 12
    assert any("busy" in line for line in lines) and any("broken" in line for line in lines)
    assert any(re.search(r"… .*40 finished.*tasks", line) for line in lines), lines


def test_the_header_counts_come_from_the_same_snapshot_as_the_task_lines() -> None:
    view = wide_view()  # the job record's own counts are all zero in this snapshot
    assert "11/75 finished, 1 failed" in live(view, 100)[0]


# --- rate and ETA -----------------------------------------------------------------------

def test_rate_and_eta_only_when_meaningful() -> None:
    assert rate_text(Metrics(waiting=700, running=20, finished=1200), 10) == "120/s, ETA 6s"
    assert rate_text(Metrics(waiting=90, finished=10), 20) == "0.5/s, ETA 3m00s"
    assert rate_text(Metrics(waiting=995, finished=5), 600) == "0.5/min, ETA 33h10m"
    assert rate_text(Metrics(waiting=5, finished=4), 10) == ""  # few instances
    assert rate_text(Metrics(waiting=50), 10) == ""  # none ended yet
    assert rate_text(Metrics(finished=50), 10) == ""  # nothing left
    lines = live(replace(wide_view(), observed=T0 + timedelta(seconds=11)), 100)
    assert "1.0/s, ETA 1m03s" in next(line for line in lines if "count-words" in line)


# --- --json -----------------------------------------------------------------------------

def test_the_json_document_uses_the_api_field_names() -> None:
    view = failures_view()
    failed = [instance("count", 3, State.FAILED)]
    document = json.loads(json_text(run_document(
        view, [TaskSummary(one, []) for one in view.tasks], failed, ["oss://b/logs/"], 3)))
    assert set(document) == {"Job", "Tasks", "FailedInstances", "Logs", "ExitStatus"}
    assert document["Job"]["State"] == "Finished" and document["ExitStatus"] == 3
    assert document["Job"]["InstanceMetrics"]["FailedCount"] == 1
    assert [one["TaskName"] for one in document["Tasks"]] == ["split", "count"]
    assert document["FailedInstances"][0]["TaskName"] == "count"
    assert document["FailedInstances"][0]["Result"]["ExitCode"] == 3
    assert document["FailedInstances"][0]["StderrRedirectPath"].startswith("oss://b/logs/")


def render(renderable: object, width: int = 80) -> str:
    out = console(width, terminal=False)
    emit(out, renderable)  # type: ignore[arg-type]
    return text_of(out)


