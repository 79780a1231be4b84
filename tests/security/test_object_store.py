"""The server never follows a link, nor blocks on a FIFO, that a program planted in a bucket.

Under `batchyard serve` a task program runs sandboxed with its tenant's bucket folders bound
read-write, so it can leave symbolic links (to the database, `master.key`, `/etc`), FIFOs and
sockets there; then the server itself, as root, uploads logs into that bucket and reads,
links, lists and deletes its objects. No server is needed here: the tests plant the entries
themselves and call the object store and the LogMapping shipper directly.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.errors import ObjectStoreError
from batchyard.runner.logmapping import LogShipper, ShippedLog
from batchyard.runner.staging import output_files

SECRET = b"host secret: never in a bucket\n"
NEVER_FOLLOWED = "is a symbolic link; batchyard never follows links inside buckets"
_JOIN_TIMEOUT = 5.0


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "objects"


@pytest.fixture
def store(root: Path) -> FsspecObjectStore:
    return FsspecObjectStore(root)


@pytest.fixture
def bucket(root: Path) -> Path:
    """The folder of the bucket `demo`, as a program inside the sandbox sees it."""
    folder = root / "demo"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A host file outside the store (think `master.key`)."""
    path = tmp_path / "host" / "master.key"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host folder outside the store (think `/etc`)."""
    folder = tmp_path / "etc"
    folder.mkdir()
    return folder


def test_a_link_object_is_never_read(store: FsspecObjectStore, bucket: Path, secret: Path,
                                     tmp_path: Path) -> None:
    (bucket / "stolen").symlink_to(secret)
    copy = tmp_path / "download" / "stolen"
    for read in (lambda: store.read_bytes("oss://demo/stolen"),
                 lambda: store.get_file("oss://demo/stolen", copy)):
        with pytest.raises(ObjectStoreError) as caught:
            read()
        assert caught.value.message.endswith(f"oss://demo/stolen {NEVER_FOLLOWED}")
    assert not copy.exists()


def test_a_folder_link_on_the_way_is_never_followed_to_read(
        store: FsspecObjectStore, bucket: Path, secret: Path) -> None:
    (bucket / "keys").symlink_to(secret.parent)
    with pytest.raises(ObjectStoreError) as caught:
        store.read_bytes("oss://demo/keys/master.key")
    assert caught.value.message == (
        f"cannot read oss://demo/keys/master.key: oss://demo/keys {NEVER_FOLLOWED}")
    assert str(secret.parent) not in caught.value.message


def test_a_link_object_is_never_linked_into_the_input_cache(
        store: FsspecObjectStore, bucket: Path, secret: Path, tmp_path: Path) -> None:
    (bucket / "in").mkdir()
    (bucket / "in" / "stolen").symlink_to(secret)
    cache = tmp_path / "cache" / "view"
    cache.mkdir(parents=True)
    with pytest.raises(ObjectStoreError, match=NEVER_FOLLOWED):
        store.get_files([("oss://demo/in/stolen", cache / "stolen")])
    assert not os.path.lexists(cache / "stolen")


def test_a_regular_object_is_still_hard_linked_into_the_input_cache(
        store: FsspecObjectStore, bucket: Path, tmp_path: Path) -> None:
    store.put_bytes("oss://demo/in/data", b"data")
    target = tmp_path / "cache" / "view" / "data"
    store.get_files([("oss://demo/in/data", target)])
    assert target.samefile(bucket / "in" / "data")


def test_writes_never_go_through_a_folder_link(store: FsspecObjectStore, bucket: Path,
                                               outside: Path, tmp_path: Path) -> None:
    (bucket / "logs").symlink_to(outside)
    log = tmp_path / "stdout"
    log.write_text("the program's own output\n")
    writes: list[Callable[[str], None]] = [
        lambda url: store.put_file(log, url, handed_over=True),
        lambda url: store.put_file(log, url),
        lambda url: store.put_bytes(url, b"x"),
    ]
    for write in writes:
        for url in ("oss://demo/logs/stdout.j.t.0", "oss://demo/logs/deeper/stdout.j.t.0"):
            with pytest.raises(ObjectStoreError) as caught:
                write(url)
            assert caught.value.message == f"cannot write {url}: oss://demo/logs {NEVER_FOLLOWED}"
    assert list(outside.iterdir()) == []


def test_a_planted_temporary_file_is_never_written_through(
        store: FsspecObjectStore, bucket: Path, secret: Path) -> None:
    """The hidden sibling a write goes to has a predictable name: a link there is replaced."""
    planted = bucket / f"k.{os.getpid()}-{threading.get_ident()}.batchyard-partial"
    planted.symlink_to(secret)
    store.put_bytes("oss://demo/k", b"object")
    assert secret.read_bytes() == SECRET
    assert (bucket / "k").read_bytes() == b"object"
    assert not os.path.lexists(planted)


def test_delete_removes_a_link_never_what_it_points_at(
        store: FsspecObjectStore, bucket: Path, outside: Path, secret: Path) -> None:
    (outside / "passwd").write_text("root:x:0:0\n")
    (bucket / "logs").symlink_to(outside)
    (bucket / "key").symlink_to(secret)
    with pytest.raises(ObjectStoreError) as caught:
        store.delete("oss://demo/logs/")
    assert caught.value.message == (
        f"cannot delete oss://demo/logs/: oss://demo/logs {NEVER_FOLLOWED}")
    assert (outside / "passwd").exists()
    store.delete("oss://demo/logs")
    store.delete("oss://demo/key")
    assert not os.path.lexists(bucket / "logs")
    assert (outside / "passwd").exists()
    assert secret.read_bytes() == SECRET
    assert not os.path.lexists(bucket / "key")
    store.delete("oss://demo/")
    assert (outside / "passwd").exists()
    assert not bucket.exists()


@pytest.fixture
def fifo(bucket: Path) -> Iterator[Path]:
    """A FIFO object; afterwards, a writer end is opened once so no blocked reader stays."""
    path = bucket / "pipe"
    os.mkfifo(path)
    yield path
    with suppress(OSError):  # ENXIO: nobody is blocked reading it
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def _finishes(action: Callable[[], object]) -> str:
    """Run `action` in a thread; the ObjectStoreError it raised, or a failure if it blocked."""
    outcome: dict[str, str] = {}

    def run() -> None:
        try:
            action()
            outcome["error"] = "(no error)"
        except ObjectStoreError as error:
            outcome["error"] = error.message

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(_JOIN_TIMEOUT)
    if thread.is_alive():
        pytest.fail("the object store blocked on a FIFO a program left in its bucket")
    return outcome["error"]


def test_a_fifo_object_fails_fast(store: FsspecObjectStore, fifo: Path,
                                  tmp_path: Path) -> None:
    refused = "oss://demo/pipe is a FIFO, not a regular file"
    assert refused in _finishes(lambda: store.read_bytes("oss://demo/pipe"))
    assert refused in _finishes(lambda: store.get_file("oss://demo/pipe", tmp_path / "copy"))
    target = tmp_path / "cache" / "pipe"
    assert refused in _finishes(lambda: store.get_files([("oss://demo/pipe", target)]))
    assert not os.path.lexists(target)
    assert not os.path.lexists(tmp_path / "copy")


def test_listing_skips_links_and_special_files(store: FsspecObjectStore, bucket: Path,
                                               secret: Path, outside: Path) -> None:
    store.put_bytes("oss://demo/real/a.txt", b"a")
    store.put_bytes("oss://demo/top.txt", b"t")
    (bucket / "key").symlink_to(secret)
    (bucket / "etc").symlink_to(outside)
    (bucket / "real" / "loop").symlink_to(bucket)
    (outside / "passwd").write_text("root:x:0:0\n")
    os.mkfifo(bucket / "pipe")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(bucket / "s"))
        assert [info.url for info in store.list("oss://demo/")] == [
            "oss://demo/real/", "oss://demo/top.txt"]
        assert [info.url for info in store.list("oss://demo", recursive=True)] == [
            "oss://demo/real/a.txt", "oss://demo/top.txt"]
    assert store.list("oss://demo/key") == []
    assert store.list("oss://demo/etc/") == []
    assert store.list("oss://demo/etc/", recursive=True) == []
    assert not store.exists("oss://demo/key")
    assert not store.exists("oss://demo/pipe")


@pytest.fixture
def umask() -> Iterator[None]:
    """A strict umask, which the configured folder mode must not be subject to."""
    previous = os.umask(0o077)
    yield
    os.umask(previous)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder another group needs root")
@pytest.mark.usefixtures("umask")
def test_new_bucket_folders_get_the_configured_mode_and_group(root: Path,
                                                              tmp_path: Path) -> None:
    mapped = tmp_path / "srv" / "mapped"
    store = FsspecObjectStore(root, {"mapped": str(mapped)}, folder_mode=0o2775,
                              folder_group=720000)
    log = tmp_path / "stdout"
    log.write_text("log\n")
    store.put_bytes("oss://demo/a/b/c.txt", b"x")
    store.put_file(log, "oss://demo/logs/stdout.j.t.0", handed_over=True)
    store.put_bytes("oss://mapped/d/e.txt", b"y")
    for folder in (root / "demo", root / "demo" / "a", root / "demo" / "a" / "b",
                   root / "demo" / "logs", mapped, mapped / "d"):
        status = folder.stat()
        assert (oct(stat.S_IMODE(status.st_mode)), status.st_gid) == (oct(0o2775), 720000)
    assert root.stat().st_gid != 720000  # the store's root is not a bucket
    plain = FsspecObjectStore(tmp_path / "plain")
    plain.put_bytes("oss://demo/a/c.txt", b"z")
    assert stat.S_IMODE((tmp_path / "plain" / "demo" / "a").stat().st_mode) == 0o700


class _Recorder:
    """An object store that keeps what LogMapping uploaded."""

    def __init__(self) -> None:
        self.uploads: list[bytes] = []

    def put_file(self, local: Path, url: str, handed_over: bool = False) -> None:
        self.uploads.append(Path(local).read_bytes())


def _swap_until(stop: threading.Event, folder: Path, link: Path, aside: Path) -> None:
    """Swap `folder` for the link `link` and back, again and again (as a program could)."""
    while not stop.is_set():
        os.rename(folder, aside)
        os.rename(link, folder)
        os.rename(folder, link)
        os.rename(aside, folder)


def test_log_mapping_never_ships_through_a_folder_swapped_for_a_link(tmp_path: Path) -> None:
    bind = tmp_path / "bind"  # the host folder bound writable into the sandbox
    (bind / "app").mkdir(parents=True)
    (bind / "app" / "app.log").write_text("a line of the program's log\n")
    host = tmp_path / "host"
    host.mkdir()
    (host / "app.log").write_bytes(SECRET)
    (bind / "app-link").symlink_to(host)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    recorder = _Recorder()
    log = ShippedLog(str(bind / "app" / "app.log"), str(bind), "oss://demo/logs/app.log")
    shipper = LogShipper(recorder, [log], 60, str(scratch))  # type: ignore[arg-type]
    stop = threading.Event()
    swapper = threading.Thread(target=_swap_until,
                               args=(stop, bind / "app", bind / "app-link", bind / "aside"))
    swapper.start()
    try:
        for _ in range(3000):
            shipper.finish()  # one forced shipment each time
    finally:
        stop.set()
        swapper.join()
    assert SECRET not in recorder.uploads
    assert recorder.uploads  # the real log was shipped whenever the folder was in place
    assert list(scratch.iterdir()) == []


def test_outputs_upload_regular_files_only(tmp_path: Path, secret: Path,
                                           outside: Path) -> None:
    """OutputMapping: what a program left in its output folder besides regular files stays."""
    folder = tmp_path / "outputs" / "0"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "result.txt").write_text("result\n")
    (folder / "key").symlink_to(secret)
    (folder / "etc").symlink_to(outside)
    (outside / "passwd").write_text("root:x:0:0\n")
    os.mkfifo(folder / "pipe")
    assert output_files(str(folder), "oss://demo/out") == [
        (folder / "sub" / "result.txt", "oss://demo/out/sub/result.txt")]
