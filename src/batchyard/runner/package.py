"""Unpacking a task's `PackagePath` tarball into its working directory (reference §4.5).

Packages come from users, so this extraction is safe by construction rather than by checks
on paths. The interpreter's `extractall(filter="data")` is not used: its filter judges a
member by resolving a path string with `os.path.realpath`, which silently stops resolving
past PATH_MAX, and then lets the kernel follow the links the archive itself created — on
Python 3.11.7 a crafted chain of links writes and overwrites host files (CVE-2025-4517).
Here instead:

- members are read one at a time and each is checked as it comes, so a refused member
  stops the extraction before its data is decompressed or written;
- every entry is made relative to folder descriptors opened with O_NOFOLLOW from the
  destination down, so nothing is ever written through a link; an existing file is
  unlinked before it is replaced (never written through), and a folder is never replaced;
- a symlink is refused if its target, resolved through the symlinks this archive made,
  leads outside the destination; all of them are resolved again after the last member,
  since a later member can turn a component of an earlier target into a link;
- a hard link may only point at a regular file this archive extracted;
- devices, FIFOs, unknown types, absolute names and `..` are refused; set-uid, set-gid and
  sticky bits and group/other write permissions are dropped;
- `PackageLimits` bounds the bytes, members and name lengths of a package, checked from the
  headers before any data is read; runs of zeros become holes rather than writes.
"""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from batchyard.errors import BatchyardError

_GIB = 1024**3
_CHUNK = 64 * 1024
"""Data is copied in pieces this big; a piece that is all zeros becomes a hole, not a write."""
_LINK_LIMIT = 40
"""Symlinks followed while resolving one target before giving up (the kernel's limit)."""
_LARGEST_HEADER = 1024 * 1024
"""The largest single read `tarfile` may make. It reads an extended header (pax, GNU long
name) whole, in one read of the size the header declares: without a bound, a few kilobytes
of gzip declaring a header of gigabytes of zeros would make it allocate them all."""
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_MODE_MASK = 0o755
"""Execute bits are kept; set-uid, set-gid, sticky and group/other write are dropped."""
_FOLDER_MODE = 0o755
_UNREADABLE = "not a readable .tar.gz archive"
_READ_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)


class PackageError(BatchyardError):
    """A package could not be read, has a member that is not safe to extract, exceeds a
    limit, or could not be written."""

    code = "PackageError"
    status = 400


@dataclass(frozen=True)
class PackageLimits:
    """What one package may cost the machine. Each limit names the setting that raises it."""

    max_bytes: int = 4 * _GIB
    """Total size of the package's files as their headers declare it (sparse files count
    at their full size): BATCHYARD_PACKAGE_MAX_BYTES."""
    max_members: int = 200_000
    """Number of members of any kind: BATCHYARD_PACKAGE_MAX_MEMBERS."""
    max_path: int = 1024
    """Length in bytes of every member name and link target: BATCHYARD_PACKAGE_MAX_PATH."""


def extract_package(archive: Path, destination: Path, limits: PackageLimits = PackageLimits(),
                    owner: tuple[int, int] | None = None) -> None:
    """Extract the `.tar.gz` file `archive` into the existing, empty folder `destination`.

    With `owner` (uid, gid), every entry made is given to that user, so that an attempt
    running unprivileged owns its workdir. Raises PackageError if the archive cannot be
    read, a member is refused or exceeds `limits` (extraction stops there; the members
    before it stay extracted, all inside `destination`), or writing fails.
    """
    with _open_archive(archive) as tar, _Folders(destination, owner) as folders:
        _Extraction(tar, folders, limits).run()


class _BoundedGzip(gzip.GzipFile):
    """The decompressed archive, refusing any single read larger than a header may be."""

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > _LARGEST_HEADER:
            raise PackageError(f"{_UNREADABLE}: a header declares {size} bytes of extended "
                               f"data, more than the {_LARGEST_HEADER} allowed")
        return super().read(size)


@contextmanager
def _open_archive(archive: Path) -> Iterator[tarfile.TarFile]:
    """The archive opened to be read member by member (its first header already read)."""
    with ExitStack() as stack:
        with _reading(_UNREADABLE):
            compressed = stack.enter_context(_BoundedGzip(archive, "rb"))
            tar = stack.enter_context(tarfile.open(fileobj=compressed, mode="r:"))
        yield tar


