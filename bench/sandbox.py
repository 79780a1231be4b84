"""What confining an attempt costs, per instance.

    python bench/sandbox.py [--count 300] [--slots N] [--repeat 1]

Runs COUNT instances of `true` through `batchyard run` twice — plainly (each instance a
`bash -c true` in its slot's cgroup) and with `--sandbox` (each instance in bubblewrap, as
the slot's unprivileged user when root, under memory/process/disk limits: exactly how
`batchyard serve` runs every attempt) — and, in the same invocation, the same COUNT
processes started by `xargs -P N`, once bare and once each inside a bare `bwrap` (the floor
of any bubblewrap sandbox). Prints wall and CPU time per instance for each, and the cost the
sandbox adds per instance. N defaults to the CPU count; with --repeat R the fastest of R
runs counts. Needs bubblewrap (apt-get install bubblewrap).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from instances import Timing, fastest, time_batchyard, timed

BARE_BWRAP = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
              "--unshare-pid", "--die-with-parent", "--"]


def time_xargs(count: int, slots: int, prefix: list[str]) -> Timing:
    numbers = "".join(f"{n}\n" for n in range(count))
    timing, failure = timed(["xargs", "-P", str(slots), "-n", "1", *prefix, "bash", "-c",
                             "true"], numbers)
    if failure:
        sys.exit(failure)
    return timing


def measure(count: int, slots: int, repeat: int) -> dict[str, Timing]:
    results: dict[str, list[Timing]] = {}
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as name:
        folder = Path(name)
        for _ in range(repeat):
            results.setdefault("batchyard run", []).append(
                time_batchyard(count, slots, folder))
            results.setdefault("batchyard run --sandbox", []).append(
                time_batchyard(count, slots, folder, ["--sandbox"]))
            results.setdefault("xargs", []).append(time_xargs(count, slots, []))
            results.setdefault("xargs + bare bwrap", []).append(
                time_xargs(count, slots, BARE_BWRAP))
    return {label: fastest(timings) for label, timings in results.items()}


def report(results: dict[str, Timing], count: int, slots: int) -> str:
    lines = [f"{count} instances of `true`, {slots} at a time ({os.cpu_count()} CPUs), "
             f"as {'root' if os.geteuid() == 0 else 'an unprivileged user'}"]
    for label, timing in results.items():
        lines.append(f"  {label:<26}: {timing.wall:6.2f} s wall "
                     f"({timing.wall / count * 1000:5.2f} ms each), CPU {timing.cpu:6.2f} s "
                     f"({timing.cpu / count * 1000:5.2f} ms each)")
    plain, confined = results["batchyard run"], results["batchyard run --sandbox"]
    bare, floor = results["xargs"], results["xargs + bare bwrap"]
    added_wall = (confined.wall - plain.wall) / count * 1000
    lines.append(f"  the sandbox adds per instance: {added_wall:.2f} ms wall, "
                 f"{(confined.cpu - plain.cpu) / count * 1000:.2f} ms CPU "
                 f"(a bare bwrap adds {(floor.wall - bare.wall) / count * 1000:.2f} ms wall, "
                 f"{(floor.cpu - bare.cpu) / count * 1000:.2f} ms CPU)")
    lines.append(f"  ratio batchyard run --sandbox / xargs + bare bwrap: "
                 f"{confined.wall / floor.wall:.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="instances (default 300)")
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1,
                        help="instances at once (default: CPU count)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side; fastest counts")
    arguments = parser.parse_args()
    if arguments.count < 1 or arguments.slots < 1 or arguments.repeat < 1:
        parser.error("--count, --slots and --repeat must be at least 1")
    if shutil.which("bwrap") is None:
        sys.exit("bubblewrap is not installed (apt-get install bubblewrap)")
    results = measure(arguments.count, arguments.slots, arguments.repeat)
    print(report(results, arguments.count, arguments.slots))


if __name__ == "__main__":
    main()
