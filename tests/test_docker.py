"""The docker target against a real Docker engine (tests/dockerd.py): nothing is mocked.

The session starts dockerd the project's way (no iptables, no bridge) and builds the
local base image once (~70 s on a new machine, cached after); every container a test
started is removed at the end. Containers run with network "none" unless a test asks
for "host"; no registry is contacted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernelvenv import kernel_cli, make_kernel_venv

from jupyter_compute import api  # noqa: E402
from jupyter_compute.exceptions import TargetError  # noqa: E402
from jupyter_compute.protocol import RunStatus  # noqa: E402
from jupyter_compute.targets.docker.images import dockerfile_tag  # noqa: E402

import dockerd
from conftest import Project

TRAIN = """
import json, os, sys
from jupyter_compute.tracking import get_run

def words(*paths):
    for path in paths:
        try:
            with open(path) as f:
                return f.read().split()
        except OSError:
            continue
    return None

run = get_run()
for step in range(3):
    print(f"step {step}", flush=True)
    run.log("loss", 1.0 / (step + 1), step=step)
print("to stderr", file=sys.stderr)
mem = words("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
cpu = words("/sys/fs/cgroup/cpu.max")
if cpu is None:
    v1 = ("/sys/fs/cgroup/cpu/", "/sys/fs/cgroup/cpu,cpuacct/")
    quota = words(*(d + "cpu.cfs_quota_us" for d in v1))
    period = words(*(d + "cpu.cfs_period_us" for d in v1))
    cpu = [quota[0], period[0]] if quota and period else None
shm = os.statvfs("/dev/shm")
facts = {
    "executable": sys.executable,
    "memory_limit": int(mem[0]) if mem and mem[0].isdigit() else None,
    "cpus": int(cpu[0]) / int(cpu[1]) if cpu and cpu[0].lstrip("-").isdigit() else None,
    "shm": shm.f_blocks * shm.f_frsize,
    "net": sorted(os.listdir("/sys/class/net")),
    "argv": sys.argv[1:],
    "cwd": os.getcwd(),
}
with open("outputs/facts.json", "w") as f:
    json.dump(facts, f)
"""


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The real engine, with the base image built; containers of the session removed after."""
    reason = dockerd.unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    dockerd.ensure()
    yield dockerd.client()
    dockerd.remove_containers(str(tmp_path_factory.getbasetemp()))


def _wait_for(predicate, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _ws(project: Project) -> Path:
    return project.root / ".jupyter_compute"


# -- runs ------------------------------------------------------------------------------


def test_cli_run_completes_in_the_image_with_its_limits(engine, project: Project) -> None:
    project.write("train.py", TRAIN)
    out = project.cli("attach", "box", "--type", "docker", "--memory", "256m", "--cpus", "1.5",
                      "--shm-size", "32m")
    assert out.returncode == 0, out.stderr
    assert "type: docker" in (_ws(project) / "targets.yml").read_text()

    out = project.cli("submit", "train.py", "--target", "box", "--wait", "--", "--epochs", "3")
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = re.search(r"submitted (\S+)", out.stderr).group(1)
    assert "step 2" in out.stdout and "to stderr" in out.stdout
    assert f"run {run_id} Completed" in out.stdout

    facts = json.loads((project.run_dir(run_id) / "outputs" / "facts.json").read_text())
    assert facts["executable"] == "/usr/bin/python3"  # the image's Python, not this venv's
    assert facts["memory_limit"] == 256 * 1024 ** 2  # the cgroup's limit is --memory
    assert facts["cpus"] == 1.5
    assert facts["shm"] == 32 * 1024 ** 2
    assert facts["net"] == ["lo"]  # network none: loopback only
    assert facts["argv"] == ["--epochs", "3"]
    assert facts["cwd"] == "/jc/run/workdir"

    metrics = json.loads(project.cli("metrics", run_id, "--json").stdout)
    assert [m["value"] for m in metrics["loss"]] == [1.0, 0.5, 1 / 3]
    shown = project.show(run_id)
    assert shown["status"] == "Completed" and shown["exit_code"] == 0
    assert not dockerd.containers(str(project.root), run_id)  # removed after the run
    assert not dockerd.run_processes(run_id)


def test_api_run_follows_logs_and_keeps_container_when_asked(engine, project: Project) -> None:
    project.write("train.py", TRAIN)
    api.attach("keeper", "docker", workspace=project.root, keep_container=True)
    run = api.submit("train.py", target="keeper", workspace=project.root)
    lines = list(run.follow())
    assert run.status() is RunStatus.COMPLETED
    assert [line for line in lines if line.startswith("step ")] == \
        ["step 0\n", "step 1\n", "step 2\n"]
    assert [p.name for p in run.outputs()] == ["facts.json"]
    assert run.metrics()["loss"][-1]["value"] == pytest.approx(1 / 3)

    kept = dockerd.containers(str(project.root), run.id)
    assert len(kept) == 1
    container = engine.containers.get(kept[0].id)
    assert container.status == "exited"
    assert container.labels["jupyter_compute.run"] == run.id
    assert container.labels["jupyter_compute.target"] == "keeper"
    assert container.attrs["HostConfig"]["NetworkMode"] == "none"
    container.remove(v=True)


def test_container_of_a_run_nobody_watched_is_removed_by_the_next_submit(
        engine, project: Project) -> None:
    project.write("hello.py", "print('hello')\n")
    assert project.cli("attach", "box", "--type", "docker").returncode == 0
    unwatched = project.submit("hello.py", "--target", "box")  # the CLI exits at once
    status = project.run_dir(unwatched) / "status.json"
    _wait_for(lambda: json.loads(status.read_text())["status"] == "Completed",
              what="the unwatched run to complete")
    _wait_for(lambda: [c.status for c in dockerd.containers(str(project.root), unwatched)] ==
              ["exited"], what="its container to exit")
    project.submit("hello.py", "--target", "box")
    assert not dockerd.containers(str(project.root), unwatched)
    assert project.show(unwatched)["status"] == "Completed"


def test_one_target_object_serves_submits_from_many_threads(engine, project: Project) -> None:
    # What one submission knows travels in its context, never on the target: a server
    # or a kernel's widgets share one object across threads.
    from concurrent.futures import ThreadPoolExecutor

    from jupyter_compute.runs import Run
    from jupyter_compute.runspec import RunSpec

    project.write("echo.py", "import sys\nprint('argument', sys.argv[1])\n")
    target = api.attach("shared", "docker", workspace=project.root, memory="128m")
    specs = [RunSpec(script="echo.py", source_dir=project.root, target="shared",
                     arguments=[f"n{i}"]) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda spec: Run.submit(target, spec), specs))
        assert list(pool.map(lambda r: r.wait(timeout=120), runs)) == [RunStatus.COMPLETED] * 4
    for i, run in enumerate(runs):
        assert f"argument n{i}\n" in run.log()
        assert not dockerd.containers(str(project.root), run.id)


def test_snapshot_is_mounted_not_copied_and_scripts_cannot_change_it(engine,
                                                                     project: Project) -> None:
    project.write("data.txt", "original\n")
    project.write("helper.txt", "help\n")
    project.write("mutate.py", """
        import os
        print("saw", open("data.txt").read().strip(), flush=True)
        with open("data.txt", "w") as f:  # in place: the same inode, were it a hard link
            f.write("changed by the script\\n")
        os.remove("helper.txt")
        with open("new.txt", "w") as f:
            f.write("new\\n")
    """)
    api.attach("box", "docker", workspace=project.root)
    runs = [api.submit("mutate.py", target="box", workspace=project.root) for _ in range(2)]
    for run in runs:
        assert run.wait(timeout=60) is RunStatus.COMPLETED, run.log()
        assert "saw original" in run.log()  # every run starts from the snapshot as taken

    snap_id = runs[0].record.snapshot["id"]
    assert runs[1].record.snapshot["id"] == snap_id
    lower = _ws(project) / "docker" / "snapshots" / snap_id
    manifest = json.loads((_ws(project) / "snapshots" / f"{snap_id}.json").read_text())
    for rel, (digest, _size, _mode) in manifest["files"].items():
        blob = _ws(project) / "blobs" / "sha256" / digest[:2] / digest
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == digest  # store intact
        assert (lower / rel).read_bytes() == blob.read_bytes()
        assert os.stat(lower / rel).st_ino == os.stat(blob).st_ino  # a link, not a copy
    assert (project.root / "data.txt").read_text() == "original\n"

    upper = project.run_dir(runs[0].id) / ".docker" / "upper"  # what the script changed
    assert (upper / "data.txt").read_text() == "changed by the script\n"
    assert (upper / "new.txt").read_text() == "new\n"
    assert stat.S_ISCHR(os.lstat(upper / "helper.txt").st_mode)  # overlay's deletion mark


def test_workspace_path_unfit_for_overlay_gets_the_snapshot_copied(
        engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "with,comma"  # a comma cannot be passed in overlay mount options
    (root / ".jupyter_compute").mkdir(parents=True)
    monkeypatch.chdir(root)
    project = Project(root)
    project.write("train.py", TRAIN)
    api.attach("box", "docker", workspace=root)
    run = api.submit("train.py", target="box", workspace=root)
    assert run.wait(timeout=60) is RunStatus.COMPLETED, run.log()
    assert (project.run_dir(run.id) / "workdir" / "train.py").is_file()
    assert json.loads((project.run_dir(run.id) / "outputs" / "facts.json").read_text())[
        "cwd"] == "/jc/run/workdir"


def test_network_host_when_asked(engine, project: Project) -> None:
    project.write("train.py", TRAIN)
    api.attach("hostnet", "docker", workspace=project.root, network="host")
    run = api.submit("train.py", target="hostnet", workspace=project.root)
    assert run.wait(timeout=60) is RunStatus.COMPLETED, run.log()
    net = json.loads((project.run_dir(run.id) / "outputs" / "facts.json").read_text())["net"]
    assert sorted(net) == sorted(os.listdir("/sys/class/net"))


def test_requirements_image_is_built_once_then_reused(engine, project: Project) -> None:
    # Unique per session, so this session really builds; targets.yml written by hand
    # (no attach), so the first submit is the one that builds.
    project.write("requirements.txt", f"six==1.17.0\n# test session {os.urandom(4).hex()}\n")
    project.write("usesix.py", "import six, sys\nprint('six', six.__version__, sys.executable)\n")
    (_ws(project) / "targets.yml").write_text(
        "targets:\n  pinned:\n    type: docker\n    requirements: requirements.txt\n")
    timings, tags = [], []
    try:
        for _ in range(2):
            started = time.monotonic()
            run = api.submit("usesix.py", target="pinned", workspace=project.root)
            assert run.wait(timeout=300) is RunStatus.COMPLETED, run.log()
            timings.append(time.monotonic() - started)
            log = run.log()
            assert "six 1.17.0 /usr/bin/python3" in log
            tag = re.search(r"image (jupyter-compute/requirements:\w+)", log).group(1)
            tags.append((tag, "building image" in log, engine.images.get(tag).id))
        (tag1, built1, id1), (tag2, built2, id2) = tags
        assert tag1 == tag2 and id1 == id2  # the same image, not a rebuild
        assert built1 and not built2  # built by the first submit only
        print(f"\nrequirements image {tag1}: first submit (build) {timings[0]:.1f}s, "
              f"second (reuse) {timings[1]:.1f}s")
        assert timings[1] < timings[0]

        # A run's own environment.requirements (a file in its snapshot) builds the same way.
        api.attach("plain", "docker", workspace=project.root)
        project.write("run.yml", "script: usesix.py\ntarget: plain\nenvironment:\n"
                                 "  requirements: requirements.txt\n")
        run = api.submit(config=project.root / "run.yml", workspace=project.root)
        assert run.wait(timeout=300) is RunStatus.COMPLETED, run.log()
        log = run.log()
        assert "six 1.17.0" in log and "building image" in log
        tags.append((re.search(r"image (jupyter-compute/requirements:\w+)", log).group(1),
                     True, ""))
    finally:
        for tag in {t[0] for t in tags}:
            engine.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def docker_kernel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A notebook's client venv (``kernelvenv``) that can reach the engine (docker SDK);
    no SSH client (paramiko, cryptography): fewer packages for the image to install."""
    return make_kernel_venv(tmp_path_factory.mktemp("kernel"), extra=("docker",),
                            packages=("pyyaml", "pathspec", "six==1.17.0"))


def test_kernel_environment_image_is_built_once_then_reused(engine, project: Project,
                                                             docker_kernel: Path) -> None:
    # This session's own local package content, so this session really builds.
    module = docker_kernel.parents[2] / "src" / "jc_local_lib" / "__init__.py"
    marker = os.urandom(4).hex()
    module.write_text(f"GREETING = 'hello from session {marker}'\n")
    project.write("greet.py", "import jc_local_lib, docker, sys\nprint(jc_local_lib."
                              "GREETING, docker.__version__, sys.executable)\n")
    assert kernel_cli(docker_kernel, project.root, "attach", "box", "--type",
                      "docker").returncode == 0
    tags = []
    try:
        for _ in range(2):
            out = kernel_cli(docker_kernel, project.root, "submit", "greet.py", "--target",
                             "box", "--env", "kernel", "--wait")
            assert out.returncode == 0, out.stdout + out.stderr
            assert f"hello from session {marker}" in out.stdout  # the local package, shipped
            assert "/usr/bin/python3" in out.stdout  # installed into the image's Python
            tag = re.search(r"image (jupyter-compute/requirements:\w+)", out.stdout).group(1)
            tags.append((tag, "building image" in out.stdout, engine.images.get(tag).id))
        (tag1, built1, id1), (tag2, built2, id2) = tags
        assert tag1 == tag2 and id1 == id2 and built1 and not built2  # built once, reused
    finally:
        for tag in {t[0] for t in tags}:
            engine.images.remove(tag, force=True)


def _wheel(folder: Path, name: str) -> Path:
    """A pure-Python wheel of ``name`` 1.0 whose module says ``VALUE = 42``."""
    import base64
    import zipfile

    files = {f"{name}/__init__.py": b"VALUE = 42\n",
             f"{name}-1.0.dist-info/METADATA":
                 f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
             f"{name}-1.0.dist-info/WHEEL":
                 b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
        f"{len(data)}\n" for path, data in files.items())
    files[f"{name}-1.0.dist-info/RECORD"] = (record + f"{name}-1.0.dist-info/RECORD,,\n").encode()
    path = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for rel, data in files.items():
            z.writestr(rel, data)
    return path


@pytest.fixture
def private_index(tmp_path: Path) -> Iterator[dict]:
    """A package index on 127.0.0.1 that serves one tiny wheel to ``user:s3cr3t`` only
    (HTTP basic auth, as private indexes do with a token in the URL)."""
    import base64
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    name = f"jc_probe_{os.urandom(4).hex()}"  # new per session: the image is really built
    project_dir = tmp_path / "index" / "simple" / name.replace("_", "-")
    project_dir.mkdir(parents=True)
    wheel = _wheel(project_dir, name)
    (project_dir / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n')
    expected = "Basic " + base64.b64encode(b"user:s3cr3t").decode()
    authorized: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="private"')
                self.end_headers()
                return
            authorized.append(self.path)
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 partial(Handler, directory=str(tmp_path / "index")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"name": name, "authorized": authorized,
               "url": f"http://user:s3cr3t@127.0.0.1:{server.server_address[1]}/simple/"}
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_index_token_enters_no_layer_of_the_requirements_image(engine, project: Project,
                                                              private_index: dict) -> None:
    # Defect 8: the index URL (with its token) was baked into the image's RUN line.
    name = private_index["name"]
    env = {"PIP_INDEX_URL": private_index["url"]}
    project.write("requirements.txt", f"{name}==1.0\n")
    project.write("probe.py", f"import {name}\nprint('probe', {name}.VALUE)\n")
    out = project.cli("attach", "private", "--type", "docker", "--requirements",
                      "requirements.txt", env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert any(path.endswith(".whl") for path in private_index["authorized"])  # token used
    out = project.cli("submit", "probe.py", "--target", "private", "--wait", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "probe 42" in out.stdout
    tag = re.search(r"image (jupyter-compute/requirements:\w+)", out.stdout).group(1)
    try:
        history = subprocess.run(["docker", "history", "--no-trunc", tag], capture_output=True,
                                 text=True, check=True).stdout
        inspect = subprocess.run(["docker", "image", "inspect", tag], capture_output=True,
                                 text=True, check=True).stdout
        assert "pip" in history and "s3cr3t" not in history
        assert "s3cr3t" not in inspect and "127.0.0.1" not in inspect
        tail = b""
        for chunk in engine.images.get(tag).save():  # every layer, as `docker save` writes it
            assert b"s3cr3t" not in tail + chunk
            tail = chunk[-16:]
        # The settings' folder was removed after the build.
        assert not list((_ws(project) / "docker").glob(".pip-*"))
    finally:
        engine.images.remove(tag, force=True)


def test_failed_pip_install_is_one_line_and_leaves_nothing_behind(
        engine, project: Project, private_index: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", private_index["url"])
    project.write("requirements.txt", "jc-nothing-here==1.0\n")
    with pytest.raises(TargetError) as info:
        api.attach("broken", "docker", workspace=project.root, requirements="requirements.txt")
    assert _one_line(info.value).startswith(
        "pip install failed while building the requirements image: ERROR: No matching "
        "distribution found for jc-nothing-here==1.0; fix the requirements")
    log = (_ws(project) / "docker" / "attach-broken.log").read_text()
    assert "Looking in indexes" in log and "s3cr3t" not in log  # pip masks the token
    assert not list((_ws(project) / "docker").glob(".pip-*"))
    for container in engine.containers.list(all=True):  # the pip container is removed
        assert not any(m.get("Source", "").startswith(str(project.root))
                       for m in container.attrs.get("Mounts") or [])


def test_cancel_leaves_no_container_and_no_process(engine, project: Project) -> None:
    project.write("stubborn.py", """
        import signal, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only the grace period's SIGKILL ends it
        print("started", child.pid, flush=True)
        time.sleep(600)
    """)
    api.attach("box", "docker", workspace=project.root)
    run = api.submit("stubborn.py", target="box", workspace=project.root)
    _wait_for(lambda: "started" in run.log(), what="the script to start")
    assert len(dockerd.run_processes(run.id)) >= 3  # agent, script, child: seen from the host

    started = time.monotonic()
    run.cancel()
    assert run.wait(timeout=30) is RunStatus.CANCELED
    print(f"\ncancel to Canceled: {time.monotonic() - started:.1f}s (grace 3s)")
    assert not dockerd.containers(str(project.root), run.id)
    assert dockerd.run_processes(run.id) == []


def test_out_of_memory_fails_naming_the_memory_limit(engine, project: Project) -> None:
    project.write("hog.py", """
        blocks = []
        print("allocating", flush=True)
        for _ in range(64):
            blocks.append(bytearray(16 * 1024 * 1024))
        print("still alive")
    """)
    api.attach("small", "docker", workspace=project.root, memory="64m")
    run = api.submit("hog.py", target="small", workspace=project.root)
    assert run.wait(timeout=60) is RunStatus.FAILED
    assert run.record.error == "killed: out of memory (memory limit 64m); raise --memory"
    assert run.record.exit_code == 137
    assert "still alive" not in run.log()


def test_container_killed_from_outside_is_agent_lost(engine, project: Project) -> None:
    project.write("sleepy.py", "import time\nprint('up', flush=True)\ntime.sleep(600)\n")
    api.attach("box", "docker", workspace=project.root)
    run = api.submit("sleepy.py", target="box", workspace=project.root)
    _wait_for(lambda: "up" in run.log(), what="the script to start")
    engine.containers.get(f"jc-{run.id}").kill()
    assert run.wait(timeout=30) is RunStatus.FAILED
    assert run.record.error.startswith("agent lost: the container exited with code 137")
    assert not dockerd.containers(str(project.root), run.id)


def test_a_reader_that_cannot_reach_the_engine_leaves_a_live_run_alone(
        engine, project: Project) -> None:
    # With --network host the container has this machine's hostname, so the agent's pid
    # (1, in its container) passed for this machine's init, which is not the agent: a
    # reader that could not ask the engine (dockerd restarting) declared the run lost.
    from jupyter_compute.targets.docker import DockerTarget

    project.write("sleepy.py", "import time\nprint('up', flush=True)\ntime.sleep(600)\n")
    api.attach("hostnet", "docker", workspace=project.root, network="host")
    run = api.submit("sleepy.py", target="hostnet", workspace=project.root)
    status = project.run_dir(run.id) / "status.json"
    _wait_for(lambda: json.loads(status.read_text())["status"] == "Running",
              what="the run to be running")
    cut_off = DockerTarget("hostnet", {"network": "host",
                                       "base_url": f"unix://{project.root}/gone.sock"},
                           run.workspace)
    assert cut_off.status(run.id)["status"] == "Running"  # its heartbeat is fresh
    assert run.status() is RunStatus.RUNNING
    run.cancel()
    assert run.wait(timeout=30) is RunStatus.CANCELED
    assert not dockerd.containers(str(project.root), run.id)


# -- images ----------------------------------------------------------------------------


def test_dockerfile_image_and_a_run_config_override(engine, project: Project) -> None:
    project.write("docker/Dockerfile", f"FROM {dockerd.IMAGE}\n"
                                       "RUN echo from-dockerfile > /marker\n")
    project.write("where.py", "import os\nprint('marker:', open('/marker').read().strip() "
                              "if os.path.exists('/marker') else None)\n")
    api.attach("built", "docker", workspace=project.root, dockerfile="docker/Dockerfile")
    run = api.submit("where.py", target="built", workspace=project.root)
    assert run.wait(timeout=60) is RunStatus.COMPLETED, run.log()
    assert "marker: from-dockerfile" in run.log()

    # A plain target runs the base image; run.yml's docker_image overrides it for one run.
    api.attach("plain", "docker", workspace=project.root)
    tag = dockerfile_tag(project.root / "docker" / "Dockerfile")
    project.write("run.yml", f"script: where.py\ntarget: plain\nenvironment:\n"
                             f"  docker_image: {tag}\n")
    plain = api.submit("where.py", target="plain", workspace=project.root)
    override = api.submit(config=project.root / "run.yml", workspace=project.root)
    for r in (plain, override):
        assert r.wait(timeout=60) is RunStatus.COMPLETED, r.log()
    assert "marker: None" in plain.log()
    assert "marker: from-dockerfile" in override.log()
    engine.images.remove(tag, force=True)  # tagged by this test's folder: never reused


# -- errors: one line that says what to do ----------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


def test_engine_down_is_one_line(engine, project: Project) -> None:
    url = f"unix://{project.root}/no-engine.sock"
    with pytest.raises(TargetError) as info:
        api.attach("down", "docker", workspace=project.root, base_url=url)
    assert _one_line(info.value).startswith(f"no Docker engine at {url}: start dockerd")
    assert not (_ws(project) / "targets.yml").exists()  # nothing attached

    out = project.cli("attach", "down", "--type", "docker", "--base-url", url)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"jupyter-compute attach: error: {info.value}"]


def test_permission_denied_on_the_socket_is_one_line(engine, project: Project) -> None:
    # A real socket no one may open; root ignores file modes, so the child process
    # gives up CAP_DAC_OVERRIDE to be refused like any user outside the docker group.
    path = project.root / "docker.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    os.chmod(path, 0)
    try:
        code = ("from jupyter_compute import api\n"
                f"api.attach('p', 'docker', workspace={str(project.root)!r}, "
                f"base_url='unix://{path}')\n")
        out = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--",
                              sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60)
    finally:
        listener.close()
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"jupyter_compute.exceptions.TargetError: permission denied on the "
                           f"Docker socket {path}: add your user to the 'docker' group")


def test_missing_image_is_one_line(engine, project: Project) -> None:
    with pytest.raises(TargetError) as info:
        api.attach("noimg", "docker", workspace=project.root, image="no-such-image:1")
    text = _one_line(info.value)
    assert "no image 'no-such-image:1'" in text and "no registry access" in text
    assert "scripts/docker-base-image.sh" in text and "--dockerfile" in text

    # The same for one run whose run.yml names an image the engine lacks.
    api.attach("box", "docker", workspace=project.root)
    project.write("hello.py", "print('hello')\n")
    project.write("run.yml", "script: hello.py\ntarget: box\nenvironment:\n"
                             "  docker_image: no-such-image:2\n")
    with pytest.raises(TargetError) as info:
        api.submit(config=project.root / "run.yml", workspace=project.root)
    assert "no image 'no-such-image:2'" in _one_line(info.value)
    failed = api.runs(workspace=project.root)[0]
    assert failed.status() is RunStatus.FAILED and "no registry access" in failed.record.error


def test_bad_dockerfile_is_one_line(engine, project: Project) -> None:
    project.write("broken/Dockerfile", f"FROM {dockerd.IMAGE}\nRUN echo building && exit 3\n")
    with pytest.raises(TargetError) as info:
        api.attach("broken", "docker", workspace=project.root, dockerfile="broken/Dockerfile")
    assert "returned a non-zero code: 3" in _one_line(info.value)
    assert "fix the Dockerfile" in str(info.value)

    project.write("typo/Dockerfile", f"FORM {dockerd.IMAGE}\n")
    out = project.cli("attach", "typo", "--type", "docker", "--dockerfile", "typo/Dockerfile")
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert "unknown instruction: FORM" in line


def test_gpus_without_gpu_support_is_one_line(engine, project: Project) -> None:
    with pytest.raises(TargetError) as info:  # this machine has no NVIDIA runtime
        api.attach("gpu", "docker", workspace=project.root, gpus="all")
    assert "NVIDIA Container Toolkit" in _one_line(info.value)
