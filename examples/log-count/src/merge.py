"""merge: add up the PARTS count results into the final answer.

Reads  oss://…/log-count/count_results/<i>.json for i in 0 … PARTS-1
Writes oss://…/log-count/merge_result.json and prints it.
"""

import json

import conf

from batchyard import oss


def merge(results: list[dict[str, int]]) -> dict[str, int]:
    return {level: sum(result.get(level, 0) for result in results) for level in conf.LEVELS}


def main() -> None:
    names = [f"{conf.COUNT_RESULTS}{index}.json" for index in range(conf.parts())]
    missing = sorted(set(names) - set(oss.ls(conf.COUNT_RESULTS)))
    if missing:
        raise SystemExit(f"merge: count results missing: {', '.join(missing)}")
    total = merge([json.loads(oss.read_text(name)) for name in names])
    oss.put_text(conf.MERGE_RESULT, json.dumps(total, indent=2) + "\n")
    print(json.dumps(total))


if __name__ == "__main__":
    main()
