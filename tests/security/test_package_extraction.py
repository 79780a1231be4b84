"""Hostile packages: whatever a PackagePath tarball holds, nothing outside the workdir changes.

Each test builds one attack, extracts it into `tmp_path/workdir` next to a sentinel file
and an empty sibling folder, and compares a listing of everything in `tmp_path` outside the
workdir (names, kinds, modes, link counts, contents, times) before and after. Most also
check that no symlink left in the workdir leads out of it. These tests need no server.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.runner import package
from batchyard.runner.package import PackageError, extract_package
from tests.security.conftest import ServeProcess, job, run_job

_MIB = 1024**2
_SENTINEL_TEXT = b"a host file nobody may touch\n"



@dataclass(frozen=True)
class Scene:
    """The destination and what surrounds it."""

    root: Path
    destination: Path
    sentinel: Path
    archives: Path

    def listing(self) -> dict[str, tuple[object, ...]]:
        """Everything under `root` except the destination's contents, in detail."""
        entries: dict[str, tuple[object, ...]] = {}
        for folder, folders, files in os.walk(self.root):
            if Path(folder) == self.destination:
                folders.clear()
                continue
            for name in [*folders, *files, "."]:
                path = Path(folder, name)
                shown = _describe(path) if path != self.destination else ("the destination",)
                entries[str(path.relative_to(self.root))] = shown
        return entries


def _describe(path: Path) -> tuple[object, ...]:
    status = path.lstat()
    kind = stat.S_IFMT(status.st_mode)
    content: object = None
    if stat.S_ISREG(status.st_mode):
        content = hashlib.sha256(path.read_bytes()).hexdigest()
    elif stat.S_ISLNK(status.st_mode):
        content = os.readlink(path)
    return (kind, stat.S_IMODE(status.st_mode), status.st_nlink, status.st_size,
            status.st_mtime_ns, status.st_uid, content)


@pytest.fixture
def scene(tmp_path: Path) -> Scene:
    destination = tmp_path / "workdir"
    destination.mkdir()
    (tmp_path / "sibling").mkdir()
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_bytes(_SENTINEL_TEXT)
    archives = tmp_path / "archives"
    archives.mkdir()
    return Scene(tmp_path, destination, sentinel, archives)


