"""An attempt folder's paths are built without `os.path.join` (the hot path) yet equal it."""

from __future__ import annotations

import os

import pytest

from batchyard.domain.attempt import AttemptKey
from batchyard.runner.workspace import Workspace, WorkspaceError, attempt_folder


@pytest.mark.parametrize("work_root", ["/srv/work", "/srv/work/", "relative", "", "/"])
def test_paths_are_those_os_path_join_gives(work_root: str) -> None:
    key = AttemptKey("job-1", "task", 12, 3)
    folder = attempt_folder(work_root, key)
    assert folder == os.path.join(work_root, "job-1", "task", "12.attempt-3")
    workspace = Workspace(folder, work_root)
    for name in ("workdir", "stdout", "stderr"):
        assert getattr(workspace, name) == os.path.join(folder, name)


@pytest.mark.parametrize("folder", ["/x/", "/", "x"])
def test_a_folder_ending_in_a_slash_gets_none_doubled(folder: str) -> None:
    assert Workspace(folder, "").workdir == os.path.join(folder, "workdir")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\0b"])
def test_unsafe_names_are_still_refused(name: str) -> None:
    with pytest.raises(WorkspaceError):
        attempt_folder("/w", AttemptKey("job-1", name, 0, 1))
    with pytest.raises(WorkspaceError):
        attempt_folder("/w", AttemptKey(name, "task", 0, 1))
