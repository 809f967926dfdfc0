"""The ranks of a multi-node run on Ray: a STRICT_SPREAD placement group, a node each.

::

    python ranks_ray.py group RUN_DIR -- python -u train.py …   # the agent's child

The agent runs in the run's Ray job (on the head: it asks for no CPU). This group
launcher asks Ray for a placement group of N bundles (the target's ``run_cpus``
each) spread over N distinct nodes, so the autoscaler brings nodes up for it while
``ranks.json`` says ``waiting for 2 nodes: 1/2``. On each node a ``NodeRanks`` actor
(in the bundle) reports the node's address, finds a free port there for rank 0, and
starts that node's K ranks under the rank wrapper (``ranks.py``); the wrapper
prefixes their lines and they append to the run's ``output.log``, so the run folder
must be on a filesystem the nodes share (the embedded cluster's are this machine).
The launcher then polls the actors: the first rank that fails stops every other one
(SIGTERM, SIGKILL after the cancel grace), and so do a cancel and the run's time
limit (the agent's SIGTERM). If the launcher dies, Ray ends its actors, and each rank
wrapper (``PR_SET_PDEATHSIG``) ends its script.

Needs ``ray`` in the interpreter that runs it (the cluster's); otherwise standard
library. ``NodeRanks`` uses the standard library only and refers to nothing of this
package: run as a file, this module is ``__main__``, so Ray ships the class by value
and a node needs no copy of jupyter_compute to host it.
"""

from __future__ import annotations

import os
import signal
import sys
import time

if __package__ in (None, ""):  # run as a plain file: python /path/to/ranks_ray.py …
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jupyter_compute import protocol, ranks  # noqa: E402

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

POLL_SECONDS = 0.2
PLACE_ATTEMPTS = 3
LAUNCHED = time.monotonic()  # what each step took goes to ranks.json (``seconds``)


class NodeRanks:
    """One node's share of the run (a Ray actor in its bundle): its ranks' processes."""

    def __init__(self) -> None:
        self.procs: list[Any] = []

    def where(self, ports: int) -> dict[str, Any]:
        """The node's address and name, and ``ports`` TCP ports free on it now."""
        import socket

        import ray

        ip = ray.util.get_node_ip_address()
        found = []
        for _ in range(ports):
            with socket.socket() as s:
                s.bind((ip, 0))
                found.append(s.getsockname()[1])
        return {"ip": ip, "host": socket.gethostname(), "ports": found,
                "node_id": ray.get_runtime_context().get_node_id()}

    def start(self, commands: list[tuple[list[str], dict[str, str]]], log: str, cwd: str
              ) -> list[int]:
        """Start each ``(argv, env)`` in ``cwd`` (the run's workdir), in a session of its
        own, its output appended to ``log``."""
        import subprocess

        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            for argv, env in commands:
                self.procs.append(subprocess.Popen(argv, env=env, cwd=cwd,
                                                   stdin=subprocess.DEVNULL,
                                                   stdout=fd, stderr=fd,
                                                   start_new_session=True))
        finally:
            os.close(fd)
        return [p.pid for p in self.procs]

    def poll(self) -> list[int | None]:
        return [p.poll() for p in self.procs]

    def stop(self, grace: float) -> None:
        """SIGTERM the ranks' groups, SIGKILL what is left after ``grace``."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0.0)):
            for p in self.procs:
                if p.poll() is None:
                    try:
                        os.killpg(p.pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
                time.sleep(0.05)


def _nodes_that_fit(bundle: dict[str, float]) -> int:
    """How many live nodes could hold one bundle (the head, with no CPU, cannot)."""
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive") and
               all(float((node.get("Resources") or {}).get(k, 0)) >= v
                   for k, v in bundle.items() if v))


def _place(run_dir: str, name: str, nodes: int, bundle: dict[str, float], ports: list[int],
           steps: dict[str, float]) -> tuple[list[Any], list[dict[str, Any]]]:
    """A ``NodeRanks`` actor on each of ``nodes`` distinct nodes, and where each is (with
    ``ports[i]`` free ports on node i). A node the autoscaler was ending as idle can take
    a bundle and die before its actor runs: then, no rank having started, the group is
    placed again (``PLACE_ATTEMPTS`` in all)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    remote = ray.remote(NodeRanks)
    attempt = 1
    while True:
        group = placement_group([bundle] * nodes, strategy="STRICT_SPREAD", name=name)
        while not group.wait(timeout_seconds=1):
            ready = min(_nodes_that_fit(bundle), nodes)
            ranks.write_ranks(run_dir, {"waiting": f"waiting for {nodes} nodes: {ready}/{nodes}"})
        steps["place"] = time.monotonic() - LAUNCHED - steps["connect"]  # the nodes
        actors: list[Any] = [remote.options(
            num_cpus=bundle.get("CPU", 0), scheduling_strategy=PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=i)).remote() for i in range(nodes)]
        try:
            return actors, ray.get([a.where.remote(n) for a, n in zip(actors, ports)])
        except ray.exceptions.RayActorError:
            if attempt == PLACE_ATTEMPTS:
                raise
            for actor in actors:
                ray.kill(actor)
            remove_placement_group(group)
            ranks.write_ranks(run_dir, {"waiting": "a node went away before the ranks "
                                                   "started: placing them again"})
            attempt += 1


