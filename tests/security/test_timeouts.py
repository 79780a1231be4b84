"""Finding 2: timeouts cannot break the service.

A bad value in one attempt's timer must never stop the shared watchdog (which enforces every
other attempt's Timeout), and an attempt is never recorded as ended while its program may
still run.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from batchyard.runner.control import AttemptControl
from batchyard.runner.program import Launch, run_program
from batchyard.runner.watchdog import Watchdog
from tests.security.conftest import processes_running, until


def test_a_huge_delay_does_not_stop_the_watchdog() -> None:
    watchdog = Watchdog("test-watchdog")
    watchdog.schedule(10**10, lambda: None)
    time.sleep(0.2)  # the thread now sleeps towards the huge deadline
    fired = threading.Event()
    watchdog.schedule(0.05, fired.set)
    assert fired.wait(5), "the watchdog thread died on a huge delay"


def test_a_failing_action_does_not_stop_the_watchdog() -> None:
    watchdog = Watchdog("test-watchdog")

    def broken() -> None:
        raise RuntimeError("a bug in one action")

    watchdog.schedule(0.01, broken)
    fired = threading.Event()
    watchdog.schedule(0.05, fired.set)
    assert fired.wait(5)


@pytest.mark.parametrize("timeout", [10**10, 10**400, float("inf")], ids=["1e10", "1e400", "inf"])
def test_no_program_outlives_a_timeout_that_cannot_be_armed(tmp_path: Path,
                                                            timeout: float) -> None:
    marker = f"sleep 3.{abs(hash(str(timeout))) % 10**6:06d}"  # ends by itself in 3 s
    launch = Launch(command_line=marker, workdir=str(tmp_path), environment={"PATH": "/bin"},
                    stdout=str(tmp_path / "out"), stderr=str(tmp_path / "err"),
                    timeout=timeout, kill_grace=1.0)
    try:
        end = run_program(launch, AttemptControl())
    except (OverflowError, ValueError):
        end = None
    assert until(lambda: not processes_running(marker), 0.5), "the program kept running"
    if end is not None:
        assert end.returncode is not None
