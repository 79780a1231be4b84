"""`ObjectStore.read_range` and `size` (what the console's live log tail reads): on local
bucket folders, plain local paths, the in-memory store and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.errors import ObjectNotFound, ObjectStoreError
from batchyard.hosting import open_objects
from batchyard.ports.objects import ObjectStore
from batchyard.settings import Settings
from batchyard.testing.objects import MemoryObjectStore
from tests.s3server import KEY_ID, SECRET, SeaweedMissing, start_seaweedfs

CONTENT = "héllo wörld\n".encode() * 100  # 1,400 bytes with multibyte characters


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("s3fs")
    try:
        server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    except SeaweedMissing as missing:
        pytest.skip(str(missing))
    try:
        import boto3

        boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                     aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                     ).create_bucket(Bucket="batchyard-ranges")
        yield server.url
    finally:
        server.stop()


def _local(tmp_path: Path) -> tuple[ObjectStore, str]:
    return FsspecObjectStore(tmp_path / "objects"), "oss://logs"


def _mapped_path(tmp_path: Path) -> tuple[ObjectStore, str]:
    """A bucket mapped to a plain local path (no bucket folder checks)."""
    return FsspecObjectStore(tmp_path / "objects", {"mapped": str(tmp_path / "mapped")}), \
        "oss://mapped"


def _memory(tmp_path: Path) -> tuple[ObjectStore, str]:
    return MemoryObjectStore(), "oss://logs"


STORES = {"bucket-folder": _local, "memory": _memory}


@pytest.mark.parametrize("kind", sorted(STORES))
def test_ranges_and_sizes(kind: str, tmp_path: Path) -> None:
    objects, bucket = STORES[kind](tmp_path)
    _check_ranges(objects, bucket)


def test_ranges_and_sizes_on_a_mapped_local_path(tmp_path: Path) -> None:
    objects, bucket = _mapped_path(tmp_path)
    _check_ranges(objects, bucket)


def test_ranges_and_sizes_on_s3(seaweed: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", s3_endpoint_url=seaweed,
                        s3_region="us-east-1", s3_access_key_id=KEY_ID,
                        s3_secret_access_key=SECRET, s3_addressing_style="path",
                        buckets={"remote": "s3://batchyard-ranges"})
    objects = open_objects(settings)
    _check_ranges(objects, "oss://remote", missing_error=ObjectStoreError)
    objects.put_bytes("oss://remote/folder/inside.txt", b"x")
    assert objects.size("oss://remote/folder") is None  # a prefix is no object


def _check_ranges(objects: ObjectStore, bucket: str,
                  missing_error: type[Exception] = ObjectNotFound) -> None:
    url = f"{bucket}/job/task.0.stdout"
    assert objects.size(url) is None
    with pytest.raises(missing_error) as raised:
        objects.read_range(url, 0, 10)
    assert url in str(raised.value)
    objects.put_bytes(url, CONTENT)
    assert objects.size(url) == len(CONTENT)
    assert objects.read_range(url, 0, 5) == CONTENT[:5]
    assert objects.read_range(url, 100, 300) == CONTENT[100:400]
    assert objects.read_range(url, len(CONTENT) - 3, 100) == CONTENT[-3:]
    assert objects.read_range(url, len(CONTENT), 100) == b""
    assert objects.read_range(url, len(CONTENT) + 50, 100) == b""
    assert objects.read_range(url, 7, 0) == b""
    whole = b"".join(objects.read_range(url, start, 333)
                     for start in range(0, len(CONTENT), 333))
    assert whole == CONTENT
    objects.put_bytes(url, b"short")  # a retry's log replaces a longer one
    assert objects.size(url) == 5
    assert objects.read_range(url, 3, 100) == b"rt"
    assert objects.read_range(url, 10, 100) == b""
    for start, limit in ((-1, 5), (0, -1)):
        with pytest.raises(ValueError, match="byte range"):
            objects.read_range(url, start, limit)
    empty = f"{bucket}/job/empty.txt"
    objects.put_bytes(empty, b"")
    assert objects.size(empty) == 0
    assert objects.read_range(empty, 0, 10) == b""


def test_a_folder_is_no_object_and_a_link_is_refused(tmp_path: Path) -> None:
    objects, bucket = _local(tmp_path)
    objects.put_bytes(f"{bucket}/dir/inside.txt", b"x")
    assert objects.size(f"{bucket}/dir") is None
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not for the console")
    os.symlink(secret, tmp_path / "objects" / "logs" / "dir" / "link.txt")
    for read in (lambda url: objects.size(url), lambda url: objects.read_range(url, 0, 100)):
        with pytest.raises(ObjectStoreError, match="symbolic link"):
            read(f"{bucket}/dir/link.txt")