@contextmanager
def _reading(context: str) -> Iterator[None]:
    """Turn the errors of reading a damaged archive into a PackageError saying `context`."""
    try:
        yield
    except _READ_ERRORS as error:
        raise PackageError(f"{context}: {_describe(error)}") from error


class _Node:
    """One entry the archive made: a folder, a regular file, or a symlink to `target`."""

    __slots__ = ("children", "kind", "target")

    def __init__(self, kind: str, target: str = "") -> None:
        self.children: dict[str, _Node] = {}
        self.kind = kind
        self.target = target


_FOLDER, _FILE, _LINK = "folder", "file", "symlink"


class _Tree:
    """What the archive has made so far, to resolve link targets the way the kernel would
    once extraction is over — without asking the kernel, which would follow the links."""

    def __init__(self) -> None:
        self.root = _Node(_FOLDER)
        self.links: dict[tuple[str, ...], str] = {}

    def find(self, parts: tuple[str, ...]) -> _Node | None:
        node: _Node | None = self.root
        for part in parts:
            node = node.children.get(part) if node else None
        return node

    def record(self, parts: tuple[str, ...], kind: str, target: str = "") -> None:
        """Note that `parts` is now a file or symlink (replacing whatever was there)."""
        node = self.root
        for part in parts[:-1]:
            node = node.children.setdefault(part, _Node(_FOLDER))
        node.children[parts[-1]] = _Node(kind, target)
        if kind == _LINK:
            self.links[parts] = target
        else:
            self.links.pop(parts, None)

    def escape(self, folder: tuple[str, ...], target: str) -> str:
        """Why a symlink in `folder` to the relative `target` leads outside, or ''."""
        trail: list[_Node | None] = [self.root]
        for part in folder:
            trail.append(self._child(trail[-1], part))
        pending = list(reversed(_components(target)))
        followed = 0
        while pending:
            part = pending.pop()
            if part == "..":
                if len(trail) == 1:
                    return f"its target {_shown(target)} leads outside the destination"
                trail.pop()
                continue
            child = self._child(trail[-1], part)
            if child is None or child.kind != _LINK:
                trail.append(child)
                continue
            followed += 1
            if followed > _LINK_LIMIT:
                return f"its target {_shown(target)} goes through more than {_LINK_LIMIT} links"
            pending.extend(reversed(_components(child.target)))
        return ""

    @staticmethod
    def _child(node: _Node | None, part: str) -> _Node | None:
        return node.children.get(part) if node else None


