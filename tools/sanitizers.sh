#!/bin/sh
# The test suite under AddressSanitizer or ThreadSanitizer: `swift build --sanitize=…` into a
# scratch directory of its own (.build-address, .build-thread: the normal build is left alone),
# then `swift test` on it. The CLI binary the end-to-end tests run is built with the same
# sanitizer, so the subprocesses are checked too (a child's report fails its test: ASan and LSan
# exit non-zero). Prints the test count, the failures and every sanitizer report's summary.
# CAPITests are skipped: they load libEmbStoreC.so into python3 and a C program, which cannot
# host a library instrumented for a sanitizer (its runtime is not in them).
#
#   tools/sanitizers.sh address [FILTER]     about 2 min to build and 18 min to run on 2 cores
#   tools/sanitizers.sh thread [FILTER]      about 5 min to build and 35 min to run
#
# Suppressed: LeakSanitizer reports from XCTest and Foundation's Data(contentsOf:)
# (tools/lsan.supp), and ThreadSanitizer reports of accesses made under a Synchronization.Mutex,
# which it cannot see on Linux (tools/tsan.supp says how that was checked).
set -eu
cd "$(dirname "$0")/.."
sanitizer=${1:?usage: tools/sanitizers.sh address|thread [FILTER]}
filter=${2:-}
log=".build-$sanitizer/test.log"
swift build --build-tests --sanitize="$sanitizer" --scratch-path ".build-$sanitizer" 2>&1 | grep -E "error|Build complete" | grep -v '^ *|' || true
status=0
SWIFT_BACKTRACE=enable=no \
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$(pwd)/tools/lsan.supp:print_suppressions=0} \
TSAN_OPTIONS=${TSAN_OPTIONS:-suppressions=$(pwd)/tools/tsan.supp} \
    swift test --skip-build --sanitize="$sanitizer" --scratch-path ".build-$sanitizer" ${filter:+--filter "$filter"} \
        --skip CAPITests >"$log" 2>&1 || status=$?
grep -a -E "^✔ Test run with|^✘ Test run with|Executed [0-9]+ tests" "$log" | sort -u
grep -a -E "^✘ Test .* failed|recorded an issue" "$log" | head -20 || true
reports=$(grep -a -c -E "^SUMMARY: (AddressSanitizer|ThreadSanitizer|LeakSanitizer)" "$log" || true)
grep -a -E "^SUMMARY: (AddressSanitizer|ThreadSanitizer|LeakSanitizer)" "$log" | sort | uniq -c | head -20 || true
echo "$sanitizer: swift test exited $status, $reports sanitizer report(s); log $log"
exit $status
