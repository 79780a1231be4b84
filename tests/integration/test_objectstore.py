"""FsspecObjectStore against real folders and a real (in-memory) fsspec filesystem."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from batchyard import oss
from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.errors import ObjectStoreError
from batchyard.ports import ObjectInfo


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "objects"


@pytest.fixture
def store(root: Path) -> FsspecObjectStore:
    return FsspecObjectStore(root)


def test_objects_of_unmapped_buckets_live_under_root(store: FsspecObjectStore, root: Path,
                                                     tmp_path: Path) -> None:
    source = tmp_path / "data.txt"
    source.write_text("hello\n")
    store.put_file(source, "oss://demo/in/data.txt")
    assert (root / "demo" / "in" / "data.txt").read_text() == "hello\n"
    target = tmp_path / "fresh" / "folder" / "copy.txt"
    store.get_file("oss://demo/in/data.txt", target)
    assert target.read_text() == "hello\n"
    assert store.read_bytes("s3://demo/in/data.txt") == b"hello\n"


def test_a_handed_over_file_is_linked_and_any_other_copied(store: FsspecObjectStore,
                                                          root: Path, tmp_path: Path) -> None:
    source = tmp_path / "stdout"
    source.write_text("log\n")
    store.put_file(source, "oss://demo/copied")
    store.put_file(source, "oss://demo/linked", handed_over=True)
    store.put_file(source, "oss://demo/linked", handed_over=True)  # replaced in place
    assert (root / "demo" / "linked").samefile(source)
    assert not (root / "demo" / "copied").samefile(source)
    source.write_text("changed\n")  # what `oss cp` uploads never follows the source
    assert store.read_bytes("oss://demo/copied") == b"log\n"
    assert sorted(path.name for path in (root / "demo").iterdir()) == ["copied", "linked"]


def test_overwrite_is_atomic_and_leaves_no_partial_file(store: FsspecObjectStore,
                                                        root: Path) -> None:
    store.put_bytes("oss://demo/k", b"first")
    store.put_bytes("oss://demo/k", b"second")
    assert store.read_bytes("oss://demo/k") == b"second"
    assert [path.name for path in (root / "demo").iterdir()] == ["k"]


@pytest.mark.parametrize("spelling", ["plain", "file"])
def test_bucket_mapped_to_another_folder(root: Path, tmp_path: Path, spelling: str) -> None:
    elsewhere = tmp_path / "srv" / "demo"
    target = str(elsewhere) if spelling == "plain" else f"file://{elsewhere}"
    store = FsspecObjectStore(root, {"demo": target})
    store.put_bytes("oss://demo/a/b.txt", b"x")
    assert (elsewhere / "a" / "b.txt").read_bytes() == b"x"
    assert not (root / "demo").exists()
    store.put_bytes("oss://other/c.txt", b"y")
    assert (root / "other" / "c.txt").read_bytes() == b"y"


def test_bucket_mapped_to_a_remote_fsspec_filesystem(root: Path, tmp_path: Path) -> None:
    prefix = f"memory://batchyard-test-{uuid.uuid4().hex}/data"
    store = FsspecObjectStore(root, {"remote": prefix})
    source = tmp_path / "up.txt"
    source.write_text("uploaded")
    store.put_file(source, "oss://remote/dir/up.txt")
    store.put_bytes("oss://remote/dir/sub/deep.txt", b"deep")
    assert store.read_bytes("oss://remote/dir/up.txt") == b"uploaded"
    assert store.exists("oss://remote/dir/up.txt")
    assert store.list("oss://remote/dir/") == [
        ObjectInfo("oss://remote/dir/sub/", 0, True),
        ObjectInfo("oss://remote/dir/up.txt", 8, False)]
    assert [info.url for info in store.list("oss://remote/dir", recursive=True)] == [
        "oss://remote/dir/sub/deep.txt", "oss://remote/dir/up.txt"]
    store.get_file("oss://remote/dir/sub/deep.txt", tmp_path / "down" / "deep.txt")
    assert (tmp_path / "down" / "deep.txt").read_bytes() == b"deep"
    store.delete("oss://remote/dir/up.txt")
    assert not store.exists("oss://remote/dir/up.txt")
    assert not (root / "remote").exists()


@pytest.mark.parametrize(("url", "why"), [
    ("oss://demo/../escape.txt", "'..' segment"),
    ("oss://demo/a/../../escape.txt", "'..' segment"),
    ("s3://demo/..", "'..' segment"),
    ("oss://demo//etc/passwd", "starts with '/'"),
    ("oss://demo/a\0b", "NUL"),
    ("oss://../x", "bucket name"),
    ("oss:///x", "bucket name"),
    ("ftp://host/x", "unsupported scheme"),
])
def test_unsafe_urls_are_refused_before_any_io(store: FsspecObjectStore, root: Path,
                                              url: str, why: str) -> None:
    for attempt in (lambda: store.put_bytes(url, b"x"), lambda: store.read_bytes(url),
                    lambda: store.list(url), lambda: store.delete(url)):
        with pytest.raises(ObjectStoreError) as caught:
            attempt()
        assert repr(url) in caught.value.message
        assert why in caught.value.message
    assert not root.exists()


def test_list_uses_the_form_of_the_url_asked(store: FsspecObjectStore) -> None:
    for key in ("logs/stdout.j.t.0", "logs/stdout.j.t.1", "logs/old/x.txt"):
        store.put_bytes(f"oss://demo/{key}", b"12345")
    assert store.list("oss://demo/logs/") == [
        ObjectInfo("oss://demo/logs/old/", 0, True),
        ObjectInfo("oss://demo/logs/stdout.j.t.0", 5, False),
        ObjectInfo("oss://demo/logs/stdout.j.t.1", 5, False)]
    assert [info.url for info in store.list("s3://demo/logs", recursive=True)] == [
        "s3://demo/logs/old/x.txt", "s3://demo/logs/stdout.j.t.0", "s3://demo/logs/stdout.j.t.1"]
    assert store.list("oss://demo/logs/stdout.j.t.0") == [
        ObjectInfo("oss://demo/logs/stdout.j.t.0", 5, False)]
    assert store.list("oss://demo/nothing/") == []


def test_errors_name_the_object_and_the_reason(store: FsspecObjectStore,
                                               tmp_path: Path) -> None:
    with pytest.raises(ObjectStoreError,
                       match=r"^cannot read oss://demo/missing: No such file or directory$"):
        store.read_bytes("oss://demo/missing")
    with pytest.raises(ObjectStoreError, match=r"^cannot read oss://demo/missing: "):
        store.get_file("oss://demo/missing", tmp_path / "x")
    missing = tmp_path / "no-such-file"
    with pytest.raises(ObjectStoreError) as caught:
        store.put_file(missing, "oss://demo/k")
    assert caught.value.message == (
        f"cannot write oss://demo/k: No such file or directory: {missing}")
    with pytest.raises(ObjectStoreError, match="names a directory, not an object"):
        store.put_bytes("oss://demo/folder/", b"x")
    with pytest.raises(ObjectStoreError, match="names a directory, not an object"):
        store.put_bytes("oss://demo", b"x")
    store.put_bytes("oss://demo/file", b"x")
    with pytest.raises(ObjectStoreError, match=r"^cannot write oss://demo/file/below: "):
        store.put_bytes("oss://demo/file/below", b"x")


def test_exists_and_delete(store: FsspecObjectStore) -> None:
    store.put_bytes("oss://demo/p/a", b"a")
    store.put_bytes("oss://demo/p/b", b"b")
    assert store.exists("oss://demo/p/a")
    store.delete("oss://demo/p/a")
    store.delete("oss://demo/p/a")  # absent: not an error
    assert not store.exists("oss://demo/p/a")
    store.delete("oss://demo/p/")
    assert store.list("oss://demo/", recursive=True) == []


def test_program_environment_rebuilds_the_same_store(root: Path, tmp_path: Path) -> None:
    store = FsspecObjectStore(root, {"mapped": str(tmp_path / "mapped")})
    rebuilt = FsspecObjectStore.from_environment(store.program_environment())
    rebuilt.put_bytes("oss://mapped/k", b"1")
    rebuilt.put_bytes("oss://plain/k", b"2")
    assert store.read_bytes("oss://mapped/k") == b"1"
    assert store.read_bytes("oss://plain/k") == b"2"
    with pytest.raises(ObjectStoreError, match="BATCHYARD_OSS_ROOT is not set"):
        FsspecObjectStore.from_environment({})
    with pytest.raises(ObjectStoreError, match="BATCHYARD_OSS_BUCKETS"):
        FsspecObjectStore.from_environment({"BATCHYARD_OSS_ROOT": "/x",
                                            "BATCHYARD_OSS_BUCKETS": "[1]"})


def test_oss_helper_reads_the_store_from_the_environment(
        store: FsspecObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in store.program_environment().items():
        monkeypatch.setenv(name, value)
    oss.put_text("oss://demo/notes/a.txt", "grüße")
    assert oss.read_text("oss://demo/notes/a.txt") == "grüße"
    assert oss.cat("oss://demo/notes/a.txt") == "grüße".encode()
    oss.get("oss://demo/notes/a.txt", tmp_path / "a.txt")
    oss.put(tmp_path / "a.txt", "oss://demo/notes/b.txt")
    assert oss.ls("oss://demo/notes/") == ["oss://demo/notes/a.txt", "oss://demo/notes/b.txt"]


def test_a_url_ending_with_slash_names_a_folder(store: FsspecObjectStore) -> None:
    store.put_bytes("oss://demo/file", b"x")
    store.put_bytes("oss://demo/dir/a", b"a")
    assert store.list("oss://demo/file/") == []
    assert not store.exists("oss://demo/file/")
    assert store.exists("oss://demo/dir/")
    with pytest.raises(ObjectStoreError, match=r"^cannot read oss://demo/file/: Not a directory$"):
        store.read_bytes("oss://demo/file/")
    with pytest.raises(ObjectStoreError, match=r"^cannot read oss://demo/dir/: Is a directory$"):
        store.read_bytes("oss://demo/dir/")
    with pytest.raises(ObjectStoreError, match=r"^cannot delete oss://demo/file/: Not a dir"):
        store.delete("oss://demo/file/")
    assert store.exists("oss://demo/file")
