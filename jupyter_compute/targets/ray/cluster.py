"""The embedded Ray cluster: a head and autoscaled worker "nodes" on this machine.

::

    cluster = EmbeddedCluster(ws.dir, "cpu-cluster", ClusterShape(max_nodes=2))
    state = cluster.ensure()     # start it unless it runs; any process can call this
    state.address                # http://127.0.0.1:PORT, the head's dashboard
    cluster.stop()               # ends this cluster's processes, and only those

Worker nodes are local processes that Ray's autoscaler starts and removes through
its fake multi-node provider (``RAY_FAKE_CLUSTER=1``). What ``ray start`` needs is
built here: the autoscaler config (Ray 2.60's wheel lacks the provider's
``example.yaml``, which ``AutoscalingCluster`` reads), free ports for everything
that has a fixed default (so the user's own clusters on 6379/8265 are untouched),
and a temp dir of its own. Files, under ``<ws>/.jupyter_compute/ray/``::

    <name>.json             the running cluster: address, ports, temp dir, head process
    <name>.autoscaler.json  the autoscaler config (Ray re-reads it: edits apply live)
    <name>.log              what `ray start` printed (read it when the head fails)
    <name>.token            the cluster's auth token (mode 600; see below)
    <name>.lock             one process starts or stops the cluster at a time
    <name>/                 Ray's --temp-dir (sessions, logs), when its path is short
                            enough for Ray's unix sockets; else /tmp/jc-ray-<hash>/

Ray binds its GCS to every interface (it refuses loopback for a node's address),
so the cluster runs with Ray's token authentication: a fresh token per start, in
``<name>.token``, readable by its owner only; the dashboard listens on loopback.
Jobs inherit the token, so ``ray.init()`` inside a run just works.

The cluster outlives the process that started it (its own session), and any
process reattaches through ``<name>.json``. ``stop`` never runs ``ray stop``, which
ends every Ray process on the machine: it signals only what is provably this
cluster's (``owned_processes``): the processes recorded by pid and start time when
the head started, those whose command line names the cluster's own temp dir, and
their descendants. A port number in a command line proves nothing (any process may
end an argument with ``:<gcs_port>``), so it is never a reason to signal.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.exceptions import TargetError
from jupyter_compute.targets.ray.jobs import (
    DEFAULT_TIMEOUT,
    TERMINAL,
    ClusterUnreachableError,
    JobNotFoundError,
    JobsClient,
    NotRayError,
)

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

INSTALL_HINT = "pip install 'jupyter_compute[ray]'"
HEAD_TYPE = "ray.head.default"
#: Ray's unix sockets live under <temp>/session_<stamp>_<pid>/sockets/; Linux allows
#: 107 bytes for a socket path, which leaves this much for the temp dir itself.
MAX_TEMP_DIR = 36
START_TIMEOUT = 240.0
STOP_GRACE = 5.0
MIN_OBJECT_STORE = 80 * 1024 * 1024  # Ray refuses less than 75 MiB


class HeadStartError(TargetError):
    """``ray start --head`` failed; the message names its log file."""

    #: Ray's fixed wait for the raylet ran out (a loaded machine; worth one retry).
    startup_timed_out = False


#: What ``ray start`` prints when the raylet did not register within Ray's fixed 30 s.
STARTUP_TIMED_OUT = "timed out during startup"


@dataclass
class ClusterShape:
    """What the embedded cluster looks like: one worker node type, its bounds, its idle time.

    >>> ClusterShape(min_nodes=0, max_nodes=4, node_cpus=2, idle_seconds=120)
    """

    min_nodes: int = 0
    max_nodes: int = 2
    node_cpus: int = 1
    node_memory: int | None = None   # bytes; sizes the object store (see autoscaler_config)
    idle_seconds: float = 120.0
    node_type: str = "cpu"


@dataclass
class ClusterState:
    """A started embedded cluster, as recorded in ``<name>.json``."""

    name: str
    address: str              # the dashboard: http://127.0.0.1:PORT
    gcs_port: int
    node_ip: str
    temp_dir: str
    config_path: str
    log_path: str
    started: str
    head: dict[str, Any] = field(default_factory=dict)  # process_identity of the GCS
    #: process_identity of every process the head had once `ray start` returned.
    processes: list[dict[str, Any]] = field(default_factory=list)
    ephemeral: bool = False
    shape: dict[str, Any] = field(default_factory=dict)

    @property
    def gcs_address(self) -> str:
        return f"{self.node_ip}:{self.gcs_port}"


def autoscaler_config(shape: ClusterShape, gcs_address: str,
                      name: str = "jupyter-compute") -> dict[str, Any]:
    """The fake multi-node autoscaler config for ``shape`` (a pure function).

    Worker nodes get ``CPU`` and an object store; ``memory`` cannot be one of their
    resources, because the fake provider passes every resource but CPU, GPU and the
    object store to Ray as a custom one, which Ray refuses for ``memory``.

    >>> autoscaler_config(ClusterShape(max_nodes=2), "127.0.0.1:6379")["max_workers"]
    2
    """
    store = max(MIN_OBJECT_STORE, int(shape.node_memory * 0.3) if shape.node_memory
                else 512 * 1024 * 1024)
    worker = {"resources": {"CPU": shape.node_cpus, "object_store_memory": store},
              "node_config": {}, "min_workers": shape.min_nodes,
              "max_workers": shape.max_nodes}
    return {
        "cluster_name": name,
        "max_workers": shape.max_nodes,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": max(shape.idle_seconds, 1.0) / 60.0,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True,
                     # Workers join this cluster's GCS, not the default port 6379.
                     "gcs_address": gcs_address},
        "available_node_types": {
            HEAD_TYPE: {"resources": {}, "node_config": {}, "max_workers": 0},
            shape.node_type: worker,
        },
        "head_node_type": HEAD_TYPE,
        # What follows is required by the config schema and unused by the provider.
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def ray_executable() -> str:
    """The ``ray`` command of this environment; a one-line error when Ray is missing."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise TargetError(f"Ray is not installed in this environment ({sys.executable}); "
                          f"install it with: {INSTALL_HINT}")
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise TargetError(f"Ray is installed but its 'ray' command is not on PATH; "
                          f"reinstall it with: {INSTALL_HINT}")
    return found


