"""The small interfaces between the orchestrator and the outside world.

Adapters implement them: `adapters.store.SqlStore`, `adapters.objectstore.FsspecObjectStore`,
`adapters.local_executor.LocalExecutor` (and later Ray).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.domain.outcome import Outcome
from batchyard.domain.states import Transition


@dataclass(frozen=True)
class ObjectInfo:
    url: str
    size: int
    is_dir: bool
    version: str = field(default="", compare=False)
    """Changes whenever the object's content may have changed (ETag, or mtime and inode)."""


Downloads = list[tuple[str, Path]]
Uploads = list[tuple[Path, str]]
Folders = list[str]


class ObjectStore(Protocol):
    """Reads and writes objects named by URL: oss://bucket/key, s3://bucket/key."""

    def put_file(self, local: Path, url: str, handed_over: bool = False) -> None:
        """Upload `local` as `url`. `handed_over`: the caller will neither change nor reuse
        `local` afterwards, so a store on the same disk may link it instead of copying."""
        ...
    def get_file(self, url: str, local: Path) -> None: ...
    def put_bytes(self, url: str, data: bytes) -> None: ...
    def read_bytes(self, url: str) -> bytes: ...
    def exists(self, url: str) -> bool: ...
    def list(self, url: str, recursive: bool = False) -> list[ObjectInfo]: ...
    def delete(self, url: str) -> None: ...
    def get_files(self, pairs: Downloads) -> None:
        """Download many objects (URL, local file) at once, as fast as the store allows."""
        ...
    def put_files(self, pairs: Uploads) -> None:
        """Upload many local files (local file, URL) at once; the error names the object."""
        ...
    def local_folders(self) -> Folders:
        """Local folders holding objects (hidden from sandboxed programs)."""
        ...
    def program_environment(self, buckets: Sequence[str] | None = None) -> dict[str, str]:
        """Environment variables that let `batchyard.oss` in a task program reach this store
        (only `buckets`, and only those in local folders, when given)."""
        ...
    def bucket_folder(self, bucket: str, create: bool = False) -> str | None:
        """The local folder holding the objects of `bucket` (None: it lives elsewhere);
        `create`: make it (writable for confined programs) if missing."""
        ...


OutcomeListener = Callable[[AttemptKey, Outcome], None]


@dataclass(frozen=True)
class Capabilities:
    name: str
    slots: int
    """How many instances may run at the same time."""
    sandbox: bool = False
    """Whether attempts with mapped paths can run (bubblewrap is installed)."""


class Executor(Protocol):
    """Runs attempts somewhere and reports each Outcome to the listener exactly once."""

    def capabilities(self) -> Capabilities: ...
    def submit(self, request: AttemptRequest) -> None: ...
    def cancel(self, key: AttemptKey) -> None:
        """Kill the attempt if it runs; its Outcome is then reported with ErrorCode STOPPED."""
        ...
    def shutdown(self) -> None: ...


class TransitionListener(Protocol):
    """Told about state changes once they are committed (the console, notifications, the
    engine's own `wait()` wake-ups). A hook with a no-op default, as dramatiq's middleware:
    subclass it and override what you need, so hooks added later break no listener.

    The engine calls it on one of its threads, after the commit and never inside the
    transaction, once per commit with everything that commit moved, in commit order. It
    must be quick (hand slow work to a thread of its own); an exception it raises is logged
    and changes nothing else. Submissions are not transitions (no source state): they are
    committed outside the engine's order, so a listener would see them out of order.
    """

    def committed(self, transitions: Sequence[Transition]) -> None:
        """`transitions`: every state change of one commit, in the order it was made."""
        return None
