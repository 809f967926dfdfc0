"""The ranks of a multi-node run: what each one is told, how it starts, how it ends.

A run with ``node_count`` N and ``distribution {type, process_count_per_node: K}``
has N×K ranks. The agent's child is then a *group launcher* instead of the script;
the placement only decides where the ranks go:

- ``local`` (this module): N×K rank processes on this machine, or ``mpirun`` with a
  hostfile for ``type: mpi``;
- ``ray`` (``ranks_ray.py``): one rank group per node of a STRICT_SPREAD placement
  group, started on its node by a Ray actor;
- ``slurm`` (this module): the job's allocation (``sbatch -N N --ntasks-per-node K``),
  every rank started by one ``srun`` (or ``mpirun``) from the batch step.

Every rank runs under the *rank wrapper* (``python ranks.py rank -- python -u
train.py …``), which completes its environment (``RANK``, ``LOCAL_RANK``… from the
launcher's own variables under ``mpirun`` or ``srun``), starts the script and
prefixes each line it prints with ``[rank R] ``. A rank that exits non-zero records
itself in the run folder's ``rank-failed`` (the first one wins), which the agent puts
in the run's error; the group launcher then stops the other ranks (SIGTERM, SIGKILL
after the cancel grace) and exits with that rank's code.

The group launcher writes ``ranks.json`` (``protocol.RANKS``): ``{"waiting": "waiting
for 2 nodes: 1/2"}`` while it waits for nodes, then ``{"ranks": [{rank, node,
node_rank, local_rank, pid}]}`` once every rank has started; the agent shows the first
as the run's detail and records the second in ``status.json`` as it goes Running.

Standard library only: it travels to every target with the agent.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

if __package__ in (None, ""):  # run as a plain file: python /path/to/ranks.py …
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jupyter_compute import protocol  # noqa: E402

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

TYPES = ("pytorch", "mpi", "tensorflow")
#: The run folder's record of the first rank that failed: ``{rank, exit_code, node}``.
FAILED = "rank-failed"
POLL_SECONDS = 0.05
MPI_INSTALL_HINT = ("install OpenMPI where the run goes (Debian/Ubuntu: apt-get install "
                    "openmpi-bin)")


def group_command(run_dir: str, placement: str, argv: list[str]) -> list[str]:
    """The agent's child for a multi-rank run: the group launcher of ``placement``."""
    here = os.path.dirname(os.path.abspath(__file__))
    module = "ranks_ray.py" if placement == "ray" else "ranks.py"
    return [sys.executable, "-u", os.path.join(here, module), "group", run_dir, "--", *argv]


def wrapper_command(argv: list[str], launcher: str | None = None) -> list[str]:
    """How one rank starts: the rank wrapper around the script's ``argv``; ``launcher``
    (``mpi``, ``slurm``) numbers the ranks through its own variables."""
    how = [f"--from={launcher}"] if launcher else []
    return [sys.executable, "-u", os.path.abspath(__file__), "rank", *how, "--", *argv]


def rank_environment(*, rank: int, local_rank: int, node_rank: int, nodes: int,
                     per_node: int, master_addr: str, master_port: int,
                     dist_type: str | None, workers: list[str] | None = None
                     ) -> dict[str, str]:
    """The variables a rank is given (``workers``: every rank's ``host:port``, for
    ``TF_CONFIG``).

    >>> rank_environment(rank=1, local_rank=0, node_rank=1, nodes=2, per_node=1,
    ...                  master_addr="10.0.0.5", master_port=29500, dist_type="pytorch")["RANK"]
    '1'
    """
    env = {"MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port),
           "WORLD_SIZE": str(nodes * per_node), "RANK": str(rank),
           "LOCAL_RANK": str(local_rank), "LOCAL_WORLD_SIZE": str(per_node),
           "NODE_RANK": str(node_rank), "GROUP_RANK": str(node_rank)}
    if dist_type == "tensorflow" and workers:
        env["TF_CONFIG"] = json.dumps({"cluster": {"worker": workers},
                                       "task": {"type": "worker", "index": rank}})
    return env


#: How a launcher says which rank a process is: mpirun (OpenMPI) and srun (Slurm).
_LAUNCHER_VARIABLES = {
    "mpi": {"RANK": "OMPI_COMM_WORLD_RANK", "WORLD_SIZE": "OMPI_COMM_WORLD_SIZE",
            "LOCAL_RANK": "OMPI_COMM_WORLD_LOCAL_RANK",
            "LOCAL_WORLD_SIZE": "OMPI_COMM_WORLD_LOCAL_SIZE",
            "NODE_RANK": "OMPI_COMM_WORLD_NODE_RANK"},
    "slurm": {"RANK": "SLURM_PROCID", "WORLD_SIZE": "SLURM_NTASKS",
              "LOCAL_RANK": "SLURM_LOCALID", "NODE_RANK": "SLURM_NODEID"},
}