class EmbeddedCluster:
    """The embedded cluster ``name`` of the workspace in ``ws_dir`` (``.jupyter_compute``)."""

    def __init__(self, ws_dir: Path, name: str, shape: ClusterShape | None = None,
                 ephemeral: bool = False) -> None:
        self.ws_dir = Path(ws_dir)
        self.name = name
        self.shape = shape or ClusterShape()
        self.ephemeral = ephemeral
        self.folder = self.ws_dir / "ray"
        self.state_path = self.folder / f"{name}.json"
        self.config_path = self.folder / f"{name}.autoscaler.json"
        self.log_path = self.folder / f"{name}.log"

    # -- state -----------------------------------------------------------------------

    @property
    def temp_dir(self) -> str:
        """Ray's temp dir: in the workspace when the path is short enough, else in /tmp."""
        own = str(self.folder / self.name)
        if len(own) <= MAX_TEMP_DIR:
            return own
        key = hashlib.sha256(own.encode()).hexdigest()[:12]
        return f"/tmp/jc-ray-{key}"

    def load(self) -> ClusterState | None:
        """The recorded state, or None when the cluster was never started (or stopped)."""
        raw = protocol.read_json(str(self.state_path))
        if not isinstance(raw, dict):
            return None
        try:
            return ClusterState(**raw)
        except TypeError:  # written by another version: treat as unknown
            return None

    def running(self, state: ClusterState | None = None) -> bool:
        """Whether the recorded cluster's head (its GCS) is alive; cheap, no network."""
        state = state or self.load()
        if state is None:
            return False
        alive = protocol.process_alive(state.head) if state.head else None
        if alive is None:  # another host or no /proc: ask the head itself
            try:
                self.client(state, timeout=2).version()
                return True
            except TargetError:
                return False
        return alive

    @property
    def token_path(self) -> Path:
        return self.folder / f"{self.name}.token"

    def token(self) -> str | None:
        """The running cluster's auth token (None if it has none)."""
        try:
            return self.token_path.read_text(encoding="ascii").strip() or None
        except FileNotFoundError:
            return None

    def client(self, state: ClusterState | None = None,
               timeout: float = DEFAULT_TIMEOUT) -> JobsClient:
        """A client of the running cluster's head, with its token."""
        state = state or self.load()
        if state is None:
            raise TargetError(f"the embedded cluster {self.name!r} is not running; start it "
                              f"with: jupyter-compute start {self.name}")
        return JobsClient(state.address, token=self.token(), timeout=timeout)

    # -- start -----------------------------------------------------------------------

    def ensure(self, timeout: float = START_TIMEOUT) -> ClusterState:
        """Start the cluster unless it runs; apply a changed shape to a running one."""
        state = self.load()
        if state is not None and self.running(state):
            self._write_config(state.gcs_address)  # a no-op unless the shape changed
            return state
        with self._lock():
            state = self.load()  # another process may have started it meanwhile
            if state is not None and self.running(state):
                return state
            if state is not None:  # it died (reboot, killed): clear what is left of it
                self._end_processes(state)
            return self._start(timeout)

    def _start(self, timeout: float) -> ClusterState:
        """Start the head; once more, on fresh ports, when Ray's own start-up wait ran out.

        ``ray start`` gives the raylet a fixed 30 s to register with the GCS (not
        configurable in Ray 2.x), which a loaded machine can miss although nothing is
        wrong; the failed attempt's processes are ended first (only ours).
        """
        deadline = time.monotonic() + timeout
        try:
            return self._start_once(timeout, append_log=False)
        except HeadStartError as first:
            left = deadline - time.monotonic()
            if not first.startup_timed_out or left < 60:
                raise
            return self._start_once(left, append_log=True)

    def _start_once(self, timeout: float, append_log: bool) -> ClusterState:
        ray = ray_executable()
        temp = self.temp_dir
        os.makedirs(temp, exist_ok=True)
        _prune_sessions(temp)
        gcs, dashboard, client, agent = free_ports(4)
        node_ip = local_node_ip()
        self._write_config(f"{node_ip}:{gcs}")
        token = secrets.token_hex(24)
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        head_store = MIN_OBJECT_STORE * 2
        cmd = [ray, "start", "--head", f"--autoscaling-config={self.config_path}",
               "--num-cpus=0", f"--temp-dir={temp}", f"--port={gcs}",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
               f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
               f"--object-store-memory={head_store}", "--disable-usage-stats"]
        env = dict(os.environ)
        env.update(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1",
                   # Ray's SIGKILL comes after the agent's own SIGTERM-then-SIGKILL grace.
                   RAY_JOB_STOP_WAIT_TIME_S="10",
                   # A bare `python` in a job then means this environment's Python.
                   PATH=os.pathsep.join([str(Path(sys.executable).parent),
                                         env.get("PATH", "")]))
        env.pop("RAY_ADDRESS", None)  # never join (or be confused with) another cluster
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        started = protocol.utcnow()
        # A retry keeps the first attempt's output: why it failed stays readable.
        with open(self.log_path, "ab" if append_log else "wb") as log:
            since = log.tell()
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                    close_fds=True)
            code, spawned = wait_recording(proc, timeout)
        state = ClusterState(name=self.name, address=f"http://127.0.0.1:{dashboard}",
                             gcs_port=gcs, node_ip=node_ip, temp_dir=temp,
                             config_path=str(self.config_path), log_path=str(self.log_path),
                             started=started, ephemeral=self.ephemeral,
                             shape=asdict(self.shape))
        # What `ray start` left behind is ours even where its command line does not say so
        # (Ray's client server names only the GCS address): recorded by pid and start time.
        state.processes = [ident for ident in spawned if protocol.process_alive(ident)]
        known = {ident["pid"] for ident in state.processes}
        state.processes += [protocol.process_identity(pid)
                            for pid in owned_processes(temp) if pid not in known]
        if code != 0:
            self._end_processes(state)
            why = "timed out" if code is None else f"exited {code}"
            error = HeadStartError(f"the Ray head of {self.name!r} failed to start (ray start "
                                   f"{why}: {_last_error(self.log_path)}); see {self.log_path}")
            error.startup_timed_out = code is not None and startup_timed_out(self.log_path, since)
            raise error
        gcs_pid = _find_gcs(temp)
        state.head = protocol.process_identity(gcs_pid) if gcs_pid else {}
        deadline = time.monotonic() + 60
        while True:  # `ray start` returns once the dashboard is up; the job agent may lag
            try:
                JobsClient(state.address, token=token, timeout=2).request("GET", "/api/jobs/")
                break
            except (ClusterUnreachableError, NotRayError):
                if time.monotonic() > deadline:
                    self._end_processes(state)
                    raise HeadStartError(f"the Ray head of {self.name!r} started but its "
                                         f"dashboard never answered; see {self.log_path} and "
                                         f"{temp}/session_latest/logs/dashboard.log") from None
                time.sleep(0.2)
        protocol.write_json_atomic(str(self.state_path), asdict(state))
        return state

    def _write_config(self, gcs_address: str) -> None:
        config = autoscaler_config(self.shape, gcs_address, name=self.name)
        self.folder.mkdir(parents=True, exist_ok=True)
        if protocol.read_json(str(self.config_path)) != config:
            # Ray's monitor re-reads this file on every update: a new shape applies live.
            protocol.write_json_atomic(str(self.config_path), config)

    # -- stop ------------------------------------------------------------------------

    def stop(self, remove_files: bool = False) -> int:
        """End the cluster's processes (SIGTERM, SIGKILL after a grace); how many there were.

        Of Ray's temp dir only the logs stay; with ``remove_files`` the temp dir, config
        and log go too (an ephemeral cluster).
        """
        with self._lock():
            state = self.load()
            ended = self._end_processes(state) if state is not None else 0
            temp = state.temp_dir if state else self.temp_dir
            # The files first, the record last: once the state file is gone, so is the rest.
            if remove_files:
                shutil.rmtree(temp, ignore_errors=True)
                for path in (self.config_path, self.log_path):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
            else:
                _keep_logs_only(temp)
            for path in (self.state_path, self.token_path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        if remove_files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._lock_path)
        return ended

    def processes(self, state: ClusterState | None = None) -> list[int]:
        """PIDs of this cluster's live processes (head, worker nodes, jobs and their trees)."""
        state = state or self.load()
        return owned_processes(state.temp_dir, state.processes) if state else []

    def _end_processes(self, state: ClusterState) -> int:
        return end_processes(state.temp_dir, state.processes)

    @property
    def _lock_path(self) -> Path:
        return self.folder / f"{self.name}.lock"

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


