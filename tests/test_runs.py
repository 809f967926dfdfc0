"""A run end to end on the local target, through the real CLI (the issue's acceptance)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from conftest import CLI, Project, pid_alive

TRAIN = """
import sys
from jupyter_compute.tracking import get_run
run = get_run()
for step in range(3):
    print(f"step {step}", flush=True)
    run.log("loss", 1.0 / (step + 1), step=step)
run.log_row("table", step=0, a=1, b="x")
run.tag("dataset", "toy")
print("to stderr", file=sys.stderr)
with open("outputs/result.txt", "w") as f:
    f.write("done")
"""


def test_script_completes_with_logs_metrics_outputs(project: Project) -> None:
    project.write("train.py", TRAIN)
    out = project.cli("submit", "train.py", "--wait")
    assert out.returncode == 0, out.stderr
    assert "step 0\nstep 1\nstep 2\n" in out.stdout
    assert "to stderr" in out.stdout
    run_id = out.stderr.split()[1]
    assert out.stdout.rstrip().endswith(f"run {run_id} Completed")

    shown = project.show(run_id)
    assert shown["status"] == "Completed" and shown["exit_code"] == 0
    for key in ("id", "name", "target", "status", "exit_code", "created", "started", "ended",
                "snapshot", "git"):
        assert key in shown
    assert set(shown["snapshot"]) >= {"id", "files", "bytes", "new_files", "new_bytes"}
    assert set(shown["git"]) == {"repository", "branch", "commit", "dirty"}
    assert shown["created"] <= shown["started"] <= shown["ended"]
    assert shown["created"].endswith("+00:00") and "." in shown["created"]

    metrics = json.loads(project.cli("metrics", run_id, "--json").stdout)
    assert [m["value"] for m in metrics["loss"]] == [1.0, 0.5, 1.0 / 3]
    assert [m["step"] for m in metrics["loss"]] == [0, 1, 2]
    assert set(metrics["loss"][0]) == {"value", "step", "time"}
    assert metrics["table"][0]["value"] == {"a": 1, "b": "x"}
    assert "dataset" not in metrics  # tags are not metrics

    log = project.cli("logs", run_id).stdout
    assert "step 2" in log and "to stderr" in log
    assert (project.run_dir(run_id) / "outputs" / "result.txt").read_text() == "done"

    runs = json.loads(project.cli("runs", "--json").stdout)
    assert runs[0]["id"] == run_id and runs[0]["status"] == "Completed"


def test_crash_fails_with_error_tail(project: Project) -> None:
    project.write("crash.py", """
        print("about to fail")
        raise ValueError("the data is bad")
    """)
    out = project.cli("submit", "crash.py", "--wait")
    assert out.returncode == 1
    assert "Failed" in out.stdout
    assert "ValueError: the data is bad" in out.stderr
    run_id = out.stderr.split()[1]
    shown = project.show(run_id)
    assert shown["status"] == "Failed" and shown["exit_code"] == 1
    assert "ValueError: the data is bad" in shown["error"]


def test_cancel_ends_children_of_children(project: Project) -> None:
    project.write("tree.py", """
        import os, subprocess, sys, time
        open("outputs/pids", "a").write(f"{os.getpid()}\\n")
        if len(sys.argv) < 2 or int(sys.argv[1]) < 2:
            depth = int(sys.argv[1]) if len(sys.argv) > 1 else 0
            for _ in range(2):
                subprocess.Popen([sys.executable, __file__, str(depth + 1)])
        # one grandchild tries to escape the process group, as a daemon would
        if len(sys.argv) > 1 and sys.argv[1] == "2":
            os.setsid()
        print("ready", flush=True)
        time.sleep(600)
    """)
    run_id = project.submit("tree.py")
    pids_file = project.run_dir(run_id) / "outputs" / "pids"
    deadline = time.time() + 30
    while time.time() < deadline:
        if pids_file.exists() and len(pids_file.read_text().split()) == 7:
            break
        time.sleep(0.1)
    pids = [int(p) for p in pids_file.read_text().split()]
    assert len(pids) == 7
    t0 = time.time()
    out = project.cli("cancel", run_id)
    assert out.returncode == 0, out.stderr
    while time.time() - t0 < 5 and any(pid_alive(p) for p in pids):
        time.sleep(0.1)
    assert not [p for p in pids if pid_alive(p)]
    assert project.show(run_id)["status"] == "Canceled"


def test_cancel_ends_setsid_children_that_ignore_sigterm_and_clear_their_env(
        project: Project) -> None:
    """Daemons that leave the session, drop the run's id from their environment and
    ignore SIGTERM are still the run's: cancel ends them all within the grace (+2 s)."""
    project.write("run.yml", "script: daemons.py\ncancel_grace_seconds: 1\n")
    project.write("daemons.py", """
        import os, subprocess, time
        pids = os.path.abspath("outputs/pids")
        for _ in range(10):
            subprocess.Popen(["setsid", "env", "-i", "/bin/sh", "-c",
                              'trap "" TERM; echo $$ >> "$0"; exec /bin/sleep 600', pids])
        time.sleep(600)
    """)
    run_id = project.submit("--config", "run.yml")
    pids_file = project.run_dir(run_id) / "outputs" / "pids"
    pids: list[int] = []
    try:
        deadline = time.time() + 30
        while len(pids) < 10:
            assert time.time() < deadline
            time.sleep(0.05)
            text = pids_file.read_text() if pids_file.exists() else ""
            pids = [int(p) for p in text.split()] if text.endswith("\n") else pids
        assert all(pid_alive(p) for p in pids)
        t0 = time.time()
        out = project.cli("cancel", run_id)
        assert out.returncode == 0, out.stderr
        while time.time() - t0 < 1 + 2 and any(pid_alive(p) for p in pids):
            time.sleep(0.05)
        assert [p for p in pids if pid_alive(p)] == []
        assert project.show(run_id)["status"] == "Canceled"
    finally:  # whatever survived a broken cancel must not outlive the test
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_max_duration_times_out(project: Project) -> None:
    project.write("slow.py", "import time\nprint('start', flush=True)\ntime.sleep(60)\n")
    out = project.cli("submit", "slow.py", "--wait", "--max-duration", "1")
    assert out.returncode == 1
    run_id = out.stderr.split()[1]
    shown = project.show(run_id)
    assert shown["status"] == "TimedOut"
    assert "max_run_duration_seconds" in shown["error"]


