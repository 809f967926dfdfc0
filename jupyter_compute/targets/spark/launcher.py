"""How a run starts on Spark: the agent runs ``spark-submit`` in client mode
(``SparkSubmitLauncher``).

The agent is started as for any process target (on this machine, or on the SSH head
node); what it starts is not ``python script`` but ``spark-submit … script args``,
built on the target by ``sparksubmit.py`` (the spec names it as its
``command_builder``), which zips the snapshot's packages for ``--py-files``. So the
driver runs in the snapshot's folder, under the agent, with the run's interpreter
(``spark.pyspark.driver.python``; ``spark.pyspark.python`` for the executors), and an
unchanged script's ``SparkSession.builder.getOrCreate()`` gets the master and the conf
from spark-submit. Dynamic allocation with shuffle tracking is on, from 0 executors to
``max_executors``.

What Spark says of the run (``job_info``): the application id and the driver's UI,
from the driver's own log lines (``Connected to Spark cluster with app ID …``, kept in
the full log), and its state from the master's JSON. Cancel kills the application
through the master, then the agent ends the driver's process group. A failed run's
error is the Python exception's last line, not the tail of Spark's shutdown lines.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.parse

from jupyter_compute import protocol, units
from jupyter_compute.exceptions import TargetError, UsageError
from jupyter_compute.protocol import RunStatus
from jupyter_compute.targets.base import ProcessLauncher
from jupyter_compute.targets.local import LocalHost
from jupyter_compute.targets.runtime import install_runtime
from jupyter_compute.targets.spark.cluster import (
    EmbeddedSparkCluster,
    MasterUnreachableError,
    WorkerShape,
    executor_counts,
    java_executable,
    kill_application,
    master_json,
    spark_home,
)

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.runspec import RunSpec
    from jupyter_compute.targets.base import Host, SubmitContext
    from jupyter_compute.workspace import Workspace

DEFAULTS = {"max_executors": 2, "executor_cores": 1, "executor_memory": "1g",
            "idle_seconds": 60}
#: The run folder's record of where the run went (read back by ``job_info`` and cancel).
RECORD = "spark.json"
NODES_TTL = 1.0
_APP_ID = re.compile(rb"Connected to Spark cluster with app ID (app-[\w-]+)")
_DRIVER_UI = re.compile(rb"Bound SparkUI to [^,]+, and started at (http://[^\s]+)")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b(: .*)?$")


class SparkSubmitLauncher(ProcessLauncher):
    """The agent, whose script is ``spark-submit`` of the run's script; see the module."""

    options = {
        "master": (str, "spark://HOST:7077 of an existing cluster (default: the embedded "
                        "standalone cluster on this machine)"),
        "master_ui": (str, "the master's web UI, http://HOST:8080 (default: port 8080 of the "
                           "master's host)"),
        "max_executors": (int, "most executors of a run; dynamic allocation scales from 0 "
                               "(default 2)"),
        "executor_cores": (int, "cores per executor (default 1)"),
        "executor_memory": (str, "memory per executor, e.g. 1g (default 1g)"),
        "driver_memory": (str, "memory of the driver, e.g. 1g (default: Spark's)"),
        "conf": (list, "KEY=VALUE Spark property for spark-submit (repeatable)"),
        "packages": (str, "Maven coordinates for spark-submit --packages, comma-separated"),
        "idle_seconds": (int, "an idle executor is removed after this long (default 60)"),
        "worker_cores": (int, "cores of the embedded cluster's worker (default: all)"),
        "worker_memory": (str, "memory of the embedded cluster's worker, e.g. 2g (default: "
                               "the machine's less 1 GiB)"),
        "spark_home": (str, "Spark's home on an SSH head node: its bin/spark-submit runs "
                            "(default: spark-submit on the head's PATH)"),
    }

    def __init__(self, name: str, config: dict[str, Any], workspace: Workspace) -> None:
        super().__init__(name, config, workspace)
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}  # run id → what its log told
        self._nodes: tuple[float, dict[str, Any]] | None = None

    # -- the options -----------------------------------------------------------------

    @property
    def embedded(self) -> bool:
        """True when the target owns the embedded cluster (no ``master``)."""
        return not self.config.get("master")

    def opt(self, key: str) -> Any:
        value = self.config.get(key)
        return DEFAULTS.get(key) if value is None else value

    def cluster(self) -> EmbeddedSparkCluster:
        return EmbeddedSparkCluster(self.workspace.dir, self.name, WorkerShape(
            cores=self.config.get("worker_cores"), memory=self.config.get("worker_memory")))

    def confs(self) -> dict[str, str]:
        """The ``conf`` option as ``{key: value}``; one clear line for a malformed one."""
        raw = self.config.get("conf") or []
        found = {}
        for item in [raw] if isinstance(raw, str) else raw:
            key, sep, value = str(item).partition("=")
            if not sep or not key.strip():
                raise UsageError(f"--conf takes KEY=VALUE (a Spark property), not {item!r}")
            found[key.strip()] = value
        return found

    def check_options(self) -> None:
        """One clear line for an option that cannot work."""
        master = self.config.get("master")
        if master and not str(master).startswith("spark://"):
            raise UsageError(f"--master takes a standalone master's spark://HOST:PORT, not "
                             f"{master!r}")
        for key in ("max_executors", "executor_cores"):
            if int(self.opt(key)) < 1:
                raise UsageError(f"--{key.replace('_', '-')} must be at least 1")
        for key in ("executor_memory", "driver_memory", "worker_memory"):
            units.parse_size_option(self.config.get(key), f"--{key.replace('_', '-')}")
        self.confs()

    def loopback(self, master: str) -> bool:
        """Whether the cluster is this machine's loopback one (the embedded cluster, or a
        master on 127.0.0.1): then the driver and its UI listen on loopback only."""
        host = urllib.parse.urlsplit(master.replace("spark://", "http://", 1)).hostname
        return self.embedded or host in ("127.0.0.1", "localhost", "::1")

    def locations(self) -> tuple[str, str]:
        """``(master URL, master web UI)`` of the target's cluster (embedded: running)."""
        if self.embedded:
            state = self.cluster().load()
            if state is None:
                raise UsageError(f"the embedded Spark cluster of {self.name!r} is not "
                                 f"running; start it: jupyter-compute start {self.name}")
            return state.master_url, state.web_ui
        master = str(self.config["master"])
        ui = self.config.get("master_ui")
        if not ui:
            host = urllib.parse.urlsplit(master.replace("spark://", "http://", 1)).hostname
            ui = f"http://{host}:8080"
        return master, str(ui).rstrip("/")

    def check_memory(self, web_ui: str) -> None:
        """Refuse an executor no worker of the cluster can hold (it would wait forever)."""
        want = units.parse_size_option(self.opt("executor_memory"), "--executor-memory")
        workers = [w for w in master_json(web_ui).get("workers") or []
                   if w.get("state") == "ALIVE"]
        if not workers or want is None:
            return
        largest = max(int(w.get("memory") or 0) for w in workers) * 2**20
        if want > largest:
            raise UsageError(f"--executor-memory {self.opt('executor_memory')} is more than any "
                             f"worker of the cluster has (largest: "
                             f"{units.format_size(largest)}); lower --executor-memory"
                             + (" or raise --worker-memory" if self.embedded else ""))

    # -- hooks: before a run -----------------------------------------------------------

    def validate(self, spec: RunSpec) -> None:
        super().validate(spec)
        self.check_options()
        if (spec.kind or "script") != "script" or spec.command is not None:
            raise UsageError(f"target {self.name!r} runs Python scripts through spark-submit, "
                             f"not a {spec.kind or 'command'}; submit the .py script, or run "
                             "it on another target")
        if spec.node_count > 1:
            raise UsageError("node_count > 1 is not how a Spark run spreads: its executors "
                             "scale with the work (--max-executors)")

    def check(self, host: Host) -> None:
        super().check(host)
        self.check_options()
        if not isinstance(host, LocalHost):
            return  # the head node has its own Spark; the first run says if it has not
        spark_home()
        java_executable()
        if not self.embedded:
            self.check_memory(self.locations()[1])
        else:
            state = self.cluster().load()
            if state is not None and self.cluster().running(state):
                self.check_memory(state.web_ui)

    def prepare(self, host: Host) -> None:
        self.check_options()
        if self.embedded:
            if isinstance(host, LocalHost):
                java_executable()
            state = self.cluster().ensure()  # started on first use; a no-op while it runs
            self.check_memory(state.web_ui)
        elif isinstance(host, LocalHost):
            self.check_memory(self.locations()[1])

    def agent_spec(self, host: Host, ctx: SubmitContext) -> None:
        if isinstance(host, LocalHost):  # the agent runs from the runtime folder
            ctx.agent["pythonpath"] = [str(install_runtime(self.workspace.dir))]
        master, web_ui = self.locations()
        ctx.agent["command_builder"] = "sparksubmit"  # runs there: see sparksubmit.py
        ctx.agent["spark_submit"] = self.submit_command(host, ctx, master)
        ctx.scratch[RECORD] = {"master": master, "web_ui": web_ui}

    def submit_command(self, host: Host, ctx: SubmitContext, master: str) -> dict[str, Any]:
        """spark-submit, its options and its environment, for ``sparksubmit.command``;
        ``{python}`` stands for the run's interpreter, known on the target only."""
        home = spark_home() if isinstance(host, LocalHost) else self.config.get("spark_home")
        env = {"SPARK_HOME": str(home)} if home else {}
        submit = f"{home}/bin/spark-submit" if home else "spark-submit"
        conf = {
            "spark.dynamicAllocation.enabled": "true",
            "spark.dynamicAllocation.shuffleTracking.enabled": "true",
            "spark.dynamicAllocation.minExecutors": "0",
            "spark.dynamicAllocation.maxExecutors": str(self.opt("max_executors")),
            "spark.dynamicAllocation.executorIdleTimeout": f"{self.opt('idle_seconds')}s",
            "spark.executor.cores": str(self.opt("executor_cores")),
            "spark.executor.memory": str(self.opt("executor_memory")),
            "spark.ui.showConsoleProgress": "false",  # \r-redrawn bars make no log
            "spark.pyspark.python": "{python}",  # the run's environment, on the executors
            "spark.pyspark.driver.python": "{python}",
        }
        if self.loopback(master):  # a loopback cluster: the driver listens there too
            env["SPARK_LOCAL_IP"] = "127.0.0.1"
            conf.update({"spark.driver.host": "127.0.0.1",
                         "spark.driver.bindAddress": "127.0.0.1"})
        conf.update(self.confs())  # the person's word wins
        argv = ["--master", master, "--deploy-mode", "client", "--name", ctx.record.name]
        if self.config.get("driver_memory"):
            argv += ["--driver-memory", str(self.config["driver_memory"])]
        if self.config.get("packages"):
            argv += ["--packages", str(self.config["packages"])]
        for key, value in conf.items():
            argv += ["--conf", f"{key}={value}"]
        return {"submit": submit, "options": argv, "env": env}

    def launch(self, host: Host, ctx: SubmitContext) -> None:
        protocol.write_json_atomic(str(self.workspace.run_dir(ctx.run_id) / RECORD),
                                   ctx.scratch[RECORD], 0o600)
        super().launch(host, ctx)

    # -- hooks: a run on its way ---------------------------------------------------------

    def job_info(self, host: Host, run_id: str) -> dict[str, Any] | None:
        """``{id, state, ui_url}`` of the run's Spark application; None before it has one."""
        rec = protocol.read_json(str(self.workspace.run_dir(run_id) / RECORD))
        if not rec:
            return None
        with self._lock:
            known = dict(self._jobs.get(run_id) or {})
        if "id" not in known:
            log = host.read(run_id, protocol.LOG)
            found = _APP_ID.search(log)
            if not found:
                return None
            ui = _DRIVER_UI.search(log)
            known = {"id": found.group(1).decode(),
                     "driver_ui": ui.group(1).decode() if ui else None}
            with self._lock:
                self._jobs[run_id] = known
        state = "UNKNOWN"
        try:
            master = master_json(rec["web_ui"], timeout=3)
            for key in ("activeapps", "completedapps"):
                for app in master.get(key) or []:
                    if app.get("id") == known["id"]:
                        state = str(app.get("state"))
        except MasterUnreachableError:
            pass
        running = state in ("RUNNING", "WAITING")
        ui_url = known["driver_ui"] if running and known.get("driver_ui") else \
            f"{rec['web_ui']}/app/?appId={known['id']}"
        return {"id": known["id"], "state": state, "ui_url": ui_url}

    def cancel(self, host: Host, run_id: str, status: dict[str, Any]) -> None:
        """Kill the application through the master (its executors go), then wake the agent,
        which ends the driver's process group."""
        job = None
        try:
            job = self.job_info(host, run_id)
        except TargetError:
            pass
        rec = protocol.read_json(str(self.workspace.run_dir(run_id) / RECORD)) or {}
        if job and rec.get("web_ui"):
            kill_application(rec["web_ui"], job["id"])
        super().cancel(host, run_id, status)

    def ended(self, host: Host, run_id: str, status: dict[str, Any]) -> dict[str, Any]:
        """A failed run's error becomes the Python exception's last line (once, for all)."""
        if status.get("status") != RunStatus.FAILED.value or status.get("python_error") or \
                not status.get("agent"):
            return status
        line = python_error(host.read(run_id, protocol.LOG).decode(errors="replace"))
        if line:
            status = {**status, "error": line, "python_error": True}
            import json

            host.write(run_id, protocol.STATUS, json.dumps(status, indent=1).encode())
        return status

    # -- the cluster's executors --------------------------------------------------------

    def nodes(self, max_age: float = NODES_TTL) -> dict[str, Any]:
        """Executors ``{current, min, max, pending, idle, running}``; cached ``max_age`` s."""
        with self._lock:
            if self._nodes and time.monotonic() - self._nodes[0] < max_age:
                return dict(self._nodes[1])
        found: dict[str, Any] = {"current": 0, "min": 0, "max": int(self.opt("max_executors")),
                                 "pending": 0, "idle": 0, "running": True}
        if self.embedded and not self.cluster().running():
            found["running"] = False
        else:
            try:
                found["current"] = sum(executor_counts(self.locations()[1]).values())
            except (MasterUnreachableError, UsageError):
                found["running"] = False
        with self._lock:
            self._nodes = (time.monotonic(), found)
        return dict(found)

    def forget_nodes(self) -> None:
        with self._lock:
            self._nodes = None


def python_error(log: str) -> str | None:
    """The last Python exception's own line in ``log`` (after its traceback), or None.

    >>> python_error("Traceback (most recent call last):\\n  File 'x'\\nValueError: bad\\n")
    'ValueError: bad'
    """
    at = log.rfind("Traceback (most recent call last):")
    if at < 0:
        return None
    for line in log[at:].splitlines()[1:]:
        if _EXCEPTION.match(line):
            return line.strip()[:500]
    return None

