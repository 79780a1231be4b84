"""The rules of `/metrics`' meter on hand-made transitions (fast, beside the real server's
test in tests/api/test_metrics.py): when a queue wait starts, what each outcome counts as."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from batchyard.api.metrics import Meter
from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.domain.states import Entity, State, Transition
from batchyard.ports.meter import AttemptResult, result_of


def instance(source: State, target: State, at: float, number: int = 0,
             job: str = "job-1") -> Transition:
    return Transition(Entity.INSTANCE, job, "t", number, source, target, at)


def job_moved(source: State, target: State, at: float, job: str = "job-1") -> Transition:
    return Transition(Entity.JOB, job, "", None, source, target, at)


def observed(registry: CollectorRegistry, name: str) -> tuple[float, float]:
    """A histogram's (count, sum)."""
    count = registry.get_sample_value(f"{name}_count")
    total = registry.get_sample_value(f"{name}_sum")
    assert count is not None and total is not None
    return count, total


def test_queue_wait_runs_from_submission_then_from_each_requeue() -> None:
    registry = CollectorRegistry()
    meter = Meter(registry, clock=lambda: 100.0)
    meter.created("job-1", "alice")
    meter.committed([instance(State.WAITING, State.RUNNING, 103.0)])
    assert observed(registry, "batchyard_queue_wait_seconds") == (1, 3.0)
    meter.committed([instance(State.RUNNING, State.WAITING, 110.0)])  # a retry
    meter.committed([instance(State.WAITING, State.RUNNING, 111.5)])
    assert observed(registry, "batchyard_queue_wait_seconds") == (2, 4.5)
    meter.committed([instance(State.RUNNING, State.FAILED, 120.0),
                     job_moved(State.RUNNING, State.FAILED, 120.0)])
    meter.committed([job_moved(State.FAILED, State.WAITING, 200.0),  # restarted
                     instance(State.FAILED, State.WAITING, 200.0)])
    meter.committed([instance(State.WAITING, State.RUNNING, 210.0)])
    assert observed(registry, "batchyard_queue_wait_seconds") == (3, 14.5)
    assert registry.get_sample_value("batchyard_attempts_started_total") == 3


def test_a_job_from_before_the_server_is_counted_not_timed() -> None:
    registry = CollectorRegistry()
    meter = Meter(registry, clock=lambda: 100.0)
    meter.committed([instance(State.WAITING, State.RUNNING, 103.0, job="job-old")])
    assert registry.get_sample_value("batchyard_attempts_started_total") == 1
    assert observed(registry, "batchyard_queue_wait_seconds") == (0, 0.0)


def test_what_leaves_the_queue_unlaunched_is_forgotten() -> None:
    registry = CollectorRegistry()
    meter = Meter(registry, clock=lambda: 100.0)
    meter.created("job-1", "alice")
    meter.committed([instance(State.RUNNING, State.WAITING, 105.0, number=1),
                     instance(State.RUNNING, State.WAITING, 105.0, number=2)])
    meter.committed([instance(State.WAITING, State.STOPPED, 106.0, number=1)])
    meter.removed("job-1", "alice")
    assert meter._requeued == {} and meter._waiting_since == {}


def test_attempt_ends_are_counted_by_result_and_timed_when_they_have_times() -> None:
    registry = CollectorRegistry()
    meter = Meter(registry)
    meter.ended(AttemptResult.SUCCEEDED, 2.0)
    meter.ended(AttemptResult.LOST, None)
    meter.stepped(0.004)

    def ended(result: str) -> float | None:
        return registry.get_sample_value("batchyard_attempts_ended_total", {"result": result})

    assert (ended("succeeded"), ended("lost"), ended("failed")) == (1, 1, 0)
    assert observed(registry, "batchyard_attempt_duration_seconds") == (1, 2.0)
    assert observed(registry, "batchyard_engine_step_seconds") == (1, 0.004)


def test_results_follow_the_outcome() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert result_of(Outcome(0)) is AttemptResult.SUCCEEDED
    assert result_of(Outcome(0), recalled=True) is AttemptResult.SUCCEEDED
    assert result_of(Outcome(2, ErrorCode.EXIT_CODE)) is AttemptResult.FAILED
    assert result_of(Outcome(None, ErrorCode.MEMORY)) is AttemptResult.FAILED
    assert result_of(Outcome(None, ErrorCode.TIMEOUT)) is AttemptResult.TIMEOUT
    assert result_of(Outcome(None, ErrorCode.LOST)) is AttemptResult.LOST
    assert result_of(Outcome(None, ErrorCode.STOPPED)) is AttemptResult.STOPPED
    assert result_of(Outcome(None, ErrorCode.STOPPED), recalled=True) is AttemptResult.RECALLED
    assert result_of(Outcome(None, ErrorCode.STOPPED, started_at=at),
                     recalled=True) is AttemptResult.STOPPED
