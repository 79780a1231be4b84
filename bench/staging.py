"""How fast are mapped inputs staged and outputs uploaded, compared with a plain copy?

    python bench/staging.py [--small 2000] [--small-size 4096] [--large-mb 256] [--s3]

Three cases, each timed through batchyard's own code and as a plain copy of the same data
in the same run (the fastest of --repeat runs counts):

- input, many small files: `stage_input` of a prefix into a cold cache view, against
  `shutil.copytree` of the bucket folder (local store) or s3fs `get(recursive=True)` (S3);
- input, one large file: the same with one file of --large-mb MB;
- output: `upload_outputs` of a folder holding the small files, against `shutil.copytree`
  into the bucket folder (local) or s3fs `put(recursive=True)` (S3).

The local object store is a folder in a temporary directory; with --s3 the objects live in a
moto S3 server on 127.0.0.1 (started in-process). Target: every ratio at most 1.3.
Exit status 1 with --check when a ratio misses it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.domain.attempt import PathMapping
from batchyard.runner.staging import stage_input, upload_outputs

TARGET = 1.3


def best(repeat: int, prepare: Callable[[], None], action: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        prepare()
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def make_files(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        sub = folder / f"d{index % 20:02d}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{index:05d}.bin").write_bytes(os.urandom(size))


class Local:
    """Objects in a folder; the plain copy is shutil.copytree."""

    name = "local folder"

    def __init__(self, root: Path) -> None:
        self.root = root / "objects"
        self.store = FsspecObjectStore(self.root)

    def upload_tree(self, folder: Path, prefix: str) -> None:
        shutil.copytree(folder, self.root / "bench" / prefix, dirs_exist_ok=True)

    def copy_down(self, prefix: str, target: Path) -> None:
        shutil.copytree(self.root / "bench" / prefix, target)

    def copy_up(self, folder: Path, prefix: str) -> None:
        shutil.copytree(folder, self.root / "bench" / prefix, dirs_exist_ok=True)

    def clear(self, prefix: str) -> None:
        shutil.rmtree(self.root / "bench" / prefix, ignore_errors=True)


class S3:
    """Objects in a moto S3 server; the plain copy is s3fs get/put of the whole prefix."""

    name = "S3 (moto server on 127.0.0.1)"

    def __init__(self, root: Path) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret",
                          AWS_DEFAULT_REGION="us-east-1")
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        options = {"s3": {"endpoint_url": f"http://{host}:{port}"}}
        import s3fs  # type: ignore[import-untyped]

        self.fs: Any = s3fs.S3FileSystem(**options["s3"])
        self.fs.mkdir("bench-bucket")
        self.store = FsspecObjectStore(root / "unused", {"bench": "s3://bench-bucket"}, options)

    def upload_tree(self, folder: Path, prefix: str) -> None:
        self.fs.put(f"{folder}/", f"bench-bucket/{prefix}", recursive=True)

    def copy_down(self, prefix: str, target: Path) -> None:
        self.fs.get(f"bench-bucket/{prefix}/", f"{target}/", recursive=True)

    def copy_up(self, folder: Path, prefix: str) -> None:
        self.fs.put(f"{folder}/", f"bench-bucket/{prefix}", recursive=True)

    def clear(self, prefix: str) -> None:
        if self.fs.exists(f"bench-bucket/{prefix}"):
            self.fs.rm(f"bench-bucket/{prefix}", recursive=True)
        self.fs.invalidate_cache()


def measure(side: Local | S3, work: Path, source: Path, prefix: str,
            repeat: int) -> tuple[float, float]:
    """(staging seconds, plain copy seconds) for the prefix holding `source`."""
    side.upload_tree(source, prefix)
    cache, plain = work / "cache", work / "plain"

    def fresh() -> None:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(plain, ignore_errors=True)
        if isinstance(side, S3):
            side.fs.invalidate_cache()

    staged = best(repeat, fresh,
                  lambda: stage_input(side.store, f"oss://bench/{prefix}/", str(cache)))
    copied = best(repeat, fresh, lambda: side.copy_down(prefix, plain))
    return staged, copied


def measure_output(side: Local | S3, source: Path, repeat: int) -> tuple[float, float]:
    mapping = PathMapping("oss://bench/out/", "/home/output")

    def upload() -> None:
        problems = upload_outputs(side.store, [(str(source), mapping)])
        if problems:
            raise SystemExit("; ".join(problems))

    uploaded = best(repeat, lambda: side.clear("out"), upload)
    copied = best(repeat, lambda: side.clear("out"), lambda: side.copy_up(source, "out"))
    return uploaded, copied


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000, help="number of small files")
    parser.add_argument("--small-size", type=int, default=4096, help="bytes per small file")
    parser.add_argument("--large-mb", type=int, default=256, help="size of the large file")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--s3", action="store_true", help="objects on a moto S3 server")
    parser.add_argument("--check", action="store_true", help="exit 1 if a ratio misses 1.3")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as folder:
        work = Path(folder)
        small, large = work / "src-small", work / "src-large"
        make_files(small, arguments.small, arguments.small_size)
        large.mkdir()
        with open(large / "big.bin", "wb") as stream:
            for _ in range(arguments.large_mb):
                stream.write(os.urandom(1 << 20))
        side: Local | S3 = S3(work) if arguments.s3 else Local(work)
        rows = [
            (f"input, {arguments.small} x {arguments.small_size} B",
             *measure(side, work, small, "small", arguments.repeat)),
            (f"input, 1 x {arguments.large_mb} MB",
             *measure(side, work, large, "large", arguments.repeat)),
            (f"output, {arguments.small} x {arguments.small_size} B",
             *measure_output(side, small, arguments.repeat)),
        ]
    print(f"object store: {side.name}; fastest of {arguments.repeat}")
    worst = 0.0
    for label, ours, plain in rows:
        ratio = ours / plain
        worst = max(worst, ratio)
        print(f"  {label:<28} batchyard {ours * 1000:8.1f} ms   plain copy {plain * 1000:8.1f} ms"
              f"   ratio {ratio:5.2f}x")
    verdict = "meets" if worst <= TARGET else "misses"
    print(f"  worst ratio {worst:.2f}x ({verdict} the target of {TARGET}x)")
    if isinstance(side, S3):
        side.server.stop()
    return 1 if arguments.check and worst > TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
