"""count: instance i counts the log levels in part i.

Reads  oss://…/log-count/split_results/<i>.txt
Writes oss://…/log-count/count_results/<i>.json  {"INFO": n, "WARN": n, "ERROR": n, "DEBUG": n}
where i = BATCH_COMPUTE_DAG_INSTANCE_ID.
"""

import json
import time
from datetime import UTC, datetime

import conf

from batchyard import oss


def level_of(line: str) -> str | None:
    """The level of a log line (`<date> <time> <LEVEL> …`), or None for other lines."""
    fields = line.split(maxsplit=3)
    if len(fields) >= 3 and fields[2] in conf.LEVELS:
        return fields[2]
    return None


def count_levels(text: str) -> dict[str, int]:
    counts = dict.fromkeys(conf.LEVELS, 0)
    for line in text.splitlines():
        level = level_of(line)
        if level is not None:
            counts[level] += 1
    return counts


def stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def main() -> None:
    index = conf.instance_id()
    print(f"count {index}: start {stamp()}", flush=True)
    counts = count_levels(oss.read_text(f"{conf.SPLIT_RESULTS}{index}.txt"))
    time.sleep(conf.COUNT_PAUSE_SECONDS)  # long enough to watch the instances run together
    oss.put_text(f"{conf.COUNT_RESULTS}{index}.json", json.dumps(counts))
    print(f"count {index}: {json.dumps(counts)}")
    print(f"count {index}: end {stamp()}", flush=True)


if __name__ == "__main__":
    main()
