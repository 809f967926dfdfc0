"""A ``kernel`` environment on an SSH host that reaches no package index, from shipped wheels.

The host is a real sshd in a network namespace of its own (``sshd.Island``): nothing
there has a route off the machine, and its sessions get ``PIP_INDEX_URL`` and
``UV_INDEX_URL`` pointing at a closed port, so neither pip nor uv there can reach any
index. The client is a small venv (``kernelvenv``: a few packages from the index and
one local package installed editable) running this checkout's CLI, as a notebook's
kernel would. Everything the environment needs must travel from here, once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernelvenv import kernel_cli, make_kernel_venv
from test_ssh import host, keys  # noqa: F401 - the session's online sshd, as fixtures

import sshd
from conftest import Project

NOWHERE = "http://127.0.0.1:9/simple"  # a closed port inside the namespace
SCRIPT = """
import jc_local_lib, six, yaml
print("greeting:", jc_local_lib.GREETING, flush=True)
print("yaml:", yaml.safe_dump({"six": six.__version__}).strip(), flush=True)
"""


class OfflineIsland(sshd.Island):
    """An island of its own (not the bastion tests'), reachable by root (this process)."""

    name = "jc-offline"
    veth, peer = "jcoffline0", "jcoffline1"
    subnet, here, address = "10.250.78.0/30", "10.250.78.1", "10.250.78.2"
    table, pref = "25078", "32001"


@pytest.fixture(scope="module")
def offline_host() -> Iterator[sshd.Login]:
    reason = sshd.unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="jc-offline-"))
    root.chmod(0o755)  # sshd reads the authorized keys as the user
    sshd.ensure_user(sshd.USER)
    key = sshd.make_key(root / "id_ed25519")
    workdir = f"jc-offline-{os.getpid()}"
    with OfflineIsland(user="root") as island, sshd.SSHServer(
            root / "sshd", island.address, netns=island.name,
            extra=(f"SetEnv PIP_INDEX_URL={NOWHERE} UV_INDEX_URL={NOWHERE} "
                   f"UV_DEFAULT_INDEX={NOWHERE}",)) as server:
        server.authorize(sshd.USER, key)
        server.start()
        yield sshd.Login(server, key, f"~/{workdir}")
    shutil.rmtree(Path(os.path.expanduser(f"~{sshd.USER}")) / workdir, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def kernel_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_kernel_venv(tmp_path_factory.mktemp("kernel"))


def client(python: Path, project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI of this checkout, run by the kernel venv's Python (the notebook's client)."""
    return kernel_cli(python, project.root, *args)


def on_host(login: sshd.Login, command: str) -> subprocess.CompletedProcess[str]:
    """``command`` as the test user inside the island, in a login like sshd's."""
    return subprocess.run(
        ["ip", "netns", "exec", OfflineIsland.name, "su", "-", sshd.USER, "-c",
         f"PIP_INDEX_URL={NOWHERE} UV_INDEX_URL={NOWHERE} {command}"],
        capture_output=True, text=True, timeout=120)


def test_kernel_environment_on_a_host_with_no_index(project: Project, kernel_python: Path,
                                                   offline_host: sshd.Login) -> None:
    # The host is truly offline: its pip finds nothing.
    tried = on_host(offline_host, "python3 -m pip download --no-deps --retries 0 --timeout 2 "
                                  "-d /tmp/jc-offline-probe six==1.17.0")
    assert tried.returncode != 0, tried.stdout

    project.write("job.py", SCRIPT)
    attach = client(kernel_python, project, "attach", "island", "--type", "ssh",
                    *offline_host.flags())
    assert attach.returncode == 0, attach.stderr

    first = client(kernel_python, project, "submit", "job.py", "--target", "island",
                   "--env", "kernel", "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "greeting: hello from the notebook's own code" in first.stdout
    assert "yaml: six: 1.17.0" in first.stdout
    facts = json.loads((project.root / ".jupyter_compute" / "hosts" / "island.json"
                        ).read_text())
    assert facts["online"] is False  # found out by asking the host
    run1 = first.stdout.strip().splitlines()[-1].split()[1]
    remote = Path(os.path.expanduser(f"~{sshd.USER}")) / offline_host.workdir[2:] / "runs"
    spec = json.loads((remote / run1 / "spec.json").read_text())
    env = spec["environment"]
    assert env["no_index"] is True
    wheels = env["wheels"]
    assert any(n.startswith("jc_local_lib-0.3.1-") for n in wheels)  # built here
    assert any(n.startswith("cryptography-") for n in wheels)        # downloaded here
    log = (project.run_dir(run1) / "output.log").read_text()
    assert "building environment" in log and "with uv" in log  # uv travelled too
    sent = json.loads((project.run_dir(run1) / "sync.json").read_text())
    assert sent["blobs_sent"] >= len(wheels) + 1  # the wheels, uv's and the script

    second = client(kernel_python, project, "submit", "job.py", "--target", "island",
                    "--env", "kernel", "--wait")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "greeting: hello from the notebook's own code" in second.stdout
    run2 = second.stdout.strip().splitlines()[-1].split()[1]
    assert "reusing environment" in (project.run_dir(run2) / "output.log").read_text()
    again = json.loads((project.run_dir(run2) / "sync.json").read_text())
    assert again["blobs_sent"] == 0 and again["blob_bytes"] == 0  # nothing travelled twice


def test_kernel_environment_on_a_host_with_an_index_sends_only_what_it_lacks(
        project: Project, kernel_python: Path, host: sshd.Login) -> None:  # noqa: F811
    project.write("job.py", SCRIPT)
    attach = client(kernel_python, project, "attach", "vm", "--type", "ssh", *host.flags())
    assert attach.returncode == 0, attach.stderr
    out = client(kernel_python, project, "submit", "job.py", "--target", "vm", "--env",
                 "kernel", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "greeting: hello from the notebook's own code" in out.stdout
    run = out.stdout.strip().splitlines()[-1].split()[1]
    remote = Path(os.path.expanduser(f"~{sshd.USER}")) / host.workdir[2:] / "runs" / run
    env = json.loads((remote / "spec.json").read_text())["environment"]
    # The index has the rest (paramiko, cryptography, …): only the local package travels.
    assert env["no_index"] is False
    assert [n.split("-")[0] for n in env["wheels"]] == ["jc_local_lib"]
    assert "cryptography" in " ".join(env["requirements"])


def test_attached_offline_a_host_installs_from_shipped_wheels_only(
        project: Project, host: sshd.Login) -> None:  # noqa: F811
    from jupyter_compute import api

    # The host has an index, but the target says it must not be used.
    api.attach("sealed", "ssh", **host.options(offline=True))
    project.write("requirements.txt", "six==1.17.0\n")
    project.write("usesix.py", "import six\nprint('six', six.__version__)\n")
    run = api.submit("usesix.py", target="sealed", requirements="requirements.txt")
    assert run.wait(timeout=300).value == "Completed", run.log()
    assert "six 1.17.0" in run.log()
    remote = Path(os.path.expanduser(f"~{sshd.USER}")) / host.workdir[2:] / "runs" / run.id
    env = json.loads((remote / "spec.json").read_text())["environment"]
    assert env["no_index"] is True and any(n.startswith("six-1.17.0-") for n in env["wheels"])
