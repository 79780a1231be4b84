from batchyard.domain.states import (
    ACTIVE,
    INSTANCE_TRANSITIONS,
    JOB_TRANSITIONS,
    TASK_TRANSITIONS,
    TERMINAL,
    State,
    can_move,
    sources_of,
)

TABLES = [INSTANCE_TRANSITIONS, TASK_TRANSITIONS, JOB_TRANSITIONS]


def test_every_table_covers_every_state() -> None:
    for table in TABLES:
        assert set(table) == set(State)
        for targets in table.values():
            assert targets <= set(State)


def test_groups_partition_the_states() -> None:
    assert set(State) == ACTIVE | TERMINAL
    assert not ACTIVE & TERMINAL


def test_finished_is_final_everywhere() -> None:
    for table in TABLES:
        assert table[State.FINISHED] == frozenset()


def test_failed_and_stopped_can_only_restart() -> None:
    for table in TABLES:
        assert table[State.FAILED] == {State.WAITING}
        assert table[State.STOPPED] == {State.WAITING}


def test_instance_retry_goes_back_to_waiting() -> None:
    assert can_move(INSTANCE_TRANSITIONS, State.RUNNING, State.WAITING)
    assert not can_move(INSTANCE_TRANSITIONS, State.WAITING, State.FINISHED)


def test_sources_of_finished_is_running_only() -> None:
    assert sources_of(INSTANCE_TRANSITIONS, State.FINISHED) == {State.RUNNING}
    assert sources_of(JOB_TRANSITIONS, State.WAITING) == {State.FAILED, State.STOPPED}
