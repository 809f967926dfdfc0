#!/usr/bin/env bash
# Start a Docker engine for the tests and the benchmark, unless one already answers.
#
#   scripts/start-dockerd.sh            # log: $DOCKERD_LOG (default /var/log/jupyter-compute-dockerd.log)
#
# The engine leaves the machine's network alone: no iptables rules, no docker0
# bridge, no ip_forward change, so containers run with network "none" or "host".
# Nothing here starts systemd units: the CI machines have no systemd.
# Idempotent: when `docker info` already succeeds it does nothing (~0.1 s).
set -euo pipefail

LOG="${DOCKERD_LOG:-/var/log/jupyter-compute-dockerd.log}"
WAIT_SECONDS="${DOCKERD_WAIT_SECONDS:-30}"

SOCKET=/var/run/docker.sock
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

ready() { docker info >/dev/null 2>&1; }

# tests/test_ssh_docker.py reaches this engine as an unprivileged SSH user in the
# `docker` group. dockerd gives its socket to that group only if the group existed when
# the engine started; if it was made later (the test fixture runs `groupadd -f docker`),
# hand the socket to it now. Nothing changes when the group already owns it.
socket_group() {
    if [ -S "$SOCKET" ] && getent group docker >/dev/null 2>&1 \
        && [ "$(stat -c %G "$SOCKET")" != docker ]; then
        $SUDO chgrp docker "$SOCKET" && $SUDO chmod g+rw "$SOCKET"
    fi
}

if ready; then
    socket_group
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
    echo "dockerd is not installed: run scripts/install-test-deps.sh (apt-get install docker.io)" >&2
    exit 1
fi

# A socket left by an engine that died would make the new one refuse to start.
if [ -S "$SOCKET" ] && ! pgrep -x dockerd >/dev/null 2>&1; then
    $SUDO rm -f "$SOCKET"
fi
if ! pgrep -x dockerd >/dev/null 2>&1; then
    mkdir -p "$(dirname "$LOG")"
    # setsid: the engine outlives this shell and the test session that called it.
    $SUDO setsid nohup dockerd --iptables=false --ip6tables=false --ip-forward=false \
        --ip-masq=false --bridge=none >>"$LOG" 2>&1 </dev/null &
fi

for _ in $(seq 1 $((WAIT_SECONDS * 10))); do
    if ready; then
        socket_group
        exit 0
    fi
    sleep 0.1
done
echo "dockerd did not become ready within ${WAIT_SECONDS}s; see $LOG:" >&2
tail -n 5 "$LOG" >&2 || true
exit 1
