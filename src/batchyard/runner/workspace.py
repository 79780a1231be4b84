"""The folder one attempt owns: `<work_root>/<job>/<task>/<instance>.attempt-<n>/`.

It holds `workdir/` (the program's cwd, where the package is extracted), the captured
`stdout` and `stderr`, and the downloaded package. Paths are plain strings: this runs once
per attempt on the hot path.

The folder of a successful attempt that left nothing behind (empty `workdir/`, logs handed
over to the object store) is not deleted but kept as a *spare* under `<work_root>/.spare/`,
and the next attempt renames a spare into place instead of making new folders. Making and
deleting inodes is what costs on some file systems (ext4 without a journal scans past every
recently freed inode on each create), and a rename does neither.
"""

from __future__ import annotations

import itertools
import os
import shutil
import stat
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

from batchyard.domain.attempt import AttemptKey
from batchyard.errors import BatchyardError

SPARES = ".spare"
"""The folder under the work root holding empty attempt folders ready for reuse."""
_MOST_SPARES = 64
_WORKDIR_MODE = 0o755


class WorkspaceError(BatchyardError):
    """The attempt's folder cannot be made (unsafe name, disk trouble)."""


@dataclass(frozen=True)
class Workspace:
    folder: str
    work_root: str
    # Joined once (each is read several times per attempt; a cached_property would take a
    # lock on first use, which costs more than the join).
    workdir: str = field(init=False, compare=False, repr=False)
    stdout: str = field(init=False, compare=False, repr=False)
    stderr: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        folder = self.folder
        if folder and not folder.endswith("/"):  # `os.path.join` without its Python frames
            folder += "/"
        object.__setattr__(self, "workdir", folder + "workdir")
        object.__setattr__(self, "stdout", folder + "stdout")
        object.__setattr__(self, "stderr", folder + "stderr")

    @property
    def archive(self) -> str:
        return os.path.join(self.folder, "package.tar.gz")


def attempt_folder(work_root: str, key: AttemptKey) -> str:
    """Where the attempt `key` runs; raises WorkspaceError for names unsafe in a path."""
    for name in (key.job_id, key.task):
        if name in ("", ".", "..") or "/" in name or "\0" in name:
            raise WorkspaceError(f"unsafe name {name!r} for a working directory")
    # `os.path.join` of these names (none has a "/"), without its Python frames: this is
    # built once per attempt on the hot path.
    folder = f"{key.job_id}/{key.task}/{key.instance_id}.attempt-{key.attempt}"
    if not work_root:
        return folder
    return f"{work_root}{folder}" if work_root.endswith("/") else f"{work_root}/{folder}"


def prepare_workspace(work_root: str, key: AttemptKey) -> Workspace:
    """A fresh, empty attempt folder with `workdir/` inside (leftovers of a crash removed)."""
    workspace = Workspace(attempt_folder(work_root, key), work_root)
    spare = _spares.take(work_root)
    if spare is not None and _move_into_place(spare, workspace.folder):
        return workspace
    try:
        os.mkdir(workspace.folder)
    except FileNotFoundError:
        os.makedirs(workspace.folder)  # the first instance of its task
    except FileExistsError:
        remove_tree(workspace.folder)  # left by a crashed runner
        os.mkdir(workspace.folder)
    os.mkdir(workspace.workdir)
    return workspace


def remove_workspace(workspace: Workspace) -> None:
    """Delete the attempt folder, or keep it as a spare when it holds nothing but an empty
    `workdir/` once the logs are gone."""
    try:
        os.unlink(workspace.stdout)
        os.unlink(workspace.stderr)
        if (os.listdir(workspace.folder) == ["workdir"] and not os.listdir(workspace.workdir)
                and _spares.keep(workspace)):
            return
        os.rmdir(workspace.workdir)
        os.rmdir(workspace.folder)
    except OSError:
        remove_tree(workspace.folder)


def clear_spares(work_root: str) -> None:
    """Forget and delete the spare folders of `work_root` (an engine starting afresh)."""
    _spares.clear(work_root)
    shutil.rmtree(os.path.join(work_root, SPARES), ignore_errors=True)


def _move_into_place(spare: str, folder: str) -> bool:
    """Rename the spare folder to `folder`; False (spare dropped) if that cannot be done."""
    try:
        _rename_making_folder(spare, folder)
        os.chmod(_child(folder, "workdir"), _WORKDIR_MODE)
        return True
    except OSError:
        with suppress(OSError):
            remove_tree(spare)
        return False


class _Spares:
    """The spare attempt folders of this process, per work root (a bounded stack).

    No lock: its lists and counter change by single operations the GIL makes atomic
    (`pop`, `append`, `next`), so threads may take and keep spares at once; the bound may
    be passed by a folder or two when they race, which is harmless."""

    def __init__(self) -> None:
        self._folders: dict[str, list[str]] = {}
        self._names = itertools.count()

    def take(self, work_root: str) -> str | None:
        folders = self._folders.get(work_root)
        if not folders:
            return None
        try:
            return folders.pop()
        except IndexError:  # taken by another thread meanwhile
            return None

    def keep(self, workspace: Workspace) -> bool:
        """Move the (empty) attempt folder among the spares; False if there are enough."""
        work_root = workspace.work_root
        folders = self._folders.setdefault(work_root, [])
        if len(folders) >= _MOST_SPARES:
            return False
        name = _child(work_root, f"{SPARES}/{os.getpid()}-{next(self._names)}")
        try:
            _rename_making_folder(workspace.folder, name)
        except OSError:
            return False
        folders.append(name)
        return True

    def clear(self, work_root: str) -> None:
        self._folders.pop(work_root, None)


def _child(folder: str, name: str) -> str:
    """`os.path.join(folder, name)` for a relative `name`, without its Python frames."""
    return folder + name if not folder or folder.endswith("/") else f"{folder}/{name}"


def _rename_making_folder(source: str, target: str) -> None:
    try:
        os.rename(source, target)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(source, target)


_spares = _Spares()


def remove_tree(path: str) -> None:
    """`shutil.rmtree` that also gets through folders a program made read-only."""
    shutil.rmtree(path, onerror=_make_writable_and_retry)


def _make_writable_and_retry(function: Callable[..., object], path: str,
                             info: tuple[type[BaseException], BaseException, object]) -> None:
    """rmtree's error handler: grant the owner rights on `path` and its folder, try again."""
    for folder in (os.path.dirname(path), path):
        with suppress(OSError):
            if os.path.isdir(folder) and not os.path.islink(folder):
                os.chmod(folder, stat.S_IRWXU | os.stat(folder).st_mode)
    if function in (os.rmdir, os.unlink, os.remove):
        function(path)
    elif os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, onerror=_make_writable_and_retry)  # it could not be opened
    else:
        raise info[1]
