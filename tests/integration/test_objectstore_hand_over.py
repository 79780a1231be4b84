"""`put_file(…, handed_over=True)` into a local bucket folder: the agent's hot path (two logs
per attempt), with the URL's folder resolved once and remembered."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.errors import ObjectStoreError


@pytest.fixture
def store(tmp_path: Path) -> FsspecObjectStore:
    return FsspecObjectStore(tmp_path / "root")


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "stdout"
    path.write_text("output\n")
    return path


def test_handed_over_files_are_linked_again_and_again(store: FsspecObjectStore, log: Path,
                                                      tmp_path: Path) -> None:
    for name in ("a", "b", "a"):  # "a" twice: replaced by the same file, in place
        store.put_file(log, f"oss://demo/logs/deep/{name}", handed_over=True)
    folder = tmp_path / "root" / "demo" / "logs" / "deep"
    assert sorted(os.listdir(folder)) == ["a", "b"]
    assert (folder / "a").samefile(log)
    other = tmp_path / "other"
    other.write_text("another attempt\n")
    store.put_file(other, "oss://demo/logs/deep/a", handed_over=True)
    assert (folder / "a").read_text() == "another attempt\n"
    assert (folder / "b").samefile(log)


def test_a_folder_removed_after_a_hand_over_is_made_again(store: FsspecObjectStore, log: Path,
                                                          tmp_path: Path) -> None:
    store.put_file(log, "oss://demo/logs/a", handed_over=True)
    shutil.rmtree(tmp_path / "root" / "demo")
    store.put_file(log, "oss://demo/logs/a", handed_over=True)
    assert (tmp_path / "root" / "demo" / "logs" / "a").samefile(log)


def test_a_folder_swapped_for_a_link_after_a_hand_over_is_never_followed(
        store: FsspecObjectStore, log: Path, tmp_path: Path) -> None:
    store.put_file(log, "oss://demo/logs/a", handed_over=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    logs = tmp_path / "root" / "demo" / "logs"
    shutil.rmtree(logs)
    logs.symlink_to(outside)
    with pytest.raises(ObjectStoreError, match="symbolic link"):
        store.put_file(log, "oss://demo/logs/b", handed_over=True)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("url", ["oss://demo/logs/..", "oss://demo/logs/.", "oss://demo/logs/",
                                 "oss://demo/../x", "oss://demo/a\0b", "oss://demo"])
def test_unsafe_or_folder_urls_are_refused_as_before(store: FsspecObjectStore, log: Path,
                                                     url: str) -> None:
    store.put_file(log, "oss://demo/logs/a", handed_over=True)  # a place remembered
    with pytest.raises(ObjectStoreError):
        store.put_file(log, url, handed_over=True)


def test_a_folder_moved_away_after_a_hand_over_keeps_nothing_new(
        store: FsspecObjectStore, log: Path, tmp_path: Path) -> None:
    """The folder's descriptor is kept between hand-overs, but used only while its path
    still finds it: objects go where their URL says, not into the folder moved away."""
    store.put_file(log, "oss://demo/logs/a", handed_over=True)
    bucket = tmp_path / "root" / "demo"
    (bucket / "logs").rename(bucket / "moved")
    store.put_file(log, "oss://demo/logs/b", handed_over=True)
    assert os.listdir(bucket / "logs") == ["b"]
    assert os.listdir(bucket / "moved") == ["a"]
    (bucket / "logs" / "b").unlink()
    (bucket / "logs").rmdir()
    (bucket / "logs").mkdir()  # another folder, perhaps with the inode number of the first
    store.put_file(log, "oss://demo/logs/c", handed_over=True)
    assert os.listdir(bucket / "logs") == ["c"]
