"""`SlotGroup.empty`: what lets an attempt's end skip the scan of its slot's cgroup."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchyard.runner import cgroups
from batchyard.runner.cgroups import Cgroups, SlotGroup


def writable(version: int) -> cgroups.Hierarchy:
    for hierarchy in cgroups._hierarchies(Path("/proc/self/mountinfo"),
                                          Path("/proc/self/cgroup")):
        if hierarchy.version == version and hierarchy.controller in ("", "pids") \
                and os.access(hierarchy.own, os.W_OK):
            return hierarchy
    pytest.skip(f"no writable cgroup v{version} hierarchy (pids for v1) on this machine")


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def group(request: pytest.FixtureRequest) -> Iterator[SlotGroup]:
    groups = Cgroups([writable(request.param)], f"test-empty-{os.getpid()}")
    groups.parents[0].mkdir(exist_ok=True)
    slot = groups.slot(0)
    yield slot
    slot.kill()
    slot.close()
    groups.remove()


def test_a_slot_is_empty_only_once_its_last_process_is_gone(group: SlotGroup) -> None:
    assert group.empty()
    program = subprocess.Popen(["sleep", "30"])
    try:
        group.add(program.pid)
        assert not group.empty()
        program.kill()
        if group.version == 1:  # the pids controller counts it until it is reaped
            assert not group.empty()
    finally:
        program.kill()
        program.wait()
    assert group.empty()
    group.close()
    assert group.empty()  # opened again
