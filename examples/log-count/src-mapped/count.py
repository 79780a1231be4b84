"""count (mapped): instance i counts the log levels of part i.

Reads  /home/input/split_results/<i>.txt
Writes /home/output/count_results/<i>.json  {"INFO": n, "WARN": n, "ERROR": n, "DEBUG": n}
where i = BATCH_COMPUTE_DAG_INSTANCE_ID.
"""

import json
import os
from pathlib import Path

LEVELS = ("INFO", "WARN", "ERROR", "DEBUG")


def count_levels(text: str) -> dict[str, int]:
    counts = dict.fromkeys(LEVELS, 0)
    for line in text.splitlines():
        fields = line.split(maxsplit=3)
        if len(fields) >= 3 and fields[2] in counts:
            counts[fields[2]] += 1
    return counts


def main() -> None:
    index = int(os.environ["BATCH_COMPUTE_DAG_INSTANCE_ID"])
    text = Path(f"/home/input/split_results/{index}.txt").read_text(encoding="utf-8")
    counts = count_levels(text)
    output = Path("/home/output/count_results")
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{index}.json").write_text(json.dumps(counts), encoding="utf-8")
    print(f"count {index}: {json.dumps(counts)}")


if __name__ == "__main__":
    main()
