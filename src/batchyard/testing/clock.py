"""A clock that moves only when the test moves it."""

from __future__ import annotations

START = 1_700_000_000.0
"""2023-11-14 22:13:20 UTC: a plausible time, far from 0 (where a bug adding seconds to a
missing time would hide)."""


class FakeClock:
    """Epoch seconds, as `time.time` gives them, but set by the test: pass it as the engine's
    `clock` and every time the engine records is one the test chose."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move forward by `seconds` (never back: time in the engine only grows); the new time."""
        if seconds < 0:
            raise ValueError(f"a clock does not go back ({seconds} seconds)")
        self.now += seconds
        return self.now

    def set(self, now: float) -> None:
        """Jump to `now` (backwards too: for a test of a clock that was wrong)."""
        self.now = now
