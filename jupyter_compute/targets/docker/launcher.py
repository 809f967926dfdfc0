"""The agent in a container of its own, on a Docker engine that sees this machine's files.

``ContainerLauncher`` is the launcher half of the ``docker`` kind (``LocalHost`` is
the other): it reaches the engine through the docker SDK, makes the run's image
(``images.py``), mounts the run folder, the runtime and the snapshot (``mounts.py``)
and starts the same ``agent.py`` as everywhere as the container's main process, with
the image's Python. The container knows better than a pid whether the agent lives,
and how the run ended (out of memory); once a run has ended it is inspected and
removed, unless ``keep_container``.

Per-submission state travels in ``ctx.scratch["docker"]``; what the launcher keeps
per process (one engine connection per address, the last inspection of each run's
container, which engines are rootless or cannot mount an overlay) lives in
module-level dicts and sets, read and written by single operations, so one launcher
serves many threads. Only this package imports the ``docker`` SDK, and only when a
docker target is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from jupyter_compute import protocol, units
from jupyter_compute.exceptions import TargetError, UsageError
from jupyter_compute.protocol import RunStatus
from jupyter_compute.targets.base import Launcher
from jupyter_compute.targets.docker.images import (
    BASE_IMAGE_SCRIPT,
    BUILD_DIR,
    DEFAULT_IMAGE,
    BuildError,
    dockerfile_bases,
    dockerfile_tag,
    environment_payload,
    follow_build,
    follow_output,
    pip_build_files,
    pip_command,
    requirements_tag,
)
from jupyter_compute.targets.docker.mounts import (
    BLOBS_DIR,
    MANIFEST,
    RUN_DIR,
    RUNTIME_DIR,
    STATE,
    materialize_snapshot,
    overlay_fits,
    prepare_run_folder,
    run_mounts,
)

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from jupyter_compute.targets.base import Host, SubmitContext
    from jupyter_compute.workspace import Workspace

DEFAULT_URL = "unix:///var/run/docker.sock"
LABEL_RUN, LABEL_TARGET = "jupyter_compute.run", "jupyter_compute.target"
LABEL_WORKSPACE, LABEL_KEEP = "jupyter_compute.workspace", "jupyter_compute.keep"
#: A container is inspected at most this often per run (status is polled every 10 ms).
INSPECT_EVERY = 0.25
#: After a cancel, the container is killed this long past the run's grace period.
KILL_MARGIN = 2.0
_LIVE_STATES = ("running", "restarting", "paused")

# Per process, shared by every thread: each is read and written by single dict/set
# operations (atomic under the GIL), and a lost race only repeats a harmless lookup.
_clients: dict[str, Any] = {}  # engine address -> docker.DockerClient
_no_overlay: set[str] = set()  # engines that failed to mount an overlay volume
_seen: dict[tuple[str, str], tuple[float, str]] = {}  # (engine, run id) -> (when, state)
_rootless: dict[str, bool] = {}  # engine address -> runs rootless


class ContainerLauncher(Launcher):
    """Starts each run's agent in a container of its own, with the target's limits."""

    options = {
        "image": (str, f"image to run (default: {DEFAULT_IMAGE}, built by {BASE_IMAGE_SCRIPT})"),
        "dockerfile": (str, "build the image from this Dockerfile (its folder is the "
                            "context; relative to the workspace folder)"),
        "requirements": (str, "pip requirements file (relative to the workspace folder), "
                              "installed into an image built on --image once and reused"),
        "base_url": (str, f"engine address, e.g. {DEFAULT_URL} or tcp://127.0.0.1:2375 "
                          "(default: $DOCKER_HOST, else the local socket)"),
        "cpus": (float, "CPU limit, e.g. 1.5"),
        "memory": (str, "memory limit, e.g. 512m or 4g (no swap beyond it)"),
        "shm_size": (str, "size of /dev/shm, e.g. 1g"),
        "gpus": (str, "GPUs to expose: all, a count, or device=0,1 (NVIDIA Container Toolkit)"),
        "network": (str, "none (default: no network) or host"),
        "keep_container": (bool, "keep the container after the run, for debugging"),
        "python": (str, "Python inside the image (default: python3)"),
    }

    def __init__(self, name: str, config: dict[str, Any], workspace: Workspace) -> None:
        super().__init__(name, config, workspace)
        self.python = str(config.get("python") or "python3")
        self.network = str(config.get("network") or "none")
        if self.network not in ("none", "host"):
            raise UsageError(f"--network must be none or host, not {self.network!r}: bridge "
                             "networks are not used, so the machine's network stays untouched")
        if config.get("image") and config.get("dockerfile"):
            raise UsageError("give --image or --dockerfile, not both (--requirements can go "
                             "with either)")
        self.memory = units.parse_size_option(config.get("memory"), "--memory")
        self.shm_size = units.parse_size_option(config.get("shm_size"), "--shm-size")
        self.cpus = config.get("cpus")
        if self.cpus is not None and float(self.cpus) <= 0:
            raise UsageError(f"--cpus must be a positive number, not {self.cpus!r}")
        self.gpus = parse_gpus(config.get("gpus"))
        self.keep = bool(config.get("keep_container"))
        self.url = str(config.get("base_url") or os.environ.get("DOCKER_HOST") or DEFAULT_URL)

    # -- the engine ----------------------------------------------------------------------

    @property
    def engine(self) -> Any:
        """The ``docker.DockerClient`` for this target's engine (connected on first use)."""
        client = _clients.get(self.url)
        if client is None:  # two threads may both connect: both then use the first stored
            client = _clients.setdefault(self.url, _connect(self.url, self.config.get(
                "base_url")))
        return client

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Engine failures (it stopped, the socket went away) as one line that says what to do."""
        import docker.errors
        import requests.exceptions

        try:
            yield
        except docker.errors.APIError as exc:  # callers translate the ones they expect
            raise TargetError(f"the Docker engine at {self.url} refused: {_said(exc)}") from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise TargetError(engine_error(self.url, exc)) from exc

    # -- hooks ---------------------------------------------------------------------------

    def check(self, host: Host) -> None:
        """Reach the engine, make the image (build it if needed) and find Python in it."""
        log = self.workspace.dir / "docker" / f"attach-{self.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_bytes(b"")
        self._probe(self._image(None, None, say=LogLine(log), rebuild=True))

    def prepare(self, host: Host) -> None:
        self.engine  # noqa: B018 - "engine not running" before any run is recorded
        self._sweep(host)

    def agent_spec(self, host: Host, ctx: SubmitContext) -> None:
        ctx.agent.update(
            interpreter=None,  # the agent's own: the image's Python
            environment=None,  # installed into the image instead (see _image)
            manifest=f"{STATE}/manifest.json", blobs=BLOBS_DIR, env_root=f"{STATE}/envs",
            pythonpath=[RUNTIME_DIR], container=True,  # its pid is the container's
            docker={"image": ctx.spec.docker_image, "python": ctx.spec.python or self.python})

    def sync(self, host: Host, ctx: SubmitContext) -> None:
        """Make the run's image (a build may take minutes: the client's beat keeps the run
        alive meanwhile) and the snapshot's folder on the host."""
        run_dir = Path(host.run_dir(ctx.run_id))
        prepare_run_folder(run_dir)
        d = ctx.agent["docker"]
        d["image"] = self._image(d["image"], ctx.environment,
                                 say=LogLine(run_dir / protocol.LOG))
        ctx.scratch["docker"] = {
            "lower": materialize_snapshot(self.workspace.dir, ctx.snap.id, ctx.snap.files)}

    def launch(self, host: Host, ctx: SubmitContext) -> None:
        run_dir = Path(host.run_dir(ctx.run_id))
        lower = ctx.scratch["docker"]["lower"]
        if self.url not in _no_overlay and overlay_fits(run_dir, lower):
            try:
                self._start(ctx, run_dir, overlay=True)
                return
            except _OverlayUnavailable as exc:
                _no_overlay.add(self.url)
                LogLine(run_dir / protocol.LOG)(
                    f"this engine cannot mount an overlay ({exc}); the agent copies the "
                    "snapshot into the run folder instead")
        ctx.agent.update(manifest=MANIFEST, blobs=BLOBS_DIR)
        host.write(ctx.run_id, protocol.SPEC, json.dumps(ctx.agent, indent=1).encode())
        self._start(ctx, run_dir, overlay=False)

    def alive(self, host: Host, run_id: str, status: dict[str, Any]) -> bool | None:
        """From the container's state: running (True), ended or gone (False); None before
        it is started or while the engine does not answer (the client's beat, or the
        agent's heartbeat, decides)."""
        state = self._state(host, run_id)
        if state in (None, "created", "unknown"):
            return None
        if state in _LIVE_STATES:
            return not self._backstop(host, run_id)
        return False

    def cancel(self, host: Host, run_id: str, status: dict[str, Any]) -> None:
        """Wake the agent (SIGTERM to the container's main process); it ends the script
        (SIGKILL after the run's ``cancel_grace_seconds``) and exits, which ends everything
        in the container. Should it not manage, a later status read kills the container."""
        container = self._container(host, run_id)
        if container is not None:
            with contextlib.suppress(Exception):  # already gone or stopping: fine
                container.kill(signal="SIGTERM")
        _seen.pop((self.url, run_id), None)

    def ended(self, host: Host, run_id: str, status: dict[str, Any]) -> dict[str, Any]:
        """Once: read how the container ended (out of memory, killed), say it in the
        status, and remove the container."""
        if (Path(host.run_dir(run_id)) / STATE / "finalized").exists():
            return status
        return self._finalize(host, run_id, status)

    def abandon(self, host: Host, run_id: str, status: dict[str, Any]) -> None:
        """The agent is lost (its heartbeat stopped): end whatever its container still runs."""
        container = self._container(host, run_id)
        if container is not None:
            with contextlib.suppress(Exception):
                container.kill()
        _seen.pop((self.url, run_id), None)

    # -- images --------------------------------------------------------------------------

    def _image(self, override: str | None, environment: dict[str, Any] | None, say: LogLine,
               rebuild: bool = False) -> str:
        """The image a run uses: found, or built from the Dockerfile and the environment
        (the target's ``--requirements``, then the run's resolved environment: requirement
        lines and wheels, whatever its source: requirements, pyproject, conda, kernel)."""
        if override:
            base = override
            self._require(base, "environment.docker_image in the run configuration")
        elif self.config.get("dockerfile"):
            base = self._build_dockerfile(say, rebuild)
        else:
            base = str(self.config.get("image") or DEFAULT_IMAGE)
            self._require(base, "--image" if self.config.get("image") else "the default image")
        requirements = b""
        if self.config.get("requirements"):
            path = self._path(self.config["requirements"], "--requirements")
            requirements = path.read_bytes()
        env = environment or {}
        if env.get("requirements"):
            requirements += b"\n" + "".join(f"{line}\n" for line in env["requirements"]
                                            ).encode()
        wheels = dict(env.get("wheels") or {})
        if not requirements.strip() and not wheels:
            say(f"image {base}")
            return base
        # A wheel no requirement line names is installed as it is (a local package).
        requirements += "".join(f"{BUILD_DIR}/wheels/{name}\n" for name in sorted(wheels)
                                if not _named(name, env.get("requirements") or [])).encode()
        return self._build_requirements(base, requirements, say, wheels,
                                        bool(env.get("no_index")))

    def _require(self, image: str, what: str) -> Any:
        import docker.errors

        with self._errors():
            try:
                return self.engine.images.get(image)
            except docker.errors.ImageNotFound:
                raise TargetError(missing_image(image, what)) from None
            except docker.errors.APIError as exc:
                raise TargetError(f"the engine cannot look up image {image!r} ({what}): "
                                  f"{_said(exc)}") from exc

    def _build_requirements(self, base: str, requirements: bytes, say: LogLine,
                            wheels: dict[str, str] | None = None, no_index: bool = False
                            ) -> str:
        """Run pip in a container of ``base`` and commit it as the requirements image.

        pip's settings (index URLs with their tokens) reach it through a read-only bind
        mount of a 0700 folder, deleted after: they enter no layer, no ``Env``, no
        history (see ``images.py``).
        """
        import docker.errors
        from docker.types import Mount

        base_image = self._require(base, "the base of the requirements image")
        tag = requirements_tag(base_image.id, environment_payload(requirements, wheels,
                                                                  no_index), self.python)
        with self._errors():
            try:
                image = self.engine.images.get(tag)
                say(f"image {tag} ({image.short_id.split(':')[-1]}): the requirements are "
                    "installed already, reusing it")
                return tag
            except docker.errors.ImageNotFound:
                pass
        say(f"building image {tag}: pip install -r requirements on top of {base} (once; "
            "later runs reuse it)")
        started = time.monotonic()
        (self.workspace.dir / "docker").mkdir(parents=True, exist_ok=True)
        folder = tempfile.mkdtemp(prefix=".pip-", dir=self.workspace.dir / "docker")
        try:
            for name, data in pip_build_files(requirements).items():
                protocol.write_atomic(os.path.join(folder, name), data, 0o600)
            if wheels:  # the wheels the environment brought (blobs), under their names
                os.mkdir(os.path.join(folder, "wheels"))
                for name, digest in wheels.items():
                    blob = self.workspace.blobs_dir / "sha256" / digest[:2] / digest
                    shutil.copyfile(blob, os.path.join(folder, "wheels", name))
            with self._errors():
                container = self.engine.containers.create(
                    base, pip_command(self.python, bool(wheels), no_index),
                    network_mode="host",  # pip needs the index
                    mounts=[Mount(BUILD_DIR, folder, type="bind", read_only=True)],
                    labels={"jupyter_compute.base": base})
                try:
                    container.start()
                    telling, last = follow_output(container.logs(stream=True, follow=True), say)
                    code = container.wait().get("StatusCode")
                    if code != 0:
                        raise TargetError(
                            f"pip install failed while building the requirements image: "
                            f"{telling or last or f'exit code {code}'}; fix the requirements "
                            f"(pip's output is in {say.path})")
                    # The container's command would become the image's: restore the base's.
                    cmd = (base_image.attrs.get("Config") or {}).get("Cmd") or [self.python]
                    repository, _, version = tag.rpartition(":")
                    container.commit(repository=repository, tag=version,
                                     message=f"jupyter_compute: pip install -r requirements.txt "
                                             f"on {base}", changes=[f"CMD {json.dumps(cmd)}"])
                except docker.errors.APIError as exc:
                    raise TargetError(f"the engine refused to build the requirements image: "
                                      f"{_said(exc)}") from exc
                finally:
                    with contextlib.suppress(docker.errors.APIError):
                        container.remove(v=True, force=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        say(f"built image {tag} in {time.monotonic() - started:.1f}s")
        return tag

    def _build_dockerfile(self, say: LogLine, rebuild: bool) -> str:
        import docker.errors

        path = self._path(self.config["dockerfile"], "--dockerfile")
        for base in dockerfile_bases(path.read_text(encoding="utf-8", errors="replace")):
            self._require(base, f"FROM in {path}")
        tag = dockerfile_tag(path)
        with self._errors():
            if not rebuild:
                try:
                    self.engine.images.get(tag)
                    say(f"image {tag}, built from {path}")
                    return tag
                except docker.errors.ImageNotFound:
                    pass
            say(f"building image {tag} from {path}")
            started = time.monotonic()
            try:
                chunks = self.engine.api.build(
                    path=str(path.parent), dockerfile=path.name, tag=tag, rm=True,
                    forcerm=True, pull=False, network_mode="host", decode=True)
                follow_build(chunks, say)
            except BuildError as exc:
                why = f"{exc} ({exc.telling})" if exc.telling else str(exc)
                raise TargetError(f"building {path} failed: {why}; fix the Dockerfile and "
                                  f"attach again (the build output is in {say.path})") from exc
            except docker.errors.APIError as exc:
                raise TargetError(f"building {path} failed: {_said(exc)}; fix the "
                                  "Dockerfile and attach again") from exc
        say(f"built image {tag} from {path} in {time.monotonic() - started:.1f}s")
        return tag

    def _path(self, value: str, flag: str) -> Path:
        """A file option: relative paths are relative to the workspace's folder."""
        path = Path(os.path.expanduser(value))
        if not path.is_absolute():
            path = self.workspace.root / path
        if not path.is_file():
            raise UsageError(f"{flag} {value}: no such file ({path}); paths are relative to "
                             f"the workspace folder {self.workspace.root}")
        return path

    def _probe(self, image: str) -> None:
        """Run the image's Python once, with the target's limits, as attach's proof."""
        import docker.errors
        import requests.exceptions

        code = "import sys; print('%d.%d' % sys.version_info[:2])"
        with self._errors():
            try:
                container = self.engine.containers.create(
                    image, [self.python, "-c", code], network_mode="none",
                    labels={LABEL_TARGET: self.name}, **self._limits())
            except docker.errors.APIError as exc:
                raise TargetError(self._start_error(image, exc)) from exc
            try:  # containers.run(remove=True) would leave it behind when start fails
                container.start()
                exit_code = container.wait(timeout=60).get("StatusCode")
                out = container.logs(stdout=True, stderr=True).decode(errors="replace")
            except docker.errors.APIError as exc:
                raise TargetError(self._start_error(image, exc)) from exc
            except requests.exceptions.ReadTimeout as exc:
                raise TargetError(f"{self.python} in image {image} did not print its version "
                                  "within 60 s; check the image") from exc
            finally:
                with contextlib.suppress(Exception):
                    container.remove(v=True, force=True)
        lines = out.strip().splitlines()
        if exit_code != 0 or not lines or not re.fullmatch(r"\d+\.\d+", lines[-1]):
            raise TargetError(f"{self.python} in image {image} failed: "
                              f"{lines[-1] if lines else f'exit code {exit_code}'}; set --python "
                              "to the image's Python 3")
        if tuple(int(p) for p in lines[-1].split(".")) < (3, 8):
            raise TargetError(f"image {image} has Python {lines[-1]}; the agent needs Python "
                              "3.8 or newer (set --python, or use another image)")

    # -- containers ----------------------------------------------------------------------

    def _limits(self) -> dict[str, Any]:
        limits: dict[str, Any] = {}
        if self.memory is not None:
            # memswap = memory: the limit is what the script gets, not twice it with swap
            limits.update(mem_limit=self.memory, memswap_limit=self.memory)
        if self.cpus is not None:
            limits["nano_cpus"] = int(float(self.cpus) * 1e9)
        if self.shm_size is not None:
            limits["shm_size"] = self.shm_size
        if self.gpus is not None:
            from docker.types import DeviceRequest

            limits["device_requests"] = [DeviceRequest(capabilities=[["gpu"]], **self.gpus)]
        return limits

    def _start(self, ctx: SubmitContext, run_dir: Path, overlay: bool) -> None:
        import docker.errors

        run_id, d = ctx.run_id, ctx.agent["docker"]
        mounts = run_mounts(self.workspace.dir, run_dir, ctx.scratch["docker"]["lower"],
                            Path(ctx.snap.manifest_path), overlay)
        environment = {protocol.ENV_RUN_ID: run_id}
        labels = {LABEL_RUN: run_id, LABEL_TARGET: self.name,
                  LABEL_WORKSPACE: str(self.workspace.dir)}
        if self.keep:
            labels[LABEL_KEEP] = "1"
        with self._errors():
            user = self._user()
            if user:
                environment["HOME"] = "/tmp"  # the image has no home for this uid
            try:
                container = self.engine.containers.create(
                    d["image"], protocol.agent_command(d["python"], RUNTIME_DIR, RUN_DIR),
                    name=f"jc-{run_id}", labels=labels, mounts=mounts,
                    network_mode=self.network, working_dir=RUN_DIR, environment=environment,
                    user=user, detach=True, **self._limits())
            except docker.errors.ImageNotFound:
                raise TargetError(missing_image(d["image"], "the run")) from None
            except docker.errors.APIError as exc:
                raise TargetError(self._start_error(d["image"], exc, d["python"])) from exc
            # written before start: from now on every reader can find the container
            info = run_dir / STATE / "container.json"
            protocol.write_json_atomic(str(info), {
                "id": container.id, "name": container.name, "image": d["image"],
                "overlay": overlay, "engine": self.url}, 0o600)
            try:
                container.start()
            except docker.errors.APIError as exc:
                with contextlib.suppress(Exception):
                    container.remove(v=True, force=True)
                os.unlink(info)
                text = _said(exc)
                if overlay and ("overlay" in text or "local volume" in text):
                    raise _OverlayUnavailable(text) from exc
                raise TargetError(self._start_error(d["image"], exc, d["python"])) from exc

    def _start_error(self, image: str, exc: Exception, python: str | None = None) -> str:
        text = _said(exc)
        if 'exec: "' in text and ("executable file not found" in text
                                  or "no such file or directory" in text):
            return (f"image {image} has no {python or self.python}: use an image with Python 3, "
                    "or set --python to its interpreter")
        if "device driver" in text and "gpu" in text:
            return ("the engine cannot give GPUs to containers (no NVIDIA Container Toolkit): "
                    "install it, or attach without --gpus")
        return f"the engine could not start a container of {image}: {text}"

    def _user(self) -> str | None:
        """Run as the calling user, so the files the run writes stay theirs.

        Not for root (the default already) and not on a rootless engine, whose
        container root already is the calling user.
        """
        if not hasattr(os, "getuid") or os.getuid() == 0:
            return None
        if self.url not in _rootless:
            options = self.engine.info().get("SecurityOptions") or []
            _rootless[self.url] = any("rootless" in opt for opt in options)
        return None if _rootless[self.url] else f"{os.getuid()}:{os.getgid()}"

    def _container(self, host: Host, run_id: str) -> Any:
        """The run's container, or None (not launched, removed, or engine unreachable)."""
        info = protocol.read_json(os.path.join(host.run_dir(run_id), STATE, "container.json"))
        if not info:
            return None
        try:
            return self.engine.containers.get(info["id"])
        except Exception:  # noqa: BLE001 - absent for whatever reason: nothing to act on
            return None

    def _state(self, host: Host, run_id: str) -> str | None:
        """The container's state (``running``, ``exited``, ``missing``, …), or None if
        it was never created; ``unknown`` when the engine does not answer."""
        now = time.monotonic()
        seen = _seen.get((self.url, run_id))
        if seen is not None and now - seen[0] < INSPECT_EVERY:
            return seen[1]
        info = protocol.read_json(os.path.join(host.run_dir(run_id), STATE, "container.json"))
        if not info:
            return None
        import docker.errors

        try:
            state = self.engine.api.inspect_container(info["id"])["State"]["Status"]
        except docker.errors.NotFound:
            state = "missing"
        except Exception:  # noqa: BLE001 - engine down: the agent's heartbeat decides
            return "unknown"
        _seen[self.url, run_id] = (now, state)
        return str(state)

    def _backstop(self, host: Host, run_id: str) -> bool:
        """Kill the container of a canceled run still running past its grace, and end the
        run as Canceled (its agent cannot any more); True if so."""
        run_dir = Path(host.run_dir(run_id))
        try:
            asked = (run_dir / protocol.CANCEL).stat().st_mtime
        except FileNotFoundError:
            return False
        spec = protocol.read_json(str(run_dir / protocol.SPEC)) or {}
        if time.time() - asked < float(spec.get("cancel_grace_seconds", 3)) + KILL_MARGIN:
            return False
        container = self._container(host, run_id)
        if container is not None:
            with contextlib.suppress(Exception):
                container.kill()
                container.wait(timeout=10)
        _seen.pop((self.url, run_id), None)
        st = json.loads(host.read(run_id, protocol.STATUS) or b"{}")
        if st.get("status") not in protocol.TERMINAL_STATUSES:  # the reader finds it ended
            now = protocol.utcnow()
            st.update(status=RunStatus.CANCELED.value, ended=now, exit_code=None,
                      error="canceled by request; the container was stopped after the grace "
                            "period")
            st.setdefault("history", []).append([RunStatus.CANCELED.value, now])
            host.write(run_id, protocol.STATUS, json.dumps(st, indent=1).encode())
        return True

    def _finalize(self, host: Host, run_id: str, st: dict[str, Any]) -> dict[str, Any]:
        """Read how the container ended, explain it in ``st``, and remove the container."""
        import docker.errors

        run_dir = Path(host.run_dir(run_id))
        info = protocol.read_json(str(run_dir / STATE / "container.json"))
        if info:
            try:
                container = self.engine.containers.get(info["id"])
                if container.status in _LIVE_STATES:
                    # The agent writes its terminal status last, then exits.
                    try:
                        container.wait(timeout=10)
                    except docker.errors.NotFound:
                        raise
                    except Exception:  # noqa: BLE001 - it did not exit: end it
                        with contextlib.suppress(docker.errors.APIError):
                            container.kill()
                    container.reload()
            except docker.errors.NotFound:  # removed already (by another reader)
                container = None
            except Exception:  # noqa: BLE001 - engine unreachable: finish on a later read
                return st
            if container is not None:
                st = self._read_exit(host, run_id, st, container)
                if not self.keep:
                    with contextlib.suppress(docker.errors.APIError):
                        container.remove(v=True, force=True)
        work = run_dir / STATE / "work" / "work"  # overlayfs makes it root-only: rmdir it
        with contextlib.suppress(OSError):
            work.rmdir()
        (run_dir / STATE).mkdir(exist_ok=True)
        (run_dir / STATE / "finalized").touch()
        _seen.pop((self.url, run_id), None)
        return st

    def _read_exit(self, host: Host, run_id: str, st: dict[str, Any], container: Any
                   ) -> dict[str, Any]:
        """Say in ``st`` why the run ended when the container knows better than the agent.

        Only the explanation changes, never the status: a terminal status is final.
        """
        state = container.attrs.get("State") or {}
        if state.get("OOMKilled") and st["status"] == RunStatus.FAILED.value:
            limit = self.config.get("memory")
            why = (f"killed: out of memory (memory limit {limit}); raise --memory" if limit else
                   "killed: out of memory (no --memory limit: the machine ran out); use less "
                   "memory or a bigger machine")
        elif str(st.get("error") or "").startswith("agent lost"):
            tail = b""
            with contextlib.suppress(Exception):
                tail = container.logs(stdout=True, stderr=True, tail=5)
            lines = tail.decode(errors="replace").strip().splitlines()
            why = (f"agent lost: the container exited with code {state.get('ExitCode')} "
                   "before the run ended" + (f": {lines[-1]}" if lines else ""))
        else:
            return st
        st.update(error=why, exit_code=st.get("exit_code") or state.get("ExitCode"))
        LogLine(Path(host.run_dir(run_id)) / protocol.LOG)(why)
        host.write(run_id, protocol.STATUS, json.dumps(st, indent=1).encode())
        return st

    def _sweep(self, host: Host) -> None:
        """Finish this target's ended runs whose containers exited while nobody watched."""
        try:
            exited = self.engine.containers.list(all=True, sparse=True, filters={
                "status": "exited", "label": [f"{LABEL_TARGET}={self.name}",
                                              f"{LABEL_WORKSPACE}={self.workspace.dir}"]})
        except Exception:  # noqa: BLE001 - housekeeping never stops a submit
            return
        for container in exited:
            labels = container.attrs.get("Labels") or {}
            run_id = labels.get(LABEL_RUN)
            if labels.get(LABEL_KEEP) or not run_id:
                continue
            if not os.path.isdir(host.run_dir(run_id)):  # its run folder was deleted
                with contextlib.suppress(Exception):
                    container.remove(v=True, force=True)
                continue
            with contextlib.suppress(Exception):
                st = json.loads(host.read(run_id, protocol.STATUS) or b"{}")
                # A run that has not ended is left to its next reader, who applies the
                # lost-agent rule (and so comes here, through ``ended``).
                if st.get("status") in protocol.TERMINAL_STATUSES:
                    self.ended(host, run_id, st)


class _OverlayUnavailable(Exception):
    """The engine cannot mount the snapshot as an overlay volume."""


class LogLine:
    """Appends ``[docker] …`` lines to a log: a run's (where the user looks), or attach's."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, line: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"[docker] {line}\n".encode(errors="replace"))
        finally:
            os.close(fd)


def _connect(url: str, base_url: str | None) -> Any:
    try:
        import docker
    except ImportError as exc:
        raise TargetError("the docker target needs the docker SDK: pip install "
                          "'jupyter_compute[docker]'") from exc
    try:
        if base_url:
            return docker.DockerClient(base_url=base_url, version="auto")
        return docker.from_env(version="auto")  # honours DOCKER_HOST, DOCKER_TLS_VERIFY, …
    except docker.errors.DockerException as exc:
        raise TargetError(engine_error(url, exc)) from exc


def engine_error(url: str, exc: BaseException) -> str:
    """One line for an engine that cannot be reached, saying what to do."""
    text = " ".join(str(e) for e in _chain(exc))
    low = text.lower()
    if "permission denied" in low:
        where = url.split("://", 1)[-1]
        return (f"permission denied on the Docker socket {where}: add your user to the "
                "'docker' group (sudo usermod -aG docker $USER, then log in again), or run "
                "as root")
    if any(s in low for s in ("no such file", "connection refused", "connection aborted",
                              "failed to establish", "max retries", "connection reset")):
        return (f"no Docker engine at {url}: start dockerd (scripts/start-dockerd.sh here, "
                "or 'sudo systemctl start docker'), or attach with --base-url pointing at a "
                "running engine")
    return (f"cannot talk to the Docker engine at {url}: {_last_line(text)}; check that "
            "dockerd runs and --base-url is right")


def _named(wheel: str, lines: list[str]) -> bool:
    """Whether a requirement line names the project of wheel file ``wheel``."""
    project = re.sub(r"[-_.]+", "-", wheel.split("-")[0]).lower()
    return any(re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~;\[@(]", line.strip(), maxsplit=1)[0]
                      ).lower() == project for line in lines)


def missing_image(image: str, what: str) -> str:
    """One line for an image the engine lacks, saying how to get it there."""
    return (f"no image {image!r} ({what}) on the Docker engine, and there is no registry "
            f"access to pull one: build it locally ({BASE_IMAGE_SCRIPT} builds {DEFAULT_IMAGE} "
            "from Debian packages; docker build, or attach with --dockerfile PATH)")


def _said(exc: Exception) -> str:
    """The engine's own words from an ``APIError``, on one line."""
    text = str(getattr(exc, "explanation", None) or exc)
    return _last_line(text)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text.strip()


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__




def parse_gpus(value: Any) -> dict[str, Any] | None:
    """``all`` / ``2`` / ``device=0,1`` → DeviceRequest arguments (as ``docker run --gpus``)."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if text == "all":
        return {"count": -1}
    if text.isdigit():
        return {"count": int(text)}
    if text.startswith("device="):
        return {"device_ids": [d for d in text[7:].split(",") if d]}
    raise UsageError(f"--gpus must be all, a count or device=0,1, not {value!r}")
