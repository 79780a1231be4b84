"""split (mapped): cut /home/input/log-count-data.txt into exactly PARTS line-aligned parts.

Reads  /home/input/log-count-data.txt          (InputMapping  oss://…/log-count/ → /home/input)
Writes /home/output/split_results/<i>.txt       (OutputMapping /home/output/ → oss://…/log-count/)
No object-store code: batchyard stages the input and uploads the output folder.
"""

import os
from pathlib import Path

INPUT = Path("/home/input/log-count-data.txt")
OUTPUT = Path("/home/output/split_results")


def split_lines(lines: list[str], count: int) -> list[list[str]]:
    """`count` consecutive slices of `lines` whose sizes differ by at most one line."""
    return [lines[len(lines) * i // count:len(lines) * (i + 1) // count] for i in range(count)]


def main() -> None:
    count = int(os.environ.get("PARTS", "3"))
    lines = INPUT.read_text(encoding="utf-8").splitlines(keepends=True)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for index, part in enumerate(split_lines(lines, count)):
        (OUTPUT / f"{index}.txt").write_text("".join(part), encoding="utf-8")
        print(f"part {index}: {len(part)} lines")
    print(f"split {len(lines)} lines into {count} parts")


if __name__ == "__main__":
    main()
