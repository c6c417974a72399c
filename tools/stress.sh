#!/bin/sh
# Concurrency stress, long mode: the suite's StressTests (Tests/embstoreTests/StressTests.swift)
# with more writer steps, readers and rows. Reader threads check every row they decode (each row
# is a function of its id and the version it carries: a torn, mixed or older row fails) while a
# writer thread loads, puts, deletes and runs `embstore ingest` processes, and, in turn, `embstore
# compact --out` runs and each copy is checked, and `embstore compact --in-place` and `embstore
# repack --in-place` processes swap the store under the readers and the writer. After the run
# the store must verify and hold every row. Prints one line of counts:
#
#   [stress] 300 writer steps (100 ingest processes, 3 cut by a swap and redone), 17 compactions
#            --out, swaps in place: 17 compactions, 9 repacks (8 more refused: the store changed
#            meanwhile); 5242880 rows checked in 20480 batches, 1064960 rows in 17 compacted
#            copies; 0 failures
#
#   tools/stress.sh [STEPS [READERS [ROWS]]]     default 300 steps, 3 readers, 20000 rows
#   STRESS_CONFIGURATION=release tools/stress.sh  (builds the tests in release: faster readers, a longer build)
set -eu
cd "$(dirname "$0")/.."
steps=${1:-300}
readers=${2:-3}
rows=${3:-20000}
configuration=${STRESS_CONFIGURATION:-debug}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
EMBSTORE_STRESS_OPS=$steps EMBSTORE_STRESS_READERS=$readers EMBSTORE_STRESS_ROWS=$rows \
    swift test -c "$configuration" --filter 'StressTests' >"$log" 2>&1 || status=$?
grep -a '\[stress\]' "$log" || true
if [ "$status" -ne 0 ]; then
    grep -a -E 'error|failed|recorded an issue' "$log" | head -40
    echo "stress: FAILED (swift test exited $status; full log kept at $log.kept)"
    cp "$log" "$log.kept"
    exit 1
fi
echo "stress: ok"
