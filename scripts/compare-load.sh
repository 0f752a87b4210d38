#!/usr/bin/env bash
# Runs the same two sipp loads against two callbackd binaries, one after the
# other, on loopback, and prints the figures side by side:
#   answer-only: sipp's stock `uac` (INVITE, ACK, BYE at once) at RATE calls/s
#                for SECONDS; successful/failed calls, retransmissions, engine
#                CPU per call;
#   prompts:     CONCURRENT calls of 40 s each hearing the IVR's prompts (the
#                engine sends G.711 to sipp, which drops it); engine CPU per
#                call-second over a 10 s window once all are up, and RSS per call.
# Usage: scripts/compare-load.sh OLD_BIN NEW_BIN [RATE] [SECONDS] [CONCURRENT]
# Each binary is measured twice, alternating (A B A B), so drift on a busy
# machine shows. Needs sipp (scripts/install-test-tools.sh). Traffic goes to
# 127.0.0.1 only; every sipp run is bounded by -m.
set -euo pipefail

old=${1:?usage: $0 OLD_BIN NEW_BIN [RATE] [SECONDS] [CONCURRENT]}
new=${2:?usage: $0 OLD_BIN NEW_BIN [RATE] [SECONDS] [CONCURRENT]}
rate=${3:-1000}
seconds=${4:-10}
concurrent=${5:-1000}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/callbackd-load-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
hz=$(getconf CLK_TCK)

config() {
    cat >"$work/load.toml" <<EOF
[sip]
bind = "127.0.0.1:5060"
[rtp]
port_min = 20000
port_max = 29999
[call]
max_calls = 4000
max_duration_s = 120
[log]
level = "warn"
[api]
enabled = false
[store]
path = "$work/load.sqlite"
[prompts]
dir = "$root/prompts"
EOF
}

# CPU ticks (user + system) of a process.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

start_engine() {
    rm -f "$work"/load.sqlite*
    "$1" --config "$work/load.toml" >"$work/engine.log" 2>&1 &
    engine=$!
    for _ in $(seq 100); do
        if ss -Hlun 'sport = :5060' | grep -q 5060; then return; fi
        sleep 0.1 # waiting for the listener (bounded: 10 s)
    done
    echo "engine did not start: $(cat "$work/engine.log")" >&2
    exit 1
}

stop_engine() {
    kill "$engine" 2>/dev/null || true
    wait "$engine" 2>/dev/null || true
}

# The last row's value of a column of sipp's -trace_stat CSV.
stat_col() {
    awk -F';' -v col="$2" 'NR == 1 {for (i = 1; i <= NF; i++) if ($i == col) c = i; next}
        {v = $c} END {print v + 0}' "$1"
}

answer_only() {
    local bin=$1
    start_engine "$bin"
    local calls=$((rate * seconds))
    local t0
    t0=$(ticks "$engine")
    (cd "$work" && sipp -sn uac -i 127.0.0.1 -mi 127.0.0.1 -p 5071 -mp 40000 \
        -r "$rate" -m "$calls" -d 0 -nostdin -timeout $((seconds + 30))s \
        -trace_stat -stf "$work/ao.csv" -fd 1 127.0.0.1:5060 >/dev/null 2>&1) || true
    local t1
    t1=$(ticks "$engine")
    stop_engine
    local ok failed retrans
    ok=$(stat_col "$work/ao.csv" 'SuccessfulCall(C)')
    failed=$(stat_col "$work/ao.csv" 'FailedCall(C)')
    retrans=$(stat_col "$work/ao.csv" 'Retransmissions(C)')
    local us_per_call=$(((t1 - t0) * 1000000 / hz / (ok > 0 ? ok : 1)))
    printf 'answer-only %s/s\t%s\tok %s\tfailed %s\tretrans %s\tengine CPU %s µs/call\n' \
        "$rate" "$(basename "$(dirname "$(dirname "$(dirname "$bin")")")")" \
        "$ok" "$failed" "$retrans" "$us_per_call"
    rm -f "$work/ao.csv"
}

prompts() {
    local bin=$1
    start_engine "$bin"
    local idle_rss
    idle_rss=$(rss_kib "$engine")
    (cd "$work" && exec sipp -sn uac -i 127.0.0.1 -mi 127.0.0.1 -p 5071 -mp 40000 \
        -r 200 -l "$concurrent" -m "$concurrent" -d 40000 -nostdin -timeout 60s \
        127.0.0.1:5060 >/dev/null 2>&1) &
    local sipp_pid=$!
    # All calls are up after concurrent/200 s; measure 10 s after that.
    sleep $((concurrent / 200 + 2)) # ramp-up of the load itself
    local t0 r0
    t0=$(ticks "$engine")
    sleep 10 # the measurement window
    local t1
    t1=$(ticks "$engine")
    r0=$(rss_kib "$engine")
    kill "$sipp_pid" 2>/dev/null || true
    wait "$sipp_pid" 2>/dev/null || true
    stop_engine
    local us=$(((t1 - t0) * 1000000 / hz / 10 / concurrent))
    local kib=$(((r0 - idle_rss) / concurrent))
    printf 'prompts x%s\t%s\tengine CPU %s µs per call-second (%s%% of a core)\tRSS %s KiB/call\n' \
        "$concurrent" "$(basename "$(dirname "$(dirname "$(dirname "$bin")")")")" \
        "$us" "$(((t1 - t0) * 100 / hz / 10))" "$kib"
}

config
for round in 1 2; do
    for bin in "$old" "$new"; do
        answer_only "$bin"
    done
done
for round in 1 2; do
    for bin in "$old" "$new"; do
        prompts "$bin"
    done
done
