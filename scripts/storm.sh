#!/usr/bin/env bash
# The kill storm of issue 9 (acceptance 4), by hand: KILLS (default 100)
# `kill -9`s of the release callbackd at random moments while sipp callers
# register callbacks, each keying its own number, the engine restarted at
# once on the same store; then the checks of tests/storm.rs (every caller who
# heard "registered" has its row, no row holds a number its caller did not
# key, none stored twice, integrity_check ok, no call counted a digit its
# caller never sent) and the figures.
# Usage: scripts/storm.sh [KILLS] [SEED]
#   CALLBACKD_BIN=path/to/callbackd runs the storm against another binary
#   (e.g. an older build, to see the defect).
# About 5 s per kill (100 kills: ~10 minutes). Loopback only; bounded by
# KILLS and sipp's -m. Needs sipp (scripts/install-test-tools.sh).
set -euo pipefail

kills=${1:-100}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export STORM_KILLS="$kills"
if [[ -n "${2:-}" ]]; then
    export STORM_SEED="$2"
fi
cargo build --release --bin callbackd
exec cargo test --release --test storm -- --nocapture --test-threads=1
