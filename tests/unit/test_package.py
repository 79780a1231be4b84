"""extract_package: good packages unpack; a hostile member stops the extraction where it stands.

The hostile patterns themselves (CVE-2025-4517, link chains, bombs) are in
`tests/security/test_package_extraction.py`; these are the everyday cases and the messages.
"""

from __future__ import annotations

import gzip
import io
import resource
import signal
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


def _pax_name(name: str) -> tuple[tarfile.TarInfo, bytes]:
    """A file whose name is carried by a pax header, which (unlike ustar) can hold a NUL."""
    info, data = _file(name)
    info.pax_headers = {"path": name}
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
    (_file("/etc/evil"), "its name is an absolute path"),
    (_file("../x"), "its name has a '..' component"),
    (_file("a/../../x"), "its name has a '..' component"),
    (_pax_name("a\0b"), "its name has a NUL character"),
    (_link("passwd", "/etc/passwd", tarfile.SYMTYPE), "symlink to the absolute path '/etc/passwd'"),
    (_link("up", "../../outside", tarfile.SYMTYPE), "its target '../../outside' leads outside"),
    (_link("empty", "", tarfile.SYMTYPE), "symlink with an empty target"),
    (_link("hard", "../outside", tarfile.LNKTYPE),
     "its hard link target '../outside' has a '..' component"),
    (_link("hard", "/etc/passwd", tarfile.LNKTYPE),
     "its hard link target '/etc/passwd' is an absolute path"),
    (_link("hard", "missing", tarfile.LNKTYPE),
     "hard link to 'missing', which is not a regular file extracted earlier"),
    (_link("fifo", "", tarfile.FIFOTYPE), "it is a FIFO"),
    (_link("null", "", tarfile.CHRTYPE), "it is a character device"),
    (_link("disk", "", tarfile.BLKTYPE), "it is a block device"),
    (_link("odd", "", b"Z"), "it has the unknown type b'Z'"),
])
def test_unsafe_member_is_refused_and_extraction_stops_there(
        tmp_path: Path, destination: Path, member: tuple[tarfile.TarInfo, bytes],
        why: str) -> None:
    archive = _archive(tmp_path / "bad.tar.gz", _file("first.txt"), member, _file("last.txt"))
    with pytest.raises(PackageError) as caught:
        extract_package(archive, destination)
    assert caught.value.message.startswith(f"refusing member {member[0].name!r}: ")
    assert why in caught.value.message
    assert [path.name for path in destination.iterdir()] == ["first.txt"]
    assert not (tmp_path / "x").exists() and not (tmp_path / "outside").exists()


def test_chained_symlinks_escaping_are_refused(tmp_path: Path, destination: Path) -> None:
    """Links through links pass a lexical check; resolving through the archive's links
    does not."""
    archive = _archive(tmp_path / "chain.tar.gz",
                       _link("sub/here", "..", tarfile.SYMTYPE),
                       _link("sub/escape", "here/../outside", tarfile.SYMTYPE))
    with pytest.raises(PackageError, match="'sub/escape'"):
        extract_package(archive, destination)
    assert not (destination / "sub" / "escape").is_symlink()


def test_not_a_gzip_tarball_is_a_package_error(tmp_path: Path, destination: Path) -> None:
    archive = tmp_path / "plain.tar.gz"
    archive.write_bytes(b"this is not an archive")
    with pytest.raises(PackageError, match=r"^not a readable \.tar\.gz archive: "):
        extract_package(archive, destination)


def test_modes_drop_special_bits_and_foreign_write(tmp_path: Path, destination: Path) -> None:
    folder = tarfile.TarInfo("tools")
    folder.type = tarfile.DIRTYPE
    folder.mode = 0o1777
    archive = _archive(tmp_path / "modes.tar.gz", (folder, b""),
                       _file("tools/run", b"#!/bin/sh\n", 0o6777),
                       _file("tools/data", b"1", 0o666))
    extract_package(archive, destination)
    assert (destination / "tools").stat().st_mode & 0o7777 == 0o755
    assert (destination / "tools" / "run").stat().st_mode & 0o7777 == 0o755
    assert (destination / "tools" / "data").stat().st_mode & 0o7777 == 0o644


