"""One engine per data directory; orphans of a dead engine are found by their marker."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from batchyard.lock import DataDirBusy, DataDirLock, Holder, holder, note_work
from batchyard.runner.reaper import MARKER, orphans, reap_orphans
from batchyard.service import open_engine
from tests.integration.conftest import settings_for


def test_a_second_engine_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    with open_engine(settings_for(tmp_path)), pytest.raises(DataDirBusy,
                                                            match=f"pid {os.getpid()}"):
        open_engine(settings_for(tmp_path))
    with open_engine(settings_for(tmp_path)):  # released on close
        pass


def test_the_lock_file_says_what_holds_it_and_reading_it_takes_nothing(tmp_path: Path) -> None:
    assert holder(tmp_path) is None
    with open_engine(settings_for(tmp_path)):
        assert holder(tmp_path) == Holder(os.getpid(), "run")
        note_work(tmp_path, "job-1")
        assert holder(tmp_path) == Holder(os.getpid(), "run", "job-1")
        with pytest.raises(DataDirBusy, match=f"`batchyard run` \\(pid {os.getpid()}, job-1\\)"):
            DataDirLock(tmp_path, "cli")
    assert holder(tmp_path) is None  # released, and reading it did not take it
    served = DataDirLock(tmp_path, "serve")
    try:
        assert holder(tmp_path) == Holder(os.getpid(), "serve")
    finally:
        served.release()


def test_reaper_kills_only_processes_marked_with_its_work_root(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    marked = subprocess.Popen(["sleep", "300"], env={**os.environ, MARKER: str(ours)})
    other = subprocess.Popen(["sleep", "300"], env={**os.environ, MARKER: str(theirs)})
    try:
        assert orphans(ours) == [marked.pid]
        assert reap_orphans(ours) == [marked.pid]
        assert marked.wait(5) == -9
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
