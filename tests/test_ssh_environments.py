"""Environments on an ssh target: a real sshd on loopback, built by the remote agent.

The SSH user's host has no uv of its own (none on its PATH nor in its Python), so
these builds take the pip fallback unless a uv is shipped; the log names which ran.
Each test has its own remote workdir, so its own ``envs/``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_compute import api

import sshd
from conftest import Project

Server = sshd.Login

USES = "import sys, six\nprint('six', six.__version__, 'prefix', sys.prefix)\n" \
       "from jupyter_compute.tracking import get_run\nget_run().log('ok', 1)\n"


@pytest.fixture(scope="module")
def server() -> Iterator[sshd.SSHServer]:
    reason = sshd.unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    sshd.ensure_user(sshd.USER)
    root = Path(tempfile.mkdtemp(prefix="jc-sshd-env-"))
    root.chmod(0o755)  # sshd reads the authorized keys as the user
    key = sshd.make_key(root / "id_good")
    with sshd.SSHServer(root / "srv", "127.0.0.6") as srv:
        srv.authorize(sshd.USER, key)
        srv.start()
        srv.test_key = key  # type: ignore[attr-defined]
        yield srv
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def host(server: sshd.SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[Server]:
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no known_hosts or keys of the user
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    workdir = f"jc-env-test-{os.getpid()}-{tmp_path.name}"
    yield Server(server, server.test_key, f"~/{workdir}")  # type: ignore[attr-defined]
    shutil.rmtree(remote_home() / workdir, ignore_errors=True)


def remote_home() -> Path:
    return Path(os.path.expanduser(f"~{sshd.USER}"))


def remote_envs(host: Server) -> list[str]:
    folder = remote_home() / host.workdir[2:] / "envs"
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and len(p.name) == 16) \
        if folder.is_dir() else []


def test_each_source_builds_on_the_host_and_is_reused(project: Project, host: Server) -> None:
    api.attach("vm", "ssh", **host.options())
    project.write("requirements.txt", "six\n")
    project.write("pyproject.toml", '[project]\nname = "p"\nversion = "1"\n'
                                    'dependencies = ["six"]\n'
                                    '[project.optional-dependencies]\nnet = ["idna"]\n')
    project.write("environment.yml", "dependencies:\n  - python=3.11\n  - six=1.17\n"
                                     "  - pip:\n    - idna\n")
    project.write("uses.py", USES)
    logs = {}
    for name, env in (("requirements", {"requirements": "requirements.txt"}),
                      ("pyproject", "pyproject.toml[net]"),
                      ("conda_file", "environment.yml")):
        run = api.submit("uses.py", target="vm", environment=env)
        assert run.wait(timeout=300).value == "Completed", (name, run.log())
        logs[name] = run.log()
        assert "building environment" in logs[name] and "six 1.17" in logs[name]
        assert "with pip (no uv on this host)" in logs[name] or "with uv" in logs[name]
    assert len(remote_envs(host)) == 3
    assert f"/{host.workdir[2:]}/envs/" in logs["conda_file"]
    again = api.submit("uses.py", target="vm", environment="environment.yml")
    assert again.wait(timeout=120).value == "Completed", again.log()
    assert "reusing environment" in again.log() and "building" not in again.log()
    # python: an interpreter of the host, by path; nothing is built for it
    project.write("which.py", "import sys\nprint('exe', sys.executable)\n")
    run = api.submit("which.py", target="vm", python="/usr/bin/python3")
    assert run.wait(timeout=120).value == "Completed", run.log()
    assert "exe /usr/bin/python3" in run.log()
    listed = api.environments("vm", workspace=project.root)
    assert sorted(e["source"] for e in listed) == [
        "conda_file environment.yml", "pyproject pyproject.toml[net]",
        "requirements requirements.txt"]
    assert all(e["runs"] == 0 and e["bytes"] > 0 for e in listed)
    out = project.cli("envs", "--target", "vm", "--prune")
    assert out.returncode == 0 and "removed 3 environments" in out.stderr, out.stderr
    assert remote_envs(host) == []


def test_concurrent_submits_build_once_on_the_host(project: Project, host: Server) -> None:
    api.attach("vm", "ssh", **host.options())
    project.write("requirements.txt", "six\n")
    project.write("uses.py", USES)
    runs: list = []
    barrier = threading.Barrier(2)

    def submit() -> None:
        barrier.wait()
        runs.append(api.submit("uses.py", target="vm", requirements="requirements.txt"))

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(runs) == 2
    for run in runs:
        assert run.wait(timeout=300).value == "Completed", run.log()
    logs = [run.log() for run in runs]
    assert sum("building environment" in log for log in logs) == 1, logs
    key, = remote_envs(host)
    other = next(log for log in logs if "building environment" not in log)
    assert "reusing environment" in other
    if "with pip" in "".join(logs):  # seconds long: the second run arrives during it
        assert f"waiting for the build of environment {key}" in other


def test_bad_environments_on_the_host_are_one_line(project: Project, host: Server) -> None:
    api.attach("vm", "ssh", **host.options())
    project.write("uses.py", USES)
    project.write("requirements.txt", "six\njc-nothing-here-xyz==1.0\n")
    run = api.submit("uses.py", target="vm", requirements="requirements.txt")
    assert run.wait(timeout=300).value == "Failed"
    assert run.record.error == (
        "environment: package 'jc-nothing-here-xyz' (from requirements requirements.txt) "
        "was not found on the package index; fix its name or version, or remove it")
    assert remote_envs(host) == []
    project.write("environment.yml", "dependencies:\n  - python=3.99\n  - six\n")
    run = api.submit("uses.py", target="vm", environment="environment.yml")
    assert run.wait(timeout=120).value == "Failed"
    assert run.record.error.startswith("environment: no Python 3.99 on this host"), \
        run.record.error
    out = project.cli("submit", "uses.py", "--target", "vm", "--requirements", "nope.txt")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "requirements file 'nope.txt' does not exist" in out.stderr
    assert len(json.loads(project.cli("runs", "--json").stdout)) == 2  # not a third
