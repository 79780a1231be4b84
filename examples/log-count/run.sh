#!/usr/bin/env bash
# Run the BatchCompute "log-count" quick start on this machine, end to end:
#   generate the input log, pack the programs, upload both, run the job, print the counts.
#
#   bash examples/log-count/run.sh            programs use batchyard.oss (src/, job.json)
#   bash examples/log-count/run.sh --mapped   programs see only /home/input and /home/output
#                                             (src-mapped/, job-mapped.json; needs bwrap)
#
# Environment:
#   BATCHYARD_DATA_DIR  where batchyard keeps state and objects (default ./.batchyard)
#   BATCHYARD_SLOTS     instances run at once (default 4, so the 3 count instances overlap)
#   LOG_LINES           log entries to generate (default 40000, about 5 MB)
#   LOG_COUNT_BUILD     folder for the generated log and worker.tar.gz (default: this folder)
#   PYTHON              interpreter for gen_data.py (default python3)
#   BATCHYARD           the batchyard command (default batchyard)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export BATCHYARD_DATA_DIR="${BATCHYARD_DATA_DIR:-$PWD/.batchyard}"
export BATCHYARD_SLOTS="${BATCHYARD_SLOTS:-4}"
python="${PYTHON:-python3}"
batchyard="${BATCHYARD:-batchyard}"
build="$(mkdir -p "${LOG_COUNT_BUILD:-$here}" && cd "${LOG_COUNT_BUILD:-$here}" && pwd)"
root="oss://log-count-demo/log-count"
sources="src" job="job.json" package="worker.tar.gz"
if [[ "${1:-}" == "--mapped" ]]; then
  sources="src-mapped" job="job-mapped.json" package="worker-mapped.tar.gz"
fi

echo "== data dir: $BATCHYARD_DATA_DIR"
echo "== generating the input log"
"$python" "$here/gen_data.py" "$build/log-count-data.txt" --lines "${LOG_LINES:-40000}"

echo "== packing $sources/*.py at the archive root into $package"
(cd "$here/$sources" && tar -czf "$build/$package" -- *.py)

echo "== uploading"
$batchyard oss cp "$build/log-count-data.txt" "$root/"
$batchyard oss cp "$build/$package" "$root/"

echo "== running the job"
$batchyard run "$here/$job"

echo "== result ($root/merge_result.json)"
$batchyard oss cat "$root/merge_result.json"
