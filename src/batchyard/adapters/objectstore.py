"""Object storage behind `oss://bucket/key` and `s3://bucket/key` URLs, reached through fsspec.

A bucket resolves to the fsspec URL configured for it (`buckets`: name → URL such as
`/srv/demo`, `file:///srv/demo` or `s3://real-bucket/prefix`) or, by default, to the local
folder `root/<bucket>`. Remote filesystems take their credentials and endpoints from
fsspec's own configuration (for s3fs: `AWS_*` and `FSSPEC_S3_*` environment variables).

Local targets are read and written with plain `os`/`shutil` calls: the store sits on the hot
path (every attempt uploads two logs) and fsspec's generic machinery costs far more than the
copy itself. fsspec is imported only when a bucket maps to a non-local filesystem, which
also keeps `import batchyard.oss` cheap inside task programs. Local writes are atomic (write
a hidden sibling, then rename), as object-store puts are.

Bucket folders are writable by task programs (bound into their sandbox), so the store never
follows a symbolic link beneath a bucket's folder and only ever reads regular files there:
keys are resolved one folder at a time relative to directory descriptors (`batchyard.beneath`),
a link or special file on the way is refused with an error naming its URL, and listings skip
them. Folders the store makes in a bucket can get a fixed mode and group (`folder_mode`,
`folder_group`), so that programs running as different users can share the bucket.

Object keys come from job descriptions and task programs, so they are untrusted: a key with a
`..` segment, a leading `/` or a NUL character is refused before any I/O. Plain local paths
(and `file://` URLs) are accepted as they are: they come from configuration or from a task
program that can reach the local disk anyway.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from batchyard.beneath import (
    FOLDER_FLAGS,
    NewFolders,
    UnsafeEntry,
    entry_status,
    kind_of,
    open_folder,
    open_regular,
    split_key,
)
from batchyard.errors import ObjectNotFound, ObjectStoreError
from batchyard.ports import ObjectInfo

ROOT_VARIABLE = "BATCHYARD_OSS_ROOT"
"""Environment variable holding the folder of unmapped buckets (see `program_environment`)."""
BUCKETS_VARIABLE = "BATCHYARD_OSS_BUCKETS"
"""Environment variable holding the bucket mapping as a JSON object."""
ONLY_VARIABLE = "BATCHYARD_OSS_ONLY"
"""Environment variable naming (comma-separated) the only buckets a program may reach."""

_BUCKET_SCHEMES = ("oss://", "s3://")
_FILE_SCHEME = "file://"
_BUCKET_PROTOCOLS = frozenset({"s3", "s3a", "oss", "gs", "gcs", "abfs", "az"})
_ANY_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CHUNK = 1 << 24
_PARTIAL = ".batchyard-partial"
"""Suffix of the hidden sibling a local write goes to before it is renamed into place."""
_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK)
"""Why a hard link can fail where a copy still works (another filesystem, protected links)."""
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MOST_PLACES = 4096
"""Folder parts of URLs whose resolution is remembered (typically one or two per job)."""

_Downloads = list[tuple[str, Path]]
_Uploads = list[tuple[Path, str]]
_Names = list[str]
_Singles = list[tuple[str, Callable[..., None], tuple[Any, ...]]]
_Row = tuple[str, int, bool, str]
"""(path relative to the listed prefix, size, is a directory, version); "" names the prefix."""


@dataclass(frozen=True, slots=True)
class _Location:
    """Where a URL points: a local path (no filesystem) or a path on an fsspec filesystem.

    An object of a bucket on a local folder also has that `folder` and its `key` in it: it
    is reached beneath the folder without following links. A plain local path has neither.
    """

    path: str
    filesystem: Any = None
    folder: str = ""
    key: str = ""


class FsspecObjectStore:
    """The `ObjectStore` port: `oss://`/`s3://` buckets on local folders or fsspec filesystems."""

    def __init__(self, root: Path, buckets: dict[str, str] | None = None,
                 options: dict[str, dict[str, Any]] | None = None,
                 secrets: tuple[str, ...] = (),
                 environment: dict[str, str] | None = None, direct_s3: bool = False,
                 folder_mode: int | None = None, folder_group: int | None = None) -> None:
        """`options`: fsspec storage options per protocol (e.g. {"s3": {"endpoint_url": …}});
        `secrets`: strings never to show in an error message (credentials);
        `environment`: variables that give programs the same access (see `program_environment`);
        `direct_s3`: `s3://bucket/key` of an unmapped bucket is that bucket on S3 itself
        (otherwise every unmapped bucket, oss:// or s3://, is a folder under `root`);
        `folder_mode`, `folder_group`: the exact mode (e.g. 0o2775) and group of every folder
        the store makes in a local bucket (and of a bucket folder it makes), so that programs
        of one tenant running as different users can all write there; None: umask, default.
        """
        self._root = os.path.abspath(root)
        self._buckets = dict(buckets or {})
        self._options = dict(options or {})
        self._secrets = tuple(secret for secret in secrets if secret)
        self._environment = dict(environment or {})
        self._direct_s3 = direct_s3
        self._new_folders = NewFolders(folder_mode, folder_group)
        self._mapped: dict[str, _Location] = {}
        self._lock = threading.Lock()
        self._only: frozenset[str] | None = None
        """The buckets a confined program may reach (None: any)."""
        self._places: dict[str, _Place] = {}
        """By the folder part of an object URL (`oss://bucket/logs`): its bucket's local
        folder and the folder names below it, once checked (see `_hand_over`)."""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> FsspecObjectStore:
        """Rebuild the store described by `program_environment()` (used inside task programs)."""
        environ = os.environ if environ is None else environ
        root = environ.get(ROOT_VARIABLE, "")
        if not root:
            raise ObjectStoreError(
                f"{ROOT_VARIABLE} is not set: run the program under batchyard, or set it to "
                "the folder holding one sub-folder per bucket")
        only = environ.get(ONLY_VARIABLE)
        store = cls(Path(root), _parse_buckets(environ.get(BUCKETS_VARIABLE, "")))
        store._only = None if only is None else frozenset(filter(None, only.split(",")))
        return store

    def program_environment(self, buckets: Sequence[str] | None = None) -> dict[str, str]:
        """Variables that let `batchyard.oss` in a task program rebuild this very store.

        With `buckets`, the program reaches those buckets only, and only the ones in local
        folders (its sandbox shows just those): no credentials of remote stores are given.
        """
        if buckets is None:
            return {**self._environment, ROOT_VARIABLE: self._root,
                    BUCKETS_VARIABLE: json.dumps(self._buckets, sort_keys=True)}
        local = {name: folder for name in buckets
                 if (folder := self._local_folder(name)) is not None}
        return {ROOT_VARIABLE: self._root, BUCKETS_VARIABLE: json.dumps(local, sort_keys=True),
                ONLY_VARIABLE: ",".join(sorted(local))}

    def bucket_folder(self, bucket: str, create: bool = False) -> str | None:
        """The local folder of `bucket`'s objects (None: the bucket is on S3, OSS, …).

        With `create`, the folder is made if missing, and given the configured mode and
        group (see `folder_mode`) even if it was there, so programs can write in it."""
        folder = self._local_folder(bucket)
        if folder is not None and create:
            descriptor = open_folder(folder, [], self._new_folders)
            try:
                self._new_folders.set_up(descriptor)
            finally:
                os.close(descriptor)
        return folder

    def _local_folder(self, bucket: str) -> str | None:
        if bucket not in self._buckets:
            return os.path.join(self._root, bucket)
        target = self._buckets[bucket]
        if target.startswith(_FILE_SCHEME):
            return os.path.abspath(target[len(_FILE_SCHEME):])
        return None if _ANY_SCHEME.match(target) else os.path.abspath(target)

    def put_file(self, local: str | Path, url: str, handed_over: bool = False) -> None:
        """Upload the local file `local` as the object `url` (replacing it atomically).

        A file `handed_over` to a bucket folder is hard-linked into it rather than copied
        (attempt logs: no copy, and no inode made and freed per upload).
        """
        source = os.fspath(local)
        if handed_over and self._hand_over(source, url):
            return
        location = self._locate_object(url, "write")
        with self._reporting("write", url, location):
            if location.folder and handed_over:
                _link_object(source, location, self._new_folders)
            elif location.folder:
                _copy_object(source, location, self._new_folders)
            elif location.filesystem is None and handed_over:
                _link_into_place(source, location.path)
            elif location.filesystem is None:
                _replace_local(location.path, lambda target: _copy_local(source, target))
            else:
                _put_remote(location, source)

    def _hand_over(self, source: str, url: str) -> bool:
        """`put_file` of a handed-over file into a local bucket folder, the hot path (two
        logs per attempt): the URL's folder part resolved and checked once, then one
        `linkat` into that folder's descriptor, kept open while a `stat` of its path (links
        not followed) still finds the very folder (see `_Place`). False (nothing done)
        where the URL is not of that kind or anything fails: the general path then does it,
        or says why not."""
        prefix, _, name = url.rpartition("/")
        if name in ("", ".", "..") or "\0" in name:
            return False
        place = self._places.get(prefix) or self._place(prefix)
        if place is None:
            return False
        with place.lock:
            folder = place.folder()
            if folder >= 0:
                try:
                    _link_in(source, folder, name)
                    return True
                except Exception:  # the folder went away meanwhile: look again next time
                    place.drop()
                    return False
        try:
            _link_beneath(source, place.base, place.folders, name, self._new_folders, place)
        except Exception:  # said again, with the URL, by the general path
            return False
        return True

    def _place(self, prefix: str) -> _Place | None:
        """Where objects `<prefix>/<name>` go, checked as `_locate_object` checks a URL
        (None: not in a local bucket folder)."""
        try:
            location = self._locate_object(f"{prefix}/x", "write")
        except ObjectStoreError:
            return None
        if not location.folder or location.filesystem is not None:
            return None
        names = split_key(location.key)
        if names[-1:] != ["x"]:
            return None
        if len(self._places) >= _MOST_PLACES:
            self._places.clear()  # their descriptors close as they are dropped
        place = self._places[prefix] = _Place(location.folder, names[:-1])
        return place

    def get_file(self, url: str, local: Path) -> None:
        """Download the object `url` to the local file `local`, creating its folder."""
        location = self._locate(url)
        with self._reporting("read", url, location):
            if location.folder:
                _get_object(location, os.fspath(local))
            elif location.filesystem is None:
                _copy_into(location.path, os.fspath(local))
            else:
                os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
                location.filesystem.get_file(location.path, os.fspath(local))

    def put_bytes(self, url: str, data: bytes) -> None:
        """Write `data` as the object `url` (replacing it atomically)."""
        location = self._locate_object(url, "write")
        with self._reporting("write", url, location):
            if location.folder:
                _write_object(location, self._new_folders, partial(_write_all, data))
            elif location.filesystem is None:
                _replace_local(location.path, lambda target: Path(target).write_bytes(data))
            else:
                location.filesystem.pipe_file(location.path, data)

    def read_bytes(self, url: str) -> bytes:
        """The whole content of the object `url`."""
        location = self._locate(url)
        with self._reporting("read", url, location):
            if location.folder:
                return _read_object(location)
            if location.filesystem is None:
                with open(location.path, "rb") as stream:
                    return stream.read()
            content: bytes = location.filesystem.cat_file(location.path)
            return content

    def read_range(self, url: str, start: int, limit: int) -> bytes:
        """At most `limit` bytes of the object `url` from byte `start` (b"" past its end);
        ObjectNotFound (on S3, ObjectStoreError) as `read_bytes` when there is no object."""
        _check_range(start, limit)
        location = self._locate(url)
        with self._reporting("read", url, location):
            if location.folder:
                return _read_object_range(location, start, limit)
            if location.filesystem is None:
                with open(location.path, "rb") as stream:
                    stream.seek(start)
                    return stream.read(limit)
            size = self._remote_size(location)
            if size is None:
                raise FileNotFoundError(location.path)
            if limit == 0 or start >= size:
                return b""
            content: bytes = location.filesystem.cat_file(
                location.path, start=start, end=min(size, start + limit))
            return content

    def size(self, url: str) -> int | None:
        """The object's size in bytes; None when there is no such object (a folder or a
        prefix is none either)."""
        location = self._locate(url)
        with self._reporting("check", url, location):
            if location.folder:
                return _object_size(location)
            if location.filesystem is None:
                try:
                    status = os.stat(location.path)
                except (FileNotFoundError, NotADirectoryError):
                    return None
                return status.st_size if stat.S_ISREG(status.st_mode) else None
            return self._remote_size(location)

    @staticmethod
    def _remote_size(location: _Location) -> int | None:
        try:
            info = location.filesystem.info(location.path)
        except FileNotFoundError:
            return None
        if info.get("type") != "file":
            return None
        return int(info.get("size") or 0)

    def exists(self, url: str) -> bool:
        """Whether an object (or a non-empty prefix, on local folders any folder) is there."""
        location = self._locate(url)
        with self._reporting("check", url, location):
            if location.folder:
                return _object_exists(location)
            if location.filesystem is None:
                return os.path.exists(location.path)
            return bool(location.filesystem.exists(location.path))

    def list(self, url: str, recursive: bool = False) -> list[ObjectInfo]:
        """The objects under the prefix `url`, sorted, with URLs in the form `url` was given.

        Non-recursive: the direct children, sub-prefixes as `is_dir` rows ending in `/`.
        Recursive: every object below, no folder rows. A `url` naming one object lists that
        object; a prefix with nothing under it lists nothing.
        """
        location = self._locate(url)
        with self._reporting("list", url, location):
            if location.folder:
                rows = _list_bucket(location, recursive)
            elif location.filesystem is None:
                rows = _list_local(location.path, recursive)
            else:
                rows = _list_remote(location.filesystem, location.path, recursive)
        return _object_infos(url, rows)

    def delete(self, url: str) -> None:
        """Remove the object `url` (or everything under the prefix); absent is not an error."""
        location = self._locate(url)
        with self._reporting("delete", url, location):
            if location.folder:
                _delete_object(location)
            elif location.filesystem is None:
                _delete_local(location.path)
            else:
                with suppress(FileNotFoundError):
                    location.filesystem.rm(location.path, recursive=True)

    def get_files(self, pairs: _Downloads) -> None:
        """Download many objects at once. Local objects are hard-linked where possible (an
        object is always replaced, never changed in place, so a link is a true snapshot);
        remote ones are fetched concurrently by the filesystem."""
        remote: dict[int, tuple[Any, _Names, _Names, _Downloads]] = {}
        for url, local in pairs:
            location = self._locate(url)
            if location.filesystem is None:
                with self._reporting("read", url, location):
                    _fetch_local(location, os.fspath(local))
                continue
            batch = remote.setdefault(id(location.filesystem),
                                      (location.filesystem, [], [], []))
            batch[1].append(location.path)
            batch[2].append(os.fspath(local))
            batch[3].append((url, local))
        for filesystem, sources, targets, items in remote.values():
            self._batch(partial(filesystem.get, sources, targets),
                        [(url, self.get_file, (url, local)) for url, local in items])

    def put_files(self, pairs: _Uploads) -> None:
        """Upload many local files at once (remote filesystems: concurrently)."""
        remote: dict[int, tuple[Any, _Names, _Names, _Uploads]] = {}
        for local, url in pairs:
            location = self._locate_object(url, "write")
            if location.filesystem is None:
                self.put_file(local, url)
                continue
            batch = remote.setdefault(id(location.filesystem),
                                      (location.filesystem, [], [], []))
            batch[1].append(os.fspath(local))
            batch[2].append(location.path)
            batch[3].append((local, url))
        for filesystem, sources, targets, items in remote.values():
            self._batch(partial(filesystem.put, sources, targets),
                        [(url, self.put_file, (local, url)) for local, url in items])

    def _batch(self, run: Callable[[], object], singles: _Singles) -> None:
        """Run a concurrent batch; if it fails, redo it one by one to name the culprit."""
        try:
            run()
        except Exception:
            for _, single, arguments in singles:
                single(*arguments)

    def local_folders(self) -> _Names:
        """The folder of unmapped buckets and every bucket mapped to a local folder."""
        folders = [self._root]
        for target in self._buckets.values():
            if target.startswith(_FILE_SCHEME):
                folders.append(os.path.abspath(target[len(_FILE_SCHEME):]))
            elif not _ANY_SCHEME.match(target):
                folders.append(os.path.abspath(target))
        return folders

    @contextmanager
    def _reporting(self, verb: str, url: str, location: _Location) -> Iterator[None]:
        """Like `_reporting`, with the credentials blanked out of the message."""
        try:
            with _reporting(verb, url, location):
                yield
        except ObjectNotFound:
            raise  # a URL and a path: nothing secret
        except ObjectStoreError as error:
            raise ObjectStoreError(self.redact(error.message)) from None

    def redact(self, text: str) -> str:
        """`text` with every configured secret replaced by `***`."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _locate_object(self, url: str, verb: str) -> _Location:
        """Like `_locate`, for writes: the URL must name an object, not a prefix."""
        if not _names_object(url):
            raise ObjectStoreError(f"cannot {verb} {url}: the URL names a directory, not an object")
        return self._locate(url)

    def _locate(self, url: str) -> _Location:
        """Resolve `url` to a location, refusing unsafe keys and unknown schemes."""
        for scheme in _BUCKET_SCHEMES:
            if url.startswith(scheme):
                bucket, _, key = url[len(scheme):].partition("/")
                _check_names(url, bucket, key)
                self._check_reachable(url, bucket)
                if self._direct_s3 and scheme == "s3://" and bucket not in self._buckets:
                    return self._bucket_location(f"s3://{bucket}", key)
                return self._bucket_location(bucket, key)
        if url.startswith(_FILE_SCHEME):
            return _Location(url[len(_FILE_SCHEME):])
        if _ANY_SCHEME.match(url):
            raise ObjectStoreError(
                f"refusing {url!r}: unsupported scheme; use oss://bucket/key, s3://bucket/key "
                "or a local path")
        return _Location(url)

    def _check_reachable(self, url: str, bucket: str) -> None:
        if self._only is not None and bucket not in self._only:
            raise ObjectStoreError(
                f"cannot reach {url}: this program may use only its tenant's buckets in local "
                f"folders ({', '.join(sorted(self._only)) or 'none'}); reach others through "
                "InputMapping and OutputMapping")

    def _bucket_location(self, bucket: str, key: str) -> _Location:
        if bucket not in self._buckets and not bucket.startswith("s3://"):
            folder = os.path.join(self._root, bucket)
            return _Location(os.path.join(folder, key), folder=folder, key=key)
        base = self._mapped.get(bucket) or self._open_bucket(bucket)
        if base.filesystem is None:
            return _Location(os.path.join(base.path, key), folder=base.path, key=key)
        return _Location(f"{base.path.rstrip('/')}/{key}" if key else base.path, base.filesystem)

    def _open_bucket(self, bucket: str) -> _Location:
        """Resolve (once, then cached) the fsspec URL a bucket is mapped to."""
        with self._lock:
            cached = self._mapped.get(bucket)
            if cached is not None:
                return cached
            target = self._buckets.get(bucket, bucket)
            try:
                location = _open_mapping(target, self._options)
            except Exception as error:
                raise ObjectStoreError(self.redact(
                    f"cannot open bucket {bucket!r} mapped to {target}: {_reason(error, '')}"
                )) from error
            self._mapped[bucket] = location
            return location


