"""split: cut the input log into exactly PARTS line-aligned parts, one per count instance.

Reads  oss://…/log-count/log-count-data.txt
Writes oss://…/log-count/split_results/<i>.txt for i in 0 … PARTS-1
"""

import tempfile
from pathlib import Path

import conf

from batchyard import oss


def split_lines(lines: list[str], count: int) -> list[list[str]]:
    """`count` consecutive slices of `lines` whose sizes differ by at most one line."""
    return [lines[len(lines) * i // count:len(lines) * (i + 1) // count] for i in range(count)]


def main() -> None:
    count = conf.parts()
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / "log-count-data.txt"
        oss.get(conf.INPUT, str(local))
        lines = local.read_text(encoding="utf-8").splitlines(keepends=True)
    for index, part in enumerate(split_lines(lines, count)):
        oss.put_text(f"{conf.SPLIT_RESULTS}{index}.txt", "".join(part))
        print(f"part {index}: {len(part)} lines -> {conf.SPLIT_RESULTS}{index}.txt")
    print(f"split {len(lines)} lines of {conf.INPUT} into {count} parts")


if __name__ == "__main__":
    main()
