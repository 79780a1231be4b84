from batchyard.domain.derivation import Metrics, job_state, task_state
from batchyard.domain.states import State

W, R, F, X, S = State.WAITING, State.RUNNING, State.FINISHED, State.FAILED, State.STOPPED


def m(*states: State) -> Metrics:
    return Metrics.of(states)


def test_metrics_counts_and_api_shape() -> None:
    metrics = m(W, W, R, F, X, S)
    assert metrics.total == 6
    assert metrics.as_api() == {"WaitingCount": 2, "RunningCount": 1, "FinishedCount": 1,
                                "FailedCount": 1, "StoppedCount": 1}
    assert (metrics + m(F)).finished == 2
    assert Metrics.from_counts({State.RUNNING: 3}).running == 3


def test_task_waits_until_an_instance_runs() -> None:
    assert task_state(W, m(W, W), True) is W
    assert task_state(W, m(R, W), True) is R


def test_task_stays_running_between_retries() -> None:
    assert task_state(R, m(W, W), True) is R
    assert task_state(W, m(F, W), True) is R


def test_task_finishes_when_all_instances_finish() -> None:
    assert task_state(R, m(F, F, F), True) is F


def test_failed_instance_fails_task_at_once_when_job_fails_on_instance_fail() -> None:
    assert task_state(R, m(X, R, W), True) is X


def test_failed_instance_tolerated_when_job_does_not_fail_on_instance_fail() -> None:
    assert task_state(R, m(X, R), False) is R
    assert task_state(R, m(X, F), False) is F


def test_task_with_stopped_instances_is_stopped() -> None:
    assert task_state(R, m(S, F), True) is S


def test_job_states() -> None:
    assert job_state(W, m(W, W)) is W
    assert job_state(W, m(R, W)) is R
    assert job_state(R, m(F, W)) is R
    assert job_state(R, m(F, F)) is F
    assert job_state(R, m(F, X, W)) is X
    assert job_state(R, m(S, F)) is S