def run_ray_group(run_dir: str, argv: list[str]) -> int:
    """Place the ranks on N nodes, start them, supervise them; the exit code."""
    import logging

    import ray

    spec = protocol.read_json(os.path.join(run_dir, protocol.SPEC)) or {}
    nodes, per_node, dist_type = ranks.layout(spec)
    bundle = {k: float(v) for k, v in (spec["ranks"].get("bundle") or {"CPU": 1}).items()}
    grace = float(spec.get("cancel_grace_seconds", 3))
    ray.init(logging_level=logging.WARNING, log_to_driver=False)
    steps = {"connect": time.monotonic() - LAUNCHED}  # importing ray, joining the cluster
    tf = dist_type == "tensorflow"
    actors, places = _place(run_dir, f"jupyter-compute-{spec.get('run_id', '')}", nodes, bundle,
                            [per_node if tf else int(i == 0) for i in range(nodes)], steps)
    try:
        master, port = places[0]["ip"], places[0]["ports"][0]
        workers = [f"{p['ip']}:{port_}" for p in places for port_ in p["ports"]] if tf else None
        log = os.path.join(run_dir, protocol.LOG)
        starts, placed = [], []
        for node_rank, (actor, place) in enumerate(zip(actors, places)):
            commands = []
            for local_rank in range(per_node):
                rank = node_rank * per_node + local_rank
                env = {**os.environ, **ranks.rank_environment(
                    rank=rank, local_rank=local_rank, node_rank=node_rank, nodes=nodes,
                    per_node=per_node, master_addr=master, master_port=port,
                    dist_type=dist_type, workers=workers)}
                commands.append((ranks.wrapper_command(argv), env))
                placed.append({"rank": rank, "node": place["ip"], "host": place["host"],
                               "node_id": place["node_id"], "node_rank": node_rank,
                               "local_rank": local_rank})
            starts.append(actor.start.remote(commands, log, os.getcwd()))
        pids = [pid for node in ray.get(starts) for pid in node]
        for entry, pid in zip(placed, pids):
            entry["pid"] = pid
        steps["start"] = time.monotonic() - LAUNCHED - sum(steps.values())  # actors, ranks
        ranks.write_ranks(run_dir, {"ranks": placed, "master": f"{master}:{port}",
                                    "seconds": {k: round(v, 3) for k, v in steps.items()}})
        while True:
            codes = [c for node in ray.get([a.poll.remote() for a in actors]) for c in node]
            failed = next((c for c in codes if c), None)
            if failed is not None:
                return failed if failed > 0 else 128 - failed
            if all(c == 0 for c in codes):
                return 0
            time.sleep(POLL_SECONDS)
    finally:  # a failed rank, a cancel, the time limit: no rank outlives the launcher
        try:
            ray.get([a.stop.remote(grace) for a in actors], timeout=grace + 5)
        except Exception:  # noqa: BLE001 - the actors may be gone already; Ray ends them
            pass


def _terminate(*_: Any) -> None:
    raise SystemExit(143)  # into the main thread: ``finally`` stops the ranks


def main(argv: list[str] | None = None) -> int:
    """``ranks_ray.py group RUN_DIR -- ARGV``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[0] != "group" or args[2] != "--":
        print("usage: ranks_ray.py group RUN_DIR -- ARGV", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    return run_ray_group(args[1], args[3:])


if __name__ == "__main__":
    sys.exit(main())
