"""merge (mapped): add up the PARTS count results into /home/output/merge_result.json."""

import json
import os
from pathlib import Path

LEVELS = ("INFO", "WARN", "ERROR", "DEBUG")


def main() -> None:
    parts = int(os.environ.get("PARTS", "3"))
    names = [Path(f"/home/input/count_results/{index}.json") for index in range(parts)]
    missing = [str(name) for name in names if not name.exists()]
    if missing:
        raise SystemExit(f"merge: count results missing: {', '.join(missing)}")
    results = [json.loads(name.read_text(encoding="utf-8")) for name in names]
    total = {level: sum(result.get(level, 0) for result in results) for level in LEVELS}
    Path("/home/output/merge_result.json").write_text(json.dumps(total, indent=2) + "\n",
                                                      encoding="utf-8")
    print(json.dumps(total))


if __name__ == "__main__":
    main()
