#!/usr/bin/env bash
# CI's fuzz smoke test (docs/FUZZING.md): every cargo-fuzz target runs for a few seconds
# (CAIRN_FUZZ_SECONDS, default 20) on a copy of its committed corpus, with the nightly
# toolchain. Any crash fails the run; the crashing input is printed and kept under
# fuzz/artifacts/. Skipped, with a note, when there is no nightly toolchain or cargo-fuzz can
# neither be found nor installed. Fuzz builds go to CAIRN_FUZZ_TARGET_DIR (default: a cache
# outside the checkout, so a machine's second run builds incrementally).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${CAIRN_FUZZ_SECONDS:-20}
target_dir=${CAIRN_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cairn-fuzz-target}

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz smoke skipped: no nightly toolchain"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found; installing it (about a minute)"
    if ! cargo install cargo-fuzz --locked --quiet; then
        echo "fuzz smoke skipped: cargo-fuzz not installed"
        exit 0
    fi
fi
cargo +nightly fuzz build --target-dir "$target_dir"
for target in $(cargo +nightly fuzz list); do
    # New inputs go to a scratch copy, so the checkout's corpus stays as committed.
    scratch=$(mktemp -d)
    cp corpus/"$target"/* "$scratch"/
    echo "fuzz smoke: $target for ${seconds}s on $(ls "$scratch" | wc -l) corpus files"
    log="$scratch.log"
    status=0
    cargo +nightly fuzz run --target-dir "$target_dir" "$target" "$scratch" -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)' "$log" || true
    rm -rf "$scratch"
    if [ "$status" -ne 0 ]; then
        tail -n 80 "$log"
        echo "fuzz smoke: $target FAILED (exit $status); the input is under fuzz/artifacts/$target/"
        exit 1
    fi
    rm -f "$log"
done