def _names_object(url: str) -> bool:
    """Whether `url` can name an object: not a bucket alone, not ending with '/'."""
    if url.endswith("/"):
        return False
    for scheme in _BUCKET_SCHEMES:
        if url.startswith(scheme):
            return "/" in url[len(scheme):]
    return bool(url)


def _open_mapping(target: str, options: dict[str, dict[str, Any]]) -> _Location:
    """A bucket's base location; local folders stay plain paths, others get an fsspec fs."""
    if target.startswith(_FILE_SCHEME):
        return _Location(os.path.abspath(target[len(_FILE_SCHEME):]))
    if not _ANY_SCHEME.match(target):
        return _Location(os.path.abspath(target))
    from fsspec.core import url_to_fs  # type: ignore[import-untyped]  # heavy: only when needed

    protocol = target.split("://", 1)[0]
    filesystem, path = url_to_fs(target, **options.get(protocol, {}))
    if "file" in _protocols(filesystem):
        return _Location(os.path.abspath(path))
    return _Location(path, filesystem)


def _protocols(filesystem: Any) -> tuple[str, ...]:
    protocol = filesystem.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _parse_buckets(text: str) -> dict[str, str]:
    """The bucket mapping from its JSON form in `BUCKETS_VARIABLE`."""
    try:
        buckets = json.loads(text) if text else {}
    except ValueError as error:
        raise ObjectStoreError(f"{BUCKETS_VARIABLE} is not valid JSON: {error}") from error
    if not isinstance(buckets, dict) or not all(
            isinstance(name, str) and isinstance(target, str) for name, target in buckets.items()):
        raise ObjectStoreError(f"{BUCKETS_VARIABLE} must be a JSON object of strings, got {text}")
    return buckets


