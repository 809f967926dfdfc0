"""Docker on an SSH host: the agent in a container on the host's engine, reached over SSH.

A real sshd on 127.0.0.4 (tests/sshd.py) in front of the real dockerd of this machine
(tests/dockerd.py, with the base image ``jupyter-compute/python3:base``): the SSH
user is in the ``docker`` group, and every engine call goes through its ``docker`` CLI
over the target's SSH connection, as it would on a VM.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_compute import api
from jupyter_compute.exceptions import UsageError

import dockerd
import sshd
from conftest import CLI, Project

IMAGE = dockerd.IMAGE

TRAIN = """
import json, os, sys
from jupyter_compute.tracking import get_run
run = get_run()
for step in range(3):
    print(f"step {step}", flush=True)
    run.log("loss", 1.0 / (step + 1), step=step)
with open("outputs/result.txt", "w") as f:
    f.write("done")
with open("/proc/1/cmdline", "rb") as f:  # in the run's own container, the agent is PID 1
    pid1 = f.read()
with open("outputs/where.json", "w") as f:
    json.dump({"container": b"jupyter_compute.agent" in pid1, "uid": os.getuid(),
               "python": sys.executable, "argv": sys.argv[1:]}, f)
"""

SLEEP = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print("ready", flush=True)
time.sleep(300)
"""


class Engine(sshd.Login):
    """An sshd whose user may use this machine's Docker engine."""

    def remote_run(self, run_id: str) -> Path:
        """The run folder on the host (this machine), as the SSH user sees it."""
        return Path(os.path.expanduser(f"~{sshd.USER}")) / self.workdir[2:] / "runs" / run_id


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    reason = sshd.unavailable() or dockerd.unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    sshd.ensure_user(sshd.USER)
    # The SSH user may use the engine, as on a VM set up for it (idempotent).
    subprocess.run(["groupadd", "-f", "docker"], check=True)
    subprocess.run(["usermod", "-aG", "docker", sshd.USER], check=True)
    dockerd.ensure()
    root = Path(tempfile.mkdtemp(prefix="jc-sshd-docker-"))
    root.chmod(0o755)  # sshd reads the authorized keys as the user
    key = sshd.make_key(root / "id_good")
    workdir = f"jc-docker-test-{os.getpid()}"
    try:
        with sshd.SSHServer(root / "srv", "127.0.0.4") as server:
            server.authorize(sshd.USER, key)
            server.start()
            yield Engine(server, key, f"~/{workdir}")
    finally:
        for c in containers():
            subprocess.run(["docker", "rm", "-f", c], capture_output=True)
        shutil.rmtree(Path(os.path.expanduser(f"~{sshd.USER}")) / workdir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def containers(run_id: str | None = None) -> list[str]:
    """Names of the containers (any state) of ssh-docker runs, or of one run."""
    label = f"jupyter_compute.run={run_id}" if run_id else "jupyter_compute.run"
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label={label}", "--format",
                          "{{.Names}}"], capture_output=True, text=True, check=True).stdout
    return [n for n in out.split() if n.startswith("jc-")]


def cli(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=180,
                          cwd=project.root, stdin=subprocess.DEVNULL)


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def test_run_completes_in_a_container_with_metrics_and_outputs(project: Project,
                                                              engine: Engine) -> None:
    out = cli(project, "attach", "box", "--type", "ssh", *engine.flags(),
              "--docker-image", IMAGE, "--memory", "512m", "--cpus", "1")
    assert out.returncode == 0, out.stderr
    project.write("train.py", TRAIN)
    run = api.submit("train.py", target="box", arguments=["two words", "$(id)"])
    assert run.wait(timeout=120).value == "Completed", run.log()
    assert [m["value"] for m in run.metrics()["loss"]] == [1.0, 0.5, 1.0 / 3]
    assert "step 2" in run.log()
    assert {p.name for p in run.outputs()} == {"result.txt", "where.json"}
    where = json.loads((project.run_dir(run.id) / "outputs" / "where.json").read_text())
    user = pwd.getpwnam(sshd.USER)
    assert where["container"] and where["argv"] == ["two words", "$(id)"]
    assert where["uid"] == user.pw_uid  # the run's files stay the SSH user's
    assert where["python"].startswith("/usr/")  # the image's Python, not the host's venv
    result = engine.remote_run(run.id) / "outputs" / "result.txt"
    assert result.stat().st_uid == user.pw_uid
    assert containers(run.id) == []  # removed once the run was seen to end


def test_cancel_kills_the_container(project: Project, engine: Engine) -> None:
    api.attach("box", "ssh", **engine.options(docker_image=IMAGE))
    project.write("sleep.py", SLEEP)
    run = api.submit("sleep.py", target="box")
    for line in run.follow():
        if line.startswith("ready"):
            break
    assert containers(run.id) == [f"jc-{run.id}"]
    t0 = time.monotonic()
    out = cli(project, "cancel", run.id)
    assert out.returncode == 0 and "Canceled" in out.stdout, (out.stdout, out.stderr)
    while (left := containers(run.id)) and time.monotonic() - t0 < 10:
        run.status()
        time.sleep(0.1)
    assert left == [] and dockerd.run_processes(run.id) == []
    assert run.status().value == "Canceled"


