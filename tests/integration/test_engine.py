"""The engine end to end with real processes, a real SQLite file and the local object store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from batchyard.domain.states import State
from batchyard.errors import NotFound, StateConflict
from batchyard.orchestrator.engine import Abandoned, Engine
from batchyard.orchestrator.operations import InvalidPriority
from batchyard.service import open_engine
from tests.integration.conftest import make_job, make_task, settings_for

WAIT = 60


def run(engine: Engine, job: dict[str, object]) -> str:
    job_id = engine.submit(job)
    engine.wait(job_id, timeout=WAIT)
    return job_id


def until(predicate: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_all_instances_exist_as_waiting_right_after_submission(engine: Engine) -> None:
    job = make_job({"a": make_task("sleep 0.2", 2), "b": make_task("true", 3)}, {"a": ["b"]})
    job_id = engine.submit(job)
    record = engine.job(job_id)
    assert record.task_metrics.total == 2 and record.instance_metrics.total == 5
    assert engine.wait(job_id, WAIT).state is State.FINISHED


def test_dag_order_split_count_merge(engine: Engine) -> None:
    job = make_job({"split": make_task("sleep 0.2"), "count": make_task("sleep 0.2", 3),
                    "merge": make_task("true")}, {"split": ["count"], "count": ["merge"]})
    job_id = run(engine, job)
    assert engine.job(job_id).state is State.FINISHED
    split, = engine.instances(job_id, "split")
    counts = engine.instances(job_id, "count")
    merge, = engine.instances(job_id, "merge")
    assert split.ended and merge.started
    assert all(split.ended <= c.started for c in counts if c.started)
    assert all(c.ended and c.ended <= merge.started for c in counts)


def test_fan_in_waits_for_every_upstream(engine: Engine) -> None:
    job = make_job({"a": make_task("sleep 0.1"), "b1": make_task("sleep 0.5"),
                    "b2": make_task("true"), "c": make_task("true")},
                   {"a": ["b1", "b2"], "b1": ["c"], "b2": ["c"]})
    job_id = run(engine, job)
    b1, = engine.instances(job_id, "b1")
    c, = engine.instances(job_id, "c")
    assert b1.ended and c.started and b1.ended <= c.started


def test_retry_then_success_keeps_every_attempts_logs(engine: Engine, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    command = (f'n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; '
               f'echo "attempt $BATCH_COMPUTE_DAG_ATTEMPT"; [ "$n" -ge 1 ]')
    job_id = run(engine, make_job({"t": make_task(command, MaxRetryCount=2)}))
    instance, = engine.instances(job_id, "t")
    assert instance.state is State.FINISHED and instance.retry_count == 1
    attempts = engine.attempts(job_id, "t", 0)
    assert [a.exit_code for a in attempts] == [1, 0]
    log = f"oss://test/logs/stdout.{job_id}.t.0"
    assert instance.stdout_path == log
    assert engine.objects.read_bytes(log) == b"attempt 2\n"
    assert engine.objects.read_bytes(log + ".attempt-1") == b"attempt 1\n"


def test_retries_exhausted_fail_the_job_with_a_reason(engine: Engine) -> None:
    job_id = run(engine, make_job({"t": make_task("echo boom >&2; exit 3", MaxRetryCount=1)}))
    record = engine.job(job_id)
    assert record.state is State.FAILED
    assert "t/0" in record.message and "code 3" in record.message
    instance, = engine.instances(job_id, "t")
    assert (instance.state, instance.retry_count, instance.exit_code) == (State.FAILED, 1, 3)
    assert instance.error_code == "NonZeroExitCode"
    assert engine.objects.read_bytes(instance.stderr_path) == b"boom\n"


def test_timeout_kills_the_whole_process_group(engine: Engine, tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    command = f"sleep 300 & echo $! > {pid_file}; sleep 300"
    job_id = run(engine, make_job({"t": make_task(command, Timeout=1)}))
    instance, = engine.instances(job_id, "t")
    assert instance.state is State.FAILED and instance.error_code == "InstanceTimeout"
    grandchild = int(pid_file.read_text())
    until(lambda: not _alive(grandchild), 5)


def test_fail_on_instance_fail_stops_siblings_and_leaves_downstream_waiting(
        engine: Engine) -> None:
    job = make_job({"bad": make_task("sleep 0.3; exit 1"), "slow": make_task("sleep 300"),
                    "after": make_task("true")}, {"bad": ["after"], "slow": ["after"]})
    started = time.monotonic()
    job_id = run(engine, job)
    assert time.monotonic() - started < 30
    states = {t.name: t.state for t in engine.tasks(job_id)}
    assert engine.job(job_id).state is State.FAILED
    assert states == {"bad": State.FAILED, "slow": State.STOPPED, "after": State.WAITING}


def test_without_fail_on_instance_fail_the_job_goes_on(engine: Engine) -> None:
    job = make_job({"t": make_task('[ "$BATCH_COMPUTE_DAG_INSTANCE_ID" != 1 ]', 3),
                    "after": make_task("true")}, {"t": ["after"]}, JobFailOnInstanceFail=False)
    job_id = run(engine, job)
    record = engine.job(job_id)
    assert record.state is State.FINISHED
    assert record.instance_metrics.failed == 1 and record.instance_metrics.finished == 3
    assert {t.name: t.state for t in engine.tasks(job_id)} == {
        "t": State.FINISHED, "after": State.FINISHED}


def test_stop_then_start_reruns_only_unfinished_instances(engine: Engine, tmp_path: Path) -> None:
    go = tmp_path / "go"
    job = make_job({"quick": make_task("true"),
                    "held": make_task(f"[ -f {go} ] || sleep 300", 2)}, {"quick": ["held"]})
    job_id = engine.submit(job)
    until(lambda: engine.job(job_id).instance_metrics.running == 2)
    engine.stop(job_id)
    record = engine.wait(job_id, WAIT)
    assert record.state is State.STOPPED
    assert {t.name: t.state for t in engine.tasks(job_id)}["held"] is State.STOPPED
    with pytest.raises(StateConflict, match="Stopped"):
        engine.stop(job_id)
    go.touch()
    engine.restart(job_id)
    assert engine.wait(job_id, WAIT).state is State.FINISHED
    quick, = engine.instances(job_id, "quick")
    assert quick.attempts == 1
    assert [i.attempts for i in engine.instances(job_id, "held")] == [2, 2]


def test_delete_and_priority_follow_the_state_rules(engine: Engine, tmp_path: Path) -> None:
    job_id = engine.submit(make_job({"t": make_task("sleep 300")}))
    until(lambda: engine.job(job_id).state is State.RUNNING)
    with pytest.raises(StateConflict):
        engine.delete(job_id)
    with pytest.raises(StateConflict):
        engine.change_priority(job_id, 7)
    engine.stop(job_id)
    with pytest.raises(InvalidPriority):
        engine.change_priority(job_id, 1001)
    engine.change_priority(job_id, 7)
    assert engine.job(job_id).priority == 7
    engine.delete(job_id)
    with pytest.raises(NotFound):
        engine.job(job_id)


def test_priority_then_age_order_with_one_slot(one_slot_engine: Engine, tmp_path: Path) -> None:
    engine = one_slot_engine
    gate = tmp_path / "gate"
    wait_for_gate = f"while [ ! -f {gate} ]; do sleep 0.05; done"
    blocker = engine.submit(make_job({"t": make_task(wait_for_gate)}))
    until(lambda: engine.job(blocker).state is State.RUNNING)
    ids = {name: engine.submit(make_job({"t": make_task("true")}, Name=name, Priority=priority))
           for name, priority in [("low", 1), ("high", 9), ("mid", 5), ("mid2", 5)]}
    gate.touch()
    for job_id in ids.values():
        engine.wait(job_id, WAIT)
    order = sorted(ids, key=lambda name: engine.instances(ids[name], "t")[0].started or 0)
    assert order == ["high", "mid", "mid2", "low"]


def test_a_later_higher_priority_job_overtakes_the_queued_instances(
        one_slot_engine: Engine, tmp_path: Path) -> None:
    engine = one_slot_engine
    gate = tmp_path / "gate"
    second_waits = (f'[ "$BATCH_COMPUTE_DAG_INSTANCE_ID" != 1 ] || '
                    f"while [ ! -f {gate} ]; do sleep 0.05; done")
    low = engine.submit(make_job({"t": make_task(second_waits, 5)}, Priority=1))
    # instance 1 runs (and waits) once 0 is done; 2, 3 and 4 are queued to launch next (in
    # the store, or on the agent: instance 0 was short)
    until(lambda: engine.instances(low, "t")[1].state is State.RUNNING)
    high = engine.submit(make_job({"t": make_task("true")}, Priority=9))
    # leased (behind instance 1): any of 2, 3, 4 queued on the agent were taken back
    until(lambda: engine.instances(high, "t")[0].state is State.RUNNING)
    gate.touch()
    for job_id in (low, high):
        assert engine.wait(job_id, WAIT).state is State.FINISHED
    started = [(instance.started or 0, job_id, instance.instance_id)
               for job_id in (low, high) for instance in engine.instances(job_id, "t")]
    assert [(job_id, index) for _, job_id, index in sorted(started)] == [
        (low, 0), (low, 1), (high, 0), (low, 2), (low, 3), (low, 4)]


def test_a_job_deleted_while_its_attempts_end_does_not_hold_up_the_engine(
        engine: Engine) -> None:
    for _ in range(3):
        doomed = engine.submit(make_job({"t": make_task("sleep 30", 2)}))
        until(lambda: engine.job(doomed).instance_metrics.running == 2)  # noqa: B023
        engine.stop(doomed)
        engine.delete(doomed)  # before the killed attempts have reported
    after = engine.submit(make_job({"t": make_task("true", 4)}))
    assert engine.wait(after, WAIT / 4).state is State.FINISHED


def test_a_report_that_keeps_failing_is_dropped_and_the_engine_goes_on(
        engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import batchyard.orchestrator.engine as engine_module

    real_decide = engine_module.decide
    poisoned = "job-poisoned"

    def broken_for_one_report(outcome: Any, retry_count: int, most: int) -> Any:
        if outcome.stdout_path.endswith(f"{poisoned}.t.1"):  # a bug hit by this report only
            raise RuntimeError("bug")
        return real_decide(outcome, retry_count, most)

    monkeypatch.setattr(engine_module, "decide", broken_for_one_report)
    monkeypatch.setattr(engine_module, "new_job_id", lambda: poisoned)
    job_id = engine.submit(make_job({"t": make_task("true", 3)}))
    monkeypatch.undo()
    monkeypatch.setattr(engine_module, "decide", broken_for_one_report)
    until(lambda: [i.state for i in engine.instances(job_id, "t")] == [
        State.FINISHED, State.RUNNING, State.FINISHED] and "dropped the report" in caplog.text)
    after = engine.submit(make_job({"t": make_task("true", 2)}))
    assert engine.wait(after, WAIT / 4).state is State.FINISHED


def test_auto_release_deletes_the_finished_job(engine: Engine) -> None:
    job_id = engine.submit(make_job({"t": make_task("true")}, AutoRelease=True))
    assert engine.wait(job_id, WAIT).state is State.FINISHED
    with pytest.raises(NotFound):
        engine.job(job_id)


def test_unsafe_package_fails_the_instance_with_a_clear_message(engine: Engine,
                                                                tmp_path: Path) -> None:
    import io
    import tarfile
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = b"owned"
        member = tarfile.TarInfo("../../escape.txt")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    engine.objects.put_bytes("oss://test/pkg/evil.tar.gz", buffer.getvalue())
    task = make_task("true")
    task["Parameters"]["Command"]["PackagePath"] = "oss://test/pkg/evil.tar.gz"
    job_id = run(engine, make_job({"t": task}))
    instance, = engine.instances(job_id, "t")
    assert instance.state is State.FAILED and instance.error_code == "PackageError"
    assert "../../escape.txt" in instance.error_message
    assert not list(tmp_path.rglob("escape.txt"))


def test_several_jobs_in_flight(engine: Engine) -> None:
    ids = [engine.submit(make_job({"t": make_task("sleep 0.1", 3)}, Name=f"j{i}"))
           for i in range(4)]
    assert all(engine.wait(job_id, WAIT).state is State.FINISHED for job_id in ids)


def test_instances_left_running_by_a_dead_engine_are_rerun(tmp_path: Path) -> None:
    data = tmp_path / "data"
    marker = tmp_path / "second"
    command = f"if [ -f {marker} ]; then exit 0; fi; touch {marker}; sleep 300"
    with open_engine(settings_for(data)) as first:
        job_id = first.submit(make_job({"t": make_task(command)}))
        until(lambda: marker.exists())
    served = settings_for(data).model_copy(update={"insecure_no_sandbox": True})
    with open_engine(served, serving=True) as second:  # a server resumes what it finds
        assert second.abandoned == []
        record = second.wait(job_id, WAIT)
        assert record.state is State.FINISHED
        instance, = second.instances(job_id, "t")
        assert instance.retry_count == 0 and instance.attempts == 2


def test_jobs_left_active_by_a_dead_run_are_stopped_not_resumed_by_the_next(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    marker = tmp_path / "ran"
    with open_engine(settings_for(data)) as first:
        job_id = first.submit(make_job({"t": make_task(f"echo x >> {marker}; sleep 300")},
                                       Name="left"))
        until(lambda: marker.exists())
    with open_engine(settings_for(data)) as second:  # `batchyard run`'s engine
        assert second.abandoned == [Abandoned(job_id, "left", State.RUNNING)]
        record = second.job(job_id)
        assert record.state is State.STOPPED and "batchyard start" in record.message
        time.sleep(0.5)
        assert marker.read_text() == "x\n"
        second.restart(job_id)
        until(lambda: marker.read_text() == "x\nx\n")


def _alive(pid: int) -> bool:
    """True while the process runs (a zombie waiting for its parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_logs_are_readable_while_the_program_runs(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "data").model_copy(update={"log_interval": 0.2})
    gate = tmp_path / "gate"
    command = f"echo first; while [ ! -f {gate} ]; do sleep 0.05; done; echo second"
    with open_engine(settings) as engine:
        job_id = engine.submit(make_job({"t": make_task(command)}))
        log = f"oss://test/logs/stdout.{job_id}.t.0"
        until(lambda: engine.objects.exists(log) and engine.objects.read_bytes(log) == b"first\n")
        assert engine.job(job_id).state is State.RUNNING
        gate.touch()
        assert engine.wait(job_id, WAIT).state is State.FINISHED
        assert engine.objects.read_bytes(log) == b"first\nsecond\n"