def _check_names(url: str, bucket: str, key: str) -> None:
    """Refuse bucket names and keys that could reach outside their bucket."""
    why = ""
    if bucket in ("", ".", "..") or "\0" in bucket:
        why = "the bucket name is missing or not a plain name"
    elif "\0" in key:
        why = "the key contains a NUL character"
    elif key.startswith("/"):
        why = "the key starts with '/'"
    elif ".." in key.split("/"):
        why = "the key has a '..' segment"
    if why:
        raise ObjectStoreError(f"refusing {url!r}: {why}")


@contextmanager
def _reporting(verb: str, url: str, location: _Location) -> Iterator[None]:
    """Turn any failure of the enclosed I/O into an ObjectStoreError naming `url` and why."""
    try:
        yield
    except ObjectStoreError:
        raise
    except UnsafeEntry as error:
        raise ObjectStoreError(f"cannot {verb} {url}: {_refusal(url, error)}") from error
    except FileNotFoundError as error:
        if verb == "read" and location.filesystem is None and not os.path.exists(location.path):
            raise ObjectNotFound(url, location.path,
                                 f"cannot read {url}: {_reason(error, location.path)}") from error
        raise ObjectStoreError(f"cannot {verb} {url}: {_reason(error, location.path)}") from error
    except Exception as error:
        raise ObjectStoreError(f"cannot {verb} {url}: {_reason(error, location.path)}") from error


