"""Unpacking a task's `PackagePath` tarball into its working directory (reference §4.5).

Packages come from users, so every member is checked before anything is written: a member
that could write or point outside the destination, or create a device, is refused with a
message naming it. The `data` extraction filter of `tarfile` stays on as a second line of
defence (it also drops set-uid bits and group/other write permissions, and resolves chains
of links that a lexical check cannot see).
"""

from __future__ import annotations

import posixpath
import tarfile
from pathlib import Path

from batchyard.errors import BatchyardError


class PackageError(BatchyardError):
    """A package could not be opened or contains a member that is not safe to extract."""

    code = "PackageError"
    status = 400


def extract_package(archive: Path, destination: Path) -> None:
    """Extract the `.tar.gz` file `archive` into the existing folder `destination`.

    Raises PackageError, before writing anything, if the archive cannot be read or any
    member is unsafe on its face; and PackageError too if the `data` filter refuses a
    member during extraction (links through links) or writing fails (e.g. disk full).
    """
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member)
            _extract(tar, members, destination)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise PackageError(f"not a readable .tar.gz archive: {_describe(error)}") from error


def _extract(tar: tarfile.TarFile, members: list[tarfile.TarInfo], destination: Path) -> None:
    try:
        tar.extractall(destination, members=members, filter="data")
    except tarfile.FilterError as error:
        raise PackageError(f"refusing member {_name(error.tarinfo)}: {error}") from error
    except (tarfile.TarError, EOFError, OSError) as error:
        raise PackageError(f"cannot extract into {destination}: {_describe(error)}") from error


def _check_member(member: tarfile.TarInfo) -> None:
    """Raise PackageError if extracting `member` could escape the destination."""
    why = _path_problem(member.name)
    if not why and (member.ischr() or member.isblk() or member.isfifo()):
        why = "is a device or FIFO"
    if not why and member.issym():
        why = _link_problem(member.linkname, posixpath.dirname(member.name), "symlink")
    if not why and member.islnk():
        why = _link_problem(member.linkname, "", "hard link")
    if why:
        raise PackageError(f"refusing member {_name(member)}: {why}")


def _path_problem(name: str) -> str:
    if name.startswith("/"):
        return "has an absolute path"
    if ".." in name.split("/"):
        return "has a '..' component"
    return ""


def _link_problem(target: str, folder: str, kind: str) -> str:
    """Why a link to `target` (resolved from `folder`) leaves the destination, or ''."""
    if target.startswith("/"):
        return f"is a {kind} to the absolute path {target!r}"
    resolved = posixpath.normpath(posixpath.join(folder, target))
    if resolved == ".." or resolved.startswith("../"):
        return f"is a {kind} to {target!r}, outside the destination"
    return ""


def _name(member: tarfile.TarInfo) -> str:
    return repr(member.name)


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
