"""Multi-node runs (``node_count`` × ``distribution``): real rank processes on this
machine, real ``mpirun`` (Debian's OpenMPI) with mpi4py, and the session's embedded Ray
cluster growing from 0 to 2 nodes for a STRICT_SPREAD placement group."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from conftest import Project, pid_alive

#: A stdlib all-reduce through MASTER_ADDR:MASTER_PORT: rank 0 sums everyone's rank+1.
ALLREDUCE = """\
import os, socket, time
from jupyter_compute.tracking import get_run

rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
print(f"started {time.time()}", flush=True)
if rank == 0:
    with socket.create_server((addr, port)) as server:
        peers = [server.accept()[0] for _ in range(world - 1)]
        total = 1 + sum(int(p.makefile().readline()) for p in peers)
        for p in peers:
            p.sendall(f"{total}\\n".encode())
            p.close()
else:
    deadline = time.time() + 60
    while True:
        try:
            peer = socket.create_connection((addr, port))
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)
    peer.sendall(f"{rank + 1}\\n".encode())
    total = int(peer.makefile().readline())
get_run().log("total", total + rank)  # rank 0 logs the sum, rank 1 the sum + 1
names = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR",
         "JUPYTER_COMPUTE_RUN_ID", "TF_CONFIG")
print("env " + " ".join(f"{n}={os.environ.get(n, '-')}" for n in names), flush=True)
print(f"allreduce total={total}")
"""

#: Rank 1 fails with 3 while rank 0 would sleep for a minute (it records its pid).
ONE_FAILS = """\
import os, sys, time
rank = int(os.environ["RANK"])
with open(os.path.join(os.environ["PIDS"], str(rank)), "w") as f:
    f.write(str(os.getpid()))
if rank == 1:
    time.sleep(0.5)
    print("rank 1 gives up", file=sys.stderr)
    sys.exit(3)
time.sleep(60)
"""

#: Every rank sleeps (recording its pid) until canceled.
SLEEPS = """\
import os, time
with open(os.path.join(os.environ["PIDS"], os.environ["RANK"]), "w") as f:
    f.write(str(os.getpid()))
print("sleeping", flush=True)
time.sleep(120)
"""

MPI_ALLREDUCE = """\
from mpi4py import MPI
import os
comm = MPI.COMM_WORLD
total = comm.allreduce(comm.Get_rank() + 1)
print(f"mpi rank={comm.Get_rank()} size={comm.Get_size()} RANK={os.environ['RANK']} "
      f"LOCAL_RANK={os.environ['LOCAL_RANK']} total={total}")