def _refusal(url: str, error: UnsafeEntry) -> str:
    """Why a link or special file in a bucket was refused, naming it by its URL."""
    bucket = next((scheme + url[len(scheme):].partition("/")[0] + "/"
                   for scheme in _BUCKET_SCHEMES if url.startswith(scheme)), "")
    if error.is_link:
        return (f"{bucket}{error.relative} is a symbolic link; "
                "batchyard never follows links inside buckets")
    return (f"{bucket}{error.relative} is {error.kind}, not a regular file; "
            "batchyard reads only regular files inside buckets")


def _reason(error: Exception, own_path: str) -> str:
    """Why an operation failed, naming a local file only when it is not the object itself,
    a folder on its way or its hidden sibling being written."""
    if isinstance(error, OSError):
        reason = error.strerror or ("No such file or directory"
                                    if isinstance(error, FileNotFoundError) else str(error))
        filename = str(os.fspath(error.filename)) if error.filename is not None else ""
        own = own_path and (filename.startswith(own_path)
                            or own_path.startswith(filename.rstrip("/") + "/"))
        if filename and not (own or filename.endswith(_PARTIAL)):
            return f"{reason}: {filename}"
        return reason
    return f"{type(error).__name__}: {error}"


def _replace_local(path: str, write: Callable[[str], object]) -> None:
    """Write through `write(temporary)` then rename over `path`; create folders on demand."""
    temporary = f"{path}.{os.getpid()}-{threading.get_ident()}{_PARTIAL}"
    try:
        try:
            write(temporary)
        except FileNotFoundError as error:
            if error.filename != temporary:
                raise
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write(temporary)
        os.replace(temporary, path)
    except BaseException:
        with suppress(OSError):
            os.remove(temporary)
        raise


