"""Files and folders beneath a folder that task programs can write, reached without links.

Bucket folders and the folders LogMapping ships from are writable inside the sandbox, so a
hostile program can plant symbolic links, FIFOs or sockets there, or swap a folder for a link
while the server (root) works on it. Checking a path and then opening it by name loses that
race. So everything below a trusted `base` folder is opened one name at a time, relative to
the descriptor of its parent, with `O_NOFOLLOW`; a file is opened `O_NONBLOCK` (a FIFO never
blocks) and checked with `fstat` on the open descriptor. Whatever is swapped after a folder
was opened no longer matters: the descriptor keeps pointing at the folder that was checked.

This module imports nothing but the standard library. It sits outside the layers (like
`batchyard.errors`) because both `adapters` and `runner` use it, and a module inside
`batchyard.runner` would make `import batchyard.oss` in every task program load the runner.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""Opening a folder below the base: a link is refused (ENOTDIR or ELOOP), never followed."""
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
"""Opening a file to read: a link is refused (ELOOP); a FIFO opens at once (then refused)."""
_BASE_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
LINK = "a symbolic link"


class UnsafeEntry(OSError):
    """A symbolic link or special file where only folders and regular files may be."""

    def __init__(self, relative: str, kind: str) -> None:
        """`relative`: the entry's path below the base ('/'-separated); `kind`: what it is."""
        code = errno.ELOOP if kind == LINK else errno.EINVAL
        super().__init__(code, f"{relative} is {kind}")
        self.relative = relative
        self.kind = kind

    @property
    def is_link(self) -> bool:
        return self.kind == LINK


@dataclass(frozen=True)
class NewFolders:
    """How the folders made beneath a base are set up (None: the umask's mode, the default
    group). A fixed mode and group let several unprivileged users share a bucket folder."""

    mode: int | None = None
    group: int | None = None

    def set_up(self, folder: int) -> None:
        """Give the new folder `folder` (a descriptor) its group, then its exact mode (chmod
        after mkdir, so the umask does not interfere; after chown, which may clear setgid)."""
        if self.group is not None:
            os.fchown(folder, -1, self.group)
        if self.mode is not None:
            os.fchmod(folder, self.mode)


def split_key(key: str) -> list[str]:
    """The names of a '/'-separated path below a base (empty and '.' segments dropped)."""
    return [name for name in key.split("/") if name not in ("", ".")]


def kind_of(mode: int) -> str:
    """What a file of this `st_mode` is, in words (for refusals)."""
    if stat.S_ISLNK(mode):
        return LINK
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def open_folder(base: str, names: Sequence[str], create: NewFolders | None = None) -> int:
    """A descriptor of the folder `base/names…`; no link below `base` is ever followed.

    `base` comes from configuration and is opened as it is. With `create`, missing folders
    (`base` too) are made and set up as it says; without, a missing one is FileNotFoundError.
    A link on the way is UnsafeEntry; a file on the way, NotADirectoryError. The caller
    closes the descriptor.
    """
    folder = _open_base(base, create)
    try:
        for depth in range(1, len(names) + 1):
            child = _open_child(folder, base, names[:depth], create)
            os.close(folder)
            folder = child
    except BaseException:
        os.close(folder)
        raise
    return folder


def open_regular(folder: int, base: str, names: Sequence[str]) -> tuple[int, os.stat_result]:
    """The regular file `names[-1]` of the open `folder` (which is `base/names[:-1]`), opened
    to read, and its status. A link, FIFO, socket or device is UnsafeEntry; a folder,
    IsADirectoryError. The caller closes the descriptor."""
    name = _plain(names[-1], base, names)
    try:
        reader = os.open(name, FILE_FLAGS, dir_fd=folder)
    except OSError as error:
        raise _refusal(folder, base, names, error) from None
    status = os.fstat(reader)
    if stat.S_ISREG(status.st_mode):
        return reader, status
    os.close(reader)
    if stat.S_ISDIR(status.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), _path(base, names))
    raise UnsafeEntry("/".join(names), kind_of(status.st_mode))


def entry_status(folder: int, name: str) -> os.stat_result | None:
    """The status of the entry `name` of `folder` itself (a link is not followed); None if
    there is no such entry."""
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _open_base(base: str, create: NewFolders | None) -> int:
    try:
        return os.open(base, _BASE_FLAGS)
    except FileNotFoundError:
        if create is None:
            raise
    os.makedirs(os.path.dirname(base), exist_ok=True)
    try:
        os.mkdir(base)
    except FileExistsError:
        return os.open(base, _BASE_FLAGS)  # made by someone else meanwhile: theirs to set up
    folder = os.open(base, _BASE_FLAGS)
    _set_up(folder, create)
    return folder


def _open_child(folder: int, base: str, names: Sequence[str],
                create: NewFolders | None) -> int:
    """The sub-folder `names[-1]` of the open `folder`, made first if missing and `create`."""
    name = _plain(names[-1], base, names)
    try:
        return os.open(name, FOLDER_FLAGS, dir_fd=folder)
    except OSError as error:
        if create is None or not isinstance(error, FileNotFoundError):
            raise _refusal(folder, base, names, error) from None
    try:
        os.mkdir(name, 0o777, dir_fd=folder)
    except FileExistsError:
        create = None  # made by someone else meanwhile: theirs to set up
    except OSError as error:
        raise _refusal(folder, base, names, error) from None
    try:
        child = os.open(name, FOLDER_FLAGS, dir_fd=folder)
    except OSError as error:
        raise _refusal(folder, base, names, error) from None
    _set_up(child, create)
    return child


def _set_up(folder: int, create: NewFolders | None) -> None:
    if create is not None:
        try:
            create.set_up(folder)
        except BaseException:
            os.close(folder)
            raise


def _plain(name: str, base: str, names: Sequence[str]) -> str:
    """`name`, unless it would leave its folder ('..' or a '/' inside: never from a key)."""
    if name == ".." or "/" in name:
        raise PermissionError(errno.EPERM, "the path leaves its folder", _path(base, names))
    return name


def _refusal(folder: int, base: str, names: Sequence[str], error: OSError) -> OSError:
    """What opening `names[-1]` in `folder` failed with: UnsafeEntry for a link or special
    file, else the same error naming the whole path (not just the last name)."""
    if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO, errno.EOPNOTSUPP):
        status = entry_status(folder, names[-1])
        if status is not None and not (stat.S_ISREG(status.st_mode)
                                       or stat.S_ISDIR(status.st_mode)):
            return UnsafeEntry("/".join(names), kind_of(status.st_mode))
    return OSError(error.errno, error.strerror, _path(base, names))


def _path(base: str, names: Sequence[str]) -> str:
    return os.path.join(base, *names)
