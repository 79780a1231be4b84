"""Stand-ins shipped with batchyard for tests of the engine and of what is built on it.

`MemoryStore` is a state store in Python dicts with the SQL store's semantics (one contract
suite runs over it, SQLite and PostgreSQL); `InlineAgent` runs nothing and lets the test
end each attempt; `FakeClock` is the engine's clock, moved by the test; `MemoryObjectStore`
is an object store in a dict; `Harness` wires an Engine to all four, without its loop
thread. An engine test then takes milliseconds, with no process and no sleep (as
procrastinate's `testing.InMemoryConnector`, dramatiq's `StubBroker`)::

    from batchyard.testing import Harness

    harness = Harness.build(slots=2)   # Engine(MemoryStore(), MemoryObjectStore(),
                                       #   InlineAgent, clock=FakeClock()).start(loop=False)
    job_id = harness.submit(description)           # submits, then one engine.step()
    assert harness.running() == [f"{job_id}/t/0#1"]
    harness.finish(f"{job_id}/t/0", exit_code=1)   # the attempt fails; a step applies it
    harness.finish(job_id)                         # the retry succeeds
    assert harness.engine.job(job_id).state is State.FINISHED
"""

from batchyard.testing.agent import InlineAgent
from batchyard.testing.clock import FakeClock
from batchyard.testing.harness import Harness
from batchyard.testing.memory_store import MemoryStore, MemoryTransaction
from batchyard.testing.objects import MemoryObjectStore

__all__ = ["FakeClock", "Harness", "InlineAgent", "MemoryObjectStore", "MemoryStore",
           "MemoryTransaction"]