# -- this cluster's processes, found in /proc --------------------------------------------


def end_processes(temp_dir: str, recorded: Iterable[dict[str, Any]] = (),
                  grace: float = STOP_GRACE) -> int:
    """SIGTERM the cluster's processes, SIGKILL what is left after ``grace``; how many.

    The autoscaler goes first, so it starts no node while the rest goes down. What
    was signalled is remembered by pid and start time: a child whose parent died is
    re-parented (no longer a descendant), and must still go.
    """
    found = owned_processes(temp_dir, recorded)
    if not found:
        return 0
    monitor = [p for p in found if b"monitor.py" in _cmdline(p)]
    known = [*recorded]
    seen: set[int] = set()

    def remember(pids: list[int]) -> None:
        for pid in pids:
            if pid not in seen:
                seen.add(pid)
                known.append(protocol.process_identity(pid))

    remember(found)
    for pid in monitor + [p for p in found if p not in monitor]:
        _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        left = owned_processes(temp_dir, known)
        if not left:
            return len(seen)
        remember(left)
        time.sleep(0.1)
    for _ in range(3):  # SIGKILL what is left, and whatever it started meanwhile
        left = owned_processes(temp_dir, known)
        if not left:
            break
        remember(left)
        for pid in left:
            _kill(pid, signal.SIGKILL)
        time.sleep(0.3)
    return len(seen)


