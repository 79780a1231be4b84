"""The folder one attempt owns: `<work_root>/<job>/<task>/<instance>/attempt-<n>/`.

It holds `workdir/` (the program's cwd, where the package is extracted), the captured
`stdout` and `stderr`, and the downloaded package. Paths are plain strings: this runs once
per attempt on the hot path.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from batchyard.domain.attempt import AttemptKey
from batchyard.errors import BatchyardError


class WorkspaceError(BatchyardError):
    """The attempt's folder cannot be made (unsafe name, disk trouble)."""


@dataclass(frozen=True)
class Workspace:
    folder: str

    @property
    def workdir(self) -> str:
        return os.path.join(self.folder, "workdir")

    @property
    def stdout(self) -> str:
        return os.path.join(self.folder, "stdout")

    @property
    def stderr(self) -> str:
        return os.path.join(self.folder, "stderr")

    @property
    def archive(self) -> str:
        return os.path.join(self.folder, "package.tar.gz")


def prepare_workspace(work_root: str, key: AttemptKey) -> Workspace:
    """A fresh, empty attempt folder with `workdir/` inside (leftovers of a crash removed).

    Written as bare `mkdir` calls that handle the rare cases on failure: three system calls
    in the common case, where `os.makedirs` needs twice as many.
    """
    for name in (key.job_id, key.task):
        if name in ("", ".", "..") or "/" in name or "\0" in name:
            raise WorkspaceError(f"unsafe name {name!r} for a working directory")
    instance = os.path.join(work_root, key.job_id, key.task, str(key.instance_id))
    workspace = Workspace(os.path.join(instance, f"attempt-{key.attempt}"))
    try:
        os.mkdir(instance)
    except FileExistsError:
        pass  # an earlier attempt of the instance
    except FileNotFoundError:
        os.makedirs(instance, exist_ok=True)  # the first instance of its task
    try:
        os.mkdir(workspace.folder)
    except FileExistsError:
        remove_tree(workspace.folder)  # left by a crashed runner
        os.mkdir(workspace.folder)
    os.mkdir(workspace.workdir)
    return workspace


def remove_workspace(workspace: Workspace) -> None:
    """Delete the attempt folder, and the instance folder if no other attempt is left in it.

    The common case (two logs and an empty workdir) takes four system calls; anything else
    falls back to a full tree removal.
    """
    try:
        os.unlink(workspace.stdout)
        os.unlink(workspace.stderr)
        os.rmdir(workspace.workdir)
        os.rmdir(workspace.folder)
    except OSError:
        remove_tree(workspace.folder)
    with suppress(OSError):
        os.rmdir(os.path.dirname(workspace.folder))


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
