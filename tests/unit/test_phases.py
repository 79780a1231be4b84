"""The phases of an attempt (waiting, staging, running) and the program start they rest on:
`domain.phases` rules, and `Outcome.program_started_at` across the agent channel."""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from batchyard.agent import wire
from batchyard.domain.attempt import AttemptKey
from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.domain.phases import Phases, phases, phases_of, queued_since
from batchyard.domain.records import AttemptRecord
from batchyard.ports.agents import Report

T0 = datetime(2026, 12, 9, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def attempt(number: int = 1, started: float | None = 10, program: float | None = 12.5,
            ended: float | None = 20) -> AttemptRecord:
    return AttemptRecord(
        "job-1", "t", 0, number, None if started is None else at(started),
        None if ended is None else at(ended), 0, "", "", "", "", "vm-1",
        None if program is None else at(program))


def test_an_ended_attempt_waited_staged_and_ran() -> None:
    assert phases(attempt(), at(4)) == Phases(waiting=6.0, staging=2.5, running=7.5)


def test_now_does_not_change_an_ended_attempt() -> None:
    assert phases(attempt(), at(4), now=at(99)) == phases(attempt(), at(4))


def test_a_program_that_never_started_has_no_staging_and_no_running() -> None:
    """Staging failed, stopped or lost first — or a row older than migration 0007."""
    assert phases(attempt(program=None), at(4)) == Phases(6.0, None, None)


def test_without_its_queueing_time_an_attempt_has_no_waiting() -> None:
    assert phases(attempt(), None) == Phases(None, 2.5, 7.5)


def test_an_attempt_lost_before_it_started_has_no_phase() -> None:
    assert phases(attempt(started=None, program=None), at(4)) == Phases(None, None, None)


def test_a_running_attempt_runs_until_now() -> None:
    running = attempt(ended=None)
    assert phases(running, at(4), now=at(30)) == Phases(6.0, 2.5, 17.5)
    assert phases(running, at(4)) == Phases(6.0, 2.5, None)  # no `now`: not known


def test_an_attempt_not_started_yet_waits_until_now() -> None:
    waiting = attempt(started=None, program=None, ended=None)
    assert phases(waiting, at(4), now=at(9)) == Phases(5.0, None, None)
    assert phases(waiting, at(4)) == Phases(None, None, None)


def test_a_started_attempt_whose_program_start_is_not_known_yet_has_only_waited() -> None:
    staging = attempt(program=None, ended=None)
    assert phases(staging, at(4), now=at(30)) == Phases(6.0, None, None)


@pytest.mark.parametrize("skewed", ["queued after its start", "program before its start",
                                    "ended before its program"])
def test_clock_skew_between_machines_gives_zero_not_a_negative_phase(skewed: str) -> None:
    record, queued = {
        "queued after its start": (attempt(), at(10.2)),
        "program before its start": (attempt(program=9.9), at(4)),
        "ended before its program": (attempt(program=20.1), at(4)),
    }[skewed]
    result = phases(record, queued)
    assert min(value for value in (result.waiting, result.staging, result.running)
               if value is not None) == 0.0
    assert all(value is None or value >= 0 for value in
               (result.waiting, result.staging, result.running))


def test_a_retry_waits_from_the_end_of_the_attempt_before_it() -> None:
    first = attempt(1, started=10, program=11, ended=20)
    second = attempt(2, started=23, program=23.5, ended=30)
    attempts = [first, second]
    assert queued_since(attempts, 0, at(4)) == at(4)
    assert queued_since(attempts, 1, at(4)) == at(20)
    assert phases_of(attempts, at(4)) == [Phases(6.0, 1.0, 9.0), Phases(3.0, 0.5, 6.5)]


def test_phases_of_no_attempts_is_empty() -> None:
    assert phases_of([], at(0)) == []


# ---- the program start across the agent's channel ------------------------------------------

def _reported(outcome: Outcome) -> wire.Reported:
    return wire.Reported((Report(AttemptKey("job-1", "t", 0, 1), 7, outcome),))


def test_the_program_start_crosses_the_agent_channel() -> None:
    outcome = Outcome(0, started_at=at(10), program_started_at=at(12.5), ended_at=at(20))
    back = wire.from_agent(wire.encode(_reported(outcome))[4:])  # the engine's unpickler
    assert isinstance(back, wire.Reported)
    assert back.reports[0].outcome.program_started_at == at(12.5)


def test_a_report_from_an_agent_without_the_field_still_reads() -> None:
    """An agent process of an older batchyard pickles an Outcome without
    `program_started_at`: the engine reads it, as None (not started, as far as it knows)."""
    old = Outcome(3, ErrorCode.EXIT_CODE, "exited with code 3", started_at=at(10),
                  ended_at=at(20))
    object.__delattr__(old, "program_started_at")  # what an old agent's Outcome holds
    payload = pickle.dumps(_reported(old), protocol=pickle.HIGHEST_PROTOCOL)
    assert b"program_started_at" not in payload
    back = wire.from_agent(payload)
    assert isinstance(back, wire.Reported)
    outcome = back.reports[0].outcome
    assert outcome.program_started_at is None
    assert (outcome.exit_code, outcome.started_at, outcome.ended_at) == (3, at(10), at(20))
    assert replace(outcome, program_started_at=at(11)).program_started_at == at(11)