def test_killed_agent_becomes_failed(project: Project) -> None:
    project.write("slow.py", "import time\nprint('start', flush=True)\ntime.sleep(60)\n")
    run_id = project.submit("slow.py")
    status_file = project.run_dir(run_id) / "status.json"
    deadline = time.time() + 20
    while json.loads(status_file.read_text())["status"] != "Running":
        assert time.time() < deadline
        time.sleep(0.05)
    status = json.loads(status_file.read_text())
    os.kill(status["agent"]["pid"], signal.SIGKILL)
    t0 = time.time()
    shown = project.show(run_id)
    assert time.time() - t0 < 10
    assert shown["status"] == "Failed"
    assert "agent lost" in shown["error"]
    # the orphaned script is not left running either
    deadline = time.time() + 5
    while pid_alive(status["script"]["pid"]) and time.time() < deadline:
        time.sleep(0.05)
    assert not pid_alive(status["script"]["pid"])


def test_concurrent_submits_are_all_recorded(project: Project) -> None:
    project.write("hello.py", "print('hello')\n")
    procs = [subprocess.Popen([CLI, "submit", "hello.py", "--name", f"c{i}"],
                              cwd=project.root, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(20)]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (_, stderr) in zip(procs, results):
        assert proc.returncode == 0, stderr
        assert "locked" not in stderr
    ids = {stdout.strip().splitlines()[-1] for stdout, _ in results}
    assert len(ids) == 20
    recorded = json.loads(project.cli("runs", "--json", "--limit", "100").stdout)
    assert {r["id"] for r in recorded} == ids
    for run_id in ids:
        out = project.cli("logs", run_id, "-f")
        assert out.returncode == 0 and "hello" in out.stdout


def test_second_submit_counts_only_the_changed_file(project: Project) -> None:
    project.write("main.py", "print('v1')\n")
    project.write("lib/data.txt", "x" * 5000)
    first = project.show(project.submit("main.py"))
    assert first["snapshot"]["new_files"] == 2
    changed = project.write("lib/data.txt", "y" * 6001)
    second = project.show(project.submit("main.py"))
    assert second["snapshot"]["new_files"] == 1
    assert second["snapshot"]["new_bytes"] == changed.stat().st_size == 6001
    assert second["snapshot"]["files"] == 2


def test_arguments_pass_through_verbatim(project: Project) -> None:
    project.write("echo.py", "import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    tricky = ["it's", 'say "hi"', "two words", "$(touch pwned)", "a; rm -rf /", "`id`", "--x=1"]
    out = project.cli("submit", "echo.py", "--wait", "--", *tricky)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0]) == tricky
    assert not (project.root / "pwned").exists()


