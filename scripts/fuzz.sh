#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/Cargo.toml for SECONDS each (default
# 600: the release check), one after the other, and fails at the first
# crash, naming the target and the reproducer libFuzzer saved under
# fuzz/artifacts/<target>/. Prints each target's final coverage line.
# Usage: scripts/fuzz.sh [SECONDS]
# Needs cargo-fuzz (`cargo install cargo-fuzz`); runs on the stable
# toolchain through RUSTC_BOOTSTRAP=1. Seeds come from fuzz/corpus/<target>/
# (the seed-* files are committed; what the fuzzer adds there is ignored).
set -euo pipefail

seconds=${1:-600}
case $seconds in
'' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi
export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
logs=$(mktemp -d /tmp/callbackd-fuzz-XXXXXX)
echo "fuzzing $(echo "$targets" | wc -w) targets for ${seconds}s each; logs in $logs"
for target in $targets; do
    mkdir -p "fuzz/corpus/$target"
    log="$logs/$target.log"
    start=$(date +%s)
    if ! cargo fuzz run "$target" -- -max_total_time="$seconds" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "FAIL: $target crashed or failed to build; see $log and fuzz/artifacts/$target/" >&2
        exit 1
    fi
    initial=$(grep -m1 -E '^#[0-9]+[[:space:]]+INITED' "$log" | grep -oE 'cov: [0-9]+' || true)
    final=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n1 || true)
    echo "ok: $target ($(($(date +%s) - start))s) ${initial:+initial $initial; }${final:-no DONE line}"
done
echo "all targets ran ${seconds}s without a crash"
