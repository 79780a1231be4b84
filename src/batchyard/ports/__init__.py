"""The small interfaces between the orchestrator and the outside world.

- `ports.store`: the state store (`StateStore`, `StateTransaction`, typed rows), implemented
  by `adapters.store.SqlStore` and `batchyard.testing.MemoryStore`.
- `ports.reads`: the read service (`JobQueries`) the API and the command line use,
  implemented by `adapters.reads.SqlReads`.
- `ports.objects`: the object store, implemented by `adapters.objectstore.FsspecObjectStore`.
- `ports.agents`: the lease protocol between the engine and its agents (BatchCompute's VMs).
- `ports.listeners`: hooks told about committed transitions.
- `ports.meter`: the engine's metrics hooks (`EngineMeter`) and the counts a scrape reads
  (`Tallies`, implemented by `adapters.tallies.SqlTallies`).
"""

from batchyard.ports.listeners import TransitionListener
from batchyard.ports.objects import Downloads, Folders, ObjectInfo, ObjectStore, Uploads
from batchyard.ports.reads import JobQueries, Page, Window

__all__ = ["Downloads", "Folders", "JobQueries", "ObjectInfo", "ObjectStore", "Page",
           "TransitionListener", "Uploads", "Window"]
