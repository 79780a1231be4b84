"""Committed transitions handed to the listeners, and the listener that wakes `wait()`."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from batchyard.domain.states import Entity, Transition
from batchyard.ports import TransitionListener

log = logging.getLogger(__name__)


class Deliveries:
    """Hands the transitions of each commit to every listener, after the commit.

    The engine calls `committed` right after each commit, under its lock (so in commit
    order), and `deliver` once its step or operation is done, outside the transaction: one
    call per commit and listener, in commit order, whichever thread delivers.
    """

    def __init__(self, listeners: Sequence[TransitionListener] = ()) -> None:
        self._listeners = list(listeners)
        self._pending: queue.SimpleQueue[list[Transition]] = queue.SimpleQueue()
        self._turn = threading.Lock()

    def add(self, listener: TransitionListener) -> None:
        with self._turn:
            self._listeners = [*self._listeners, listener]

    def committed(self, transitions: list[Transition]) -> None:
        if transitions:
            self._pending.put(transitions)

    def deliver(self) -> None:
        with self._turn:
            while True:
                try:
                    transitions = self._pending.get_nowait()
                except queue.Empty:
                    return
                for listener in self._listeners:
                    _tell(listener.committed, transitions)


    def created(self, job_id: str, tenant: str) -> None:
        """Tell every listener that the job was submitted (after its commit)."""
        for listener in self._listeners:
            _tell(listener.created, job_id, tenant)

    def removed(self, job_id: str, tenant: str) -> None:
        """Tell every listener that the job was deleted (after its commit)."""
        for listener in self._listeners:
            _tell(listener.removed, job_id, tenant)


def _tell(hook: Callable[..., None], *arguments: Any) -> None:
    """A failing listener is logged and skipped: it must not break the engine or the others."""
    try:
        hook(*arguments)
    except Exception:
        log.exception("transition listener %r failed", getattr(hook, "__self__", hook))


class WaitWakeups(TransitionListener):
    """Wakes the threads in `Engine.wait()` when a job changes state (they re-read it)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()

    def committed(self, transitions: Sequence[Transition]) -> None:
        if any(transition.entity is Entity.JOB for transition in transitions):
            self.wake_all()

    def wake_all(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)
