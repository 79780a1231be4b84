"""Identifiers in BatchCompute's shapes (reference §2)."""

from __future__ import annotations

import secrets
import threading
import time

_last = 0
_lock = threading.Lock()


def new_job_id() -> str:
    """`job-` + 32 upper-case hex digits; the first 16 are the creation time, so ids sort by age."""
    return f"job-{time.time_ns():016X}{secrets.token_hex(8).upper()}"


def _rising_time_ns() -> int:
    """The time in nanoseconds, one more than the last answer if the clock has not moved
    (ids made in one loop then still sort in the order they were made)."""
    global _last
    with _lock:
        _last = max(time.time_ns(), _last + 1)
        return _last


def new_cluster_id() -> str:
    """`cls-` + 32 upper-case hex digits, shaped like a job id: sorts by creation."""
    return f"cls-{_rising_time_ns():016X}{secrets.token_hex(8).upper()}"


def new_vm_id() -> str:
    """`i-` + 24 lower-case hex digits; the first 16 are the creation time (strictly rising
    within a process), so a cluster's VMs sort by age."""
    return f"i-{_rising_time_ns():016x}{secrets.token_hex(4)}"
