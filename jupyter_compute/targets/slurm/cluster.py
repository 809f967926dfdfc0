"""The embedded Slurm cluster: munge, slurmctld and CLOUD-node slurmds on loopback.

::

    cluster = EmbeddedSlurm(ws.dir, "hpc", SlurmShape(max_nodes=2, idle_seconds=60))
    state = cluster.ensure()     # start it unless it runs; any process can call this
    state.conf                   # the slurm.conf clients name in SLURM_CONF
    cluster.stop()               # ends this cluster's processes, and only those

Its nodes (``<name>-n1`` …) are CLOUD nodes: powered down until a job needs one,
when slurmctld runs the ResumeProgram (a slurmd per node, on a port of its own),
and powered down again after ``idle_seconds`` idle (the SuspendProgram ends that
slurmd). The ResumeProgram needed three fixes to work (ENVIRONMENT.md): absolute
paths (slurmctld gives it no PATH), an empty signal mask before exec'ing slurmd
(slurmctld's blocked signals are inherited), and ``slurmd -b``.

Files, under ``<ws>/.jupyter_compute/slurm/``::

    <name>.json     the running cluster: its folder, ports, the daemons' identities
    <name>.lock     one process starts or stops the cluster at a time
    <name>/         slurm.conf, logs, state, spools, the munge key (0400, in a 0700
                    folder) and socket; /tmp/jc-slurm-<hash>/ when the path is too
                    long for munge's unix socket

Every daemon is recorded by pid and start time, and every slurmd names the cluster's
``slurm.conf`` on its command line: ``stop`` signals only those and their
descendants (``ray.cluster.owned_processes``), never a process by its name. The
jobs' processes are ended first through ``scancel`` of this cluster.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.exceptions import TargetError
from jupyter_compute.targets.ray.cluster import end_processes, free_ports, owned_processes

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

START_TIMEOUT = 60.0
#: The longest unix socket path under the folder, slurmstepd's
#: ``spool/<node>/<node>_<job id>.4294967291``, must fit 108 bytes: with node names of
#: at most 16 characters and 10-digit job ids, the folder may have 45.
MAX_FOLDER = 45
#: In a node's spool folder: its slurmd has started and reconfigured (see ``resume``).
BOOTED = "booted"
#: Beside it: a job's prolog has since seen slurmctld call the node up, so later jobs'
#: prologs need not ask again (both marks go when the node powers down or up).
SEEN_UP = "seen-up"
#: How long ``resume`` waits for slurmctld to hear from a started node, and how often
#: it asks slurmd to register again meanwhile.
REGISTER_WAIT, REGISTER_RETRY = 20.0, 3.0
#: In the cluster's folder, if present: seconds ``resume`` waits before starting a
#: slurmd, as a cloud node takes to boot (the tests' way to watch a run wait for one).
BOOT_DELAY = "boot-delay"
NODE_PREFIX = 12
PARTITION = "debug"
INSTALL_HINT = ("install Slurm and munge: apt-get install slurmctld slurmd slurm-client munge "
                "(scripts/install-test-deps.sh does)")


class SlurmStartError(TargetError):
    """A daemon of the embedded cluster failed to start; the message names its log."""


@dataclass
class SlurmShape:
    """The embedded cluster's nodes: how many at most, their size, their idle time."""

    max_nodes: int = 2
    node_cpus: int = 0          # 0: this machine's CPU count
    node_memory_mb: int = 0     # 0: half of this machine's memory
    idle_seconds: int = 60

    def resolved(self) -> SlurmShape:
        cpus = self.node_cpus or os.cpu_count() or 1
        memory = self.node_memory_mb or max(512, _total_memory_mb() // 2)
        return SlurmShape(self.max_nodes, cpus, memory, self.idle_seconds)


@dataclass
class SlurmState:
    """A started embedded cluster, as recorded in ``<name>.json``."""

    name: str
    folder: str
    conf: str
    ctld_port: int
    started: str
    shape: dict[str, Any] = field(default_factory=dict)
    #: process_identity of munged and slurmctld.
    processes: list[dict[str, Any]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """What a client command needs to reach this cluster."""
        return {**os.environ, "SLURM_CONF": self.conf}


def node_names(name: str, count: int) -> list[str]:
    """``hpc-n1`` …: the cluster's name, short (its nodes' sockets live in paths of theirs)."""
    return [f"{node_prefix(name)}-n{i}" for i in range(1, count + 1)]


def node_prefix(name: str) -> str:
    return _cluster_name(name)[:NODE_PREFIX].rstrip("-") or "jc"


def slurm_conf(name: str, folder: str, shape: SlurmShape, ctld_port: int,
               node_ports: list[int], munge_socket: str) -> str:
    """The cluster's slurm.conf (a pure function): loopback only, CLOUD nodes, no cgroups,
    no accounting database (``scontrol``/``squeue`` tell a job's state without it)."""
    nodes = [f"NodeName={node} NodeAddr=127.0.0.1 NodeHostname=localhost Port={port} "
             f"CPUs={shape.node_cpus} RealMemory={shape.node_memory_mb} State=CLOUD"
             for node, port in zip(node_names(name, shape.max_nodes), node_ports)]
    return "\n".join([
        f"ClusterName={_cluster_name(name)}",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        # Bind to the configured addresses (127.0.0.1), not to every interface.
        "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny",
        f"SlurmUser={_user()}", f"SlurmdUser={_user()}",
        "AuthType=auth/munge", "CredType=cred/munge",
        # cred_expire: a job credential's lifetime, which is also how long a requeued job
        # (its node went down, or ``scontrol requeue``) waits before it may start again:
        # 11 s, not 121. Credentials are made at launch, after PrologSlurmctld, and this
        # cluster's slurmd receives them within milliseconds.
        f"AuthInfo=socket={munge_socket},cred_expire=10",
        f"StateSaveLocation={folder}/state",
        f"SlurmdSpoolDir={folder}/spool/%n",
        f"SlurmctldPidFile={folder}/slurmctld.pid",
        f"SlurmdPidFile={folder}/slurmd.%n.pid",
        f"SlurmctldLogFile={folder}/slurmctld.log",
        f"SlurmdLogFile={folder}/slurmd.%n.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "MailProg=/bin/true", "MpiDefault=none", "EnforcePartLimits=ALL",
        "JobCompType=jobcomp/filetxt", f"JobCompLoc={folder}/jobcomp.txt",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
        "DefMemPerCPU=256",
        # Cancel: SIGTERM, then SIGKILL after this many seconds (the run's 5 s budget).
        "KillWait=2",
        "MinJobAge=300", "ReturnToService=2", "TreeWidth=65533",
        "SchedulerParameters=sched_interval=1,bf_interval=1,batch_sched_delay=0",
        # A job's end then reaches slurmctld as an epilog-complete message, on which it
        # schedules at once. With no epilog, slurmd answers "already complete" and the
        # freed CPUs wait for the next one-second background pass: a job array of 1 s
        # tasks took 2 s a wave.
        "Epilog=/bin/true",
        # CLOUD nodes: powered up on demand, down after idle_seconds.
        f"ResumeProgram={folder}/resume", f"SuspendProgram={folder}/suspend",
        f"PrologSlurmctld={folder}/ready",
        f"SuspendTime={max(int(shape.idle_seconds), 1)}", "SuspendTimeout=5",
        "ResumeTimeout=60", "ResumeRate=0", "SuspendRate=0",
        "SlurmctldParameters=idle_on_node_suspend",
        "PrivateData=cloud",
        *nodes,
        f"PartitionName={PARTITION} Nodes={node_prefix(name)}-n[1-{shape.max_nodes}] "
        "Default=YES "
        "MaxTime=INFINITE State=UP",
        ""])


def power_script(action: str, conf: str, python: str = sys.executable) -> str:
    """The ResumeProgram or SuspendProgram: ``python -m …cluster resume|suspend CONF NODES``,
    with absolute paths (slurmctld runs it without a PATH)."""
    pythonpath = str(Path(__file__).resolve().parents[3])
    return ("#!/bin/sh\n"
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
            f"export PATH PYTHONPATH={_sh(pythonpath)}\n"
            f"exec {_sh(python)} -m jupyter_compute.targets.slurm.cluster {action} "
            f"{_sh(conf)} \"$1\"\n")


def ready_script(conf: str) -> str:
    """The PrologSlurmctld: it ends once every node of the job is ready (``resume`` left
    its ``booted`` mark) and none is still powering up.

    A job on a node that is powering up stays CONFIGURING until slurmctld's next
    periodic check (every 30 s, fixed) finds the node ready; a job whose slurmctld
    prolog ends is checked at that moment instead. So a run from zero nodes starts
    when its node is up (~1 s here), not up to 30 s later. It always exits 0: a
    failing prolog would requeue the job and hold it.

    It runs before every job, and the job waits for it: on nodes known to be up
    (``SEEN_UP``) it is plain sh with no ``scontrol`` (each costs ~10 ms of CPU, and a
    sweep's job array starts eight jobs at once on two cores).
    """
    spool = f"{_sh(os.path.dirname(conf))}/spool"
    return ("#!/bin/sh\n"
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
            f"export PATH SLURM_CONF={_sh(conf)}\n"
            "case \"$SLURM_JOB_NODELIST\" in\n"  # one node needs no expanding
            "  *[[,]*) nodes=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" 2>/dev/null) ;;\n"
            "  *) nodes=$SLURM_JOB_NODELIST ;;\n"
            "esac\n"
            "seen=1\n"
            f"for n in $nodes; do [ -e {spool}/$n/{SEEN_UP} ] || seen=0; done\n"
            "[ $seen = 1 ] && exit 0\n"
            "i=0\n"
            "while [ $i -lt 1200 ]; do\n"  # ResumeTimeout (60 s) in twentieths of a second
            "  ready=1\n"
            f"  for n in $nodes; do [ -e {spool}/$n/{BOOTED} ] || ready=0; done\n"
            "  if [ $ready = 1 ]; then\n"
            "    case \"$(scontrol -o show node \"$SLURM_JOB_NODELIST\" 2>/dev/null)\" in\n"
            "      *POWERING_UP*|*POWERED_DOWN*) ;;\n"
            f"      *) for n in $nodes; do : > {spool}/$n/{SEEN_UP}; done; exit 0 ;;\n"
            "    esac\n"
            "  fi\n"
            "  sleep 0.05; i=$((i + 1))\n"
            "done\n"
            "exit 0\n")


class EmbeddedSlurm:
    """One embedded Slurm cluster of a workspace, by name; see the module docstring."""

    def __init__(self, ws_dir: Path, name: str, shape: SlurmShape | None = None) -> None:
        self.ws_dir = Path(ws_dir)
        self.name = name
        self.shape = (shape or SlurmShape()).resolved()
        self.root = self.ws_dir / "slurm"
        self.state_path = self.root / f"{name}.json"

    @property
    def folder(self) -> Path:
        """Where the cluster's files live (short enough for munge's socket)."""
        own = self.root / self.name
        if len(str(own)) <= MAX_FOLDER:
            return own
        digest = hashlib.sha256(str(own).encode()).hexdigest()[:12]
        return Path(f"/tmp/jc-slurm-{digest}")

    def load(self) -> SlurmState | None:
        raw = protocol.read_json(str(self.state_path))
        return SlurmState(**raw) if isinstance(raw, dict) else None

    def running(self, state: SlurmState | None = None) -> bool:
        """Whether the cluster's munged and slurmctld both live."""
        state = state or self.load()
        return bool(state and state.processes and
                    all(protocol.process_alive(p) for p in state.processes))

    def ensure(self) -> SlurmState:
        """The running cluster, started first if it is not running."""
        state = self.load()
        if state is not None and self.running(state):
            return state
        with self._lock():
            state = self.load()
            if state is not None and self.running(state):
                return state
            if state is not None:  # a half-dead cluster: end what is left of it first
                self._end(state)
            return self._start()

    # -- start -----------------------------------------------------------------------

    def _start(self) -> SlurmState:
        for exe in ("munged", "slurmctld", "slurmd", "sbatch"):
            if shutil.which(exe) is None and not os.path.exists(f"/usr/sbin/{exe}"):
                raise TargetError(f"{exe} is not installed; {INSTALL_HINT}")
        folder = self.folder
        if folder.exists() and folder.stat().st_uid != os.getuid():
            raise SlurmStartError(f"{folder} belongs to another user; it cannot hold the "
                                  f"Slurm cluster {self.name!r}")
        shutil.rmtree(folder / "spool", ignore_errors=True)
        for sub in ("", "state", "spool", "munge"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        # Clients of other users (an SSH login) read slurm.conf and reach munge's socket;
        # the key stays its owner's alone.
        os.chmod(folder, 0o755)
        munge = folder / "munge"
        os.chmod(munge, 0o755)
        key_dir = folder / "key"
        key_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(key_dir, 0o700)
        key = key_dir / "munge.key"
        if not key.exists():
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(128))
        ports = free_ports(1 + self.shape.max_nodes)
        socket_path = str(munge / "socket")
        conf = folder / "slurm.conf"
        protocol.write_atomic(str(conf), slurm_conf(self.name, str(folder), self.shape, ports[0],
                                                     ports[1:], socket_path).encode(), 0o644)
        for action in ("resume", "suspend"):
            protocol.write_atomic(str(folder / action),
                                  power_script(action, str(conf)).encode(), 0o755)
        protocol.write_atomic(str(folder / "ready"), ready_script(str(conf)).encode(), 0o755)
        state = SlurmState(name=self.name, folder=str(folder), conf=str(conf),
                           ctld_port=ports[0], started=protocol.utcnow(),
                           shape=asdict(self.shape))
        munged = _spawn(["munged", "-F", "-f", f"--socket={socket_path}", f"--key-file={key}",
                         f"--pid-file={munge}/munged.pid", f"--log-file={folder}/munged.log",
                         f"--seed-file={munge}/seed"], folder / "munged.out")
        state.processes.append(protocol.process_identity(munged.pid))
        if not _wait_for(lambda: os.path.exists(socket_path) or munged.poll() is not None):
            pass
        if munged.poll() is not None:
            raise SlurmStartError(f"munged of the Slurm cluster {self.name!r} failed to start: "
                                  f"{_last_line(folder / 'munged.out')}; see "
                                  f"{folder}/munged.log")
        # -c: a fresh start (no jobs or node states of an earlier run); -i: ignore errors
        # in the state files it does not read.
        ctld = _spawn(["slurmctld", "-D", "-c", "-f", str(conf)], folder / "slurmctld.out")
        state.processes.append(protocol.process_identity(ctld.pid))
        protocol.write_json_atomic(str(self.state_path), asdict(state))
        env = state.env()
        if not _wait_for(lambda: ctld.poll() is not None or subprocess.run(
                ["scontrol", "ping"], env=env, capture_output=True).returncode == 0):
            pass
        if ctld.poll() is not None or subprocess.run(["scontrol", "ping"], env=env,
                                                      capture_output=True).returncode:
            self._end(state)
            raise SlurmStartError(f"slurmctld of the Slurm cluster {self.name!r} failed to "
                                  f"start: {_last_line(folder / 'slurmctld.log')}; see "
                                  f"{folder}/slurmctld.log")
        return state

    # -- stop ------------------------------------------------------------------------

    def stop(self) -> int:
        """Cancel the cluster's jobs, end its daemons; how many processes were ended."""
        with self._lock():
            state = self.load()
            if state is None:
                return 0
            ended = self._end(state)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.state_path)
        return ended

    def processes(self, state: SlurmState | None = None) -> list[int]:
        """PIDs of the cluster's live daemons (munged, slurmctld, slurmds) and their trees."""
        state = state or self.load()
        return owned_processes(state.conf, state.processes) if state else []

    def _end(self, state: SlurmState) -> int:
        env = state.env()
        if self.running(state):  # jobs' processes are slurmstepd's, not the daemons'
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                jobs = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, text=True,
                                      capture_output=True, timeout=10).stdout.split()
                if jobs:  # every user's: an SSH login's jobs run here too
                    subprocess.run(["scancel", "--full", "--quiet", *jobs], env=env,
                                   capture_output=True, timeout=10)
                deadline = time.monotonic() + 6
                while time.monotonic() < deadline:
                    out = subprocess.run(["squeue", "-h", "-o", "%i"], env=env,
                                         capture_output=True, timeout=10).stdout
                    if not out.strip():
                        break
                    time.sleep(0.2)
        return end_processes(state.conf, state.processes)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{self.name}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


