"""Object storage for task programs: read inputs from and write results to `oss://` URLs.

batchyard gives every task program the variables `BATCHYARD_OSS_ROOT` and
`BATCHYARD_OSS_BUCKETS` (and puts batchyard on `PYTHONPATH`), so a program reaches the very
object store the job's `PackagePath` and logs live in, wherever the attempt runs. This plays
the part of the `oss_tool` helper in BatchCompute's samples::

    import os
    from batchyard import oss

    part = int(os.environ["BATCH_COMPUTE_DAG_INSTANCE_ID"])
    text = oss.read_text("oss://demo/log-count/data.txt")
    lines = text.splitlines()[part::3]
    oss.put_text(f"oss://demo/log-count/counts/{part}.txt", str(len(lines)))
    print(oss.ls("oss://demo/log-count/counts/"))

Every failure raises `batchyard.errors.ObjectStoreError` naming the object and the reason.
The module imports little (no fsspec unless a bucket maps to a remote filesystem), so it
adds almost nothing to a program's start-up time.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from batchyard.adapters.objectstore import (
    BUCKETS_VARIABLE,
    ONLY_VARIABLE,
    ROOT_VARIABLE,
    FsspecObjectStore,
)

__all__ = ["cat", "get", "ls", "put", "put_text", "read_text"]


def get(url: str, local_path: str | os.PathLike[str]) -> None:
    """Download the object `url` to the file `local_path` (its folder is created)."""
    _store().get_file(url, Path(local_path))


def put(local_path: str | os.PathLike[str], url: str) -> None:
    """Upload the file `local_path` as the object `url`."""
    _store().put_file(Path(local_path), url)


def cat(url: str) -> bytes:
    """The content of the object `url`."""
    return _store().read_bytes(url)


def ls(url: str) -> list[str]:
    """URLs of the objects (and sub-prefixes, ending in `/`) directly under the prefix `url`."""
    return [info.url for info in _store().list(url)]


def put_text(url: str, text: str) -> None:
    """Write `text` (UTF-8) as the object `url`."""
    _store().put_bytes(url, text.encode("utf-8"))


def read_text(url: str) -> str:
    """The content of the object `url`, decoded as UTF-8."""
    return _store().read_bytes(url).decode("utf-8")


def _store() -> FsspecObjectStore:
    """The store the environment describes; rebuilt only when the variables change."""
    return _store_for(os.environ.get(ROOT_VARIABLE, ""), os.environ.get(BUCKETS_VARIABLE, ""),
                      os.environ.get(ONLY_VARIABLE))


@lru_cache(maxsize=4)
def _store_for(root: str, buckets: str, only: str | None) -> FsspecObjectStore:
    variables = {ROOT_VARIABLE: root, BUCKETS_VARIABLE: buckets}
    if only is not None:  # a confined program: its tenant's buckets only
        variables[ONLY_VARIABLE] = only
    return FsspecObjectStore.from_environment(variables)
