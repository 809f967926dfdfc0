"""The agent in a Docker container, started through the host's ``docker`` CLI.

::

    jupyter-compute attach gpu-vm --type ssh --host 10.0.0.5 --docker-image pytorch:2 \\
        --gpus all --shm-size 8g

Every engine call is one ``host.run(argv)`` (on an SSH host, over the connection the
target already holds; each argument quoted), so a Docker engine needs nothing but its
CLI on the host and the SSH user in the ``docker`` group. Inside the container::

    /jc/run       the run folder on the host (read-write): log, status, outputs
    /jc/blobs     the host's blob store (read-only): the agent copies the snapshot
    /jc/runtime   agent, tracking, protocol (read-only), on PYTHONPATH

The same ``agent.py`` as everywhere is the container's main process, run by the
image's Python as the SSH user's uid:gid (so the run's files stay theirs), with no
network unless ``--network`` says otherwise. It writes its status into the mounted
run folder, so the host reads it as it reads a process's. The container is named
``jc-<run id>``, labelled with the run id, and removed once the run has ended.

A run's environment (requirement lines and shipped wheels) is not built by the agent:
pip installs it into an image on the host's engine, on top of the run's image, tagged
by a hash of both (``_environment_image``), once; later runs find the tag. On a host
with no package index the wheels for the image's Python come from the client with the
snapshot's blobs (``wheelhouse.for_image``) and pip installs with ``--no-index``.
"""

from __future__ import annotations

import json
import posixpath
import re
import time

from jupyter_compute import protocol, units
from jupyter_compute.exceptions import TargetError, UsageError
from jupyter_compute.targets import liveness
from jupyter_compute.targets.base import Launcher

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.runspec import RunSpec
    from jupyter_compute.targets.base import Host, SubmitContext

#: In the local run folder, written before the container is started: this run is one.
MARKER = "container.json"
#: Paths inside the container.
RUN_DIR, BLOBS_DIR, RUNTIME_DIR = "/jc/run", "/jc/blobs", "/jc/runtime"
LABEL_RUN, LABEL_TARGET = "jupyter_compute.run", "jupyter_compute.target"
DEFAULT_PYTHON = "python3"
#: A container is inspected at most this often per run (status is polled often).
INSPECT_EVERY = 0.25
#: After a cancel, the container is killed this long past the run's grace period.
KILL_MARGIN = 2.0
_LIVE = ("running", "restarting", "paused")
_GPUS = re.compile(r"all|\d+|device=[\w,.:-]+", re.IGNORECASE)
#: (host label, run id) -> (monotonic time, state): ``docker inspect`` results, briefly.
_seen: dict[tuple[str, str], tuple[float, str]] = {}


def container_name(run_id: str) -> str:
    """The container of run ``run_id``: ``jc-<run id>``."""
    return f"jc-{run_id}"


