#!/usr/bin/env bash
# Build the local Python base image that docker targets use by default — without a
# registry: debootstrap a minimal Debian with Python 3 and pip from the Debian mirror
# apt already uses, then `docker import` it.
#
#   scripts/docker-base-image.sh                 # image: jupyter-compute/python3:base
#   JC_DOCKER_BASE_IMAGE=name:tag scripts/docker-base-image.sh
#
# Settings (environment): JC_DOCKER_BASE_IMAGE (image name), DEBIAN_SUITE (default:
# this machine's codename, else bookworm), DEBIAN_MIRROR (default: read from apt's
# sources). The first build takes ~70-90 s; when the image exists it does nothing.
# Needs root (debootstrap chroots), debootstrap and a running engine
# (scripts/start-dockerd.sh).
set -euo pipefail

IMAGE="${JC_DOCKER_BASE_IMAGE:-jupyter-compute/python3:base}"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi

# One builder at a time: parallel test sessions would otherwise both debootstrap.
exec 9>"${TMPDIR:-/tmp}/jupyter-compute-base-image.lock"
flock 9
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
DEBOOTSTRAP="$(command -v debootstrap || echo /usr/sbin/debootstrap)"
if [ ! -x "$DEBOOTSTRAP" ]; then
    echo "debootstrap is not installed: run scripts/install-test-deps.sh" >&2
    exit 1
fi

suite="${DEBIAN_SUITE:-}"
if [ -z "$suite" ] && [ -r /etc/os-release ]; then
    suite="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
fi
suite="${suite:-bookworm}"

# The mirror apt already uses for $suite: deb822 *.sources stanzas first, then
# one-line "deb URI SUITE …" entries; security and disabled files are skipped.
find_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v suite="$suite" '
            function flush() { if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uri != "") { print uri; found = 1; exit } types = suites = uri = "" }
            /^[[:space:]]*$/ { flush(); next }
            /^Types:/  { sub(/^Types:[[:space:]]*/, "");  types = $0 }
            /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
            /^URIs:/   { sub(/^URIs:[[:space:]]*/, "");   uri = $1 }
            END { if (!found) flush() }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk -v suite="$suite" '$1 == "deb" {
            i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if ($(i + 1) == suite) { print $i; exit } }' "$f"
    done
}
mirror="${DEBIAN_MIRROR:-$(find_mirror | head -n 1)}"
mirror="${mirror:-http://deb.debian.org/debian}"

build="$(mktemp -d "${TMPDIR:-/var/tmp}/jc-base-image.XXXXXX")"
cleanup() { $SUDO rm -rf --one-file-system "$build"; }
trap cleanup EXIT
rootfs="$build/rootfs"

echo "building $IMAGE: debootstrap $suite from $mirror (~70-90 s, once per machine)" >&2
started=$SECONDS
# python3-pip: a --requirements target installs packages into the image with pip.
if ! $SUDO "$DEBOOTSTRAP" --variant=minbase \
        --include=python3-minimal,python3,python3-pip \
        "$suite" "$rootfs" "$mirror" >"$build/debootstrap.log" 2>&1; then
    echo "debootstrap failed; last lines of its log:" >&2
    tail -n 15 "$build/debootstrap.log" >&2
    tail -n 15 "$rootfs/debootstrap/debootstrap.log" >&2 2>/dev/null || true
    exit 1
fi
# Package caches are dead weight in an image.
$SUDO rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*

$SUDO tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "jupyter_compute base image: Debian $suite minbase + python3 from $mirror" \
    - "$IMAGE" >/dev/null
echo "built $IMAGE in $((SECONDS - started)) s" >&2
