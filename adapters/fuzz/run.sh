#!/usr/bin/env bash
# Run the adapter fuzz targets one after the other, SECONDS each (default 60), single process.
#
#   adapters/fuzz/run.sh [SECONDS] [TARGET...]      # default: every target
#
# Environment: FUZZ_SANITIZER (address | none; default address), FUZZ_ARGS (extra libFuzzer
# flags). The corpus of each target is fuzz/corpus/<target>/ (git-ignored), started from the
# committed seeds in fuzz/seeds/<target>/; crashes land in fuzz/artifacts/<target>/, logs in
# fuzz/artifacts/<target>.log. Exits non-zero when any target found a crash (or did not build).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2 # the adapter crate: `cargo fuzz` looks for ./fuzz
seconds=${1:-60}
shift $(($# > 0 ? 1 : 0))
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=(email slack telegram whatsapp twilio_sms webhook signature)
fi
sanitizer=${FUZZ_SANITIZER:-address}

# Stable Rust only: let cargo-fuzz pass its nightly-only flags (-Zsanitizer=…).
export RUSTC_BOOTSTRAP=1

failed=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    cp -n "fuzz/seeds/$target"/* "fuzz/corpus/$target/" 2>/dev/null || true
    # MIME nesting needs room; JSON and form bodies are fine with libFuzzer's own limit.
    max_len=()
    [ "$target" = email ] && max_len=(-max_len=32768)
    log="fuzz/artifacts/$target.log"
    echo "=== $target: ${seconds}s (sanitizer: $sanitizer, log: adapters/$log)"
    # No -jobs/-workers: those make libFuzzer fork workers that log to ./fuzz-N.log; one plain
    # process is the same as -jobs=1.
    # shellcheck disable=SC2086
    cargo fuzz run --sanitizer "$sanitizer" "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -report_slow_units=2 \
        -print_final_stats=1 "${max_len[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1
    status=$?
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1
    grep -E '^stat::(number_of_executed_units|slowest_unit_time_sec|peak_rss_mb)' "$log"
    if [ $status -ne 0 ]; then
        echo "!!! $target failed (exit $status):"
        grep -E -A3 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY|Test unit written' "$log" | head -30
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all targets ran ${seconds}s without a crash"