class _Folders:
    """Makes entries beneath the destination, always relative to a folder descriptor and
    never through a symlink, and gives each new entry to `owner` if there is one."""

    def __init__(self, destination: Path, owner: tuple[int, int] | None) -> None:
        self.owner = owner
        try:
            self.root = os.open(destination, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise PackageError(f"cannot open {destination}: {_describe(error)}") from error

    def __enter__(self) -> _Folders:
        return self

    def __exit__(self, *_: object) -> None:
        os.close(self.root)

    @contextmanager
    def folder(self, parts: tuple[str, ...], member: str) -> Iterator[int]:
        """A descriptor of the folder `parts`, made if missing; refused through a link."""
        descriptor = os.dup(self.root)
        try:
            for depth, part in enumerate(parts):
                child = self._open_folder(descriptor, part, parts[:depth + 1], member)
                os.close(descriptor)
                descriptor = child
            yield descriptor
        finally:
            os.close(descriptor)

    def _open_folder(self, parent: int, part: str, path: tuple[str, ...], member: str) -> int:
        try:
            return os.open(part, _FOLDER_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            pass
        except OSError as error:
            refusal = self._refusal_for(parent, part, path, member)
            if refusal:
                raise refusal from error
            raise
        os.mkdir(part, _FOLDER_MODE, dir_fd=parent)
        descriptor = os.open(part, _FOLDER_FLAGS, dir_fd=parent)
        if self.owner:
            os.fchown(descriptor, *self.owner)
        os.fchmod(descriptor, _FOLDER_MODE)
        return descriptor

    @staticmethod
    def _refusal_for(parent: int, part: str, path: tuple[str, ...],
                     member: str) -> PackageError | None:
        """The refusal to descend into `path` if it is a symlink or not a folder, else None."""
        status = os.stat(part, dir_fd=parent, follow_symlinks=False)
        shown = _shown("/".join(path))
        if stat.S_ISLNK(status.st_mode):
            target = os.readlink(part, dir_fd=parent)
            return _refusal(member, f"{shown} is a symlink (to {_shown(target)}), and nothing "
                                    "is ever extracted through a link")
        if not stat.S_ISDIR(status.st_mode):
            return _refusal(member, f"{shown} is not a folder")
        return None

    @staticmethod
    def clear(parent: int, name: str, member: str) -> None:
        """Remove an existing non-folder entry `name`, which a member replaces (tar does)."""
        try:
            status = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(status.st_mode):
            raise _refusal(member, "it would replace a folder")
        os.unlink(name, dir_fd=parent)

    def create_file(self, parent: int, name: str) -> int:
        descriptor = os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent)
        if self.owner:
            os.fchown(descriptor, *self.owner)
        return descriptor

    def create_symlink(self, parent: int, name: str, target: str) -> None:
        os.symlink(target, name, dir_fd=parent)
        if self.owner:
            os.chown(name, *self.owner, dir_fd=parent, follow_symlinks=False)

    def remove_link(self, parts: tuple[str, ...]) -> None:
        with self.folder(parts[:-1], "/".join(parts)) as parent:
            os.unlink(parts[-1], dir_fd=parent)


class _Extraction:
    """One pass over the archive's members, writing each as soon as it has been checked."""

    def __init__(self, tar: tarfile.TarFile, folders: _Folders, limits: PackageLimits) -> None:
        self.tar = tar
        self.folders = folders
        self.limits = limits
        self.tree = _Tree()
        self.members = 0
        self.bytes = 0

    def run(self) -> None:
        while (member := self._next()) is not None:
            self._extract(member)
        self._check_links_again()

    def _next(self) -> tarfile.TarInfo | None:
        with _reading(_UNREADABLE):
            return self.tar.next()

    def _extract(self, member: tarfile.TarInfo) -> None:
        parts = self._checked(member)
        try:
            if member.isdir():
                self._directory(member, parts)
            elif member.isreg():
                self._regular(member, parts)
            elif member.issym():
                self._symlink(member, parts)
            else:
                self._hard_link(member, parts)
        except OSError as error:
            raise PackageError(f"cannot write member {_shown(member.name)}: "
                               f"{_describe(error)}") from error

    def _checked(self, member: tarfile.TarInfo) -> tuple[str, ...]:
        """The components of the member's name, once its kind, name and count are allowed."""
        self.members += 1
        if self.members > self.limits.max_members:
            raise _refusal(member.name, f"the package has more than {self.limits.max_members} "
                                        "members, the limit max_members (the setting "
                                        "BATCHYARD_PACKAGE_MAX_MEMBERS raises it)")
        why = _kind_problem(member) or self._path_problem(member.name, "name")
        if why:
            raise _refusal(member.name, why)
        parts = _components(member.name)
        if not parts and not member.isdir():
            raise _refusal(member.name, "it has an empty name")
        return parts

    def _path_problem(self, path: str, what: str) -> str:
        """Why `path`, a member name or hard link target, is not allowed, or ''."""
        if path.startswith("/"):
            return f"its {what} is an absolute path"
        if ".." in path.split("/"):
            return f"its {what} has a '..' component"
        return self._text_problem(path, what)

    def _text_problem(self, text: str, what: str) -> str:
        """Why `text`, a name or any link target, cannot even be handed to the system."""
        if "\0" in text:
            return f"its {what} has a NUL character"
        length = len(os.fsencode(text))
        if length > self.limits.max_path:
            return (f"its {what} is {length} bytes long, over the limit max_path of "
                    f"{self.limits.max_path} bytes (the setting BATCHYARD_PACKAGE_MAX_PATH "
                    "raises it)")
        return ""

    def _directory(self, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        with self.folders.folder(parts, member.name):
            pass

    def _regular(self, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        self._charge(member)
        with self.folders.folder(parts[:-1], member.name) as parent:
            self.folders.clear(parent, parts[-1], member.name)
            descriptor = self.folders.create_file(parent, parts[-1])
            try:
                self._copy(member, descriptor)
                os.fchmod(descriptor, member.mode & _FILE_MODE_MASK)
                with suppress(OSError, OverflowError, ValueError):
                    os.utime(descriptor, (member.mtime, member.mtime))
            finally:
                os.close(descriptor)
        self.tree.record(parts, _FILE)

    def _charge(self, member: tarfile.TarInfo) -> None:
        """Count the member's declared size against max_bytes, before reading any of it."""
        if member.size < 0:
            raise _refusal(member.name, f"it declares a negative size ({member.size})")
        self.bytes += member.size
        if self.bytes > self.limits.max_bytes:
            raise _refusal(member.name, f"its {member.size} bytes bring the package to "
                                        f"{self.bytes} bytes, over the limit max_bytes of "
                                        f"{self.limits.max_bytes} bytes (the setting "
                                        "BATCHYARD_PACKAGE_MAX_BYTES raises it)")

    def _copy(self, member: tarfile.TarInfo, descriptor: int) -> None:
        """Write the member's data, leaving pieces that are all zeros as holes."""
        context = f"cannot read member {_shown(member.name)}"
        with _reading(context):
            source = self.tar.extractfile(member)
        assert source is not None  # a regular member always has data
        while True:
            with _reading(context):  # and not around the writes: a full disk is no bad archive
                piece = source.read(_CHUNK)
            if not piece:
                break
            if piece.count(0) == len(piece):
                os.lseek(descriptor, len(piece), os.SEEK_CUR)
            else:
                _write_all(descriptor, piece)
        os.ftruncate(descriptor, member.size)

    def _symlink(self, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        target = member.linkname
        why = self._target_problem(target) or self.tree.escape(parts[:-1], target)
        if why:
            raise _refusal(member.name, why)
        with self.folders.folder(parts[:-1], member.name) as parent:
            self.folders.clear(parent, parts[-1], member.name)
            self.folders.create_symlink(parent, parts[-1], target)
        self.tree.record(parts, _LINK, target)

    def _target_problem(self, target: str) -> str:
        """Why a symlink to `target` is refused before resolving it, or ''."""
        if not target:
            return "it is a symlink with an empty target"
        if target.startswith("/"):
            return f"it is a symlink to the absolute path {_shown(target)}"
        return self._text_problem(target, "link target")

    def _hard_link(self, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        target = _components(member.linkname)
        why = self._path_problem(member.linkname, f"hard link target {_shown(member.linkname)}")
        node = None if why else self.tree.find(target)
        if not why and (node is None or node.kind != _FILE):
            why = (f"it is a hard link to {_shown(member.linkname)}, which is not a regular "
                   "file extracted earlier from this package")
        if why:
            raise _refusal(member.name, why)
        if target == parts:
            return
        with (self.folders.folder(target[:-1], member.name) as source,
              self.folders.folder(parts[:-1], member.name) as parent):
            self.folders.clear(parent, parts[-1], member.name)
            os.link(target[-1], parts[-1], src_dir_fd=source, dst_dir_fd=parent,
                    follow_symlinks=False)
        self.tree.record(parts, _FILE)

    def _check_links_again(self) -> None:
        """Resolve every symlink in the final tree: a later member may have made a component
        of an earlier link's target into a link. Escaping links are removed, then refused."""
        escaping = {parts: why for parts, target in self.tree.links.items()
                    if (why := self.tree.escape(parts[:-1], target))}
        for parts in escaping:
            with suppress(OSError):  # the refusal below stands either way
                self.folders.remove_link(parts)
        if escaping:
            parts, why = next(iter(escaping.items()))
            raise _refusal("/".join(parts), f"{why} once the later members are in place")


def _kind_problem(member: tarfile.TarInfo) -> str:
    if member.ischr():
        return "it is a character device"
    if member.isblk():
        return "it is a block device"
    if member.isfifo():
        return "it is a FIFO"
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        return f"it has the unknown type {member.type!r}"
    return ""


def _components(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split("/") if part not in ("", "."))


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view):]


def _refusal(member: str, why: str) -> PackageError:
    return PackageError(f"refusing member {_shown(member)}: {why}")


def _shown(text: str) -> str:
    """`text` quoted for a message, shortened: names may be up to max_path bytes long."""
    return repr(text) if len(text) <= 200 else repr(text[:200]) + "…"


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