def owned_processes(temp_dir: str, recorded: Iterable[dict[str, Any]] = ()) -> list[int]:
    """Live processes of the cluster whose temp dir is ``temp_dir``.

    A process is the cluster's when its command line names the temp dir (every Ray
    process of a node gets it: ``--temp-dir``, ``--session-dir``, log paths), when it
    is one of ``recorded`` (``process_identity``: pid *and* start time, so a reused
    pid is not mistaken for it), and when it descends from one of those. The calling
    process and its ancestors are never listed.
    """
    table = _process_table()
    temp = temp_dir.rstrip("/").encode()
    roots = {pid for pid, (_, cmd) in table.items() if _names_dir(cmd, temp)}
    roots.update(int(ident["pid"]) for ident in recorded
                 if ident.get("pid") in table and protocol.process_alive(ident))
    owned = _descendants(table, roots)
    me = os.getpid()
    while me > 1:  # never ourselves or an ancestor (a test run inside a job, say)
        owned.discard(me)
        me = table.get(me, (1, b""))[0]
    return sorted(owned)


def _descendants(table: dict[int, tuple[int, bytes]], roots: Iterable[int]) -> set[int]:
    """``roots`` and every process below them in ``table`` (``_process_table``)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return found


def wait_recording(proc: subprocess.Popen[bytes], timeout: float
                    ) -> tuple[int | None, list[dict[str, Any]]]:
    """Wait for ``ray start`` (None on timeout, after killing it) while recording every
    process it starts, by pid and start time: they outlive it, re-parented away."""
    spawned: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while True:
        table = _process_table()
        for pid in _descendants(table, [proc.pid]) - {proc.pid} - spawned.keys():
            spawned[pid] = protocol.process_identity(pid)
        try:
            return proc.wait(timeout=0.1), list(spawned.values())
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                return None, list(spawned.values())


def _process_table() -> dict[int, tuple[int, bytes]]:
    """pid → (ppid, cmdline) of every live, non-zombie process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read()
            fields = raw[raw.rindex(b")") + 2:].split()
            if fields[0] in (b"Z", b"X"):  # exited; PID 1 here is slow to reap
                continue
            table[pid] = (int(fields[1]), _cmdline(pid))
        except (OSError, ValueError):
            continue
    return table


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _names_dir(cmdline: bytes, folder: bytes) -> bool:
    """Whether an argument is ``folder``, lies inside it, or is ``--flag=folder…``."""
    for arg in cmdline.split(b"\0"):
        at = arg.find(folder)
        while at >= 0:
            end = at + len(folder)
            if (at == 0 or arg[at - 1:at] in (b"=", b" ", b":")) and \
                    (end == len(arg) or arg[end:end + 1] in (b"/", b" ")):
                return True
            at = arg.find(folder, at + 1)
    return False


