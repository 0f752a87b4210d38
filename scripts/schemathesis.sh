#!/usr/bin/env bash
# Issue 11 acceptance 6: schemathesis (PyPI) against the admin API's own
# document, GET /openapi.json, with an admin's bearer token. Fails on any
# 5xx (not_a_server_error), any answer that breaks its schema
# (response_schema_conformance), any status code the document does not list
# for the operation (status_code_conformance), a content type it does not
# list (content_type_conformance) and a 405 without a true Allow header.
#
# Usage: scripts/schemathesis.sh [MAX_EXAMPLES] [-- MORE SCHEMATHESIS OPTIONS]
#   MAX_EXAMPLES: test cases per operation and phase (default 30: about a
#   minutes on two cores; .ci/run uses the default). By hand, e.g.
#   `scripts/schemathesis.sh 200 -- --seed 42`.
#   CALLBACKD_BIN=path/to/callbackd tests another binary (default: the
#   release build, built when missing).
#
# The engine runs on loopback only (SIP, RTP and the API on 127.0.0.1) over a
# throwaway store in a temp directory, removed at the end. Mutating routes
# are exercised there like the others. Three run last, in a run of their
# own with a token of their own (with GET /v1/users/{name}, which shares
# their path): DELETE /v1/tokens/{id} (schemathesis
# generates small ids: it revokes the token in use), DELETE and PATCH
# /v1/users/{name} (its stateful phase takes names from GET /v1/users: it
# deletes or disables the user whose token is in use once another admin
# exists). In the main run they would turn everything after into a
# documented 401 — not a failure, but nothing tested.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

max_examples=30
if [[ $# -gt 0 && $1 != -- ]]; then
    max_examples=$1
    shift
fi
[[ ${1:-} == -- ]] && shift
extra=("$@")

# schemathesis pinned, in a venv kept between runs (installed once).
version=4.32.5
venv="${XDG_CACHE_HOME:-$HOME/.cache}/callbackd/schemathesis-$version"
st="$venv/bin/schemathesis"
if ! "$st" --version >/dev/null 2>&1; then
    echo "installing schemathesis $version into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

bin="${CALLBACKD_BIN:-target/release/callbackd}"
if [[ -z "${CALLBACKD_BIN:-}" ]]; then
    cargo build --release --bin callbackd
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/callbackd-schemathesis.XXXXXX")
pid=
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

# Free loopback ports: TCP for the API, UDP for SIP (the kernel's choice,
# released just before the engine binds them).
free_port() {
    python3 -c 'import socket,sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' "$1"
}
api_port=$(free_port tcp)
sip_port=$(free_port udp)

cat >"$dir/config.toml" <<EOF
[sip]
bind = "127.0.0.1:$sip_port"
transports = ["udp"]
[rtp]
port_min = 37000
port_max = 37099
[call]
max_calls = 10
[prompts]
dir = '$PWD/prompts'
[store]
path = "callbacks.sqlite"
[org]
blacklist = ["900"]
[api]
bind = "127.0.0.1:$api_port"
[[queues]]
id = "support"
[[queues]]
id = "sales"
# The document's example queue for PUT/PATCH/DELETE /v1/queues/{id}: the
# examples phase deletes it, the others keep serving.
[[queues]]
id = "closing"
[[agents]]
id = "alice"
uri = "sip:alice@127.0.0.1:5999"
queues = ["support"]
[[agents]]
id = "carol"
uri = "sip:carol@127.0.0.1:5999"
queues = ["sales"]
EOF

cli() { "$bin" --config "$dir/config.toml" "$@" 2>>"$dir/cli.log"; }
token=$(cli user add schemathesis --role admin)
revoke_token=$(cli user token schemathesis)
# A viewer and a unit for the account routes to find.
cli user add vic --role viewer >/dev/null

"$bin" --config "$dir/config.toml" run >"$dir/engine.log" 2>&1 &
pid=$!
api="http://127.0.0.1:$api_port"
python3 - "$api/readyz" <<'EOF'
import sys, time, urllib.request
deadline = time.monotonic() + 30
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
            if r.status == 200:
                break
    except Exception as e:
        last = e
    if time.monotonic() > deadline:
        sys.exit(f"the engine is not ready after 30 s: {last}")
    time.sleep(0.2)
EOF

checks=not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance,allow_header_conformance
run() {
    "$st" run "$api/openapi.json" \
        --checks "$checks" \
        --max-examples "$max_examples" \
        --workers 1 \
        --request-timeout 10 \
        --suppress-health-check all \
        --warnings off \
        --no-color \
        "$@" "${extra[@]}"
}

status=0
# The operations that can take away the token in use (see above).
last=(--include-path '/v1/tokens/{id}' --include-path '/v1/users/{name}')
echo "==> schemathesis: every operation but those that end its token ($max_examples examples)"
run -H "Authorization: Bearer $token" \
    --exclude-path '/v1/tokens/{id}' --exclude-path '/v1/users/{name}' || status=1
echo "==> schemathesis: /v1/tokens/{id} and /v1/users/{name}, with a token of their own"
run -H "Authorization: Bearer $revoke_token" "${last[@]}" || status=1

if grep -q "panicked" "$dir/engine.log"; then
    echo "the engine panicked:" >&2
    grep -A5 "panicked" "$dir/engine.log" >&2
    status=1
fi
if ! kill -0 "$pid" 2>/dev/null; then
    echo "the engine is gone:" >&2
    tail -20 "$dir/engine.log" >&2
    status=1
fi
exit "$status"
