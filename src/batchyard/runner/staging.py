"""Moving mapped data: inputs staged into a machine-wide cache, outputs uploaded after a run.

Inputs (InputMapping, Mounts.Entries): the prefix is listed once per attempt; the listing
(every key with its size and version — ETag, or mtime and inode for local buckets) names a
*view*, a read-only folder tree under `<cache>/views/<digest>/` holding exactly those
objects. The first attempt that needs a view builds it (under a file lock, so concurrent
attempts and processes wait for it instead of downloading again); later attempts bind the
finished view straight into their sandbox: three instances mapping the same 1 GB prefix
download it once, and a second instance costs one listing. Objects of local buckets are
hard-linked into the view (objects are replaced, never changed in place); remote objects are
fetched concurrently. A view is never changed once built; when the prefix changes, the new
listing names a new view. Views with WriteSupport are copied into the attempt's folder, so
writes never reach the cache or the object store.

Outputs (OutputMapping): every regular file under the directory is uploaded to
`<prefix><relative path>`; symbolic links (they could point at host files the program itself
could not read), FIFOs and sockets are skipped, and folders reached through a link are never
walked. The upload opens the files by path again: nothing can swap them for links by then,
since the folder is bound into this attempt's sandbox only and every process of the sandbox
is dead (its PID namespace died with it) before the outputs are uploaded.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from batchyard.domain.attempt import PathMapping
from batchyard.ports import ObjectInfo, ObjectStore

_log = logging.getLogger(__name__)
_BUILDING = ".building"


@dataclass(frozen=True)
class StagedInput:
    """A finished view of an input prefix, and whether it came from the cache."""

    folder: str
    objects: int
    size: int
    cached: bool


def prefix_of(url: str) -> str:
    """The URL as a prefix (ending with '/')."""
    return url if url.endswith("/") else url + "/"


def stage_input(objects: ObjectStore, url: str, cache_root: str) -> StagedInput:
    """The cached view of the prefix `url`, built now if no attempt built it yet."""
    prefix = prefix_of(url)
    listing = [info for info in objects.list(prefix, recursive=True) if not info.is_dir]
    folder = os.path.join(cache_root, "views", _digest(prefix, listing))
    size = sum(info.size for info in listing)
    if os.path.isdir(folder):
        return StagedInput(folder, len(listing), size, cached=True)
    os.makedirs(os.path.join(cache_root, "views"), exist_ok=True)
    with open(folder + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait, then find it built
        if os.path.isdir(folder):
            return StagedInput(folder, len(listing), size, cached=True)
        _build(objects, prefix, listing, folder)
    _log.info("staged %s: %d objects, %d bytes", prefix, len(listing), size)
    return StagedInput(folder, len(listing), size, cached=False)


def _digest(prefix: str, listing: list[ObjectInfo]) -> str:
    entries = sorted((info.url, info.size, info.version) for info in listing)
    text = json.dumps([prefix, entries], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def _build(objects: ObjectStore, prefix: str, listing: list[ObjectInfo], folder: str) -> None:
    """Download `listing` into a fresh sibling of `folder`, then rename it into place."""
    building = folder + _BUILDING
    shutil.rmtree(building, ignore_errors=True)
    os.mkdir(building)
    pairs = []
    made = {building}
    for info in listing:
        local = os.path.join(building, *info.url[len(prefix):].split("/"))
        parent = os.path.dirname(local)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        pairs.append((info.url, Path(local)))
    try:
        objects.get_files(pairs)
        os.rename(building, folder)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def private_copy(view: str, destination: str) -> None:
    """A writable copy of a view for a WriteSupport mapping (the cache stays untouched)."""
    shutil.copytree(view, destination, symlinks=True, dirs_exist_ok=True)


def output_files(folder: str, prefix: str) -> list[tuple[Path, str]]:
    """(local file, object URL) for every regular file below `folder`, one `lstat` each;
    links and special files are skipped, folder links are not walked."""
    prefix = prefix_of(prefix)
    pairs = []
    for parent, directories, names in os.walk(folder, followlinks=False):
        directories.sort()
        relative = os.path.relpath(parent, folder)
        base = "" if relative == "." else relative.replace(os.sep, "/") + "/"
        for name in sorted(names):
            path = os.path.join(parent, name)
            if _is_regular(path):
                pairs.append((Path(path), prefix + base + name))
    return pairs


def _is_regular(path: str) -> bool:
    """Whether `path` itself (not what a link there points at) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def upload_outputs(objects: ObjectStore, outputs: list[tuple[str, PathMapping]]) -> list[str]:
    """Upload each (host folder, mapping); one problem message per mapping that failed."""
    problems = []
    for folder, mapping in outputs:
        try:
            objects.put_files(output_files(folder, mapping.url))
        except Exception as error:  # the message names the object and the reason
            message = getattr(error, "message", "") or f"{type(error).__name__}: {error}"
            problems.append(f"cannot upload {mapping.path} to {mapping.url}: {message}")
    return problems