def test_a_container_that_dies_makes_the_run_failed(project: Project, engine: Engine) -> None:
    api.attach("box", "ssh", **engine.options(docker_image=IMAGE))
    project.write("sleep.py", SLEEP)
    run = api.submit("sleep.py", target="box")
    for line in run.follow():
        if line.startswith("ready"):
            break
    # the engine loses it (an OOM kill, a host reboot): nothing is left to say it ended
    subprocess.run(["docker", "rm", "-f", f"jc-{run.id}"], check=True, capture_output=True)
    shown = json.loads(cli(project, "show", run.id, "--json").stdout)
    assert shown["status"] == "Failed" and "agent lost" in shown["error"], shown
    assert dockerd.run_processes(run.id) == []


def test_docker_image_in_run_yml_runs_in_a_container_on_a_process_target(
        project: Project, engine: Engine) -> None:
    api.attach("vm", "ssh", **engine.options())  # no --docker-image: runs are processes
    project.write("train.py", TRAIN)
    out = cli(project, "submit", "train.py", "--target", "vm", "--wait")
    assert out.returncode == 0, out.stderr
    plain = out.stderr.split()[1]
    where = json.loads((project.run_dir(plain) / "outputs" / "where.json").read_text())
    assert not where["container"]

    project.write("run.yml", f"script: train.py\ntarget: vm\nenvironment:\n"
                             f"  docker_image: {IMAGE}\n")
    out = cli(project, "submit", "--config", "run.yml", "--wait")
    assert out.returncode == 0, out.stderr
    boxed = out.stderr.split()[1]
    where = json.loads((project.run_dir(boxed) / "outputs" / "where.json").read_text())
    assert where["container"]
    assert "step 2" in out.stdout and containers(boxed) == []


def test_missing_image_is_one_line_before_the_run_starts(project: Project,
                                                        engine: Engine) -> None:
    before = set(containers())  # other tests' runs may still have theirs
    line = one_line_error(cli(project, "attach", "box", "--type", "ssh", *engine.flags(),
                              "--docker-image", "no-such/image:1"))
    assert "no-such/image:1" in line and "docker pull" in line and "docker load" in line
    api.attach("vm", "ssh", **engine.options())
    project.write("hello.py", "print('hello')\n")
    project.write("run.yml", "script: hello.py\ntarget: vm\nenvironment:\n"
                             "  docker_image: no-such/image:2\n")
    line = one_line_error(cli(project, "submit", "--config", "run.yml"))
    assert "no-such/image:2" in line and "docker pull" in line and "docker load" in line
    assert set(containers()) <= before  # none was created for the missing image


def test_bad_container_options_are_refused_at_attach(project: Project,
                                                     engine: Engine) -> None:
    for option, value in (("memory", "lots"), ("cpus", "-1"), ("gpus", "some"),
                          ("network", "a b")):
        with pytest.raises(UsageError, match=option):
            api.attach("box", "ssh", **engine.options(docker_image=IMAGE, **{option: value}))


def test_environment_image_is_built_once_on_the_hosts_engine_then_reused(
        project: Project, engine: Engine) -> None:
    api.attach("box", "ssh", **engine.options(docker_image=IMAGE))
    # Unique per session, so this session really builds.
    project.write("requirements.txt", f"six==1.17.0\n# session {os.urandom(4).hex()}\n")
    project.write("usesix.py", "import six, sys\nprint('six', six.__version__, sys.executable)\n")
    tags = []
    try:
        for _ in range(2):
            run = api.submit("usesix.py", target="box", requirements="requirements.txt")
            assert run.wait(timeout=300).value == "Completed", run.log()
            log = run.log()
            assert "six 1.17.0 /usr/bin/python3" in log  # in the image's own Python
            tag = re.search(r"image (jupyter-compute/requirements:\w+)", log).group(1)
            tags.append((tag, "building image" in log))
            assert containers(run.id) == []  # the builder and the run's container are gone
        (tag1, built1), (tag2, built2) = tags
        assert tag1 == tag2 and built1 and not built2  # built by the first run only
        assert "reusing it" in log
    finally:
        for tag in {t[0] for t in tags}:
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def test_a_host_without_index_builds_the_image_from_shipped_wheels(
        project: Project, engine: Engine) -> None:
    # Attached --offline: the host's engine must not reach an index for the build.
    api.attach("sealed", "ssh", **engine.options(docker_image=IMAGE, offline=True))
    project.write("requirements.txt", f"six==1.17.0\n# session {os.urandom(4).hex()}\n")
    project.write("usesix.py", "import six\nprint('six', six.__version__)\n")
    run = api.submit("usesix.py", target="sealed", requirements="requirements.txt")
    try:
        assert run.wait(timeout=300).value == "Completed", run.log()
        log = run.log()
        assert "six 1.17.0" in log and "building image" in log
        # pip took six from the wheels that came with the run, not from an index.
        assert "/tmp/jupyter-compute-build/wheels/six-1.17.0-" in log
    finally:
        tag = re.search(r"image (jupyter-compute/requirements:\w+)", run.log())
        if tag:
            subprocess.run(["docker", "rmi", "-f", tag.group(1)], capture_output=True)