class ContainerCLILauncher(Launcher):
    """The agent as a container on the host's Docker engine; see the module docstring."""

    options = {
        "docker_image": (str, "run each run in a container of this image on the host's "
                              "Docker engine (a run's environment.docker_image overrides it)"),
        "docker_python": (str, f"Python inside the image (default {DEFAULT_PYTHON})"),
        "memory": (str, "container memory limit, e.g. 512m or 4g (no swap beyond it)"),
        "cpus": (float, "container CPU limit, e.g. 1.5"),
        "shm_size": (str, "size of the container's /dev/shm, e.g. 1g"),
        "gpus": (str, "GPUs to expose: all, a count, or device=0,1 (NVIDIA Container Toolkit)"),
        "network": (str, "container network: none (default), host, or a network's name"),
    }

    def __init__(self, name: str, config: dict[str, Any], workspace: Any) -> None:
        super().__init__(name, config, workspace)
        self.limits = _limits(config)  # refuse a bad value at attach, not at a run
        self.network = str(config.get("network") or "none")
        if not re.fullmatch(r"[\w.-]+", self.network):
            raise UsageError(f"--network must be none, host or a network's name, not "
                             f"{self.network!r}")

    def image(self, spec: RunSpec | None) -> str | None:
        """The run's image: its own ``docker_image``, else the target's."""
        return (spec.docker_image if spec is not None else None) or \
            self.config.get("docker_image")

    # -- Launcher ------------------------------------------------------------------------

    def validate(self, spec: RunSpec) -> None:
        if not self.image(spec):
            raise UsageError(f"target {self.name!r} has no docker image: attach it with "
                             "--docker-image IMAGE, or set environment.docker_image")

    def check(self, host: Host) -> None:
        """The engine answers, the image is there and its Python runs."""
        from jupyter_compute.wheelhouse import forget_host

        forget_host(self.workspace, self.name)  # (re)attached: ask the host afresh
        image = self.image(None)
        if not image:
            return
        self._facts(host, image, "--docker-image")
        python = self._python(None)
        code, out, err = host.run(
            ["docker", "run", "--rm", "--network", "none", "--label",
             f"{LABEL_TARGET}={self.name}", image, python, "-c",
             "import sys; print('%d.%d' % sys.version_info[:2])"], timeout=120)
        version = out.decode(errors="replace").strip().splitlines()
        if code or not version or not re.fullmatch(r"\d+\.\d+", version[-1]):
            raise TargetError(f"{python} in image {image} on {_where(host)} did not run "
                              f"({_last(err) or f'exit {code}'}); set --docker-python to the "
                              "image's Python 3")
        if tuple(int(p) for p in version[-1].split(".")) < (3, 8):
            raise TargetError(f"image {image} has Python {version[-1]}; the agent needs 3.8 "
                              "or newer (set --docker-python, or use another image)")

    def agent_spec(self, host: Host, ctx: SubmitContext) -> None:
        agent = ctx.agent
        # Where the host keeps them, for the mounts; then where the agent sees them.
        ctx.scratch["container"] = {"blobs": agent["blobs"],
                                    "runtime": agent["pythonpath"][0]}
        # The packages go into an image built on the host's engine (once per environment
        # and base image, see _environment_image): the agent in it builds nothing.
        agent.update(interpreter=None,  # the agent's own: the image's Python
                     environment=None,
                     blobs=BLOBS_DIR, pythonpath=[RUNTIME_DIR],
                     container=True,  # its pid is the container's: the heartbeat decides
                     env_root=f"{RUN_DIR}/.envs")  # built with the image's Python, per run

    def sync(self, host: Host, ctx: SubmitContext) -> None:
        """Before anything is uploaded: the engine answers and has the image."""
        image = self.image(ctx.spec)
        assert image is not None  # validate refused a spec without one
        what = "environment.docker_image" if ctx.spec.docker_image else "--docker-image"
        user, image_id = self._facts(host, image, what)
        ctx.scratch["container"].update(image=image, user=user, image_id=image_id)
        env = ctx.environment
        if env and (env.get("requirements") or env.get("wheels")):
            from jupyter_compute.environments import spec_digest
            from jupyter_compute.wheelhouse import for_image

            # A host with no index: wheels for the image travel with the snapshot's blobs.
            ctx.environment = for_image(host, self.workspace, env, image, image_id,
                                        self._python(ctx.spec), spec_digest)

    def launch(self, host: Host, ctx: SubmitContext) -> None:
        run_id, facts = ctx.run_id, ctx.scratch["container"]
        name = container_name(run_id)
        python = self._python(ctx.spec)
        env = ctx.environment or {}
        if env.get("requirements") or env.get("wheels"):  # the wheels arrived with the sync
            facts["image"] = self._environment_image(host, ctx, python)
        # Before the container exists: from now on every reader knows this run is one.
        protocol.write_json_atomic(str(self.workspace.run_dir(run_id) / MARKER),
                                   {"name": name, "image": facts["image"], "python": python})
        argv = ["docker", "run", "--detach", "--name", name,
                "--label", f"{LABEL_RUN}={run_id}", "--label", f"{LABEL_TARGET}={self.name}",
                "--user", facts["user"], "--env", "HOME=/tmp",  # no home for that uid there
                "--env", f"{protocol.ENV_RUN_ID}={run_id}",
                "--network", self.network, "--workdir", RUN_DIR,
                "--mount", _bind(host.run_dir(run_id), RUN_DIR),
                "--mount", _bind(facts["blobs"], BLOBS_DIR, readonly=True),
                "--mount", _bind(facts["runtime"], RUNTIME_DIR, readonly=True),
                *self.limits, facts["image"],
                *protocol.agent_command(python, RUNTIME_DIR, RUN_DIR)]
        code, _out, err = host.run(argv, timeout=120)
        if code:
            host.run(["docker", "rm", "--force", "--volumes", name])  # it may be Created
            raise TargetError(self._start_error(host, facts["image"], python, err))

    def alive(self, host: Host, run_id: str, status: dict[str, Any]) -> bool | None:
        state = self._state(host, run_id)
        if state in _LIVE:
            self._backstop(host, run_id)
            return True
        if state in ("missing", "exited", "dead"):
            client = liveness.client_state(self.workspace.run_dir(run_id))
            if client is not None and client.get("launched") is None and not status.get("agent"):
                return None  # still being launched: the submitting client decides
            return False
        return None  # created, or the engine cannot tell: the agent's heartbeat decides

    def cancel(self, host: Host, run_id: str, status: dict[str, Any]) -> None:
        """SIGTERM to the agent (it ends the script within the run's grace); the next
        status read after the grace kills the container should it still run."""
        host.run(["docker", "kill", "--signal", "TERM", container_name(run_id)])
        _seen.pop((_where(host), run_id), None)

    def ended(self, host: Host, run_id: str, status: dict[str, Any]) -> dict[str, Any]:
        """Remove the container, once (the marker remembers)."""
        path = self.workspace.run_dir(run_id) / MARKER
        marker = protocol.read_json(str(path)) or {}
        if not marker.get("removed"):
            code, _out, err = host.run(["docker", "rm", "--force", "--volumes",
                                        container_name(run_id)])
            if code == 0 or b"no such container" in err.lower():
                protocol.write_json_atomic(str(path), {**marker, "removed": True})
            _seen.pop((_where(host), run_id), None)
        return status

    def abandon(self, host: Host, run_id: str, status: dict[str, Any]) -> None:
        self.ended(host, run_id, status)  # removing the container ends what it ran

    # -- the engine ------------------------------------------------------------------------

    def _python(self, spec: RunSpec | None) -> str:
        return (spec.python if spec is not None else None) or \
            str(self.config.get("docker_python") or DEFAULT_PYTHON)

    def _environment_image(self, host: Host, ctx: SubmitContext, python: str) -> str:
        """The image with the run's environment installed on its base: found by its tag
        (a hash of the base image's id, the requirement lines, the wheels and ``python``),
        else built once on the host's engine and committed.

        pip runs in a container of the base image as root, with the host's network (it
        needs the index, unless the environment has ``no_index``); the requirements and
        a folder of links to the shipped wheels (blobs on the host) are mounted read-only.
        Its output goes to the run's log on the host, ahead of the agent's.
        """
        from jupyter_compute.targets.docker.images import (
            BUILD_DIR,
            environment_payload,
            pip_build_files,
            pip_command,
            requirements_tag,
        )

        facts, env, run_id = ctx.scratch["container"], ctx.environment or {}, ctx.run_id
        lines = list(env.get("requirements") or [])
        wheels = dict(env.get("wheels") or {})
        named = {_project(line) for line in lines}
        # A wheel no requirement line names is installed as it is (a local package).
        lines += [f"{BUILD_DIR}/wheels/{w}" for w in sorted(wheels) if _project(w) not in named]
        requirements = "".join(f"{line}\n" for line in lines).encode()
        no_index = bool(env.get("no_index"))
        tag = requirements_tag(facts["image_id"], environment_payload(
            requirements, wheels, no_index), python)
        log = posixpath.join(host.run_dir(run_id), protocol.LOG)
        code, _out, _err = host.run(["docker", "image", "inspect", "--format", "{{.Id}}", tag])
        if code == 0:
            host.run(["sh", "-c", 'echo "$1" >> "$2"', "sh", f"[launcher] image {tag}: the "
                      f"environment is installed already, reusing it", log])
            return tag
        build = posixpath.join(host.run_dir(run_id), "env-build")
        links = [a for w, d in sorted(wheels.items())
                 for a in (w, f"{BLOBS_DIR}/sha256/{d[:2]}/{d}")]
        # requirements.txt, and this machine's pip settings (index, CA bundle: pip there
        # reaches the index pip here does), as a tar on stdin into a 0700 folder removed
        # after the build: index URLs may hold tokens.
        script = ('set -e; umask 077; b="$1"; shift; mkdir -p "$b/wheels"; tar -x -C "$b"; '
                  'while [ $# -gt 0 ]; do ln -sf "$2" "$b/wheels/$1"; shift 2; done')
        self._run_checked(host, ["sh", "-c", script, "sh", build, *links],
                          "prepare the environment image's build",
                          stdin=_tar(pip_build_files(requirements)))
        builder = f"jc-build-{run_id}"
        started = time.monotonic()
        argv = ["docker", "run", "--name", builder, "--network", "host",
                "--label", f"{LABEL_TARGET}={self.name}",
                "--mount", _bind(build, BUILD_DIR, readonly=True),
                "--mount", _bind(facts["blobs"], BLOBS_DIR, readonly=True),
                facts["image"], *pip_command(python, bool(wheels), no_index)]
        shell = (f'echo "[launcher] building image {tag}: pip install on top of '
                 f'{facts["image"]} (once; later runs reuse it)" >> "$1"; shift; '
                 '"$@" >> "$LOG" 2>&1')
        try:
            code, _out, err = host.run(["env", f"LOG={log}", "sh", "-c", shell, "sh", log,
                                        *argv], timeout=3600)
            if code:
                said = host.read(run_id, protocol.LOG).decode(errors="replace")
                why = [line for line in said.splitlines() if line.startswith("ERROR")]
                raise TargetError(f"pip install failed while building the environment image "
                                  f"on {_where(host)}: {why[-1] if why else _last(err) or code}"
                                  f"; fix the environment (pip's output is in the run's log)")
            cmd = json.dumps([python])
            self._run_checked(host, ["docker", "commit", "--change", f"CMD {cmd}", builder,
                                     tag], "commit the environment image")
        finally:
            host.run(["docker", "rm", "--force", "--volumes", builder])
            host.run(["rm", "-rf", build])
        host.run(["sh", "-c", 'echo "$1" >> "$2"', "sh", f"[launcher] built image {tag} in "
                  f"{time.monotonic() - started:.1f}s", log])
        return tag

    def _run_checked(self, host: Host, argv: list[str], what: str, stdin: bytes = b""
                     ) -> None:
        code, _out, err = host.run(argv, stdin=stdin, timeout=600)
        if code:
            raise TargetError(f"could not {what} on {_where(host)}: {_last(err) or code}")

    def _facts(self, host: Host, image: str, what: str) -> tuple[str, str]:
        """``uid:gid`` of the host's user and ``image``'s id, after proving the engine has
        ``image``: one command."""
        code, out, err = host.run(
            ["sh", "-c", 'id -u && id -g && docker image inspect --format "{{.Id}}" "$1"',
             "sh", image])
        lines = out.decode(errors="replace").split()
        if code == 0 and len(lines) >= 3:
            return f"{lines[0]}:{lines[1]}", lines[2]
        said = err.decode(errors="replace")
        where = _where(host)
        if "no such image" in said.lower():
            raise TargetError(f"no image {image!r} ({what}) on the Docker engine of {where}: "
                              f"put it there (docker pull {image} on the host, or docker save "
                              f"{image} | ssh … docker load)")
        raise TargetError(_engine_error(where, said, code))

    def _state(self, host: Host, run_id: str) -> str:
        """The container's state (running, exited, missing, …), inspected at most every
        ``INSPECT_EVERY`` seconds; ``unknown`` when the engine does not answer."""
        key = (_where(host), run_id)
        seen = _seen.get(key)
        now = time.monotonic()
        if seen is not None and now - seen[0] < INSPECT_EVERY:
            return seen[1]
        try:
            code, out, err = host.run(["docker", "container", "inspect", "--format",
                                       "{{.State.Status}}", container_name(run_id)])
        except TargetError:  # the host is unreachable: never a reason to call a run lost
            return "unknown"
        if code == 0:
            state = out.decode(errors="replace").strip() or "unknown"
        else:
            state = "missing" if b"no such" in err.lower() else "unknown"
        _seen[key] = (now, state)
        return state

    def _backstop(self, host: Host, run_id: str) -> None:
        """Kill a container still running well past a cancel's grace period."""
        run_dir = self.workspace.run_dir(run_id)
        try:
            asked = (run_dir / protocol.CANCEL).stat().st_mtime
        except FileNotFoundError:
            return
        spec = protocol.read_json(str(run_dir / protocol.SPEC)) or {}
        grace = float(spec.get("cancel_grace_seconds") or 3)
        if time.time() - asked > grace + KILL_MARGIN:
            host.run(["docker", "kill", container_name(run_id)])
            _seen.pop((_where(host), run_id), None)

    def _start_error(self, host: Host, image: str, python: str, err: bytes) -> str:
        said = err.decode(errors="replace")
        if "executable file not found" in said or "no such file or directory" in said:
            return (f"image {image} has no {python}: use an image with Python 3, or set "
                    "--docker-python to its interpreter")
        if "gpu" in said.lower() and "driver" in said.lower():
            return ("the Docker engine on the host cannot give GPUs to containers (no NVIDIA "
                    "Container Toolkit): install it there, or attach without --gpus")
        return f"the Docker engine of {_where(host)} could not start {image}: {_last(err)}"