def _find_gcs(temp_dir: str) -> int | None:
    temp = temp_dir.rstrip("/").encode()
    for pid, (_, cmd) in _process_table().items():
        if b"gcs_server" in cmd.split(b"\0", 1)[0] and _names_dir(cmd, temp):
            return pid
    return None


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


# -- small helpers -----------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free right now (the kernel picks them; a race is unlikely)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def local_node_ip() -> str:
    """The address Ray picks for this node (it refuses loopback for a node's IP)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("8.8.8.8", 80))  # UDP: nothing is sent; it only picks the route
        return str(s.getsockname()[0])
    return "127.0.0.1"


def _prune_sessions(temp: str) -> None:
    """Keep the newest old session (its logs) and drop the rest: each holds logs only."""
    sessions = sorted(p for p in Path(temp).glob("session_*") if p.is_dir()
                      and not p.is_symlink())
    for old in sessions[:-1]:
        shutil.rmtree(old, ignore_errors=True)


def _keep_logs_only(temp: str) -> None:
    """Of a stopped cluster keep the logs: unpacked job packages alone can be 100s of MB."""
    for session in Path(temp).glob("session_*"):
        if session.is_symlink() or not session.is_dir():
            continue
        for child in session.iterdir():
            if child.name == "logs":
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    child.unlink()


def startup_timed_out(log_path: Path, since: int = 0) -> bool:
    """Whether ``ray start``'s output (from byte ``since``) says Ray's start-up wait ran out."""
    try:
        with open(log_path, "rb") as f:
            f.seek(since)
            return STARTUP_TIMED_OUT.encode() in f.read()
    except OSError:
        return False


def _last_error(log_path: Path) -> str:
    """The most telling line of ``ray start``'s output."""
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines()
                 if line.strip() and not line.startswith("$ ")]
    except OSError:
        return "no output"
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines]
    for line in reversed(lines):  # a Python exception's own line says it best
        if re.match(r"^[A-Za-z_.]*(Error|Exception): ", line):
            return line[:300]
    for line in reversed(lines):
        if any(w in line for w in ("Error", "error", "failed", "Failed", "refused")):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


