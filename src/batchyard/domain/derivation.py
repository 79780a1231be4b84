"""Task and job states derived from the states of their parts (reference §6.3, §6.4)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from batchyard.domain.states import TERMINAL, State


@dataclass(frozen=True)
class Metrics:
    """How many parts are in each state (TaskMetrics / InstanceMetrics of the API)."""

    waiting: int = 0
    running: int = 0
    finished: int = 0
    failed: int = 0
    stopped: int = 0

    @classmethod
    def of(cls, states: Iterable[State]) -> Metrics:
        counts = Counter(states)
        return cls(
            waiting=counts[State.WAITING],
            running=counts[State.RUNNING],
            finished=counts[State.FINISHED],
            failed=counts[State.FAILED],
            stopped=counts[State.STOPPED],
        )

    @classmethod
    def from_counts(cls, counts: dict[State, int]) -> Metrics:
        return cls(
            waiting=counts.get(State.WAITING, 0),
            running=counts.get(State.RUNNING, 0),
            finished=counts.get(State.FINISHED, 0),
            failed=counts.get(State.FAILED, 0),
            stopped=counts.get(State.STOPPED, 0),
        )

    @property
    def total(self) -> int:
        return self.waiting + self.running + self.finished + self.failed + self.stopped

    @property
    def all_terminal(self) -> bool:
        return self.waiting == 0 and self.running == 0

    def count(self, state: State) -> int:
        return int(getattr(self, state.name.lower()))

    def as_api(self) -> dict[str, int]:
        return {
            "WaitingCount": self.waiting,
            "RunningCount": self.running,
            "FinishedCount": self.finished,
            "FailedCount": self.failed,
            "StoppedCount": self.stopped,
        }

    def __add__(self, other: Metrics) -> Metrics:
        return Metrics(
            self.waiting + other.waiting,
            self.running + other.running,
            self.finished + other.finished,
            self.failed + other.failed,
            self.stopped + other.stopped,
        )


def task_state(current: State, instances: Metrics, fail_on_instance_fail: bool) -> State:
    """The state a task should be in, given its instances.

    A task that has started stays Running until every instance is terminal; a Failed
    instance fails the task at once when the job fails on instance failure.
    """
    if instances.failed and fail_on_instance_fail:
        return State.FAILED
    if instances.all_terminal:
        if instances.stopped:
            return State.STOPPED
        return State.FINISHED
    if instances.running or current is State.RUNNING:
        return State.RUNNING
    if instances.finished or instances.failed:
        return State.RUNNING
    return State.WAITING


def job_state(current: State, tasks: Metrics) -> State:
    """The state a job should be in, given its tasks (stop is applied explicitly, not derived)."""
    if tasks.failed:
        return State.FAILED
    if tasks.finished == tasks.total:
        return State.FINISHED
    if tasks.stopped and tasks.stopped + tasks.finished == tasks.total:
        return State.STOPPED
    if tasks.running or current is State.RUNNING:
        return State.RUNNING
    return State.WAITING


def is_terminal(state: State) -> bool:
    return state in TERMINAL