def _link_into_place(source: str, path: str) -> None:
    """Hard-link `source` as `path`, atomically replacing another object there.

    (A rename between two links of one file does nothing, hence the `samefile` check.)
    """
    try:
        os.link(source, path)
        return
    except FileExistsError:
        if os.path.samefile(source, path):
            return
    except OSError:
        pass  # no folder yet, or another filesystem: the general way below handles both
    _replace_local(path, lambda target: _link_or_copy(source, target))


def _copy_into(source: str, destination: str) -> None:
    """Copy a local object to a local file, creating the destination's folder on demand."""
    reader, status = _open_source(source)
    try:
        _copy_open_into(reader, status, destination)
    finally:
        os.close(reader)


def _copy_open_into(reader: int, status: os.stat_result, destination: str) -> None:
    """Copy the open file `reader` to a local file, creating its folder on demand."""
    try:
        _copy_to(reader, status, destination)
    except FileNotFoundError as error:
        if error.filename != destination:
            raise
        os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
        _copy_to(reader, status, destination)


def _link_or_copy(source: str, target: str) -> None:
    """Hard-link `source` at `target` (replacing it), or copy it across filesystems."""
    try:
        os.link(source, target)
    except FileExistsError:
        os.remove(target)
        os.link(source, target)
    except FileNotFoundError as error:
        if not os.path.exists(source):
            raise
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        _link_or_copy(source, target)
        del error
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        _copy_into(source, target)


def _copy_local(source: str, target: str) -> None:
    """Copy the file `source` to `target` with few system calls (it runs twice per attempt).

    `shutil.copyfile` spends more time in its safety checks than copying a small log takes.
    """
    reader, status = _open_source(source)
    try:
        _copy_to(reader, status, target)
    finally:
        os.close(reader)


def _open_source(source: str) -> tuple[int, os.stat_result]:
    """The local file `source` (a path the caller chose), opened to read, and its status."""
    reader = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    status = os.fstat(reader)
    if stat.S_ISDIR(status.st_mode):
        os.close(reader)
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), source)
    return reader, status


def _copy_to(reader: int, status: os.stat_result, target: str) -> None:
    """Copy the open file `reader` to the local file `target` (created or truncated)."""
    writer = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        _copy_content(reader, status, writer)
    finally:
        os.close(writer)


def _copy_content(reader: int, status: os.stat_result, writer: int) -> None:
    if status.st_size:
        _send_all(reader, writer)


