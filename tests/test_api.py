"""The Python API: submit, Run handles, following by offset, the tracking API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import tomllib

import jupyter_compute
from jupyter_compute import Run, RunStatus, submit
from jupyter_compute.targets import BUILTIN_KINDS

from conftest import Project

ROOT = Path(__file__).resolve().parent.parent


def test_public_names_are_pinned() -> None:
    assert jupyter_compute.__all__ == [
        "ComputeError", "Run", "RunSpec", "RunStatus", "attach", "compare", "detach", "get_target",
        "runs", "submit", "targets",
    ]
    for name in jupyter_compute.__all__:
        assert getattr(jupyter_compute, name) is not None


def test_builtin_kinds_match_entry_points() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = meta["project"]["entry-points"]["jupyter_compute.targets"]
    assert declared == BUILTIN_KINDS


def test_status_is_a_str_enum() -> None:
    assert RunStatus.COMPLETED == "Completed" and str(RunStatus.TIMED_OUT) == "TimedOut"
    assert json.dumps(RunStatus.FAILED) == '"Failed"'
    assert RunStatus.CANCELED.is_terminal() and not RunStatus.RUNNING.is_terminal()


def test_submit_and_follow_every_line_once(project: Project) -> None:
    project.write("count.py", """
        import sys, time
        for i in range(2000):
            print(f"line {i}")
            if i % 500 == 0:
                sys.stdout.flush(); time.sleep(0.2)
        print("partial line without newline", end="")
    """)
    run = submit("count.py", source_dir=project.root)
    assert isinstance(run, Run)
    seen = []
    for line in run.follow():
        seen.append(line)
        if len(seen) == 700:
            break  # stop mid-run, then resume from the offset on a fresh handle
    again = Run.get(run.id)
    seen.extend(again.follow(offset=run.offset))
    assert seen == [f"line {i}\n" for i in range(2000)] + ["partial line without newline"]
    assert again.status() is RunStatus.COMPLETED


def test_reattach_from_another_process(project: Project) -> None:
    project.write("m.py", "from jupyter_compute.tracking import get_run\n"
                          "get_run().log('acc', 0.9)\nprint('ok')\n")
    run = submit("m.py", source_dir=project.root, name="remote-read")
    code = (f"from jupyter_compute import Run\nr = Run.get({run.id!r})\n"
            "print(r.wait(), r.metrics()['acc'][0]['value'], r.log().strip())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=project.root, timeout=60)
    assert out.stdout.split() == ["Completed", "0.9", "ok"], out.stderr


def test_unique_suffix_finds_a_run(project: Project) -> None:
    project.write("s.py", "pass\n")
    run = submit("s.py", source_dir=project.root)
    assert Run.get(run.id[-4:]).id == run.id


def test_tracking_offline_prints_and_does_not_fail(tmp_path: Path) -> None:
    script = tmp_path / "offline.py"
    script.write_text("from jupyter_compute.tracking import get_run\n"
                      "run = get_run(); run.log('loss', 0.5, step=1); run.tag('k', 'v')\n"
                      "print(run.offline, run.id)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0
    assert out.stdout.strip() == "True None"
    assert '"name": "loss"' in out.stderr


def test_tracking_import_is_cheap() -> None:
    code = ("import json, sys; before = set(sys.modules)\n"
            "import jupyter_compute.tracking\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    new = set(json.loads(out.stdout))
    assert new - set(sys.stdlib_module_names) == {"jupyter_compute"}
    assert not new & {"sqlite3", "argparse", "subprocess", "threading", "hashlib"}


def test_log_image_and_tags(project: Project) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
    project.write("img.py", f"""
        from jupyter_compute.tracking import get_run
        run = get_run()
        run.log_image("curve", {png!r}, step=2)
        run.tag("owner", "me")
    """)
    run = submit("img.py", source_dir=project.root)
    assert run.wait() is RunStatus.COMPLETED
    assert [p.name for p in run.outputs()] == ["curve_2.png"]
    assert run.metrics()["curve"][0]["value"] == "outputs/curve_2.png"
    assert run.tags() == {"owner": "me"}


def test_given_interpreter_gets_the_runtime(project: Project) -> None:
    # /usr/bin/python3 has no jupyter_compute installed: the shipped runtime must do.
    system = Path("/usr/bin/python3")
    assert subprocess.run([str(system), "-c", "import jupyter_compute"],
                          capture_output=True).returncode != 0
    project.write("sys.py", "import sys\nfrom jupyter_compute.tracking import get_run\n"
                            "get_run().log('x', 1)\nprint(sys.executable)\n")
    run = submit("sys.py", source_dir=project.root, python=str(system))
    assert run.wait() is RunStatus.COMPLETED, run.log()
    assert "/usr/bin/python3" in run.log()
    assert run.metrics()["x"][0]["value"] == 1


def test_leftover_processes_are_ended_and_counted(project: Project) -> None:
    project.write("leave.py", """
        import subprocess, sys
        for _ in range(2):
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print("leaving")
    """)
    run = submit("leave.py", source_dir=project.root)
    assert run.wait(timeout=30) is RunStatus.COMPLETED
    assert "ended 2 leftover processes" in run.log()
