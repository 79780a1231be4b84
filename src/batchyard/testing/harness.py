"""An engine on the stand-ins of `batchyard.testing`, stepped by the test.

`Harness.build()` wires an `Engine` to a `MemoryStore`, a `MemoryObjectStore`, an
`InlineAgent` and a `FakeClock`, and starts it without its loop thread: nothing happens
unless the test calls `engine.step()` (which `submit` and `finish` here do for it). A test
of an engine rule is then a plain sequence — submit, look at what runs, end attempts,
look at the states — that takes milliseconds and cannot be flaky.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchyard.domain.attempt import AttemptKey
from batchyard.domain.outcome import ErrorCode
from batchyard.orchestrator.engine import Engine
from batchyard.ports.agents import AgentListener
from batchyard.ports.store import IdempotencyToken, StateStore
from batchyard.testing.agent import InlineAgent
from batchyard.testing.clock import FakeClock
from batchyard.testing.memory_store import MemoryStore
from batchyard.testing.objects import MemoryObjectStore

MOST_STEPS = 10_000
"""`run_all` gives up after this many steps (a job that never ends is a bug to report)."""


@dataclass
class Harness:
    """An engine whose attempts end when the test says, at the time the test says."""

    engine: Engine
    agent: InlineAgent
    store: StateStore
    clock: FakeClock

    @classmethod
    def build(cls, slots: int = 1, store: StateStore | None = None,
              clock: FakeClock | None = None, sandbox: bool = False, abandon: bool = False,
              **engine_options: Any) -> Harness:
        """A started engine (no loop thread) on `store` (a new MemoryStore unless given: pass
        the store of an earlier harness to play an engine restart)."""
        made: list[InlineAgent] = []

        def agents(listener: AgentListener) -> list[InlineAgent]:
            made.append(InlineAgent(listener, slots=slots, sandbox=sandbox))
            return made

        store = MemoryStore() if store is None else store
        clock = FakeClock() if clock is None else clock
        engine = Engine(store, MemoryObjectStore(), agents, clock=clock, **engine_options)
        engine.start(abandon=abandon, loop=False)
        return cls(engine, made[0], store, clock)

    def submit(self, description: Any, tenant: str = "default",
               token: IdempotencyToken | None = None) -> str:
        """Submit a job (one second after the last thing that happened) and step once."""
        self.clock.advance(1)
        job_id = self.engine.submit(description, tenant, token)
        self.engine.step()
        return job_id

    def finish(self, key_or_prefix: AttemptKey | str, exit_code: int | None = 0,
               error_code: ErrorCode | None = None, message: str | None = None
               ) -> list[AttemptKey]:
        """One second later, end the attempts named (see `InlineAgent.finish`); step."""
        self.clock.advance(1)
        keys = self.agent.finish(key_or_prefix, exit_code, error_code, message)
        self.engine.step()
        return keys

    def running(self) -> list[str]:
        """The running attempts as `job/task/instance#attempt`, in launch order."""
        return self.agent.keys()

    def run_all(self) -> None:
        """Let every attempt succeed, step by step, until nothing runs any more."""
        for _ in range(MOST_STEPS):
            running = self.agent.running()
            if not running:
                return
            self.finish(running[0].key)
        raise RuntimeError(f"attempts still run after {MOST_STEPS} steps: {self.running()}")

    def close(self) -> None:
        self.engine.close()
