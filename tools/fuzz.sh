#!/bin/sh
# Coverage-guided fuzzing (libFuzzer, with AddressSanitizer) of what reads untrusted bytes:
#   FuzzRecords   row records of every codec (decode, batch decode, bag accumulate), PCA basis,
#                 tc basis and tc model records, table schema, format header, load notes
#   FuzzSegments  segment part 0 (header and index) and data parts: row lookup, record location,
#                 verify's checks
#   FuzzNPY       .npy headers and files as ingest reads them
# The targets are the package tools/fuzz (never built by the root's `swift build`/`swift test`),
# built with `-sanitize=fuzzer,address`. Each runs SECONDS on its committed seed corpus
# (tools/fuzz/corpus/<target>) plus what earlier runs found (tools/fuzz/.build/corpus/<target>),
# and prints its executions and any crash (the input is kept in tools/fuzz/artifacts/).
#
#   tools/fuzz.sh [SECONDS] [TARGET...]      default 60 s for each of the three targets
#   tools/fuzz.sh --seeds                    rewrite the seed corpora from the targets' generators
#
# A crash's input replays with: tools/fuzz/.build/release/<target> tools/fuzz/artifacts/<file>
set -eu
cd "$(dirname "$0")/fuzz"
all="FuzzRecords FuzzSegments FuzzNPY"

build() {
    swift build -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -enable-testing \
        -Xcc -fsanitize=fuzzer-no-link,address --product "$1" 2>&1 | grep -E "error|warning: .*tools/fuzz|Compiling|Build complete" | grep -v '^\[' || true
    test -x ".build/release/$1" || { echo "fuzz: building $1 failed"; exit 1; }
}

if [ "${1:-}" = "--seeds" ]; then
    for target in $all; do
        build "$target"
        rm -rf "corpus/$target"
        EMBSTORE_FUZZ_WRITE_SEEDS="corpus/$target" ".build/release/$target"
        echo "$target: $(ls "corpus/$target" | wc -l) seeds in tools/fuzz/corpus/$target"
    done
    exit 0
fi

seconds=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-$all}
mkdir -p artifacts
failed=0
summary=""
for target in $targets; do
    build "$target"
    mkdir -p ".build/corpus/$target"
    log=".build/$target.log"
    max_len=4096
    [ "$target" = FuzzSegments ] && max_len=65536
    status=0
    # Swift's own crash backtracer would read the crashed process's memory under ASan: off.
    SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} ".build/release/$target" -max_total_time="$seconds" -print_final_stats=1 \
        -max_len=$max_len -timeout=30 -rss_limit_mb=4096 -artifact_prefix="artifacts/$target-" \
        ".build/corpus/$target" "corpus/$target" >"$log" 2>&1 || status=$?
    execs=$(grep -a 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    coverage=$(grep -a -E '^#[0-9]+' "$log" | tail -1 | sed -n 's/.*cov: \([0-9]*\).*ft: \([0-9]*\).*corp: \([0-9]*\).*/cov \1, features \2, corpus \3/p')
    if [ "$status" -ne 0 ]; then
        failed=1
        crash=$(grep -a -o 'Test unit written to [^ ]*' "$log" | tail -1 | sed 's/Test unit written to //')
        line="$target: ${execs:-?} execs in ${seconds} s ($coverage): CRASH, input tools/fuzz/$crash; log tools/fuzz/$log"
        grep -a -E 'ERROR: AddressSanitizer|Fatal error|promise broken|SUMMARY' "$log" | head -5
    else
        line="$target: ${execs:-?} execs in ${seconds} s ($coverage): no crash"
    fi
    echo "$line"
    summary="$summary$line
"
done
echo "fuzz summary:"
printf '%s' "$summary"
exit $failed
