"""Status only moves forward — in the store, for every handle, and in the agent — and the
store is safe across threads (issue 20, defects 2 and 3, and the agent side of 5)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from jupyter_compute import Run, RunStatus, get_target, protocol, submit
from jupyter_compute.store import RunRecord, RunStore

from conftest import Project, pid_alive

ROOT = Path(__file__).resolve().parent.parent


def record(run_id: str) -> RunRecord:
    return RunRecord(id=run_id, name="r", target="local", kind="script", status="Queued",
                     created=protocol.utcnow(), script="s.py", arguments=[], source_dir="/",
                     snapshot={"id": "x"})


# -- the store ----------------------------------------------------------------------------


def test_helpers_rank_statuses_forward_only() -> None:
    order = ["Queued", "Preparing", "Running", "Completed"]
    assert [protocol.status_rank(s) for s in order] == [0, 1, 2, 3]
    assert protocol.advances(None, "Queued") and protocol.advances("Running", "Canceled")
    assert not protocol.advances("Running", "Preparing")
    for terminal in protocol.TERMINAL_STATUSES:
        for later in [*order, *protocol.TERMINAL_STATUSES]:
            assert not protocol.advances(terminal, later)


def test_store_never_moves_a_status_back(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    store.insert(record("r1"))
    store.update("r1", status="Running", started="t1")
    store.update("r1", status="Preparing")  # a reader that read before the agent started
    assert store.get("r1").status == "Running"
    store.update("r1", status="Completed", ended="t2", exit_code=0)
    for stale in ("Running", "Preparing", "Queued", "Failed"):
        store.update("r1", status=stale, ended=None, exit_code=None, error="agent lost")
    row = store.get("r1")
    assert (row.status, row.started, row.ended, row.exit_code, row.error) == \
        ("Completed", "t1", "t2", 0, None)
    # What the store accepted comes back, so a handle can take it over.
    assert store.advance("r1", "Running").status == "Completed"
    store.update("r1", error="stopped early by the sweep")  # no status: fields still set
    assert store.get("r1").error == "stopped early by the sweep"


def test_a_stale_handle_cannot_turn_completed_back_into_running(project: Project) -> None:
    """A poller reads status.json (Running), is slow to store it, and meanwhile another
    reader stores Completed: the late write must not bring Running back."""
    project.write("wait.py", """
        import os, sys, time
        while not os.path.exists(sys.argv[1]):
            time.sleep(0.02)
    """)
    go = project.root / "go"
    run = submit("wait.py", source_dir=project.root, arguments=[str(go)])
    queued = dataclasses.replace(run.record)  # a handle made at submit time
    deadline = time.time() + 30
    while run.status() is not RunStatus.RUNNING:
        assert time.time() < deadline
        time.sleep(0.02)

    read, release = threading.Event(), threading.Event()

    class SlowReader:
        """The local target, whose answer arrives late (a poller on a busy kernel thread)."""

        def __init__(self, target: Any) -> None:
            self.target = target

        def status(self, run_id: str) -> dict:
            st = self.target.status(run_id)
            read.set()
            release.wait(60)
            return st

    stale = Run(queued, run.workspace,
                target=SlowReader(get_target("local", run.workspace)))  # type: ignore[arg-type]
    seen: list[RunStatus] = []
    poller = threading.Thread(target=lambda: seen.append(stale.status()))
    poller.start()
    assert read.wait(30)  # it has read "Running"
    go.touch()
    assert run.wait(timeout=30) is RunStatus.COMPLETED
    assert run.workspace.store.get(run.id).status == "Completed"
    release.set()
    poller.join(30)

    stored = run.workspace.store.get(run.id)
    assert stored.status == "Completed" and stored.exit_code == 0 and stored.ended
    assert seen == [RunStatus.COMPLETED]  # the handle took over what the store holds
    assert stale.record.status == "Completed" and stale.record.ended == stored.ended
    assert project.show(run.id)["status"] == "Completed"


def test_one_store_serves_many_threads(tmp_path: Path) -> None:
    """Widgets' Cancel buttons and followers share the kernel's store from other threads."""
    store = RunStore(tmp_path / "runs.db")
    errors: list[BaseException] = []
    threads, per_thread = 12, 15

    def work(t: int) -> None:
        try:
            for i in range(per_thread):
                run_id = f"t{t}-{i}"
                store.insert(record(run_id))
                for status in ("Preparing", "Running"):
                    store.update(run_id, status=status, started=f"s{t}-{i}")
                    store.get(run_id)
                    store.list(limit=5)
                store.update(run_id, status="Completed", exit_code=t * 100 + i, ended="e")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert errors == []
    rows = {r.id: r for r in store.list()}
    assert len(rows) == threads * per_thread
    for t in range(threads):
        for i in range(per_thread):
            row = rows[f"t{t}-{i}"]
            assert (row.status, row.exit_code, row.started) == ("Completed", t * 100 + i,
                                                                f"s{t}-{i}")


def test_eight_pollers_on_one_store_only_ever_move_runs_forward(project: Project) -> None:
    """The issue's probe: 8 threads poll their own handles of the same runs through one
    kernel's store while a watcher records every status the store holds."""
    project.write("quick.py", "import time\ntime.sleep(0.3)\n")
    ids = [submit("quick.py", source_dir=project.root, name=f"p{i}").id for i in range(12)]
    ws = Run.get(ids[0]).workspace
    history: dict[str, list[str]] = {i: [] for i in ids}
    errors: list[BaseException] = []
    stop = threading.Event()

    def poll() -> None:
        try:
            handles = [Run(ws.store.get(i), ws) for i in ids]
            while not stop.is_set():
                for handle in handles:
                    handle.status()
                time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    def watch() -> None:
        try:
            while not stop.is_set():
                for row in ws.store.list(limit=100):
                    if not history[row.id] or history[row.id][-1] != row.status:
                        history[row.id].append(row.status)
                time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=poll) for _ in range(8)] + [threading.Thread(target=watch)]
    for t in threads:
        t.start()
    try:
        deadline = time.time() + 60
        while not all(h and h[-1] == "Completed" for h in history.values()) and not errors:
            assert time.time() < deadline, history
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == []
    for run_id, seen in history.items():
        ranks = [protocol.status_rank(s) for s in seen]
        assert ranks == sorted(ranks) and seen[-1] == "Completed", (run_id, seen)


