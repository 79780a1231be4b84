"""An object store in a dict: for engine tests, which hand it to the engine but never reach
an object (attempts run nowhere). Programs cannot reach it: it has no local folder."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from batchyard.errors import ObjectNotFound
from batchyard.ports.objects import Downloads, Folders, ObjectInfo, ObjectStore, Uploads


class MemoryObjectStore:
    """Objects named by URL, kept as bytes (implements `ports.objects.ObjectStore`)."""

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put_file(self, local: str | Path, url: str, handed_over: bool = False) -> None:
        self.put_bytes(url, Path(local).read_bytes())

    def get_file(self, url: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(self.read_bytes(url))

    def put_bytes(self, url: str, data: bytes) -> None:
        with self._lock:
            self._objects[url] = bytes(data)

    def read_bytes(self, url: str) -> bytes:
        with self._lock:
            data = self._objects.get(url)
        if data is None:
            raise ObjectNotFound(url, "memory")
        return data

    def read_range(self, url: str, start: int, limit: int) -> bytes:
        if start < 0 or limit < 0:
            raise ValueError(f"a byte range starts at 0 or later and is at least 0 bytes "
                             f"long, got start={start}, limit={limit}")
        return self.read_bytes(url)[start:start + limit]

    def size(self, url: str) -> int | None:
        with self._lock:
            data = self._objects.get(url)
        return None if data is None else len(data)

    def exists(self, url: str) -> bool:
        """Whether an object, or a prefix with objects under it, is there."""
        prefix = url.rstrip("/") + "/"
        with self._lock:
            return url in self._objects or any(name.startswith(prefix) for name in self._objects)

    def list(self, url: str, recursive: bool = False) -> list[ObjectInfo]:
        """The objects under the prefix `url` (direct children and sub-prefixes ending in
        `/` unless `recursive`), sorted; a `url` naming an object lists that object."""
        with self._lock:
            objects = dict(self._objects)
        if url in objects:
            return [ObjectInfo(url, len(objects[url]), False)]
        prefix = url if url.endswith("/") else url + "/"
        found: dict[str, ObjectInfo] = {}
        for name, data in objects.items():
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            if recursive or "/" not in rest:
                found[name] = ObjectInfo(name, len(data), False)
            else:
                folder = prefix + rest.split("/", 1)[0] + "/"
                found[folder] = ObjectInfo(folder, 0, True)
        return [found[name] for name in sorted(found)]

    def delete(self, url: str) -> None:
        """Remove the object `url` and everything under the prefix; absent is no error."""
        prefix = url.rstrip("/") + "/"
        with self._lock:
            for name in [name for name in self._objects
                         if name == url or name.startswith(prefix)]:
                del self._objects[name]

    def get_files(self, pairs: Downloads) -> None:
        for url, local in pairs:
            self.get_file(url, local)

    def put_files(self, pairs: Uploads) -> None:
        for local, url in pairs:
            self.put_file(local, url)

    def local_folders(self) -> Folders:
        return []

    def program_environment(self, buckets: Sequence[str] | None = None) -> dict[str, str]:
        return {}

    def bucket_folder(self, bucket: str, create: bool = False) -> str | None:
        return None


if TYPE_CHECKING:  # mypy proves that the port is implemented
    def _implements(objects: MemoryObjectStore) -> ObjectStore:
        return objects