def complete_environment(env: dict[str, str], launcher: str | None = None
                         ) -> dict[str, str]:
    """``env`` with ``RANK``… taken from ``launcher``'s variables (``mpi``: mpirun's,
    ``slurm``: srun's) where it, not we, decided which process is which rank."""
    env = dict(env)
    if launcher in _LAUNCHER_VARIABLES:
        for ours, theirs in _LAUNCHER_VARIABLES[launcher].items():
            if theirs in env:
                env[ours] = env[theirs]
        env["GROUP_RANK"] = env.get("NODE_RANK", "0")
        if launcher == "slurm" and env.get("SLURM_NTASKS_PER_NODE"):
            env["LOCAL_WORLD_SIZE"] = env["SLURM_NTASKS_PER_NODE"].split("(")[0]
    workers = env.pop("TF_CONFIG_WORKERS", None)
    if workers:  # every worker's host:port, by rank (the launcher numbered them)
        env["TF_CONFIG"] = json.dumps({"cluster": {"worker": json.loads(workers)},
                                       "task": {"type": "worker",
                                                "index": int(env.get("RANK", "0"))}})
    return env


def free_port(host: str = "") -> int:
    """A TCP port free on ``host`` now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def rank_lines(lines: Iterable[str], rank: int) -> Iterator[str]:
    """The lines of rank ``rank`` in a combined log, without their ``[rank R] `` prefix.

    >>> list(rank_lines(["[rank 0] a\\n", "[rank 1] b\\n"], 1))
    ['b\\n']
    """
    prefix = f"[rank {rank}] "
    for line in lines:
        if line.startswith(prefix):
            yield line[len(prefix):]


# -- one rank ------------------------------------------------------------------------------


def run_rank(argv: list[str], launcher: str | None = None) -> int:
    """Run the script ``argv`` as one rank, its lines prefixed ``[rank R] ``; its exit code."""
    _die_with_parent()
    env = complete_environment(dict(os.environ), launcher)
    rank = env.get("RANK", "0")
    prefix = f"[rank {rank}] ".encode()
    stopping = threading.Event()
    try:
        child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        os.write(2, prefix + f"could not start {argv[0]}: {exc.strerror or exc}\n".encode())
        _record_failure(env, rank, 127)
        return 127

    def forward(signum: int, _frame: Any) -> None:
        stopping.set()
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    pumps = [threading.Thread(target=_prefix_lines, args=(pipe.fileno(), fd, prefix))
             for pipe, fd in ((child.stdout, 1), (child.stderr, 2)) if pipe is not None]
    for pump in pumps:
        pump.start()
    code = child.wait()
    for pump in pumps:
        pump.join(timeout=5)
    code = code if code >= 0 else 128 - code
    if code and not stopping.is_set():
        _record_failure(env, rank, code)
    return code


def _prefix_lines(src: int, dest: int, prefix: bytes) -> None:
    """Copy ``src`` to ``dest`` a line at a time, each line one write with ``prefix``."""
    partial = b""
    while chunk := os.read(src, 65536):
        lines = (partial + chunk).split(b"\n")
        partial = lines.pop()
        if lines:
            # One write for the chunk's whole lines: an O_APPEND file (or a pipe, up to
            # PIPE_BUF) never interleaves them with another rank's.
            os.write(dest, b"".join(prefix + line + b"\n" for line in lines))
    if partial:
        os.write(dest, prefix + partial + b"\n")


def _record_failure(env: dict[str, str], rank: str, code: int) -> None:
    """Write ``rank-failed`` in the run folder unless an earlier rank did."""
    run_dir = env.get(protocol.ENV_RUN_DIR)
    if not run_dir:
        return
    try:
        fd = os.open(os.path.join(run_dir, FAILED), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return  # an earlier rank failed first: it is the one to name
    with os.fdopen(fd, "w") as f:
        json.dump({"rank": int(rank), "exit_code": code, "node": socket.gethostname()}, f)


def failure(run_dir: str) -> dict[str, Any] | None:
    """The first rank that failed, as it recorded itself; None if none did."""
    try:
        found = protocol.read_json(os.path.join(run_dir, FAILED))
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def failure_message(run_dir: str, stderr_tail: str) -> str | None:
    """The run's error when a rank failed: its last stderr lines, then which rank it was."""
    failed = failure(run_dir)
    if failed is None:
        return None
    prefix = f"[rank {failed.get('rank')}] "
    own = [line[len(prefix):] for line in stderr_tail.splitlines() if line.startswith(prefix)]
    last = f"rank {failed.get('rank')} exited with code {failed.get('exit_code')} on " \
           f"{failed.get('node')}; the other ranks were stopped"
    return "\n".join([*own[-10:], last])