# -- the ephemeral cluster's reaper --------------------------------------------------------


def reap(ws_dir: str, name: str, run_dir: str, submission_id: str,
         poll: float = 1.0) -> int:
    """Stop and remove the ephemeral cluster ``name`` once its one run has ended.

    Runs detached (``python -m jupyter_compute.targets.ray.cluster reap …``) from the
    moment the cluster is up, so the cluster goes away even when the submission fails
    before its job exists, or the process that submitted the run is long gone.
    """
    cluster = EmbeddedCluster(Path(ws_dir), name)
    status_path = os.path.join(run_dir, protocol.STATUS)
    while True:
        state = cluster.load()
        if state is None or not cluster.running(state):
            break
        st = protocol.read_json(status_path) or {}
        if protocol.RunStatus(st.get("status", "Queued")).is_terminal():
            break
        try:
            info = cluster.client(state, timeout=5).info(submission_id)
        except JobNotFoundError:
            if _still_submitting(run_dir):  # the job is not submitted yet
                time.sleep(poll)
                continue
            break
        except TargetError:
            info = {}
        if info.get("status") in TERMINAL:
            time.sleep(poll)  # the agent's last status write lands first
            break
        time.sleep(poll)
    cluster.stop(remove_files=True)
    return 0


def _still_submitting(run_dir: str) -> bool:
    """Whether the client that submits the run lives and has not launched it yet."""
    from jupyter_compute.targets.liveness import client_state

    client = client_state(Path(run_dir))
    if client is None or client.get("launched") is not None:
        return False
    alive = client.get("alive")
    return bool(alive) if alive is not None else \
        float(client.get("age", 0.0)) < protocol.HEARTBEAT_TIMEOUT


def main(argv: list[str] | None = None) -> int:
    """``python -m jupyter_compute.targets.ray.cluster reap WS_DIR NAME RUN_DIR JOB_ID``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 5 and args[0] == "reap":
        return reap(args[1], args[2], args[3], args[4])
    print("usage: python -m jupyter_compute.targets.ray.cluster reap WS_DIR NAME RUN_DIR "
          "JOB_ID", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
