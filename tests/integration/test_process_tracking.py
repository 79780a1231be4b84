"""Slot cgroups (v1 and v2) and the orphan tracker, on real processes."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from batchyard.runner import cgroups, orphans
from batchyard.runner.cgroups import Cgroups, Hierarchy
from tests.security.conftest import processes_running, until

MOUNTS_V1 = """\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
MEMBERSHIP_V1 = "8:pids:/\n4:memory:/service/x\n0::/\n"
MOUNTS_V2 = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
MEMBERSHIP_V2 = "0::/system.slice/batchyard.service\n"


def hierarchies(tmp_path: Path, mounts: str, membership: str) -> list[Hierarchy]:
    (tmp_path / "mountinfo").write_text(mounts)
    (tmp_path / "cgroup").write_text(membership)
    return list(cgroups._hierarchies(tmp_path / "mountinfo", tmp_path / "cgroup"))


def test_both_layouts_are_read_from_proc(tmp_path: Path) -> None:
    found = hierarchies(tmp_path, MOUNTS_V1, MEMBERSHIP_V1)
    assert Hierarchy(1, "pids", Path("/sys/fs/cgroup/pids")) in found
    assert Hierarchy(1, "memory", Path("/sys/fs/cgroup/memory/service/x")) in found
    assert Hierarchy(2, "", Path("/sys/fs/cgroup/unified")) in found
    assert hierarchies(tmp_path, MOUNTS_V2, MEMBERSHIP_V2) == [
        Hierarchy(2, "", Path("/sys/fs/cgroup/system.slice/batchyard.service"))]


def writable_hierarchy(version: int) -> Hierarchy:
    for hierarchy in cgroups._hierarchies(Path("/proc/self/mountinfo"),
                                          Path("/proc/self/cgroup")):
        if hierarchy.version == version and os.access(hierarchy.own, os.W_OK):
            return hierarchy
    pytest.skip(f"no writable cgroup v{version} hierarchy on this machine")


@pytest.mark.parametrize("version", [1, 2])
def test_a_slot_group_holds_and_kills_detached_processes(tmp_path: Path, version: int) -> None:
    groups = Cgroups([writable_hierarchy(version)], f"test-{os.getpid()}-{version}")
    slot = groups.slot(0)
    marker = f"sleep 77{version}{os.getpid() % 10000}"
    leader = subprocess.Popen(  # held on its stdin until it is in the group, as attempts are
        ["sh", "-c", 'read -r go && exec "$@" </dev/null', "sh", "bash", "-c",
         f"setsid {marker} & sleep 60"], stdin=subprocess.PIPE, start_new_session=True)
    try:
        slot.add(leader.pid)
        assert leader.stdin is not None
        leader.stdin.write(b"go\n")
        leader.stdin.close()
        assert until(lambda: len(slot.pids()) >= 2 and processes_running(marker), 10)
        assert slot.kill() and not slot.pids()
        assert until(lambda: not processes_running(marker), 5)
    finally:
        leader.kill()
        leader.wait()
    assert groups.kill_leftovers() == 0
    groups.remove()
    assert not groups.parents[0].exists()


def test_the_orphan_tracker_kills_what_an_ended_attempt_left(tmp_path: Path) -> None:
    tracker = orphans.tracker()
    if tracker is None:
        pytest.skip("this kernel refuses PR_SET_CHILD_SUBREAPER")
    marker = f"sleep 78{os.getpid() % 100000}"
    leader = subprocess.Popen(["bash", "-c", f"(setsid {marker} &); sleep 0.3"],
                              start_new_session=True)
    token = tracker.started(leader.pid)
    os.waitid(os.P_PID, leader.pid, os.WEXITED | os.WNOWAIT)
    assert processes_running(marker), "the detached sleeper should be running"
    tracker.ended(token)
    leader.wait()
    tracker.reaped(token)
    assert until(lambda: not processes_running(marker), 5)


def test_the_orphan_tracker_leaves_other_children_alone() -> None:
    tracker = orphans.tracker()
    if tracker is None:
        pytest.skip("this kernel refuses PR_SET_CHILD_SUBREAPER")
    bystander = subprocess.Popen(["sleep", "30"])  # this process's own child, not an attempt's
    try:
        assert bystander.pid not in tracker.sweep()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_an_orphan_forked_before_its_attempt_was_noted_is_still_its_attempts() -> None:
    """On a busy machine the runner thread may note the attempt only after its program has
    already forked: the attempt must count from its leader's own start."""
    tracker = orphans.tracker()
    if tracker is None:
        pytest.skip("this kernel refuses PR_SET_CHILD_SUBREAPER")
    marker = f"sleep 79{os.getpid() % 100000}"
    leader = subprocess.Popen(["bash", "-c", f"setsid {marker} & sleep 0.5"],
                              start_new_session=True)
    assert until(lambda: processes_running(marker), 5)
    time.sleep(0.1)  # ten clock ticks after the fork, as a descheduled thread would
    token = tracker.started(leader.pid)
    os.waitid(os.P_PID, leader.pid, os.WEXITED | os.WNOWAIT)
    tracker.ended(token)
    leader.wait()
    tracker.reaped(token)
    assert until(lambda: not processes_running(marker), 5)
