"""Identifiers in BatchCompute's shapes (reference §2)."""

from __future__ import annotations

import secrets
import time


def new_job_id() -> str:
    """`job-` + 32 upper-case hex digits; the first 16 are the creation time, so ids sort by age."""
    return f"job-{time.time_ns():016X}{secrets.token_hex(8).upper()}"
