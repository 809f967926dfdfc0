"""Bad input gets one clear line, the right exit code, and leaves nothing behind."""

from __future__ import annotations

import json

import pytest

from conftest import Project


def _nothing_recorded(project: Project) -> None:
    out = project.cli("runs", "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == []
    runs = project.root / ".jupyter_compute" / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_missing_script(project: Project) -> None:
    out = project.cli("submit", "nope.py")
    assert out.returncode == 2
    assert "no script 'nope.py'" in _one_line(out.stderr)
    _nothing_recorded(project)


def test_script_outside_source_dir(project: Project, tmp_path) -> None:
    outside = tmp_path / "elsewhere.py"
    outside.write_text("print(1)\n")
    out = project.cli("submit", str(outside))
    assert out.returncode == 2
    assert "outside the source directory" in _one_line(out.stderr)


def test_unknown_target_suggests_closest(project: Project) -> None:
    project.write("t.py", "print(1)\n")
    assert project.cli("attach", "cpu-cluster", "--type", "local").returncode == 0
    out = project.cli("submit", "t.py", "--target", "cpu-clster")
    assert out.returncode == 2
    line = _one_line(out.stderr)
    assert "no target named 'cpu-clster'" in line and "did you mean 'cpu-cluster'?" in line
    assert "local" in line
    _nothing_recorded(project)


def test_unknown_target_kind_lists_installed(project: Project) -> None:
    out = project.cli("attach", "x", "--type", "lokal")
    assert out.returncode == 2
    line = _one_line(out.stderr)
    assert "did you mean 'local'?" in line and "installed: " in line


def test_malformed_run_yml_names_the_line(project: Project) -> None:
    project.write("t.py", "print(1)\n")
    project.write("run.yml", "script: t.py\narguments: [a, b\ntarget: local\n")
    out = project.cli("submit", "t.py", "--config", "run.yml")
    assert out.returncode == 2
    line = _one_line(out.stderr)
    assert "run.yml:" in line and "malformed YAML" in line
    _nothing_recorded(project)


def test_bad_key_in_run_yml_suggests_the_right_one(project: Project) -> None:
    project.write("t.py", "print(1)\n")
    project.write("run.yml", "script: t.py\nmax_run_duration_secs: 5\n")
    out = project.cli("submit", "t.py", "--config", "run.yml")
    assert out.returncode == 2
    line = _one_line(out.stderr)
    assert "run.yml:2:" in line and "did you mean 'max_run_duration_seconds'?" in line
    _nothing_recorded(project)


def test_snapshot_over_the_limit_names_the_largest_files(project: Project) -> None:
    project.write("t.py", "print(1)\n")
    (project.root / "data").mkdir()
    (project.root / "data" / "big.bin").write_bytes(b"\0" * 3_000_000)
    (project.root / "small.txt").write_text("s")
    out = project.cli("submit", "t.py", env={"JUPYTER_COMPUTE_SNAPSHOT_MAX_MB": "1"})
    assert out.returncode == 1
    line = _one_line(out.stderr)
    assert "data/big.bin" in line and ".gitignore" in line
    _nothing_recorded(project)
    blobs = project.root / ".jupyter_compute" / "blobs"
    assert not blobs.exists() or not [p for p in blobs.rglob("*") if p.is_file()]


@pytest.mark.parametrize("args, message", [
    (["submit"], "no script to run"),
    (["submit", "t.py", "--wait", "--bogus"], "unrecognized arguments"),
    (["frobnicate"], "invalid choice"),
    (["show"], "required"),
    (["runs", "--limit", "many"], "invalid int value"),
])
def test_usage_errors_exit_2_with_one_line(project: Project, args, message) -> None:
    project.write("t.py", "print(1)\n")
    out = project.cli(*args)
    assert out.returncode == 2
    assert message in _one_line(out.stderr)


def test_unknown_run(project: Project) -> None:
    out = project.cli("show", "20990101-0000-nope-0000")
    assert out.returncode == 1
    assert "no run" in _one_line(out.stderr)


def test_run_yml_applies_only_with_config(project: Project) -> None:
    project.write("a.py", "import sys\nprint('A', sys.argv[1:])\n")
    project.write("b.py", "import os\nprint('B', os.environ.get('GREETING'))\n")
    project.write(".jupyter_compute/run.yml",
                  "script: b.py\nenvironment_variables: {GREETING: hello}\n")
    plain = project.cli("submit", "a.py", "--wait", "--", "x")
    assert "A ['x']" in plain.stdout
    configured = project.cli("submit", "--config", ".jupyter_compute/run.yml", "b.py", "--wait")
    assert "B hello" in configured.stdout, configured.stderr


def test_symlink_out_of_the_folder_is_not_followed_and_said(project: Project, tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not send")
    (project.root / "leak.txt").symlink_to(secret)
    project.write("t.py", "import os\nprint(os.path.exists('leak.txt'))\n")
    out = project.cli("submit", "t.py", "--wait")
    assert out.returncode == 0
    assert "warning: skipped symlink leak.txt" in out.stderr
    assert "False" in out.stdout
