"""Where the log-count programs find their data (shared by split, count and merge)."""

import os

DATA_ROOT = os.environ.get("LOG_COUNT_ROOT", "oss://log-count-demo/log-count/")
"""The object-store folder holding the input, the intermediate results and the final result."""

INPUT = DATA_ROOT + "log-count-data.txt"
SPLIT_RESULTS = DATA_ROOT + "split_results/"
COUNT_RESULTS = DATA_ROOT + "count_results/"
MERGE_RESULT = DATA_ROOT + "merge_result.json"

LEVELS = ("INFO", "WARN", "ERROR", "DEBUG")

COUNT_PAUSE_SECONDS = float(os.environ.get("COUNT_PAUSE_SECONDS", "2"))
"""Each count instance pauses this long so that the instances visibly run side by side."""


def parts() -> int:
    """How many parts split writes and merge expects: one per count instance."""
    value = int(os.environ.get("PARTS", "3"))
    if value < 1:
        raise SystemExit(f"PARTS must be at least 1, got {value}")
    return value


def instance_id() -> int:
    """This instance's index, 0 … InstanceCount-1, as BatchCompute tells every instance."""
    return int(os.environ["BATCH_COMPUTE_DAG_INSTANCE_ID"])