def _limits(config: dict[str, Any]) -> list[str]:
    """``docker run`` flags for the resource options, each value checked."""
    flags: list[str] = []
    for key, flag in (("memory", "--memory"), ("shm_size", "--shm-size")):
        value = config.get(key)
        if value in (None, ""):
            continue
        size = units.parse_size_option(value, f"--{key.replace('_', '-')}")
        flags += [flag, str(size)]
        if key == "memory":  # the limit is what the script gets, not twice it with swap
            flags += ["--memory-swap", str(size)]
    cpus = config.get("cpus")
    if cpus not in (None, ""):
        try:
            ok = float(cpus) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UsageError(f"--cpus must be a positive number, not {cpus!r}")
        flags += ["--cpus", str(float(cpus))]
    gpus = config.get("gpus")
    if gpus not in (None, ""):
        text = str(gpus).strip()
        if not _GPUS.fullmatch(text):
            raise UsageError(f"--gpus must be all, a count or device=0,1, not {gpus!r}")
        # docker run reads --gpus as CSV: a device list must be one quoted field
        flags += ["--gpus", f'"{text}"' if "," in text else text]
    return flags


def _bind(source: str, target: str, readonly: bool = False) -> str:
    """A ``--mount`` value; ``--mount`` is CSV, so a field with a comma or quote is quoted."""
    fields = ["type=bind", f"source={source}", f"target={target}"]
    if readonly:
        fields.append("readonly")
    return ",".join(f'"{f.replace(chr(34), 2 * chr(34))}"' if re.search(r'[,"]', f) else f
                    for f in fields)