# -- the power programs (run by slurmctld) ------------------------------------------------


def resume(conf: str, hostlist: str) -> int:
    """Start a slurmd for each node of ``hostlist``, detached, with no blocked signals."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "SLURM_CONF": conf}
    folder = os.path.dirname(conf)
    with contextlib.suppress(OSError, ValueError):
        time.sleep(min(float(Path(folder, BOOT_DELAY).read_text()), 60.0))
    started = []
    for node in _hostnames(hostlist, env):
        # slurmd's spool (%n) holds its and slurmstepd's sockets: it must exist first.
        spool = os.path.join(folder, "spool", node)
        os.makedirs(spool, mode=0o755, exist_ok=True)
        for mark in (BOOTED, SEEN_UP):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(spool, mark))
        _end_slurmd(conf, node)  # one powered down a moment ago may still be exiting
        log = os.path.join(folder, f"slurmd.{node}.log")
        offset = os.path.getsize(log) if os.path.exists(log) else 0
        pid = os.fork()
        if pid == 0:  # child: a session of its own, nothing inherited from slurmctld
            try:
                os.setsid()
                os.chdir(folder)  # a crashing slurmstepd's core stays out of anyone's way
                _no_core()
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                for sig in range(1, signal.NSIG):  # ignored ones survive exec (SIGCHLD)
                    with contextlib.suppress(OSError, ValueError, RuntimeError):
                        signal.signal(sig, signal.SIG_DFL)
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.closerange(3, 1024)
                os.execve(shutil.which("slurmd", path=env["PATH"]) or "/usr/sbin/slurmd",
                          ["slurmd", "-D", "-b", "-N", node, "-f", conf], env)
            finally:
                os._exit(127)
        started.append((node, pid, log, offset))
    # A fresh slurmd fails its first batch launch ("slurmstepd failed to send return
    # code") until it has reconfigured once: SIGHUP it as soon as it listens. It
    # reconfigures when its accept loop next wakes, and a launch that arrives during
    # the reconfigure fails the same way: so connect once more to wake it, wait for
    # its log to say so, and only then mark the node booted (``ready_script`` waits
    # for that mark before its job may launch).
    for node, pid, log, offset in started:
        port = _node_port(conf, node)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and port and not _listening(port):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _reconfigures(log, offset) < 2:
            if port:
                _listening(port)
            time.sleep(0.02)
        Path(folder, "spool", node, BOOTED).touch()
    # slurmd registers with slurmctld at its start and after each reconfigure. One
    # registration lost in that race left a node POWERING_UP until ResumeTimeout, then
    # DOWN, and its jobs queued for good (seen once in CI). No job can launch on a node
    # slurmctld has not heard from, so a SIGHUP (a new registration) is safe there.
    for node, pid, _log, _offset in started:
        deadline = time.monotonic() + REGISTER_WAIT
        hup_at = time.monotonic() + REGISTER_RETRY
        while time.monotonic() < deadline and _powering_up(node, env):
            if time.monotonic() >= hup_at:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)
                hup_at = time.monotonic() + REGISTER_RETRY
            time.sleep(0.1)
    return 0


def _powering_up(node: str, env: dict[str, str]) -> bool:
    """Whether slurmctld still waits to hear from ``node`` (True if it cannot say)."""
    try:
        out = subprocess.run(["scontrol", "-o", "show", "node", node], env=env,
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return True
    return not out or "POWERING_UP" in out or "POWERED_DOWN" in out


def _reconfigures(log: str, offset: int) -> int:
    """How often slurmd read its configuration in ``log`` since ``offset``: at its start,
    then once per SIGHUP (it says so in one of these lines, at the info level)."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            text = f.read()
    except OSError:
        return 0
    return max(text.count(b"Node reconfigured"), text.count(b"CPU frequency setting"))