def _copy_from(source: str, writer: int) -> None:
    """Copy the local file `source` into the open file `writer`."""
    reader, status = _open_source(source)
    try:
        _copy_content(reader, status, writer)
    finally:
        os.close(reader)


def _write_all(data: bytes, writer: int) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(writer, view):]


def _send_all(reader: int, writer: int) -> None:
    """Copy from `reader` to `writer` in the kernel; plain reads where sendfile can't."""
    offset = 0
    try:
        while sent := os.sendfile(writer, reader, offset, _CHUNK):
            offset += sent
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOSYS) or offset:
            raise
        with open(reader, "rb", closefd=False) as source, open(writer, "wb", closefd=False) as out:
            shutil.copyfileobj(source, out)


def _put_remote(location: _Location, source: str) -> None:
    """Upload to a non-local filesystem; make parent folders only where the fs needs them."""
    filesystem = location.filesystem
    try:
        filesystem.put_file(source, location.path)
    except FileNotFoundError:
        if not os.path.exists(source) or set(_protocols(filesystem)) & _BUCKET_PROTOCOLS:
            raise  # a missing bucket: never create one as a side effect of an upload
        filesystem.makedirs(location.path.rpartition("/")[0], exist_ok=True)
        filesystem.put_file(source, location.path)


# Objects of buckets on local folders: reached beneath the bucket's folder (see
# `batchyard.beneath`), so a link or special file a program planted there is never followed.


def _open_parent(location: _Location,
                 create: NewFolders | None = None) -> tuple[int, list[str]]:
    """The folder holding the object `location` names (a descriptor the caller closes), and
    the names down to the object. (No context manager: it costs more than the system calls
    on the path every attempt takes twice.)"""
    names = split_key(location.key)
    if not names or location.key.endswith("/"):  # a prefix: say whether it is a folder
        os.close(open_folder(location.folder, names))
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), location.path)
    return open_folder(location.folder, names[:-1], create), names


def _open_object(location: _Location) -> tuple[int, os.stat_result]:
    """The object, a regular file reached without links, opened to read; and its status."""
    folder, names = _open_parent(location)
    try:
        return open_regular(folder, location.folder, names)
    finally:
        os.close(folder)


def _read_object(location: _Location) -> bytes:
    reader, _ = _open_object(location)
    with open(reader, "rb") as stream:
        return stream.read()


def _read_object_range(location: _Location, start: int, limit: int) -> bytes:
    reader, _ = _open_object(location)
    with open(reader, "rb") as stream:
        stream.seek(start)
        return stream.read(limit)


def _object_size(location: _Location) -> int | None:
    """The size of the regular file an object is, opened as `_read_object` opens it."""
    try:
        reader, status = _open_object(location)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    os.close(reader)
    return status.st_size


def _check_range(start: int, limit: int) -> None:
    if start < 0 or limit < 0:
        raise ValueError(f"a byte range starts at 0 or later and is at least 0 bytes long, "
                         f"got start={start}, limit={limit}")


def _get_object(location: _Location, destination: str) -> None:
    reader, status = _open_object(location)
    try:
        _copy_open_into(reader, status, destination)
    finally:
        os.close(reader)


def _fetch_local(location: _Location, target: str) -> None:
    """Put a local object at `target` for `get_files`: hard-linked where possible, else
    copied; in a bucket, only ever the regular file that was opened and checked."""
    if not location.folder:
        _link_or_copy(location.path, target)
        return
    folder, names = _open_parent(location)
    try:
        reader, status = open_regular(folder, location.folder, names)
        try:
            if not _link_checked(folder, names[-1], status, target):
                _copy_open_into(reader, status, target)
        finally:
            os.close(reader)
    finally:
        os.close(folder)


def _link_checked(folder: int, name: str, status: os.stat_result, target: str) -> bool:
    """Hard-link the entry `name` of `folder` at `target` (never following a link), and keep
    the link only if it is the very file `status` describes: a program may have swapped the
    entry since it was opened. False if nothing was linked."""
    try:
        _link_replacing(folder, name, target)
    except OSError:
        return False
    if os.path.samestat(os.stat(target, follow_symlinks=False), status):
        return True
    os.remove(target)
    return False


def _link_replacing(folder: int, name: str, target: str) -> None:
    link = partial(os.link, name, target, src_dir_fd=folder, follow_symlinks=False)
    try:
        link()
    except FileExistsError:
        os.remove(target)
        link()
    except FileNotFoundError:
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        link()


def _write_object(location: _Location, create: NewFolders,
                  write: Callable[[int], object]) -> None:
    """Write the object through `write(descriptor)` and rename it into place atomically."""
    folder, names = _open_parent(location, create)
    try:
        _replace_in(folder, names[-1], partial(_write_new, write))
    finally:
        os.close(folder)


def _copy_object(source: str, location: _Location, create: NewFolders) -> None:
    reader, status = _open_source(source)
    try:
        _write_object(location, create, partial(_copy_content, reader, status))
    finally:
        os.close(reader)


def _link_object(source: str, location: _Location, create: NewFolders) -> None:
    """Hard-link the handed-over file `source` as the object, atomically replacing another
    object there; copy it where no link can be made. One `openat` per folder, one `linkat`.

    (A rename between two links of one file does nothing, hence the same-file check.)
    """
    folder, names = _open_parent(location, create)
    try:
        _link_in(source, folder, names[-1])
    finally:
        os.close(folder)