def _die_with_parent() -> None:
    """SIGTERM this wrapper when whatever started it dies (Linux), so no rank outlives
    its launcher (a Ray actor, mpirun)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# -- the ranks on this machine ----------------------------------------------------------


def layout(spec: dict[str, Any]) -> tuple[int, int, str | None]:
    """``(nodes, processes per node, type)`` of the run's ``spec.json``."""
    ranks = spec.get("ranks") or {}
    return int(ranks.get("nodes", 1)), int(ranks.get("procs_per_node", 1)), ranks.get("type")


def write_ranks(run_dir: str, record: dict[str, Any]) -> None:
    """Replace ``ranks.json`` (what the agent relays: waiting, then the ranks)."""
    protocol.write_json_atomic(os.path.join(run_dir, protocol.RANKS), record, 0o600)


def stop_groups(pids: list[int], grace: float) -> None:
    """SIGTERM each process group in ``pids``, SIGKILL what is left after ``grace``."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0.0)):
        for pid in pids:
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_group_alive(pid) for pid in pids):
            time.sleep(POLL_SECONDS)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def supervise(procs: list[subprocess.Popen[bytes]], grace: float) -> int:
    """Wait for every rank; on the first that fails, stop the others. The exit code."""
    while True:
        codes = [p.poll() for p in procs]
        failed = next((c for c in codes if c), None)
        if failed is not None:
            stop_groups([p.pid for p, c in zip(procs, codes) if c is None], grace)
            for p in procs:
                p.wait()
            return failed if failed > 0 else 128 - failed
        if all(c == 0 for c in codes):
            return 0
        time.sleep(POLL_SECONDS)


def run_local_group(run_dir: str, argv: list[str]) -> int:
    """N×K ranks on this machine (under ``mpirun`` for ``type: mpi``); the exit code."""
    spec = protocol.read_json(os.path.join(run_dir, protocol.SPEC)) or {}
    nodes, per_node, dist_type = layout(spec)
    grace = float(spec.get("cancel_grace_seconds", 3))
    host, world = socket.gethostname(), nodes * per_node
    master = "127.0.0.1"
    ports = [free_port(master) for _ in range(world if dist_type == "tensorflow" else 1)]
    if dist_type == "mpi":
        return _run_mpirun(run_dir, argv, nodes, per_node, master, ports[0], host)
    procs: list[subprocess.Popen[bytes]] = []
    placed = []
    for rank in range(world):
        node_rank, local_rank = divmod(rank, per_node)
        env = {**os.environ, **rank_environment(
            rank=rank, local_rank=local_rank, node_rank=node_rank, nodes=nodes,
            per_node=per_node, master_addr=master, master_port=ports[0],
            dist_type=dist_type, workers=[f"{master}:{p}" for p in ports])}
        # A session each: the launcher stops a rank's whole group, script and all.
        procs.append(subprocess.Popen(wrapper_command(argv), env=env, stdin=subprocess.DEVNULL,
                                      start_new_session=True))
        placed.append({"rank": rank, "node": host, "node_rank": node_rank,
                       "local_rank": local_rank, "pid": procs[-1].pid})
    write_ranks(run_dir, {"ranks": placed, "master": f"{master}:{ports[0]}"})
    return supervise(procs, grace)


def _run_mpirun(run_dir: str, argv: list[str], nodes: int, per_node: int, master: str,
                port: int, host: str) -> int:
    """Every rank under one ``mpirun``, with a hostfile of this machine's slots."""
    import shutil

    mpirun = shutil.which("mpirun")
    if mpirun is None:
        print(f"type mpi needs mpirun, which is not on this machine's PATH: "
              f"{MPI_INSTALL_HINT}", file=sys.stderr)
        return 127
    world = nodes * per_node
    hostfile = os.path.join(run_dir, "hostfile")
    protocol.write_atomic(hostfile, f"localhost slots={world}\n".encode(), 0o600)
    cmd = [mpirun, "--hostfile", hostfile, "-np", str(world), "--oversubscribe",
           "--bind-to", "none"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    env = {**os.environ, "MASTER_ADDR": master, "MASTER_PORT": str(port),
           "OMPI_MCA_btl_vader_single_copy_mechanism": "none"}  # no CMA in containers
    proc = subprocess.Popen([*cmd, *wrapper_command(argv, "mpi")], env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    write_ranks(run_dir, {"ranks": [
        {"rank": r, "node": host, "node_rank": r // per_node, "local_rank": r % per_node,
         "pid": proc.pid} for r in range(world)], "master": f"{master}:{port}",
        "launcher": "mpirun"})
    code = proc.wait()
    return code if code >= 0 else 128 - code


# -- the ranks of a Slurm allocation ----------------------------------------------------


def _slurm(argv: list[str]) -> str:
    """A Slurm command's output in the job (its SLURM_CONF is in our environment)."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          check=True).stdout


def _node_address(name: str) -> str:
    """The address Slurm reaches node ``name`` at (its NodeAddr), else the name itself."""
    try:
        out = _slurm(["scontrol", "show", "node", "-o", name])
    except (OSError, subprocess.SubprocessError):
        return name
    for field in out.split():
        if field.startswith("NodeAddr="):
            return field.split("=", 1)[1] or name
    return name


def run_slurm_group(run_dir: str, argv: list[str]) -> int:
    """Every rank of the job's allocation (``sbatch -N N --ntasks-per-node K``), started by
    one ``srun`` (``mpirun`` with a hostfile of the allocation for ``type: mpi``); the
    batch step runs here, on the allocation's first node, which holds rank 0."""
    spec = protocol.read_json(os.path.join(run_dir, protocol.SPEC)) or {}
    nodes, per_node, dist_type = layout(spec)
    world = nodes * per_node
    names = _slurm(["scontrol", "show", "hostnames",
                    os.environ.get("SLURM_JOB_NODELIST", "")]).split()
    if len(names) != nodes:
        print(f"the Slurm allocation has {len(names)} nodes ({' '.join(names)}), not "
              f"{nodes}", file=sys.stderr)
        return 1
    addresses = [_node_address(name) for name in names]
    master, port = addresses[0], free_port(addresses[0])
    env = {**os.environ, "MASTER_ADDR": master, "MASTER_PORT": str(port)}
    if dist_type == "tensorflow":  # srun numbers the ranks: each finds its own entry
        env["TF_CONFIG_WORKERS"] = json.dumps(
            [f"{addresses[r // per_node]}:{port + 1 + r}" for r in range(world)])
    placed = [{"rank": r, "node": names[r // per_node], "address": addresses[r // per_node],
               "node_rank": r // per_node, "local_rank": r % per_node} for r in range(world)]
    if dist_type == "mpi":
        import shutil

        mpirun = shutil.which("mpirun")
        if mpirun is None:
            print(f"type mpi needs mpirun on the Slurm nodes: {MPI_INSTALL_HINT}",
                  file=sys.stderr)
            return 127
        hostfile = os.path.join(run_dir, "hostfile")
        protocol.write_atomic(hostfile, "".join(f"{name} slots={per_node}\n"
                                                for name in names).encode(), 0o600)
        cmd = [mpirun, "--hostfile", hostfile, "-np", str(world), "--bind-to", "none",
               *(["--allow-run-as-root"] if os.geteuid() == 0 else [])]
    else:
        cmd = ["srun", f"--nodes={nodes}", f"--ntasks={world}",
               f"--ntasks-per-node={per_node}", "--distribution=block",
               "--kill-on-bad-exit=1"]
    launcher = "mpi" if dist_type == "mpi" else "slurm"
    proc = subprocess.Popen([*cmd, *wrapper_command(argv, launcher)], env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    write_ranks(run_dir, {"ranks": [{**r, "pid": proc.pid} for r in placed],
                          "master": f"{master}:{port}", "launcher": os.path.basename(cmd[0])})
    code = proc.wait()
    return code if code >= 0 else 128 - code


def main(argv: list[str] | None = None) -> int:
    """``ranks.py rank [--from=mpi|slurm] -- ARGV`` or ``ranks.py group RUN_DIR -- ARGV``."""
    args = sys.argv[1:] if argv is None else argv
    if "--" not in args:
        print("usage: ranks.py rank [--from=mpi|slurm] -- ARGV | ranks.py group RUN_DIR -- "
              "ARGV", file=sys.stderr)
        return 2
    cut = args.index("--")
    head, script = args[:cut], args[cut + 1:]
    if head and head[0] == "rank" and len(head) <= 2:
        launcher = head[1].split("=", 1)[1] if len(head) == 2 else None
        return run_rank(script, launcher)
    if len(head) == 2 and head[0] == "group":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the agent stops us all
        spec = protocol.read_json(os.path.join(head[1], protocol.SPEC)) or {}
        if (spec.get("ranks") or {}).get("placement") == "slurm":
            return run_slurm_group(head[1], script)
        return run_local_group(head[1], script)
    print(f"unknown command {' '.join(head)!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