def test_client_may_exit_while_the_run_goes_on(project: Project) -> None:
    project.write("later.py", "import time\ntime.sleep(1.5)\nprint('still here')\n")
    proc = subprocess.Popen([CLI, "submit", "later.py", "--wait"], cwd=project.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.7)
    proc.send_signal(signal.SIGINT)  # Ctrl-C detaches; it does not cancel
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 130 and "goes on" in stderr
    run_id = stderr.split()[1]
    out = project.cli("logs", run_id, "-f")
    assert "still here" in out.stdout
    assert project.show(run_id)["status"] == "Completed"


def test_requirements_environment_on_the_local_target_from_another_folder(
        project: Project) -> None:
    """`environment: requirements:` on the local target, submitted from a subfolder.

    The defect: the venv was built at a path relative to the run folder but used from
    the submitting shell's folder ("could not start ../../envs/<key>/bin/python").
    The agent's paths are absolute now; the venv lives in the workspace's envs/.
    """
    project.write("requirements.txt", "six\n")
    project.write("uses_six.py", "import six\nprint('six', six.__version__)\n")
    project.write("run.yml", "script: uses_six.py\nenvironment:\n"
                             "  requirements: requirements.txt\n")
    (project.root / "elsewhere").mkdir()
    out = project.cli("submit", "--config", "../run.yml", "--source-dir", "..", "--wait",
                      cwd=project.root / "elsewhere", timeout=300)
    assert out.returncode == 0, out.stderr
    assert "six 1." in out.stdout
    envs = project.root / ".jupyter_compute" / "envs"
    assert [p for p in envs.iterdir() if (p / "bin" / "python").exists()]


def test_a_script_killed_by_its_cancels_signal_is_canceled_not_failed(project: Project) -> None:
    """Slurm's scancel signals the script and the agent at once, so the script can die
    before the agent's loop sees the cancel file: the run is still Canceled, with the
    reason the canceler wrote (a sweep policy's)."""
    project.write("sleepy.py", "import os, time\nopen('outputs/pid', 'w').write(str(os.getpid()))\n"
                               "time.sleep(600)\n")
    run_id = project.submit("sleepy.py")
    pid_file = project.run_dir(run_id) / "outputs" / "pid"
    deadline = time.time() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    (project.run_dir(run_id) / "cancel").write_text("stopped early by a policy")
    os.kill(int(pid_file.read_text()), signal.SIGTERM)
    deadline = time.time() + 30
    while project.show(run_id)["status"] not in ("Canceled", "Failed") and \
            time.time() < deadline:
        time.sleep(0.1)
    shown = project.show(run_id)
    assert (shown["status"], shown["error"]) == ("Canceled", "stopped early by a policy"), shown