def _link_beneath(source: str, base: str, folders: list[str], name: str,
                  create: NewFolders, place: _Place | None = None) -> None:
    """`_link_object` of `base/folders…/name`, its names already split and checked; the
    folder's descriptor then kept by `place` (if it keeps one)."""
    folder = open_folder(base, folders, create)
    try:
        _link_in(source, folder, name)
    except BaseException:
        os.close(folder)
        raise
    if place is None or not place.keep(folder):
        os.close(folder)


class _Place:
    """A folder of a local bucket that handed-over files are linked into: its bucket
    folder and the names below it (checked), and, for a folder at most one level below
    the bucket's, its descriptor kept open.

    The descriptor is used only while `stat` of the folder's path, not following a link
    at its last name (the only one below the bucket folder, which is configuration and
    followed as such), finds the folder the descriptor was opened on (device and inode):
    a folder swapped for a link, or removed, is opened again the careful way (and a
    link refused). Between that check and the link, a swap changes nothing: the file
    goes into the folder that was opened without links, as with a freshly opened one."""

    __slots__ = ("base", "descriptor", "folders", "identity", "lock", "path")

    def __init__(self, base: str, folders: list[str]) -> None:
        self.base = base
        self.folders = folders
        self.path = os.path.join(base, *folders) if len(folders) <= 1 else ""
        self.descriptor = -1
        self.identity = (0, 0)
        self.lock = threading.Lock()
        """Held while the descriptor is used or changed (heavy attempts hand over their
        logs from the agent's pool threads)."""

    def folder(self) -> int:
        """The kept descriptor, if the path still finds its folder; else -1 (and none kept
        any more). Under `lock`."""
        if self.descriptor < 0:
            return -1
        try:
            status = os.stat(self.path, follow_symlinks=False)
            if (status.st_dev, status.st_ino) == self.identity:
                return self.descriptor
        except OSError:
            pass
        self.drop()
        return -1

    def drop(self) -> None:
        """Close the kept descriptor (under `lock`)."""
        if self.descriptor >= 0:
            os.close(self.descriptor)
            self.descriptor = -1

    def keep(self, folder: int) -> bool:
        """Keep `folder` (just opened the careful way) for later hand-overs; False if this
        place keeps none (a deeper folder) or keeps one already."""
        if not self.path:
            return False
        status = os.fstat(folder)
        with self.lock:
            if self.descriptor >= 0:
                return False
            self.descriptor = folder
            self.identity = (status.st_dev, status.st_ino)
        return True

    def __del__(self) -> None:
        if self.descriptor >= 0:
            os.close(self.descriptor)


def _link_in(source: str, folder: int, name: str) -> None:
    try:
        os.link(source, name, dst_dir_fd=folder, follow_symlinks=False)
    except FileExistsError:
        if not _same_file(source, folder, name):
            _replace_in(folder, name, partial(_link_new, source))
    except OSError as error:
        if error.errno not in _NO_LINK:
            raise
        _replace_in(folder, name, partial(_write_new, partial(_copy_from, source)))


def _same_file(source: str, folder: int, name: str) -> bool:
    return os.path.samestat(os.stat(source), os.stat(name, dir_fd=folder, follow_symlinks=False))


def _replace_in(folder: int, name: str, make: Callable[[int, str], object]) -> None:
    """Make a hidden sibling through `make(folder, its name)`, then rename it over `name`."""
    temporary = f"{name}.{os.getpid()}-{threading.get_ident()}{_PARTIAL}"
    try:
        make(folder, temporary)
        os.rename(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary, dir_fd=folder)
        raise


def _write_new(write: Callable[[int], object], folder: int, name: str) -> None:
    """Create `name` in `folder` and fill it through `write(descriptor)`. O_EXCL|O_NOFOLLOW:
    whatever a program planted under that name is removed, never written through."""
    try:
        writer = os.open(name, _WRITE_FLAGS, 0o666, dir_fd=folder)
    except FileExistsError:
        os.unlink(name, dir_fd=folder)
        writer = os.open(name, _WRITE_FLAGS, 0o666, dir_fd=folder)
    try:
        write(writer)
    finally:
        os.close(writer)


def _link_new(source: str, folder: int, name: str) -> None:
    """Hard-link `source` as the new entry `name` of `folder`, or copy it there."""
    with suppress(FileNotFoundError):
        os.unlink(name, dir_fd=folder)  # a leftover of a crash, or planted
    try:
        os.link(source, name, dst_dir_fd=folder, follow_symlinks=False)
    except OSError as error:
        if error.errno not in _NO_LINK:
            raise
        _write_new(partial(_copy_from, source), folder, name)


def _is_object(status: os.stat_result | None, folder_only: bool) -> bool:
    """Whether an entry counts as an object or prefix: regular files and folders only."""
    if status is None:
        return False
    return stat.S_ISDIR(status.st_mode) or (stat.S_ISREG(status.st_mode) and not folder_only)


def _object_exists(location: _Location) -> bool:
    names = split_key(location.key)
    try:
        folder = open_folder(location.folder, names[:-1])
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        return not names or _is_object(entry_status(folder, names[-1]),
                                       location.key.endswith("/"))
    finally:
        os.close(folder)


