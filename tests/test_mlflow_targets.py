"""An unchanged MLflow script records into its run on the ssh and docker targets too
(real sshd on loopback, real dockerd): the endpoint runs beside the script there.

Where the client comes from: on ssh, the test user's system Python (3.11, as this
venv's) is given this venv's site-packages on PYTHONPATH, which is quick; in docker,
a requirements image with ``mlflow-skinny`` is built once (cached on the engine)."""

from __future__ import annotations

import json
import os
import shutil
import site
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_mlflow import MLFLOW_SCRIPT, check_recorded

from jupyter_compute import api

import dockerd
import sshd
from conftest import Project

pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def ssh_host() -> Iterator[sshd.Login]:
    reason = sshd.unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="jc-sshd-mlflow-"))
    root.chmod(0o755)  # sshd reads the authorized keys as the user
    sshd.ensure_user(sshd.USER)
    key = sshd.make_key(root / "id")
    with sshd.SSHServer(root / "a", "127.0.0.2") as server:
        server.authorize(sshd.USER, key)
        server.start()
        workdir = f"jc-mlflow-{os.getpid()}"
        yield sshd.Login(server, key, f"~/{workdir}")
        shutil.rmtree(Path(os.path.expanduser(f"~{sshd.USER}")) / workdir, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


def _shown(project: Project, run_id: str) -> tuple[dict, dict]:
    shown = project.show(run_id)
    metrics = json.loads(project.cli("metrics", run_id, "--json").stdout)
    return shown, metrics


def test_unchanged_mlflow_script_on_ssh(project: Project, ssh_host: sshd.Login,
                                        tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # not this user's known_hosts
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    project.write("train.py", MLFLOW_SCRIPT)
    api.attach("vm", "ssh", workspace=project.root, python="/usr/bin/python3",
               **ssh_host.options())
    packages = os.pathsep.join(site.getsitepackages())
    run = api.submit("train.py", target="vm", workspace=project.root,
                     environment_variables={"PYTHONPATH": packages,
                                            "MPLCONFIGDIR": "/tmp/jc-mlflow-mpl"})
    run.wait(timeout=240)
    assert run.status().value == "Completed", run.log()[-3000:]
    check_recorded(*_shown(project, run.id))


def test_unchanged_mlflow_script_in_docker(project: Project) -> None:
    reason = dockerd.unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    dockerd.ensure()
    project.write("requirements.txt", "mlflow-skinny\n")
    project.write("train.py", MLFLOW_SCRIPT.replace(
        "import matplotlib\nmatplotlib.use(\"Agg\")\nimport matplotlib.pyplot as plt\n", "")
        .replace("    fig = plt.figure()\n    plt.plot([1, 2, 3])\n"
                 "    mlflow.log_figure(fig, \"curve.png\")\n",
                 "    mlflow.log_text(\"<svg/>\", \"curve.png\")\n"))
    out = project.cli("attach", "box", "--type", "docker", "--requirements", "requirements.txt",
                      timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    try:
        out = project.cli("submit", "train.py", "--target", "box", "--wait", timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        run_id = out.stderr.split()[1]
        check_recorded(*_shown(project, run_id))
    finally:
        dockerd.remove_containers(str(project.root))
