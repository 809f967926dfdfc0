"""The slurm target through a login node: the tests' real sshd (``tests/sshd.py``) in
front of the session's embedded Slurm cluster. The login user is an unprivileged
account; its runs live in its home, and sbatch/squeue/scancel run there over SSH."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurmcluster import SlurmProject

from jupyter_compute import api
from jupyter_compute.protocol import RunStatus

import sshd

LOGIN = "hpc-login"


@pytest.fixture(scope="module")
def login(slurm_session: SlurmProject) -> Iterator[sshd.Login]:
    reason = sshd.unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="jc-sshd-slurm-"))
    root.chmod(0o755)  # sshd reads the authorized keys as the user
    sshd.ensure_user(sshd.USER)
    key = sshd.make_key(root / "id")
    with sshd.SSHServer(root / "a", "127.0.0.2") as server:
        server.authorize(sshd.USER, key)
        server.start()
        workdir = f"jc-slurm-{os.getpid()}"
        yield sshd.Login(server, key, f"~/{workdir}")
        shutil.rmtree(Path(os.path.expanduser(f"~{sshd.USER}")) / workdir, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def hpc_login(slurm_project: SlurmProject, login: sshd.Login, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[SlurmProject]:
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # not this user's known_hosts
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    conf = slurm_project.target().launcher.slurm_conf()
    api.attach(LOGIN, "slurm", workspace=slurm_project.root, replace=True,
               **login.options(slurm_conf=conf))
    yield slurm_project
    api.detach(LOGIN, workspace=slurm_project.root)


def test_runs_through_a_login_node(hpc_login: SlurmProject) -> None:
    p = hpc_login
    p.write("hello.py", "import getpass, os\nprint('user', getpass.getuser(), "
                        "'job', os.environ['SLURM_JOB_ID'], flush=True)\n")
    p.write("fails.py", "import sys\nsys.exit(4)\n")
    ok = api.submit("hello.py", target=LOGIN)
    bad = api.submit("fails.py", target=LOGIN)
    assert ok.wait(timeout=180) is RunStatus.COMPLETED, ok.record.error
    assert bad.wait(timeout=180) is RunStatus.FAILED and bad.record.exit_code == 4
    job = p.show(ok.id)["target_job"]
    assert f"user {sshd.USER} job {job['id']}" in ok.log()  # the login user's job
    assert job["state"] in ("COMPLETED", "COMPLETING")


def test_cancel_through_a_login_node_leaves_no_process(hpc_login: SlurmProject) -> None:
    p = hpc_login
    p.write("sleepy.py", "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n")
    run = api.submit("sleepy.py", target=LOGIN)
    deadline = time.monotonic() + 180
    while "sleeping" not in run.log():
        assert time.monotonic() < deadline and not run.status().is_terminal(), run.log()
        time.sleep(0.3)
    assert sshd.processes_of_run(sshd.USER, run.id)
    began = time.monotonic()
    run.cancel()
    while time.monotonic() - began < 5 and sshd.processes_of_run(sshd.USER, run.id):
        time.sleep(0.1)
    assert not sshd.processes_of_run(sshd.USER, run.id)
    assert run.wait(timeout=60) is RunStatus.CANCELED


def test_bad_partition_through_a_login_node(hpc_login: SlurmProject,
                                            login: sshd.Login) -> None:
    p = hpc_login
    conf = p.target().launcher.slurm_conf()
    api.attach("login-bad", "slurm", workspace=p.root,
               **login.options(slurm_conf=conf, partition="nosuch"))
    try:
        p.write("ok.py", "print('ran')\n")
        out = p.cli("submit", "ok.py", "--target", "login-bad")
        assert out.returncode != 0
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "invalid partition" in out.stderr.lower()
    finally:
        api.detach("login-bad", workspace=p.root)