def _pack(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if info.isreg():
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def _folder(name: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, b""


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, b""


def _hard_link(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info, b""


def _special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
    return info, b""


def _links_leaving(destination: Path) -> list[str]:
    """Symlinks in `destination` that the kernel would resolve to somewhere outside it."""
    inside = os.path.realpath(destination)
    leaving = []
    for folder, folders, files in os.walk(destination):
        for name in [*folders, *files]:
            path = os.path.join(folder, name)
            resolved = os.path.realpath(path)
            if os.path.islink(path) and os.path.commonpath([resolved, inside]) != inside:
                leaving.append(os.path.relpath(path, destination))
    return leaving


def _assert_refused(scene: Scene, archive: Path, member: str, *words: str,
                    limits: package.PackageLimits | None = None) -> None:
    """Nothing outside the destination changed and no link leads out of it; and extraction
    refused `member`, with a message naming it and `words`. The damage is checked first, so
    that a failure shows it rather than a missing error."""
    before = scene.listing()
    refusal = _refusal(scene, archive, limits)
    assert scene.sentinel.read_bytes() == _SENTINEL_TEXT
    assert scene.listing() == before
    assert _links_leaving(scene.destination) == []
    assert refusal is not None, "the package was extracted"
    shown = repr(member) if len(member) <= 100 else repr(member)[:100]  # long names shortened
    assert refusal.message.startswith(f"refusing member {shown}")
    for word in words:
        assert word in refusal.message


def _refusal(scene: Scene, archive: Path,
             limits: package.PackageLimits | None = None) -> PackageError | None:
    try:
        if limits is None:
            extract_package(archive, scene.destination)
        else:
            extract_package(archive, scene.destination, limits)
    except PackageError as error:
        return error
    return None


def _cve_2025_4517(scene: Scene) -> tuple[Path, str]:
    """The public proof of concept of CVE-2025-4517, aimed at the sentinel next to the
    destination; returns the archive and the name of the long link it hinges on.

    16 nested folders of 247 characters, each with a one-letter symlink to it, make
    `a/b/…/p` resolve to a path just under PATH_MAX; a 254-character link at its end,
    pointing 16 levels up (back to the destination), pushes `realpath` over PATH_MAX, so it
    stops resolving and the filter believes anything written through it stays inside.
    """
    steps = "abcdefghijklmnop"
    # 247 is the PoC's length, for destinations shorter than 128 bytes; longer ones need
    # shorter folders (the formula CPython's own test of the fix uses).
    length = len(os.fsencode(scene.destination))
    component = "d" * (247 if length < 128 else (4096 - length) // (len(steps) + 1))
    members, path = [], ""
    for step in steps:
        members += [_folder(os.path.join(path, component)),
                    _symlink(os.path.join(path, step), component)]
        path = os.path.join(path, component)
    long_link = os.path.join("/".join(steps), "l" * 254)
    members += [
        _symlink(long_link, "../" * len(steps)),
        _symlink("escape", long_link + "/.."),  # the destination's parent
        _hard_link("flaglink", "escape/" + scene.sentinel.name),
        _file("flaglink", b"overwritten through a hard link\n"),  # writes the sentinel
        _file("escape/newfile", b"created outside\n"),
    ]
    return _pack(scene.archives / "cve-2025-4517.tar.gz", members), long_link


def test_cve_2025_4517_writes_nothing_outside(scene: Scene) -> None:
    """Out of the box, the bound on name lengths already stops it: the nested folders'
    names pass 1024 bytes at the fifth. (On Python 3.11.7 with the `data` filter, the
    sentinel is overwritten and `newfile` created beside it.)"""
    archive, _ = _cve_2025_4517(scene)
    component = _first_folder(archive)
    depth = next(depth for depth in range(1, 17) if depth * (len(component) + 1) - 1 > 1024)
    _assert_refused(scene, archive, "/".join([component] * depth), "max_path of 1024")
    assert not (scene.root / "newfile").exists()


def test_cve_2025_4517_is_refused_without_the_length_bound(scene: Scene) -> None:
    """With names as long as the PoC needs allowed, the structure stops it: the long link's
    own name goes through the symlink `a`, and nothing is extracted through a link."""
    archive, long_link = _cve_2025_4517(scene)
    _assert_refused(scene, archive, long_link, "'a' is a symlink", "through a link",
                    limits=package.PackageLimits(max_path=8192))
    assert not (scene.root / "newfile").exists()


def _first_folder(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        first = tar.next()
        assert first is not None and first.isdir()
        return first.name


@pytest.mark.parametrize("name", ["../sentinel.txt", "a/../../sibling/planted",
                                  "./../sibling/planted"])
def test_dot_dot_names_are_refused(scene: Scene, name: str) -> None:
    archive = _pack(scene.archives / "dots.tar.gz", [_file("ok.txt"), _file(name, b"evil")])
    _assert_refused(scene, archive, name, "'..' component")


def test_absolute_names_are_refused(scene: Scene) -> None:
    name = str(scene.root / "sibling" / "planted")
    archive = _pack(scene.archives / "absolute.tar.gz", [_file(name, b"evil")])
    _assert_refused(scene, archive, name, "absolute path")


def test_a_symlink_chain_that_escapes_is_refused(scene: Scene) -> None:
    """Each link alone points inside; the fourth, through the other three, does not."""
    archive = _pack(scene.archives / "chain.tar.gz", [
        _symlink("x/y/z/a1", ".."),
        _symlink("x/y/z/a2", "a1/.."),
        _symlink("x/y/z/a3", "a2/.."),
        _symlink("x/y/z/a4", "a3/../sentinel.txt"),
        _file("x/y/z/a4", b"evil"),
    ])
    _assert_refused(scene, archive, "x/y/z/a4", "leads outside the destination")


def test_a_symlink_made_to_escape_by_a_later_member_is_refused(scene: Scene) -> None:
    """`c -> b/../sentinel.txt` stays inside while `b` does not exist; `b -> .` then turns
    it into a link to the sentinel beside the destination. Only the final tree tells."""
    archive = _pack(scene.archives / "order.tar.gz", [
        _symlink("c", "b/../sentinel.txt"),
        _symlink("b", "."),
        _file("after.txt"),
    ])
    _assert_refused(scene, archive, "c", "leads outside the destination",
                    "once the later members are in place")
    assert not (scene.destination / "c").is_symlink()


def test_a_symlink_retargeted_by_a_later_member_is_refused(scene: Scene) -> None:
    """`up -> sub` makes `out -> up/..` harmless; replacing `up` by `.` makes it escape."""
    archive = _pack(scene.archives / "retarget.tar.gz", [
        _folder("sub"),
        _symlink("up", "sub"),
        _symlink("out", "up/.."),
        _symlink("up", "."),
    ])
    _assert_refused(scene, archive, "out", "leads outside the destination")


def test_hard_link_chains_stay_inside(scene: Scene) -> None:
    """A chain of hard links to an extracted file is fine; a hard link whose target climbs
    out through a symlink is refused before anything is linked or written."""
    archive = _pack(scene.archives / "hard.tar.gz", [
        _file("real.txt", b"real"),
        _hard_link("one.txt", "real.txt"),
        _hard_link("two.txt", "one.txt"),
        _symlink("out", "."),
        _hard_link("three.txt", "out/../sentinel.txt"),
        _file("three.txt", b"overwritten"),
    ])
    _assert_refused(scene, archive, "three.txt", "'..' component")
    assert (scene.destination / "two.txt").stat().st_nlink == 3


def test_a_hard_link_to_a_symlink_is_refused(scene: Scene) -> None:
    """CVE-2025-4330's shape: `c/escape` is checked while `c -> a`, then `c` is pointed
    elsewhere so the hard link `boom -> c/escape` finds nothing on disk; tarfile then
    extracts the member `c/escape` itself (a symlink `../sentinel.txt`) as `boom`, at the
    root, where it escapes. A hard link may only name a regular file."""
    archive = _pack(scene.archives / "fallback.tar.gz", [
        _folder("a"),
        _folder("b"),
        _symlink("c", "a"),
        _symlink("c/escape", "../sentinel.txt"),
        _symlink("c", "b"),
        _hard_link("boom", "c/escape"),
        _file("boom", b"overwritten"),
    ])
    _assert_refused(scene, archive, "c/escape", "'c' is a symlink")


def test_a_hard_link_to_an_extracted_symlink_is_refused(scene: Scene) -> None:
    archive = _pack(scene.archives / "hard-to-symlink.tar.gz", [
        _file("data.txt", b"data"),
        _symlink("alias", "data.txt"),
        _hard_link("copy", "alias"),
    ])
    _assert_refused(scene, archive, "copy", "not a regular file extracted earlier")


@pytest.mark.parametrize(("kind", "words"), [(tarfile.CHRTYPE, "a character device"),
                                             (tarfile.BLKTYPE, "a block device"),
                                             (tarfile.FIFOTYPE, "a FIFO")])
def test_devices_and_fifos_are_refused(scene: Scene, kind: bytes, words: str) -> None:
    archive = _pack(scene.archives / "device.tar.gz", [_special("dev/null", kind)])
    _assert_refused(scene, archive, "dev/null", words)
    assert not (scene.destination / "dev" / "null").exists()


def test_set_uid_and_set_gid_bits_are_dropped(scene: Scene) -> None:
    archive = _pack(scene.archives / "setuid.tar.gz", [
        _file("bin/tool", b"#!/bin/sh\n", 0o6755),
        _file("bin/shared", b"x", 0o4777),
        _folder("tmp"),
    ])
    before = scene.listing()
    extract_package(archive, scene.destination)
    assert stat.S_IMODE((scene.destination / "bin" / "tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((scene.destination / "bin" / "shared").stat().st_mode) == 0o755
    assert stat.S_IMODE((scene.destination / "tmp").stat().st_mode) == 0o755
    assert scene.listing() == before


def _zeros_archive(path: Path, name: str, size: int) -> Path:
    """A .tar.gz holding one member of `size` zeros, built without compressing them all:
    gzip streams may be concatenated, and each MiB of zeros compresses to the same bytes."""
    header = tarfile.TarInfo(name)
    header.size = size
    chunk = gzip.compress(bytes(_MIB))
    with path.open("wb") as archive:
        archive.write(gzip.compress(header.tobuf(tarfile.GNU_FORMAT)))
        for _ in range(size // _MIB):
            archive.write(chunk)
        archive.write(gzip.compress(bytes(2 * tarfile.RECORDSIZE)))
    return path


def test_a_gigabyte_of_zeros_over_the_bound_is_refused_unwritten(scene: Scene) -> None:
    archive = _zeros_archive(scene.archives / "zeros.tar.gz", "zeros.bin", 1024 * _MIB)
    assert archive.stat().st_size < 4 * _MIB  # a bomb: ~1 MiB that unpacks to 1 GiB
    limits = package.PackageLimits(max_bytes=256 * _MIB)
    _assert_refused(scene, archive, "zeros.bin", "max_bytes", str(256 * _MIB),
                    "BATCHYARD_PACKAGE_MAX_BYTES", limits=limits)
    assert not (scene.destination / "zeros.bin").exists()


def test_the_member_count_is_bounded(scene: Scene) -> None:
    archive = _pack(scene.archives / "many.tar.gz",
                    [_file(f"f{number:02}") for number in range(11)])
    _assert_refused(scene, archive, "f10", "more than 10 members", "max_members",
                    "BATCHYARD_PACKAGE_MAX_MEMBERS", limits=package.PackageLimits(max_members=10))
    assert len(list(scene.destination.iterdir())) == 10


def test_the_path_length_is_bounded(scene: Scene) -> None:
    """By default names and link targets may have 1024 bytes; a deep name (each component
    short enough for the file system) of 1100 bytes is refused, and so is such a target."""
    deep = "/".join(["d" * 99] * 11)
    archive = _pack(scene.archives / "deep.tar.gz", [_file(deep)])
    _assert_refused(scene, archive, deep, "1099 bytes long", "max_path of 1024",
                    "BATCHYARD_PACKAGE_MAX_PATH")
    archive = _pack(scene.archives / "target.tar.gz", [_symlink("link", deep)])
    _assert_refused(scene, archive, "link", "its link target is 1099 bytes long")


def _sparse_file(path: Path, size: int, pieces: dict[int, bytes]) -> Path:
    subprocess.run(["truncate", "-s", str(size), str(path)], check=True)
    with path.open("r+b") as file:
        for offset, data in pieces.items():
            file.seek(offset)
            file.write(data)
    return path


def _same_content(one: Path, other: Path) -> bool:
    pieces = one.stat().st_size // _MIB + 1
    with one.open("rb") as first, other.open("rb") as second:
        return all(first.read(_MIB) == second.read(_MIB) for _ in range(pieces))


def test_a_sparse_member_is_extracted_sparse(scene: Scene) -> None:
    source = scene.root / "source"
    source.mkdir()
    size = 64 * _MIB
    original = _sparse_file(source / "sparse.bin", size, {
        0: b"start", 17 * _MIB + 3: b"middle", size - 3: b"end"})
    if original.stat().st_blocks * 512 > _MIB:
        pytest.skip("this file system does not keep holes")
    archive = scene.archives / "sparse.tar.gz"
    subprocess.run(["tar", "--sparse", "--format=gnu", "-czf", str(archive), "-C", str(source),
                    "sparse.bin"], check=True)
    with tarfile.open(archive) as tar:
        assert tar.getmembers()[0].type == tarfile.GNUTYPE_SPARSE
    before = scene.listing()
    extract_package(archive, scene.destination)
    extracted = scene.destination / "sparse.bin"
    assert extracted.stat().st_size == size
    assert _same_content(original, extracted)
    assert extracted.stat().st_blocks * 512 <= _MIB
    assert scene.listing() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may give files to another user")
def test_every_entry_made_is_given_to_the_owner(scene: Scene) -> None:
    archive = _pack(scene.archives / "owned.tar.gz", [
        _folder("declared"),
        _file("implicit/deeper/run.sh", b"#!/bin/sh\n", 0o755),
        _symlink("implicit/alias", "deeper/run.sh"),
        _hard_link("copy.sh", "implicit/deeper/run.sh"),
    ])
    extract_package(archive, scene.destination, owner=(12345, 23456))
    made = [scene.destination / name for name in
            ("declared", "implicit", "implicit/deeper", "implicit/deeper/run.sh",
             "implicit/alias", "copy.sh")]
    assert {(path.lstat().st_uid, path.lstat().st_gid) for path in made} == {(12345, 23456)}
    assert stat.S_IMODE((scene.destination / "copy.sh").stat().st_mode) == 0o755
    assert scene.destination.stat().st_uid == 0  # the destination itself is the caller's


def test_a_served_job_with_the_cve_package_writes_nothing_outside_its_workdir(
        serve: ServeProcess, mallory: httpx.Client, tmp_path: Path) -> None:
    """End to end: the package of a tenant's job, aimed at the attempt folder around its
    working directory (where batchyard keeps the attempt's stderr)."""
    data = serve.data_dir.resolve()
    workdir = data / "work" / f"job-{'0' * 32}" / "attack" / "0.attempt-1" / "workdir"
    aimed = Scene(tmp_path, workdir, workdir.parent / "stderr", tmp_path)
    archive, _ = _cve_2025_4517(aimed)
    FsspecObjectStore(data / "objects").put_file(archive, "oss://mallory-logs/cve.tar.gz")
    body = job("echo ran")
    body["DAG"]["Tasks"]["attack"]["Parameters"]["Command"]["PackagePath"] = (
        "oss://mallory-logs/cve.tar.gz")
    job_id, state = run_job(mallory, body)
    instance = mallory.get(f"/jobs/{job_id}/tasks/attack/instances").json()["Items"][0]
    assert state == "Failed" and instance["Result"]["ErrorCode"] == "PackageError", instance
    attempt = data / "work" / job_id / "attack" / "0.attempt-1"
    assert not (attempt / "newfile").exists()
    assert b"overwritten" not in (attempt / "stderr").read_bytes()