def _delete_object(location: _Location) -> None:
    """Delete beneath the bucket's folder: a link goes itself, never what it points at."""
    names = split_key(location.key)
    if not names:
        _delete_local(location.folder)  # the bucket's own folder, as configured
        return
    try:
        folder = open_folder(location.folder, names[:-1])
    except FileNotFoundError:
        return
    try:
        status = entry_status(folder, names[-1])
        if status is not None and stat.S_ISDIR(status.st_mode):
            shutil.rmtree(names[-1], dir_fd=folder)  # fd-based: no link below is followed
        elif status is not None and location.key.endswith("/"):
            _refuse_as_folder(status, names, location.path)
        elif status is not None:
            with suppress(FileNotFoundError):
                os.unlink(names[-1], dir_fd=folder)
    finally:
        os.close(folder)


def _refuse_as_folder(status: os.stat_result, names: list[str], path: str) -> None:
    """Refuse to treat the entry `names` as a folder (its URL ends with '/'): it is none."""
    if stat.S_ISLNK(status.st_mode):
        raise UnsafeEntry("/".join(names), kind_of(status.st_mode))
    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)


def _list_bucket(location: _Location, recursive: bool) -> list[_Row]:
    """`_list_local` beneath the bucket's folder: links and special files are skipped."""
    names = split_key(location.key)
    try:
        folder = open_folder(location.folder, names[:-1])
    except (FileNotFoundError, NotADirectoryError):
        return []
    try:
        if not names:
            return _folder_rows(folder, recursive, "")
        status = entry_status(folder, names[-1])
        if not _is_object(status, location.key.endswith("/")):
            return []
        if status is not None and stat.S_ISREG(status.st_mode):
            return [("", status.st_size, False, _version(status))]
        return _rows_below(folder, names[-1], recursive, "")
    finally:
        os.close(folder)


def _rows_below(folder: int, name: str, recursive: bool, prefix: str) -> list[_Row]:
    """The rows of the sub-folder `name` (none if it is no longer a real folder)."""
    try:
        child = os.open(name, FOLDER_FLAGS, dir_fd=folder)
    except OSError:
        return []
    try:
        return _folder_rows(child, recursive, prefix)
    finally:
        os.close(child)


def _folder_rows(folder: int, recursive: bool, prefix: str) -> list[_Row]:
    """Rows of the open `folder`'s regular files and real folders, names after `prefix`."""
    rows: list[_Row] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.endswith(_PARTIAL) or entry.is_symlink():
                continue
            path = prefix + entry.name
            if entry.is_dir(follow_symlinks=False) and recursive:
                rows += _rows_below(folder, entry.name, True, path + "/")
            elif entry.is_dir(follow_symlinks=False):
                rows.append((path, 0, True, ""))
            else:
                rows += _file_row(entry, path)
    return rows


def _file_row(entry: os.DirEntry[str], path: str) -> list[_Row]:
    try:
        status = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return []
    if not stat.S_ISREG(status.st_mode):
        return []  # a FIFO, socket or device is no object
    return [(path, status.st_size, False, _version(status))]


def _delete_local(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        with suppress(FileNotFoundError):
            os.remove(path)


def _list_local(path: str, recursive: bool) -> list[_Row]:
    if os.path.isfile(path):
        return [("", os.path.getsize(path), False, _version(os.stat(path)))]
    if not os.path.isdir(path):
        return []
    return _walk_local(path) if recursive else _scan_local(path)


def _scan_local(path: str) -> list[_Row]:
    rows = []
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.name.endswith(_PARTIAL):
                continue
            if entry.is_dir():
                rows.append((entry.name, 0, True, ""))
            else:
                status = entry.stat()
                rows.append((entry.name, status.st_size, False, _version(status)))
    return rows


def _walk_local(path: str) -> list[_Row]:
    rows = []
    for folder, _, names in os.walk(path):
        relative = os.path.relpath(folder, path).replace(os.sep, "/")
        prefix = "" if relative == "." else relative + "/"
        for name in names:
            if not name.endswith(_PARTIAL):
                status = os.stat(os.path.join(folder, name))
                rows.append((prefix + name, status.st_size, False, _version(status)))
    return rows


def _version(status: os.stat_result) -> str:
    return f"{status.st_mtime_ns}-{status.st_ino}-{status.st_size}"


def _remote_version(entry: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "LastModified", "mtime", "created"):
        if entry.get(key):
            return f"{entry[key]}-{entry.get('size')}"
    return ""


def _list_remote(filesystem: Any, path: str, recursive: bool) -> list[_Row]:
    base = path.rstrip("/")
    if filesystem.isfile(base):
        info = filesystem.info(base)
        return [("", int(info.get("size") or 0), False, _remote_version(info))]
    try:
        if recursive:
            entries = list(filesystem.find(base, detail=True).values())
        else:
            entries = filesystem.ls(base, detail=True)
    except FileNotFoundError:
        return []
    rows = []
    for entry in entries:
        name = str(entry["name"]).rstrip("/")
        if name.startswith(base + "/"):
            is_dir = entry.get("type") == "directory"
            rows.append((name[len(base) + 1:], int(entry.get("size") or 0), is_dir,
                         _remote_version(entry)))
    return rows


def _object_infos(url: str, rows: list[_Row]) -> list[ObjectInfo]:
    """Rows turned into ObjectInfo with URLs built on the prefix exactly as it was asked."""
    prefix = url if url.endswith("/") else url + "/"
    infos = []
    for relative, size, is_dir, version in rows:
        if not relative:
            infos.append(ObjectInfo(url=url, size=size, is_dir=False, version=version))
        else:
            infos.append(ObjectInfo(url=prefix + relative + ("/" if is_dir else ""),
                                    size=size, is_dir=is_dir, version=version))
    return sorted(infos, key=lambda info: info.url)