def _tar(files: dict[str, bytes]) -> bytes:
    """A tar archive of ``files`` (name → bytes), mode 0600 each."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _project(requirement: str) -> str:
    """The canonical project name a requirement line (or a wheel's file name) starts with.

    >>> _project("jc-local-lib==0.3.1"), _project("jc_local_lib-0.3.1-py3-none-any.whl")
    ('jc-local-lib', 'jc-local-lib')
    """
    if requirement.endswith(".whl"):
        name = requirement.split("/")[-1].split("-")[0]
    else:
        name = re.split(r"[\s<>=!~;\[@(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _where(host: Host) -> str:
    return str(getattr(host, "label", None) or host.name)


def _last(err: bytes) -> str:
    lines = [line.strip() for line in err.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _engine_error(where: str, said: str, code: int) -> str:
    """What a failed ``docker`` call on the host means, and what to do, in one line."""
    low = said.lower()
    if code == 127 or "docker: not found" in low or "command not found" in low:
        return (f"no docker CLI on {where}: install Docker Engine there (or attach without "
                "--docker-image)")
    if "permission denied" in low and "docker" in low:
        user = where.split("@", 1)[0]
        return (f"{where} may not use the Docker engine (permission denied on its socket): "
                f"add the user to the docker group there (usermod -aG docker {user}) and "
                "connect again")
    if "cannot connect to the docker daemon" in low or "is the docker daemon running" in low:
        return f"the Docker engine on {where} does not answer: start it there (dockerd)"
    return f"docker on {where} failed: {_last(said.encode()) or f'exit {code}'}"


def marker(run_dir: Any) -> dict[str, Any] | None:
    """The run's container marker in its local run folder, or None (a process run)."""
    try:
        with open(f"{run_dir}/{MARKER}", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
