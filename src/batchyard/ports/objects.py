"""The object store port: objects named by URL (oss://bucket/key, s3://bucket/key)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


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

    def put_file(self, local: str | Path, url: str, handed_over: bool = False) -> None:
        """Upload `local` as `url`. `handed_over`: the caller will neither change nor reuse
        `local` afterwards, so a store on the same disk may link it instead of copying."""
        ...
    def get_file(self, url: str, local: Path) -> None: ...
    def put_bytes(self, url: str, data: bytes) -> None: ...
    def read_bytes(self, url: str) -> bytes: ...
    def read_range(self, url: str, start: int, limit: int) -> bytes:
        """At most `limit` bytes of the object from byte `start`: b"" past its end (a live
        log tail reads only what is new). A missing object fails as `read_bytes` does;
        ValueError for a negative `start` or `limit`."""
        ...
    def size(self, url: str) -> int | None:
        """The object's size in bytes; None: no such object."""
        ...
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