def test_a_later_member_replaces_an_earlier_one_without_writing_through_it(
        tmp_path: Path, destination: Path) -> None:
    """Tar semantics: the last member of a name wins. The old file is unlinked, so a hard
    link to it keeps the old content instead of being overwritten."""
    archive = _archive(tmp_path / "replace.tar.gz",
                       _file("a.txt", b"old"),
                       _link("b.txt", "a.txt", tarfile.LNKTYPE),
                       _link("c.txt", "a.txt", tarfile.SYMTYPE),
                       _file("a.txt", b"new"),
                       _file("c.txt", b"file now"))
    extract_package(archive, destination)
    assert (destination / "a.txt").read_bytes() == b"new"
    assert (destination / "b.txt").read_bytes() == b"old"
    assert not (destination / "c.txt").is_symlink()
    assert (destination / "c.txt").read_bytes() == b"file now"


def test_a_folder_is_never_replaced(tmp_path: Path, destination: Path) -> None:
    archive = _archive(tmp_path / "folder.tar.gz", _file("lib/util.py"), _file("lib"))
    with pytest.raises(PackageError, match="'lib': it would replace a folder"):
        extract_package(archive, destination)
    assert (destination / "lib" / "util.py").is_file()


def test_nothing_is_extracted_through_a_symlink_even_inside(tmp_path: Path,
                                                            destination: Path) -> None:
    archive = _archive(tmp_path / "through.tar.gz",
                       _file("real/keep.txt", b"keep"),
                       _link("alias", "real", tarfile.SYMTYPE),
                       _file("alias/keep.txt", b"changed"))
    with pytest.raises(PackageError) as caught:
        extract_package(archive, destination)
    assert caught.value.message == (
        "refusing member 'alias/keep.txt': 'alias' is a symlink (to 'real'), and nothing is "
        "ever extracted through a link")
    assert (destination / "real" / "keep.txt").read_bytes() == b"keep"


def test_the_destination_itself_as_a_member_is_fine(tmp_path: Path, destination: Path) -> None:
    """`tar -C folder -czf x.tar.gz .` starts with the member './'."""
    root = tarfile.TarInfo("./")
    root.type = tarfile.DIRTYPE
    archive = _archive(tmp_path / "dot.tar.gz", (root, b""), _file("./run.sh", b"echo\n"))
    extract_package(archive, destination)
    assert (destination / "run.sh").read_bytes() == b"echo\n"


def test_modification_times_are_kept(tmp_path: Path, destination: Path) -> None:
    """Build tools (make) compare them."""
    info, data = _file("Makefile", b"all:\n")
    info.mtime = 1_000_000_000
    extract_package(_archive(tmp_path / "times.tar.gz", (info, data)), destination)
    assert (destination / "Makefile").stat().st_mtime == 1_000_000_000


def test_truncated_data_is_a_package_error(tmp_path: Path, destination: Path) -> None:
    whole = io.BytesIO()
    with tarfile.open(fileobj=whole, mode="w") as tar:
        info = tarfile.TarInfo("big.bin")
        info.size = 10_000
        tar.addfile(info, io.BytesIO(b"x" * 10_000))
    archive = tmp_path / "truncated.tar.gz"
    archive.write_bytes(gzip.compress(whole.getvalue()[:4096]))
    with pytest.raises(PackageError, match=r"^cannot read member 'big\.bin': "):
        extract_package(archive, destination)


def test_an_oversized_extended_header_is_refused_before_it_is_read(
        tmp_path: Path, destination: Path) -> None:
    """tarfile reads a pax header whole: one declaring 2 GiB must not be read at all."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 2 * 1024**3
    archive = tmp_path / "header.tar.gz"
    archive.write_bytes(gzip.compress(header.tobuf(tarfile.USTAR_FORMAT) + bytes(1024)))
    with pytest.raises(PackageError, match="a header declares 2147483648 bytes"):
        extract_package(archive, destination)


def test_a_write_failure_names_the_member(tmp_path: Path, destination: Path) -> None:
    """A full disk looks the same as a file size limit: the write fails, the member is named."""
    archive = _archive(tmp_path / "big.tar.gz", _file("big.bin", b"\1" * (256 * 1024)))
    ignored = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(PackageError, match=r"^cannot write member 'big\.bin': File too large"):
            extract_package(archive, destination)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, ignored)
