#!/usr/bin/env bash
# Installs the tools the tests use, and only those that are missing
# (Debian/Ubuntu; see TESTING.md):
#   sipp + its pcaps (sip-tester), tshark, sox, flite, baresip (a real
#   softphone for the IVR interop test; its aubridge/cons modules are in
#   baresip-core, which the baresip package pulls in), linphone-cli
#   (linphone-daemon, a second softphone), kamailio (with its dispatcher
#   and ctl modules and kamcmd, all in the one package), rtpengine
#   (userspace relay, the peer of scripts/bench-load) and, for the
#   behind-NAT test's network namespaces, iproute2 and nftables; python3
#   with venv and pip for scripts/schemathesis.sh (which installs
#   schemathesis itself, from PyPI, into a venv); chromium, node and npm
#   for the console's browser test, whose playwright-core (from npm, at
#   the version of tests/console/package-lock.json; it drives Debian's
#   /usr/bin/chromium and downloads no browser) `npm ci` installs into
#   tests/console/node_modules when it is missing.
# `apt-get update` runs once, and only when something has to be installed.
#
# tshark captures on the loopback interface: as root that just works; a
# non-root CI user needs dumpcap's capture capabilities (Debian's
# wireshark-common/install-setuid, plus membership of the wireshark group).
set -euo pipefail

packages=()
want() {
    local pkg=$1
    local p
    for p in "${packages[@]}"; do
        [[ $p == "$pkg" ]] && return
    done
    packages+=("$pkg")
}

command -v sipp >/dev/null || want sip-tester
[[ -f /usr/share/sip-tester/g711a.pcap ]] || want sip-tester
command -v tshark >/dev/null || want tshark
command -v sox >/dev/null || want sox
command -v flite >/dev/null || want flite
command -v baresip >/dev/null || want baresip
[[ -f /usr/lib/baresip/modules/aubridge.so ]] || want baresip-core
command -v linphone-daemon >/dev/null || want linphone-cli
command -v kamailio >/dev/null || want kamailio
command -v kamcmd >/dev/null || want kamailio
[[ -f /usr/lib/x86_64-linux-gnu/kamailio/modules/dispatcher.so ]] || want kamailio
command -v rtpengine >/dev/null || want rtpengine-daemon
command -v ip >/dev/null || want iproute2
command -v nft >/dev/null || want nftables
command -v python3 >/dev/null || want python3
python3 -c 'import ensurepip, venv' 2>/dev/null || want python3-venv
[[ -x /usr/bin/chromium ]] || want chromium
command -v node >/dev/null || want nodejs
command -v npm >/dev/null || want npm

# The console test's npm packages (after the Debian ones: npm may be new).
console_packages() {
    local dir
    dir="$(dirname "${BASH_SOURCE[0]}")/../tests/console"
    if [[ ! -d $dir/node_modules/playwright-core ]]; then
        echo "installing tests/console's npm packages (npm ci)"
        (cd "$dir" && npm ci --no-audit --no-fund)
    fi
}

if ((${#packages[@]} == 0)); then
    echo "test tools present: sipp, tshark, sox, flite, baresip, linphone-daemon, kamailio, rtpengine, ip, nft, python3 (venv), chromium, node, npm"
    console_packages
    exit 0
fi

sudo=()
if [[ $(id -u) != 0 ]]; then
    if ! command -v sudo >/dev/null; then
        echo "install-test-tools: need root (or sudo) to install: ${packages[*]}" >&2
        exit 1
    fi
    sudo=(sudo)
fi

echo "installing: ${packages[*]}"
# Non-interactive: tshark's package otherwise asks whether non-root users
# may capture.
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${packages[@]}"
console_packages
