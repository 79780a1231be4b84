"""A batchyard server's engine in a process of its own, for the test that kills it with
`kill -9`: opens the engine (provider "ray") from the settings given as JSON in argv[1],
submits the job in the JSON file argv[2], prints its id, and runs until killed."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from batchyard.service import open_engine
from batchyard.settings import Settings


def main() -> None:
    engine = open_engine(Settings(**json.loads(sys.argv[1])), serving=True)
    print(engine.submit(json.loads(Path(sys.argv[2]).read_text())), flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
