#!/usr/bin/env bash
# Install the system packages the test suite talks to: an OpenSSH server, a Docker
# engine (+ debootstrap to build images without a registry), Chromium for the
# JupyterLab browser tests, and iproute2 for network namespaces.
# Idempotent: it installs only what is missing, so a second run costs ~0.1 s.
# The services themselves are started by the tests' session fixtures (tests/*.py).
set -euo pipefail

need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need+=(iproute2)
command -v git >/dev/null 2>&1 || need+=(git)
# benchmarks/bench_ssh.py measures the ssh target's sync against rsync over the same link.
command -v rsync >/dev/null 2>&1 || need+=(rsync)
# The SSH tests log in as an unprivileged user, who needs a system Python with venv.
[ -x /usr/bin/python3 ] || need+=(python3)
/usr/bin/python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)
# The Slurm target's embedded cluster: munge, slurmctld, slurmd and the client commands.
command -v slurmctld >/dev/null 2>&1 || [ -x /usr/sbin/slurmctld ] || need+=(slurmctld)
command -v slurmd >/dev/null 2>&1 || [ -x /usr/sbin/slurmd ] || need+=(slurmd)
command -v sbatch >/dev/null 2>&1 || need+=(slurm-client)
command -v munged >/dev/null 2>&1 || [ -x /usr/sbin/munged ] || need+=(munge)

if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
