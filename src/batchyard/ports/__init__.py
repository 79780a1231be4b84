"""The small interfaces between the orchestrator and the outside world.

- `ports.store`: the state store (`StateStore`, `StateTransaction`, typed rows), implemented
  by `adapters.store.SqlStore` and `batchyard.testing.MemoryStore`.
- `ports.objects`: the object store, implemented by `adapters.objectstore.FsspecObjectStore`.
- `ports.agents`: the lease protocol between the engine and its agents (BatchCompute's VMs).
- `ports.executors`: the executor the engine drives today (`adapters.local_executor`).
- `ports.listeners`: hooks told about committed transitions.
"""

from batchyard.ports.executors import Capabilities, Executor, OutcomeListener
from batchyard.ports.listeners import TransitionListener
from batchyard.ports.objects import Downloads, Folders, ObjectInfo, ObjectStore, Uploads

__all__ = ["Capabilities", "Downloads", "Executor", "Folders", "ObjectInfo", "ObjectStore",
           "OutcomeListener", "TransitionListener", "Uploads"]
