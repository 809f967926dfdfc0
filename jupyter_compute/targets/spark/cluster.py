"""The embedded Spark standalone cluster: one master and one worker on 127.0.0.1.

::

    cluster = EmbeddedSparkCluster(ws.dir, "spark", WorkerShape(cores=2, memory="2g"))
    state = cluster.ensure()     # start it unless it runs; any process can call this
    state.master_url             # spark://127.0.0.1:PORT
    cluster.stop()               # ends this cluster's JVMs, and only those

The pip package of pyspark has no ``start-master.sh``: the master and the worker are
``spark-class org.apache.spark.deploy.master.Master`` / ``…worker.Worker`` run
directly (``spark-class`` execs the JVM, so the recorded pid is the JVM's). Every
port is a free one picked here and every listener is on loopback (``--host
127.0.0.1`` and ``SPARK_LOCAL_IP`` for the web UIs); the master's REST submission
server, which takes jobs from anyone who reaches it, is off. Files, under
``<ws>/.jupyter_compute/spark/``::

    <name>.json        the running cluster: master URL, web UI, the JVMs started (pid and
                       start time), Spark's home
    <name>.properties  the daemons' Spark properties
    <name>.log         what the master and the worker print (read it when one fails)
    <name>.lock        one process starts or stops the cluster at a time
    <name>/            the worker's folder: executors' work dirs and logs

The cluster outlives the process that started it (a session of its own) and any
process reattaches through ``<name>.json``. ``stop`` signals only what it recorded
(pid *and* start time, so a reused pid is never mistaken for it), the processes
below those (executors), and processes whose command line names the cluster's own
folder; it never looks for JVMs by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.exceptions import TargetError, UsageError
from jupyter_compute.targets.ray.cluster import end_processes, free_ports, owned_processes

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

INSTALL_HINT = "pip install 'jupyter_compute[spark]'"
START_TIMEOUT = 180.0
#: What the daemons of the embedded cluster are told (see the module docstring).
DAEMON_PROPERTIES = {
    "spark.master.rest.enabled": "false",
    "spark.ui.killEnabled": "true",  # cancel kills an application through the master
    "spark.worker.cleanup.enabled": "true",
}


class MasterUnreachableError(TargetError):
    """The Spark master's web UI did not answer."""


@dataclass
class WorkerShape:
    """The embedded cluster's worker: its cores and memory (None: Spark's defaults, all
    cores and the machine's memory less 1 GiB)."""

    cores: int | None = None
    memory: str | None = None


@dataclass
class SparkClusterState:
    """A started embedded cluster, as recorded in ``<name>.json``."""

    name: str
    master_url: str           # spark://127.0.0.1:PORT
    web_ui: str               # http://127.0.0.1:PORT, the master's UI and JSON
    spark_home: str
    started: str
    processes: list[dict[str, Any]] = field(default_factory=list)  # process_identity
    shape: dict[str, Any] = field(default_factory=dict)


def spark_home() -> str:
    """Where pyspark is installed (Spark's home); a one-line error when it is missing."""
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.origin:
        raise UsageError(f"pyspark is not installed here: {INSTALL_HINT}")
    return os.path.dirname(spec.origin)


def java_executable() -> str:
    """The ``java`` Spark will run (``$JAVA_HOME/bin/java``, else on PATH); a one-line
    error when there is none."""
    home = os.environ.get("JAVA_HOME")
    found = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not found or not os.access(found, os.X_OK):
        where = f"JAVA_HOME={home} has no bin/java" if home else "no java on PATH"
        raise UsageError(f"Java is missing ({where}): Spark needs a Java 17 runtime; install "
                         "one (apt-get install openjdk-17-jre-headless) or set JAVA_HOME")
    return found


# -- the master's JSON -------------------------------------------------------------------


def master_json(web_ui: str, timeout: float = 5.0) -> dict[str, Any]:
    """The master's ``/json/`` (workers, cores, apps); a one-line error if it does not answer."""
    try:
        with urllib.request.urlopen(web_ui.rstrip("/") + "/json/", timeout=timeout) as resp:
            found: dict[str, Any] = json.loads(resp.read())
            return found
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise MasterUnreachableError(f"the Spark master's web UI at {web_ui} does not answer "
                                     f"({reason}); is the master running there? (give its "
                                     "UI with --master-ui if it is not on port 8080)") from None


def kill_application(web_ui: str, app_id: str, timeout: float = 5.0) -> None:
    """Ask the master to kill application ``app_id`` (its executors end with it)."""
    data = urllib.parse.urlencode({"id": app_id, "terminate": "true"}).encode()
    req = urllib.request.Request(web_ui.rstrip("/") + "/app/kill/", data=data, method="POST")
    with contextlib.suppress(OSError), urllib.request.urlopen(req, timeout=timeout):
        pass  # the master answers with a redirect to its page; the app is gone or going


def executor_counts(web_ui: str, timeout: float = 3.0) -> dict[str, int]:
    """Live executors per application id, from the workers' own JSON (the master's lists
    none); where a worker's UI does not answer, its used cores stand in under ``"?"``."""
    found: dict[str, int] = {}
    for worker in master_json(web_ui, timeout).get("workers") or []:
        if worker.get("state") != "ALIVE":
            continue
        try:
            with urllib.request.urlopen(str(worker.get("webuiaddress", "")).rstrip("/")
                                        + "/json/", timeout=timeout) as resp:
                detail = json.loads(resp.read())
        except (OSError, ValueError):
            if worker.get("coresused"):
                found["?"] = found.get("?", 0) + int(worker["coresused"])
            continue
        for executor in detail.get("executors") or []:
            app = str(executor.get("appid", "?"))
            found[app] = found.get(app, 0) + 1
    return found


