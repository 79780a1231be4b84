"""extract_package: good packages unpack, hostile ones are refused before anything is written."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from batchyard.runner.package import PackageError, extract_package


def _archive(path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, b""


@pytest.fixture
def destination(tmp_path: Path) -> Path:
    folder = tmp_path / "workdir"
    folder.mkdir()
    return folder


def test_good_package_is_extracted_with_its_layout(tmp_path: Path, destination: Path) -> None:
    archive = _archive(tmp_path / "good.tar.gz",
                       _file("main.py", b"print('hi')\n", 0o755),
                       _file("./lib/util.py", b"X = 1\n"),
                       _link("lib/alias.py", "util.py", tarfile.SYMTYPE),
                       _link("copy.py", "lib/util.py", tarfile.LNKTYPE))
    extract_package(archive, destination)
    assert (destination / "main.py").read_text() == "print('hi')\n"
    assert (destination / "main.py").stat().st_mode & 0o100
    assert (destination / "lib" / "alias.py").read_text() == "X = 1\n"
    assert (destination / "copy.py").read_text() == "X = 1\n"


@pytest.mark.parametrize(("member", "why"), [
    (_file("/etc/evil"), "has an absolute path"),
    (_file("../x"), "has a '..' component"),
    (_file("a/../../x"), "has a '..' component"),
    (_link("passwd", "/etc/passwd", tarfile.SYMTYPE), "symlink to the absolute path '/etc/passwd'"),
    (_link("up", "../../outside", tarfile.SYMTYPE), "outside the destination"),
    (_link("hard", "../outside", tarfile.LNKTYPE), "hard link to '../outside'"),
    (_link("hard", "/etc/passwd", tarfile.LNKTYPE), "hard link to the absolute path"),
    (_link("fifo", "", tarfile.FIFOTYPE), "is a device or FIFO"),
    (_link("null", "", tarfile.CHRTYPE), "is a device or FIFO"),
])
def test_unsafe_member_is_refused_and_nothing_is_written(
        tmp_path: Path, destination: Path, member: tuple[tarfile.TarInfo, bytes],
        why: str) -> None:
    archive = _archive(tmp_path / "bad.tar.gz", _file("first.txt"), member)
    with pytest.raises(PackageError) as caught:
        extract_package(archive, destination)
    assert caught.value.message.startswith(f"refusing member {member[0].name!r}: ")
    assert why in caught.value.message
    assert list(destination.iterdir()) == []
    assert not (tmp_path / "x").exists() and not (tmp_path / "outside").exists()


def test_chained_symlinks_escaping_are_refused(tmp_path: Path, destination: Path) -> None:
    """Links through links pass a lexical check; the `data` filter stops them."""
    archive = _archive(tmp_path / "chain.tar.gz",
                       _link("sub/here", "..", tarfile.SYMTYPE),
                       _link("sub/escape", "here/../outside", tarfile.SYMTYPE))
    with pytest.raises(PackageError, match="'sub/escape'"):
        extract_package(archive, destination)


def test_not_a_gzip_tarball_is_a_package_error(tmp_path: Path, destination: Path) -> None:
    archive = tmp_path / "plain.tar.gz"
    archive.write_bytes(b"this is not an archive")
    with pytest.raises(PackageError, match=r"^not a readable \.tar\.gz archive: "):
        extract_package(archive, destination)
