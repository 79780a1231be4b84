"""Stand-ins shipped with batchyard for tests of the engine and of what is built on it.

`MemoryStore` is a state store in Python dicts with the SQL store's semantics (the same
contract suite runs over both); `InlineExecutor` runs nothing and lets the test end each
attempt; `FakeClock` is the engine's clock, moved by the test; `MemoryObjectStore` is an
object store in a dict. With them an engine test takes milliseconds, with no process and
no sleep (as procrastinate's `testing.InMemoryConnector`, dramatiq's `StubBroker`)::

    from batchyard.orchestrator.engine import Engine
    from batchyard.testing import FakeClock, InlineExecutor, MemoryObjectStore, MemoryStore

    engine = Engine(store=MemoryStore(), objects=MemoryObjectStore(),
                    executor=lambda listener: InlineExecutor(listener, slots=2),
                    work_root=tmp_path, clock=FakeClock())
    engine.start(loop=False)           # start-up work, no loop thread: the test steps
    job_id = engine.submit(description)
    engine.step()                      # launches into the free slots
    engine.executor.finish(job_id)     # every running attempt of the job exits with 0
    engine.step()                      # applies the outcomes: the job is Finished
"""

from batchyard.testing.clock import FakeClock
from batchyard.testing.executor import InlineExecutor
from batchyard.testing.memory_store import MemoryStore, MemoryTransaction
from batchyard.testing.objects import MemoryObjectStore

__all__ = ["FakeClock", "InlineExecutor", "MemoryObjectStore", "MemoryStore",
           "MemoryTransaction"]