# -- the embedded cluster ------------------------------------------------------------------


class EmbeddedSparkCluster:
    """A master and a worker on this machine, owned by target ``name``; see the module."""

    def __init__(self, ws_dir: Path, name: str, shape: WorkerShape | None = None) -> None:
        self.name = name
        self.shape = shape or WorkerShape()
        self.folder = Path(ws_dir) / "spark"
        self.state_path = self.folder / f"{name}.json"
        self.log_path = self.folder / f"{name}.log"
        self.properties_path = self.folder / f"{name}.properties"
        self.work_dir = self.folder / name

    def load(self) -> SparkClusterState | None:
        """The recorded cluster, or None if none was started (or it was stopped)."""
        try:
            raw = protocol.read_json(str(self.state_path))
        except ValueError:
            return None
        return SparkClusterState(**raw) if isinstance(raw, dict) else None

    def running(self, state: SparkClusterState | None = None) -> bool:
        """Whether the recorded master JVM still lives (cheap: no network)."""
        state = state or self.load()
        return bool(state and state.processes and protocol.process_alive(state.processes[0]))

    def ensure(self) -> SparkClusterState:
        """The running cluster, started first if it is not (under a lock, so two processes
        asking at once start one cluster)."""
        state = self.load()
        if state is not None and self.running(state):
            return state
        with self._lock():
            state = self.load()
            if state is not None and self.running(state):
                return state
            if state is not None:  # its master died: end what is left of it first
                end_processes(str(self.work_dir), state.processes)
            return self._start()

    def processes(self, state: SparkClusterState | None = None) -> list[int]:
        """PIDs of this cluster's live processes (master, worker, executors)."""
        state = state or self.load()
        return owned_processes(str(self.work_dir), state.processes if state else [])

    def stop(self) -> int:
        """End the cluster's JVMs (SIGTERM, SIGKILL after a grace); how many there were."""
        with self._lock():
            state = self.load()
            ended = end_processes(str(self.work_dir), state.processes if state else [])
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.state_path)
        return ended

    # -- start -----------------------------------------------------------------------

    def _start(self) -> SparkClusterState:
        java_executable()
        home = spark_home()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        self.properties_path.write_text("".join(f"{k}={v}\n"
                                                for k, v in DAEMON_PROPERTIES.items()))
        port, ui, worker_port, worker_ui = free_ports(4)
        env = {**os.environ, "SPARK_HOME": home, "SPARK_LOCAL_IP": "127.0.0.1",
               "SPARK_LOG_DIR": str(self.work_dir), "SPARK_WORKER_DIR": str(self.work_dir),
               "SPARK_NO_DAEMONIZE": "1"}
        spark_class = os.path.join(home, "bin", "spark-class")
        master_url, web_ui = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}"
        state = SparkClusterState(self.name, master_url, web_ui, home, protocol.utcnow(),
                                  shape=asdict(self.shape))
        worker_args = ["--cores", str(self.shape.cores)] if self.shape.cores else []
        if self.shape.memory:
            worker_args += ["--memory", str(self.shape.memory)]
        with open(self.log_path, "ab") as log:
            for argv, ready in (
                    ([spark_class, "org.apache.spark.deploy.master.Master", "--host",
                      "127.0.0.1", "--port", str(port), "--webui-port", str(ui),
                      "--properties-file", str(self.properties_path)],
                     lambda j: j.get("status") == "ALIVE"),
                    ([spark_class, "org.apache.spark.deploy.worker.Worker", "--host",
                      "127.0.0.1", "--port", str(worker_port), "--webui-port", str(worker_ui),
                      "--work-dir", str(self.work_dir), *worker_args,
                      "--properties-file", str(self.properties_path), master_url],
                     lambda j: int(j.get("aliveworkers") or 0) >= 1)):
                log.write(f"$ {' '.join(argv)}\n".encode())
                log.flush()
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True, close_fds=True)
                state.processes.append(protocol.process_identity(proc.pid))
                try:
                    self._wait(state, proc, ready)
                except BaseException:  # failed, or interrupted: nothing half-started stays
                    end_processes(str(self.work_dir), state.processes)
                    raise
        protocol.write_json_atomic(str(self.state_path), asdict(state))
        return state

    def _wait(self, state: SparkClusterState, proc: subprocess.Popen[bytes], ready: Any) -> None:
        """Wait until the master's JSON says ``ready``; a clear error if it never does."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            code = proc.poll()
            if code is None:
                with contextlib.suppress(MasterUnreachableError):
                    if ready(master_json(state.web_ui, timeout=2)):
                        return
            if code is not None or time.monotonic() > deadline:
                last = _last_error(self.log_path)  # before the others' shutdown lines
                why = f"exited {code}" if code is not None else "timed out"
                raise TargetError(f"the embedded Spark cluster of {self.name!r} failed to "
                                  f"start ({why}: {last}); see {self.log_path}")
            time.sleep(0.5)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"{self.name}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _last_error(log_path: Path) -> str:
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines()
                 if line.strip() and not line.startswith("$ ")]
    except OSError:
        return "no output"
    for line in reversed(lines):
        if " ERROR " in line or "Exception" in line or "Error:" in line:
            return line[:300]
    return lines[-1][:300] if lines else "no output"