def _node_port(conf: str, node: str) -> int | None:
    for line in Path(conf).read_text().splitlines():
        if line.startswith(f"NodeName={node} "):
            for word in line.split():
                if word.startswith("Port="):
                    return int(word[5:])
    return None


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def suspend(conf: str, hostlist: str) -> int:
    """End the slurmd of each node of ``hostlist`` (by its pid file, if it names ``conf``)."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "SLURM_CONF": conf}
    for node in _hostnames(hostlist, env):
        for mark in (BOOTED, SEEN_UP):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(os.path.dirname(conf), "spool", node, mark))
        _end_slurmd(conf, node, wait=0)
    return 0


def _end_slurmd(conf: str, node: str, wait: float = 10) -> None:
    """SIGTERM the slurmd of ``node`` (its pid file's, if it names ``conf``); wait for it."""
    try:
        pid = int(Path(os.path.dirname(conf), f"slurmd.{node}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if pid not in owned_processes(conf):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and pid in owned_processes(conf):
        time.sleep(0.05)


def _hostnames(hostlist: str, env: dict[str, str]) -> list[str]:
    out = subprocess.run(["scontrol", "show", "hostnames", hostlist], env=env,
                         capture_output=True, text=True).stdout
    return out.split()


# -- small helpers -----------------------------------------------------------------------


def _spawn(argv: list[str], out: Path) -> subprocess.Popen[bytes]:
    """A daemon in the foreground, in a session of its own (it outlives this process),
    working in the cluster's folder and never dumping core (into the user's folder)."""
    # Through sh (no preexec_fn: this may be a threaded kernel); exec keeps the pid.
    no_core = ["/bin/sh", "-c", 'ulimit -c 0; exec "$@"', "sh", *argv]
    with open(out, "wb") as log:
        return subprocess.Popen(no_core, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True, cwd=out.parent)


def _no_core() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _wait_for(ready: Any, timeout: float = START_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        time.sleep(0.1)
    return False


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()
                 if line.strip()]
    except OSError:
        return "no output"
    for line in reversed(lines):
        if "error" in line.lower() or "fatal" in line.lower():
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def _cluster_name(name: str) -> str:
    """Slurm's cluster names are lower-case letters, digits and dashes, short."""
    clean = "".join(c if c.isalnum() else "-" for c in name.lower())[:30]
    return clean or "jc"


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _total_memory_mb() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 2048


def _sh(text: str) -> str:
    import shlex

    return shlex.quote(text)


def minutes(seconds: float) -> int:
    """Slurm's time limits are whole minutes: at least ``seconds``."""
    return max(1, math.ceil(seconds / 60))


def main(argv: list[str] | None = None) -> int:
    """``python -m jupyter_compute.targets.slurm.cluster resume|suspend CONF HOSTLIST``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 3 and args[0] in ("resume", "suspend"):
        return (resume if args[0] == "resume" else suspend)(args[1], args[2])
    print("usage: python -m jupyter_compute.targets.slurm.cluster resume|suspend CONF "
          "HOSTLIST", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
