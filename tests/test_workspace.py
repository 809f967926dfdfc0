"""Workspace discovery, init templates, targets.yml, run.yml and the run store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from jupyter_compute.config import load_run_config
from jupyter_compute.exceptions import ComputeError, ConfigError
from jupyter_compute.store import MIGRATIONS, RunStore
from jupyter_compute.workspace import find

from conftest import CLI, Project


def test_init_writes_commented_templates(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    proj = Project(tmp_path)
    out = proj.cli("init")
    assert out.returncode == 0, out.stderr
    ws = tmp_path / ".jupyter_compute"
    for name in ("targets.yml", "run.yml", "sweep.yml"):
        text = (ws / name).read_text()
        assert text.lstrip().startswith("#"), name
        yaml.safe_load(text)  # every template is valid YAML
    assert (ws / "runs.db").exists()
    cfg = load_run_config(ws / "run.yml")
    assert cfg.script == "train.py" and cfg.target == "local"
    sweep = yaml.safe_load((ws / "sweep.yml").read_text())
    assert sweep["sampling"]["parameter_space"][0]["name"] == "--penalty"
    # a second init keeps what is there
    (ws / "run.yml").write_text("script: mine.py\n")
    assert proj.cli("init").returncode == 0
    assert (ws / "run.yml").read_text() == "script: mine.py\n"


def test_workspace_is_found_walking_up(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / ".jupyter_compute").mkdir()
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find(deep).root == tmp_path
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.setenv("JUPYTER_COMPUTE_WORKSPACE", str(other))
    assert find(deep).root == other
    assert find(deep, explicit=tmp_path / ".jupyter_compute").root == tmp_path


def test_workspace_flag_from_another_folder(project: Project, tmp_path: Path) -> None:
    project.write("t.py", "print('hi')\n")
    run_id = project.submit("t.py")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = project.cli("logs", run_id, "-f", "--workspace", str(project.root), cwd=elsewhere)
    assert out.returncode == 0 and "hi" in out.stdout


def test_attach_detach_targets(project: Project) -> None:
    out = project.cli("attach", "sys", "--type", "local", "--python", "/usr/bin/python3")
    assert out.returncode == 0, out.stderr
    listed = json.loads(project.cli("targets", "--json").stdout)
    assert {"name": "sys", "type": "local", "python": "/usr/bin/python3"} in listed
    assert {"name": "local", "type": "local"} in listed
    again = project.cli("attach", "sys", "--type", "local")
    assert again.returncode == 2 and "already attached" in again.stderr
    bad = project.cli("attach", "x", "--type", "local", "--pyhton", "/usr/bin/python3")
    assert bad.returncode == 2 and "did you mean 'python'?" in bad.stderr
    project.write("v.py", "import sys\nprint(sys.executable)\n")
    run = project.cli("submit", "v.py", "--target", "sys", "--wait")
    assert "/usr/bin/python3" in run.stdout, run.stderr
    assert project.cli("detach", "sys").returncode == 0
    assert "sys" not in project.cli("targets").stdout
    assert project.cli("detach", "sys").returncode == 2


def test_targets_yml_errors_name_the_line(project: Project) -> None:
    project.write(".jupyter_compute/targets.yml",
                  "targets:\n  box:\n    type: local\n    pythn: /usr/bin/python3\n")
    out = project.cli("targets")
    assert out.returncode == 2
    assert "targets.yml:4:" in out.stderr and "did you mean 'python'?" in out.stderr


def test_run_yml_accepts_azure_spellings(tmp_path: Path) -> None:
    path = tmp_path / "run.yml"
    path.write_text(
        "script: train.py\narguments: [--lr, 0.1]\nmaxRunDurationSeconds: 30\n"
        "environment:\n  python:\n    interpreterPath: /usr/bin/python3\n"
        "  environmentVariables: {A: 1}\n  docker:\n    baseImage: img:1\n")
    cfg = load_run_config(path)
    assert cfg.arguments == ["--lr", "0.1"]
    assert cfg.max_run_duration_seconds == 30
    assert cfg.python == "/usr/bin/python3"
    assert cfg.environment_variables == {"A": "1"}
    assert cfg.docker_image == "img:1"


@pytest.mark.parametrize("text, line, words", [
    ("script: [a\n", 2, "flow sequence started on line 1"),
    ("script: t.py\nnode_count: many\n", 2, "'node_count' must be a int"),
    ("script: t.py\nnode_count: yes\n", 2, "must be a int"),
    ("script: t.py\nenvironment:\n  requirments: r.txt\n", 3, "did you mean 'requirements'?"),
])
def test_run_yml_errors(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = tmp_path / "run.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert err.value.line == line
    assert f"run.yml:{line}:" in str(err.value) and words in str(err.value)


def test_store_schema_is_versioned(tmp_path: Path) -> None:
    RunStore(tmp_path / "runs.db").close()
    db = sqlite3.connect(tmp_path / "runs.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(ComputeError, match="newer jupyter_compute"):
        RunStore(tmp_path / "runs.db")


def test_jupyter_subcommand_and_demo(project: Project) -> None:
    import shutil
    import subprocess

    jupyter = shutil.which("jupyter", path=str(Path(CLI).parent))
    assert jupyter, "jupyter_core provides `jupyter`, which finds `jupyter-compute`"
    out = subprocess.run([jupyter, "compute", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("jupyter-compute ")
    demo = project.cli("demo")
    assert demo.returncode == 0, demo.stderr
    assert "epoch 5/5" in demo.stdout and "Completed" in demo.stdout
    assert "model.json" in demo.stdout