# -- the agent ------------------------------------------------------------------------------


def prepared_run(folder: Path, script: str, status: str = "Queued") -> Path:
    """A run folder as a target leaves it for the agent: spec, manifest, blob, status."""
    run_dir = folder / "run"
    data = script.encode()
    digest = hashlib.sha256(data).hexdigest()
    blob = run_dir / "blobs" / "sha256" / digest[:2] / digest
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    protocol.write_json_atomic(str(run_dir / protocol.MANIFEST),
                               {"files": {"job.py": [digest, len(data), 0o100644]}})
    protocol.write_json_atomic(str(run_dir / protocol.SPEC), {
        "run_id": "r-agent", "kind": "script", "script": "job.py", "arguments": [],
        "cancel_grace_seconds": 1})
    created = protocol.utcnow()
    protocol.write_json_atomic(str(run_dir / protocol.STATUS), {
        "run_id": "r-agent", "status": status, "created": created,
        "history": [[status, created]]})
    return run_dir


def agent(run_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "jupyter_compute.agent", str(run_dir)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            start_new_session=True)


def test_agent_does_not_run_a_run_that_already_ended(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    run_dir = prepared_run(tmp_path, f"open({str(marker)!r}, 'w').close()\n",
                           status="Canceled")
    before = (run_dir / protocol.STATUS).read_bytes()
    proc = agent(run_dir)
    assert proc.wait(timeout=60) != 0  # not Completed
    assert not marker.exists()
    assert (run_dir / protocol.STATUS).read_bytes() == before
    assert "already ended (Canceled)" in (run_dir / protocol.LOG).read_text()


def test_agent_stops_at_once_when_a_reader_ended_the_run(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    run_dir = prepared_run(tmp_path, f"""
import os, time
open({str(pid_file)!r}, "w").write(str(os.getpid()))
time.sleep(600)
""")
    proc = agent(run_dir)
    status_file = run_dir / protocol.STATUS
    script_pid = None
    try:
        deadline = time.time() + 30
        while json.loads(status_file.read_text())["status"] != "Running" or \
                not pid_file.exists() or not pid_file.read_text():
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.05)
        script_pid = int(pid_file.read_text())
        # A reader decides the run is over (as "agent lost" does) and says so in the folder.
        st = json.loads(status_file.read_text())
        now = protocol.utcnow()
        st.update(status="Failed", ended=now, error="agent lost: declared by a reader")
        st["history"].append(["Failed", now])
        protocol.write_json_atomic(str(status_file), st)
        t0 = time.time()
        while time.time() - t0 < 1 + 2 and pid_alive(script_pid):
            time.sleep(0.05)
        assert not pid_alive(script_pid), "the script still runs after its run ended"
        proc.wait(timeout=10)
        final = json.loads(status_file.read_text())
        assert final["status"] == "Failed" and final["error"] == "agent lost: declared by a reader"
        assert [h[0] for h in final["history"]] == ["Queued", "Preparing", "Running", "Failed"]
    finally:  # on a broken agent, leave nothing behind
        for pid in (script_pid, proc.pid):
            if pid and pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
