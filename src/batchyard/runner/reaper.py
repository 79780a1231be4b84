"""Kill programs that a dead engine left running (after `kill -9` of the server, a crash).

Every program a runner starts carries `BATCHYARD_WORK_ROOT=<work root>` in its environment,
and so do its children unless they scrub their environment. When an engine opens a data
directory (holding its lock, so no live engine owns these programs), any process still
carrying that marker is an orphan of an earlier engine: its attempt will be re-run, so it is
killed rather than left to race the new attempt or hold resources forever.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

MARKER = "BATCHYARD_WORK_ROOT"


def marker_entry(work_root: Path) -> bytes:
    return f"{MARKER}={work_root}".encode()


def orphans(work_root: Path) -> list[int]:
    """Pids of processes (other than this one) carrying the marker of `work_root`."""
    wanted = marker_entry(work_root)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environment = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if wanted in environment.split(b"\0"):
            found.append(int(entry.name))
    return found


def reap_orphans(work_root: Path) -> list[int]:
    """SIGKILL every orphan of `work_root`; returns the pids killed."""
    killed = []
    for pid in orphans(work_root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.append(pid)
    return killed