"""


def _wait_file_count(folder: Path, n: int, timeout: float = 60, run=None) -> list[int]:
    """The pids ``n`` ranks wrote into ``folder``; fails at once if ``run`` ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended = run is not None and run.status().is_terminal()  # then the files are final
        found = list(folder.iterdir()) if folder.exists() else []
        if len(found) >= n and all(p.read_text() for p in found):
            return [int(p.read_text()) for p in found]
        if ended:
            raise AssertionError(f"the run ended {run.status().value} before {n} ranks "
                                 f"started: {run.record.error}\n{run.log()[-2000:]}")
        time.sleep(0.1)
    raise AssertionError(f"only {len(list(folder.iterdir()))} of {n} ranks started")


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    """The pids still alive after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in pids if pid_alive(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if pid_alive(p)]


def _last_line_error(out) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1, out.stderr
    return lines[0]


# -- local ---------------------------------------------------------------------------------


def test_local_tcp_allreduce_two_ranks(project: Project) -> None:
    project.write("allreduce.py", ALLREDUCE)
    out = project.cli("submit", "allreduce.py", "--nodes", "2", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[rank 0] allreduce total=3" in out.stdout
    assert "[rank 1] allreduce total=3" in out.stdout
    run_id = out.stdout.strip().splitlines()[-1].split()[1]
    assert f"[rank 1] env WORLD_SIZE=2 RANK=1 LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 NODE_RANK=1 " \
           f"MASTER_ADDR=127.0.0.1 JUPYTER_COMPUTE_RUN_ID={run_id} TF_CONFIG=-" in out.stdout

    # one rank's lines, without the prefix
    one = project.cli("logs", run_id, "--rank", "1")
    assert one.returncode == 0, one.stderr
    assert "allreduce total=3\n" in one.stdout and "[rank" not in one.stdout
    assert " RANK=1 " in one.stdout and " RANK=0 " not in one.stdout

    shown = project.show(run_id)
    assert [(r["rank"], r["node_rank"], r["local_rank"]) for r in shown["ranks"]] == \
        [(0, 0, 0), (1, 1, 0)]
    # metrics: rank 0's by default, every rank's on request, each with its rank
    from jupyter_compute import Run

    run = Run.get(run_id, project.root)
    assert [r["value"] for r in run.metrics()["total"]] == [3]
    every = sorted((r["rank"], r["value"]) for r in run.metrics(rank=None)["total"])
    assert every == [(0, 3), (1, 4)]


def test_local_tensorflow_gets_tf_config(project: Project) -> None:
    project.write("allreduce.py", ALLREDUCE)
    from jupyter_compute import api

    run = api.submit("allreduce.py", node_count=1,
                     distribution={"type": "tensorflow", "processCountPerNode": 2})
    assert run.wait(timeout=120).value == "Completed", run.log()
    configs = [json.loads(line.split("TF_CONFIG=", 1)[1]) for line in run.log().splitlines()
               if "TF_CONFIG=" in line]
    assert sorted(c["task"]["index"] for c in configs) == [0, 1]
    assert len(configs[0]["cluster"]["worker"]) == 2
    assert "LOCAL_WORLD_SIZE=2" in run.log()


def test_local_mpi4py_allreduce_under_mpirun(project: Project) -> None:
    pytest.importorskip("mpi4py", reason="pip install -e '.[test]' installs mpi4py")
    if shutil.which("mpirun") is None:
        pytest.fail("mpirun is missing: scripts/install-test-deps.sh installs openmpi-bin")
    project.write("mpi_allreduce.py", MPI_ALLREDUCE)
    out = project.cli("submit", "mpi_allreduce.py", "--nodes", "1", "--procs-per-node", "2",
                      "--distribution", "mpi", "--wait", timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    for rank in (0, 1):
        assert f"[rank {rank}] mpi rank={rank} size=2 RANK={rank} LOCAL_RANK={rank} total=3" \
            in out.stdout


def test_one_rank_exiting_3_fails_the_run_and_stops_the_other(project: Project,
                                                              tmp_path: Path) -> None:
    from jupyter_compute import api

    pids = tmp_path / "pids"
    pids.mkdir()
    project.write("fails.py", ONE_FAILS)
    run = api.submit("fails.py", node_count=2, environment_variables={"PIDS": str(pids)})
    started = _wait_file_count(pids, 2)
    assert run.wait(timeout=60).value == "Failed", run.log()
    error = run.record.error or ""
    assert "rank 1 exited with code 3" in error, error
    assert "rank 1 gives up" in error, error  # its own stderr, unprefixed
    assert run.record.exit_code == 3
    # rank 0 was stopped by the run's end: within the cancel grace (3 s), not after 60 s
    assert not _gone_within(started, 3 + 2)


def test_cancel_leaves_no_rank_alive(project: Project, tmp_path: Path) -> None:
    from jupyter_compute import api

    pids = tmp_path / "pids"
    pids.mkdir()
    project.write("sleeps.py", SLEEPS)
    run = api.submit("sleeps.py", node_count=2, distribution={"type": "pytorch",
                                                              "process_count_per_node": 2},
                     environment_variables={"PIDS": str(pids)})
    started = _wait_file_count(pids, 4)
    run.cancel()
    assert run.wait(timeout=60).value == "Canceled"
    assert not _gone_within(started, 5)


def test_max_run_duration_stops_every_rank(project: Project, tmp_path: Path) -> None:
    from jupyter_compute import api

    pids = tmp_path / "pids"
    pids.mkdir()
    project.write("sleeps.py", SLEEPS)
    run = api.submit("sleeps.py", node_count=2, max_run_duration_seconds=2,
                     environment_variables={"PIDS": str(pids)})
    started = _wait_file_count(pids, 2)
    assert run.wait(timeout=60).value == "TimedOut"
    assert not _gone_within(started, 5)


# -- bad input ------------------------------------------------------------------------------


def test_node_count_above_max_nodes_is_one_line(project: Project) -> None:
    project.write("t.py", "print('x')\n")
    out = project.cli("attach", "cluster", "--type", "ray", "--max-nodes", "2")
    assert out.returncode == 0, out.stderr
    line = _last_line_error(project.cli("submit", "t.py", "--target", "cluster",
                                        "--nodes", "3"))
    assert "node_count 3" in line and "--max-nodes 2" in line, line
    out = project.cli("attach", "fat", "--type", "ray", "--run-cpus", "2")
    assert out.returncode == 0, out.stderr
    line = _last_line_error(project.cli("submit", "t.py", "--target", "fat", "--nodes", "2"))
    assert "run_cpus 2" in line and "node_cpus 1" in line, line
    assert not (project.root / ".jupyter_compute" / "runs").exists() or \
        not list((project.root / ".jupyter_compute" / "runs").iterdir())


def test_distribution_on_a_one_node_kind_is_one_line(project: Project) -> None:
    project.write("t.py", "print('x')\n")
    (project.root / ".jupyter_compute" / "targets.yml").write_text(
        "targets:\n  vm:\n    type: ssh\n    host: 127.0.0.1\n    user: nobody\n")
    line = _last_line_error(project.cli("submit", "t.py", "--target", "vm",
                                        "--distribution", "pytorch", "--procs-per-node", "2"))
    assert "'vm' is a ssh target, which runs on one node" in line, line


def test_mpi_without_mpirun_says_what_to_install(project: Project) -> None:
    project.write("t.py", "print('x')\n")
    bare = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}/nonexistent"}
    line = _last_line_error(project.cli("submit", "t.py", "--nodes", "2", "--distribution",
                                        "mpi", env=bare))
    assert "mpirun" in line and "apt-get install openmpi-bin" in line, line


def test_bad_distribution_in_run_yml_names_the_line(project: Project) -> None:
    project.write("t.py", "print('x')\n")
    project.write("run.yml", "script: t.py\nnode_count: 2\ndistribution:\n  type: horovod\n")
    line = _last_line_error(project.cli("submit", "--config", "run.yml"))
    assert "run.yml" in line and "horovod" in line and "pytorch" in line, line
    project.write("run.yml", "script: t.py\nnodeCount: 2\n"
                             "distribution: {type: pytorch, processCountPerNode: 0}\n")
    line = _last_line_error(project.cli("submit", "--config", "run.yml"))
    assert "process_count_per_node" in line, line


def test_run_yml_azure_shape_runs(project: Project) -> None:
    project.write("allreduce.py", ALLREDUCE)
    project.write("run.yml", "script: allreduce.py\nnodeCount: 1\n"
                             "distribution: {type: PyTorch, processCountPerNode: 2}\n")
    out = project.cli("submit", "--config", "run.yml", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("allreduce total=3") == 2


# -- Ray -----------------------------------------------------------------------------------


def test_ray_tcp_allreduce_on_two_nodes_started_from_zero(ray_project) -> None:
    """The placement group asks the autoscaler for 2 nodes; the run waits for them."""
    from jupyter_compute import api

    ray_project.wait_nodes(lambda n: n["current"] == 0 and not n["pending"], timeout=120)
    ray_project.write("allreduce.py", ALLREDUCE)
    run = api.submit("allreduce.py", target="cpu-cluster", node_count=2)
    details = set()
    deadline = time.monotonic() + 240
    while not run.status().is_terminal() and time.monotonic() < deadline:
        st = run.target.status(run.id)
        if st.get("detail"):
            details.add(st["detail"])
        time.sleep(0.2)
    assert run.wait(timeout=10).value == "Completed", run.log()
    assert any(d.startswith("waiting for 2 nodes: ") for d in details), details
    log = run.log()
    assert "[rank 0] allreduce total=3" in log and "[rank 1] allreduce total=3" in log, log
    out = ray_project.cli("show", run.id, "--json")
    ranks = json.loads(out.stdout)["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert len({r["node_id"] for r in ranks}) == 2, ranks  # STRICT_SPREAD: a node each


def test_ray_refuses_mpi_and_more_nodes_than_it_has(ray_project) -> None:
    ray_project.write("t.py", "print('x')\n")
    line = _last_line_error(ray_project.cli("submit", "t.py", "--target", "cpu-cluster",
                                            "--nodes", "3"))
    assert "node_count 3" in line and "--max-nodes 2" in line, line
    line = _last_line_error(ray_project.cli("submit", "t.py", "--target", "cpu-cluster",
                                            "--nodes", "2", "--distribution", "mpi"))
    assert "type mpi runs on local targets" in line, line


def test_widget_filters_the_log_by_rank_and_charts_rank_0(project: Project, kernel) -> None:
    project.write("allreduce.py", ALLREDUCE)
    out = kernel.run("%submit allreduce.py --nodes 2 -o r")
    assert out.status == "ok", out.error_text
    assert kernel.value("r.wait()") == "Completed"
    code = ("from jupyter_compute.magics import show\nw = show(r)\nw.follower.join(60)\n"
            "w.rank_filter.value = 1\n"
            "print(repr(w.log_view.text))\n"
            "print(sorted((n, list(s.ys)) for n, s in w._figures['total'].series.items()))\n"
            "w.every_rank.value = True\n"
            "print(sorted((n, s.label, list(s.ys)) for n, s in "
            "w._figures['total'].series.items()))\n")
    out = kernel.run(code)
    assert out.status == "ok", out.error_text
    text, default, every = out.stdout.strip().splitlines()
    assert "allreduce total=3" in text and "[rank" not in text and " RANK=1 " in text
    assert " RANK=0 " not in text
    assert default == "[('total', [3]), ('total@1', [])]"  # rank 0 only by default
    assert every == "[('total', 'rank 0', [3]), ('total@1', 'rank 1', [4])]"


def test_ray_failing_rank_and_cancel_stop_every_rank(ray_project, tmp_path: Path) -> None:
    from jupyter_compute import api

    fails, sleeps = tmp_path / "fails", tmp_path / "sleeps"
    fails.mkdir()
    sleeps.mkdir()
    ray_project.write("fails.py", ONE_FAILS)
    ray_project.write("sleeps.py", SLEEPS)
    run = api.submit("fails.py", target="cpu-cluster", node_count=2,
                     environment_variables={"PIDS": str(fails)})
    started = _wait_file_count(fails, 2, timeout=240, run=run)
    assert run.wait(timeout=60).value == "Failed", run.log()
    assert "rank 1 exited with code 3" in (run.record.error or ""), run.record.error
    assert not _gone_within(started, 3 + 2)

    run = api.submit("sleeps.py", target="cpu-cluster", node_count=2,
                     environment_variables={"PIDS": str(sleeps)})
    started = _wait_file_count(sleeps, 2, timeout=240, run=run)
    run.cancel()
    assert run.wait(timeout=60).value == "Canceled", run.log()
    assert not _gone_within(started, 5)


# -- pure pieces ------------------------------------------------------------------------------


def test_rank_numbering_from_srun_and_mpirun_only_when_told() -> None:
    from jupyter_compute.ranks import complete_environment

    srun = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
            "SLURM_NODEID": "1", "SLURM_NTASKS_PER_NODE": "2(x2)",
            "TF_CONFIG_WORKERS": json.dumps(["a:1", "a:2", "b:3", "b:4"])}
    env = complete_environment(srun, "slurm")
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["NODE_RANK"],
            env["LOCAL_WORLD_SIZE"]) == ("3", "4", "1", "1", "2")
    assert json.loads(env["TF_CONFIG"])["task"] == {"type": "worker", "index": 3}
    # a local run inside a Slurm job keeps the numbering it was given
    assert complete_environment({**srun, "RANK": "0"})["RANK"] == "0"
    mpi = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2",
           "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
           "OMPI_COMM_WORLD_NODE_RANK": "0"}
    env = complete_environment(mpi, "mpi")
    assert (env["RANK"], env["LOCAL_WORLD_SIZE"], env["NODE_RANK"]) == ("1", "2", "0")


def test_distribution_spellings() -> None:
    from jupyter_compute.distribution import Distribution
    from jupyter_compute.exceptions import UsageError

    assert Distribution.parse("MPI") == Distribution("mpi", 1)
    assert Distribution.parse({"type": "tensorflow", "process_count_per_instance": 3}) == \
        Distribution("tensorflow", 3)
    for bad, words in (({"type": "horovod"}, "pytorch, mpi, tensorflow"),
                       ({"type": "pytorch", "procs": 2}, "unknown distribution key 'procs'"),
                       ({"type": "pytorch", "process_count_per_node": -1}, "at least 1"),
                       (3, "a type")):
        with pytest.raises(UsageError, match=words):
            Distribution.parse(bad)


# -- Slurm ---------------------------------------------------------------------------------


def test_slurm_tcp_allreduce_and_mpi4py_on_two_nodes(slurm_project) -> None:
    """sbatch -N 2: the agent on the first node, the ranks by srun (mpirun for mpi)."""
    from jupyter_compute import api

    slurm_project.write("allreduce.py", ALLREDUCE)
    run = api.submit("allreduce.py", target="hpc", node_count=2)
    assert run.wait(timeout=240).value == "Completed", run.log()
    log = run.log()
    assert "[rank 0] allreduce total=3" in log and "[rank 1] allreduce total=3" in log, log
    out = slurm_project.cli("show", run.id, "--json")
    ranks = json.loads(out.stdout)["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert len({r["node"] for r in ranks}) == 2, ranks  # a node each

    pytest.importorskip("mpi4py", reason="pip install -e '.[test]' installs mpi4py")
    slurm_project.write("mpi_allreduce.py", MPI_ALLREDUCE)
    run = api.submit("mpi_allreduce.py", target="hpc", node_count=2, distribution="mpi")
    assert run.wait(timeout=240).value == "Completed", run.log()
    for rank in (0, 1):
        assert f"[rank {rank}] mpi rank={rank} size=2 RANK={rank}" in run.log(), run.log()


def test_slurm_failing_rank_and_cancel_stop_every_rank(slurm_project, tmp_path: Path) -> None:
    from jupyter_compute import api

    fails, sleeps = tmp_path / "fails", tmp_path / "sleeps"
    fails.mkdir()
    sleeps.mkdir()
    slurm_project.write("fails.py", ONE_FAILS)
    slurm_project.write("sleeps.py", SLEEPS)
    run = api.submit("fails.py", target="hpc", node_count=2,
                     environment_variables={"PIDS": str(fails)})
    started = _wait_file_count(fails, 2, timeout=240, run=run)
    assert run.wait(timeout=60).value == "Failed", run.log()
    assert "rank 1 exited with code 3" in (run.record.error or ""), run.record.error
    assert not _gone_within(started, 3 + 2)

    run = api.submit("sleeps.py", target="hpc", node_count=2,
                     environment_variables={"PIDS": str(sleeps)})
    started = _wait_file_count(sleeps, 2, timeout=240, run=run)
    run.cancel()
    assert run.wait(timeout=60).value == "Canceled", run.log()
    assert not _gone_within(started, 5)
