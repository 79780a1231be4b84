"""Copying files between the local disk and the object store (`batchyard oss cp`).

Naming follows `aws s3 cp`: a destination ending in `/` (or an existing local folder) receives
the source under its own base name; `-r` copies the *contents* of a folder or prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from batchyard.errors import BatchyardError, ObjectNotFound
from batchyard.ports import ObjectStore

URL_SCHEMES = ("oss://", "s3://")


class TransferError(BatchyardError):
    """A copy was asked for that cannot be done (both sides local, folder without -r, …)."""

    code = "InvalidTransfer"
    status = 400


@dataclass(frozen=True)
class Copy:
    """One file copied: where from, where to, how many bytes."""

    source: str
    target: str
    size: int


Reporter = Callable[[Copy], None]


def is_url(text: str) -> bool:
    return text.startswith(URL_SCHEMES)


def looked_in(store: ObjectStore, url: str) -> str:
    """The local path an oss:// URL stands for (its bucket's folder), else the URL itself."""
    for scheme in URL_SCHEMES:
        if url.startswith(scheme):
            bucket, _, key = url[len(scheme):].partition("/")
            folder = store.bucket_folder(bucket)
            return str(PurePosixPath(folder, key)) + ("/" if url.endswith("/") else "") \
                if folder is not None else url
    return url


def base_name(location: str) -> str:
    return PurePosixPath(location.rstrip("/")).name


def as_prefix(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def copy(store: ObjectStore, source: str, target: str, recursive: bool,
         report: Reporter) -> list[Copy]:
    """Copy `source` to `target`; one side at least must be an oss:// (or s3://) URL."""
    if is_url(source) and is_url(target):
        return _between_urls(store, source, target, recursive, report)
    if is_url(target):
        return _upload(store, Path(source), target, recursive, report)
    if is_url(source):
        return _download(store, source, Path(target), recursive, report)
    raise TransferError(f"neither {source!r} nor {target!r} is an oss:// URL; "
                        "use cp for local copies")


def _upload(store: ObjectStore, source: Path, target: str, recursive: bool,
            report: Reporter) -> list[Copy]:
    if source.is_dir():
        if not recursive:
            raise TransferError(f"{source} is a folder; use -r to copy what it holds")
        files = sorted(path for path in source.rglob("*") if path.is_file())
        pairs = [(path, as_prefix(target) + path.relative_to(source).as_posix()) for path in files]
    elif source.is_file():
        pairs = [(source, target + source.name if target.endswith("/") else target)]
    else:
        raise TransferError(f"{source}: no such file or folder")
    return [_upload_one(store, path, url, report) for path, url in pairs]


def _upload_one(store: ObjectStore, path: Path, url: str, report: Reporter) -> Copy:
    store.put_file(path, url)
    done = Copy(str(path), url, path.stat().st_size)
    report(done)
    return done


def _download(store: ObjectStore, source: str, target: Path, recursive: bool,
              report: Reporter) -> list[Copy]:
    if recursive:
        pairs = [(url, _local_path(target, relative))
                 for url, relative in _objects_under(store, source)]
    elif source.endswith("/"):
        raise TransferError(f"{source} is a folder; use -r to copy what it holds")
    elif target.is_dir() or str(target).endswith("/"):
        pairs = [(source, target / base_name(source))]
    else:
        pairs = [(source, target)]
    return [_download_one(store, url, path, report) for url, path in pairs]


def _local_path(folder: Path, relative: str) -> Path:
    """`folder/relative`, refusing object names that would land outside `folder`."""
    parts = PurePosixPath(relative).parts
    if not parts or ".." in parts or PurePosixPath(relative).is_absolute():
        raise TransferError(f"refusing to download object {relative!r} outside {folder}")
    return folder.joinpath(*parts)


def _download_one(store: ObjectStore, url: str, path: Path, report: Reporter) -> Copy:
    path.parent.mkdir(parents=True, exist_ok=True)
    store.get_file(url, path)
    done = Copy(url, str(path), path.stat().st_size)
    report(done)
    return done


def _between_urls(store: ObjectStore, source: str, target: str, recursive: bool,
                  report: Reporter) -> list[Copy]:
    if recursive:
        pairs = [(url, as_prefix(target) + relative)
                 for url, relative in _objects_under(store, source)]
    else:
        pairs = [(source, target + base_name(source) if target.endswith("/") else target)]
    return [_copy_object(store, url, destination, report) for url, destination in pairs]


def _copy_object(store: ObjectStore, source: str, target: str, report: Reporter) -> Copy:
    data = store.read_bytes(source)
    store.put_bytes(target, data)
    done = Copy(source, target, len(data))
    report(done)
    return done


def _objects_under(store: ObjectStore, url: str) -> list[tuple[str, str]]:
    """(object URL, path relative to `url`) for every object below the prefix `url`."""
    prefix = as_prefix(url)
    found = [info.url for info in store.list(prefix, recursive=True) if not info.is_dir]
    if not found:
        raise ObjectNotFound(prefix, looked_in(store, prefix),
                             f"{prefix}: no objects under this prefix")
    return sorted((item, item[len(prefix):]) for item in found if item.startswith(prefix))
