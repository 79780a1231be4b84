import pytest

from batchyard.domain.states import (
    ACTIVE,
    INSTANCE_TRANSITIONS,
    JOB_TRANSITIONS,
    OPERATION_SOURCES,
    RESTART,
    TASK_TRANSITIONS,
    TERMINAL,
    TRANSITIONS,
    Entity,
    ForbiddenTransition,
    State,
    allowed_sources,
    can_move,
    check,
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


def test_every_entity_has_a_table_that_guards_its_writes() -> None:
    assert set(TRANSITIONS) == set(Entity)
    assert {entity.value for entity in Entity} == {"job", "task", "instance"}
    for entity, table in TRANSITIONS.items():
        for target in State:
            assert allowed_sources(entity, target) == sources_of(table, target)


def test_a_restart_requeues_only_what_ended_badly() -> None:
    assert allowed_sources(Entity.INSTANCE, State.WAITING) == {
        State.RUNNING, State.FAILED, State.STOPPED}
    assert allowed_sources(Entity.INSTANCE, State.WAITING, RESTART) == {
        State.FAILED, State.STOPPED}
    assert set(OPERATION_SOURCES) == {RESTART}


def test_check_names_the_entity_the_ids_the_source_and_the_target() -> None:
    check(Entity.TASK, "job-1/a", State.RUNNING, State.FINISHED)
    with pytest.raises(ForbiddenTransition) as raised:
        check(Entity.INSTANCE, "job-1/a/0", State.RUNNING, State.WAITING, RESTART)
    assert str(raised.value) == ("instance job-1/a/0 may not move from Running to Waiting "
                                 "by restart")
    assert (raised.value.entity, raised.value.source) == (Entity.INSTANCE, State.RUNNING)
    with pytest.raises(ForbiddenTransition, match="job job-1 may not move from Finished"):
        check(Entity.JOB, "job-1", State.FINISHED, State.WAITING)


def test_the_fixed_sources_of_launch_and_attempt_end_are_the_tables() -> None:
    """`mark_running` writes Waiting -> Running and `end_attempt` Running -> its outcome,
    each as one fixed compare-and-set: the tables must agree."""
    assert allowed_sources(Entity.INSTANCE, State.RUNNING) == {State.WAITING}
    for outcome in (State.FINISHED, State.FAILED, State.WAITING):
        assert State.RUNNING in allowed_sources(Entity.INSTANCE, outcome)
