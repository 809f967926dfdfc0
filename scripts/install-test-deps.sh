#!/usr/bin/env bash
# Install the system packages the test suite talks to: an OpenSSH server, a Docker
# engine (+ debootstrap to build images without a registry), Chromium for the
# JupyterLab browser tests, iproute2 for network namespaces, and OpenMPI.
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
# The spark tests run a standalone Spark cluster (pyspark comes with the `test` extra).
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
# The SSH tests log in as an unprivileged user, who needs a system Python with venv.
[ -x /usr/bin/python3 ] || need+=(python3)
/usr/bin/python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)
# Multi-node runs of type mpi start their ranks under OpenMPI's mpirun (mpi4py from pip
# loads its libmpi).
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin)
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
