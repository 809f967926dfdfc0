"""Environments on the local target, end to end: real uv (or pip), a real package index.

Each test has its own workspace, so its own ``envs/`` (and uv cache): a build in one
test is never a reuse in another. The packages are tiny pure-Python ones (six, idna)
from the index this machine's pip and uv reach.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jupyter_compute import api
from jupyter_compute.environments import Environment, conda_to_pip, read_conda_file, resolve
from jupyter_compute.exceptions import ConfigError, UsageError

from conftest import Project
from kernel import Kernel

USES = """
import sys
import six
print("six", six.__version__, "prefix", sys.prefix)
from jupyter_compute.tracking import get_run
get_run().log("ok", 1)
"""


def envs_dir(project: Project) -> Path:
    return project.root / ".jupyter_compute" / "envs"


def built(project: Project) -> list[str]:
    """Keys of the environments in the workspace (complete or not)."""
    folder = envs_dir(project)
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and len(p.name) == 16) \
        if folder.is_dir() else []


def one_line(out: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The one line of a refused command (usage and configuration errors exit 2)."""
    assert out.returncode == code, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


# -- each source ---------------------------------------------------------------------------


def test_requirements_built_with_uv_once_then_reused_and_listed(project: Project) -> None:
    project.write("requirements.txt", "six==1.17.0  # pinned\n\n")
    project.write("uses.py", USES)
    first = api.submit("uses.py", environment={"requirements": "requirements.txt"})
    assert first.wait(timeout=300).value == "Completed", first.log()
    log = first.log()
    assert "with uv" in log and "six 1.17.0" in log
    assert "environment: 1/1 packages" in log  # progress, parsed from uv's output
    second = api.submit("uses.py", requirements="requirements.txt")
    assert second.wait(timeout=120).value == "Completed", second.log()
    assert "reusing environment" in second.log() and "building" not in second.log()
    key, = built(project)
    assert f"/envs/{key}" in second.log()
    shown = second.to_dict()
    assert shown["environment"]["reused"] is True and shown["prepare_seconds"] < 5
    assert first.to_dict()["environment"] == {"key": key, "reused": False, "installer": "uv",
                                              "path": str(envs_dir(project) / key)}
    listed = json.loads(project.cli("envs", "--json").stdout)
    assert [(e["key"], e["source"], e["runs"]) for e in listed] == [
        (key, "requirements requirements.txt", 0)]
    assert listed[0]["bytes"] > 10_000
    assert "prepared:" in project.cli("show", second.id).stdout


def test_pyproject_with_extras_from_the_cli(project: Project) -> None:
    project.write("pyproject.toml", """
        [project]
        name = "demo"
        version = "0.1"
        dependencies = ["six"]
        [project.optional-dependencies]
        net = ["idna"]
        all = ["demo[net]"]
    """)
    project.write("uses.py", "import six, idna\nprint('both', six.__version__, idna.__version__)\n")
    out = project.cli("submit", "uses.py", "--pyproject", "pyproject.toml[all]", "--wait",
                      timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "both 1." in out.stdout and "pyproject pyproject.toml[all]" in out.stdout
    bad = project.cli("submit", "uses.py", "--pyproject", "pyproject.toml[gpu]")
    assert one_line(bad).endswith("has no optional dependency group 'gpu' (it has: all, net)")


CONDA = """\
name: demo
channels: [conda-forge, defaults]
dependencies:
  - python=3.11
  - conda-forge::six=1.17
  - pip
  - pip:
    - idna>=3
"""


def test_conda_file_is_installed_from_pypi(project: Project) -> None:
    project.write("environment.yml", CONDA)
    project.write("uses.py", "import sys, six, idna\nprint('py', sys.version_info[:2], "
                             "'six', six.__version__)\n")
    out = project.cli("submit", "uses.py", "--conda-file", "environment.yml", "--wait",
                      timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "py (3, 11) six 1.17" in out.stdout
    # a conda-only package that PyPI does not have either: named, in one line
    project.write("conda-only.yml", "dependencies:\n  - six\n  - jc-conda-only-lib=2.1\n")
    run = api.submit("uses.py", environment="conda-only.yml")
    assert run.wait(timeout=300).value == "Failed"
    assert run.record.error == (
        "environment: package 'jc-conda-only-lib' (from conda_file conda-only.yml) was not "
        "found on the package index; fix its name or version, or remove it")


def other_python() -> tuple[str, Path] | None:
    """An installed interpreter of another X.Y than this one (pyenv's, here)."""
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for path in sorted(Path("~/.pyenv/versions").expanduser().glob("3.*/bin/python3.*")):
        version = ".".join(path.parent.parent.name.split(".")[:2])
        if version != mine and path.name == f"python{version}" and version >= "3.9":
            return version, path
    return None


def test_a_named_environment_from_the_workspace(project: Project) -> None:
    project.write(".jupyter_compute/environments/science.yml", CONDA)
    project.write("uses.py", USES)
    out = project.cli("submit", "uses.py", "--env", "science", "--wait", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "six 1.17" in out.stdout
    line = one_line(project.cli("submit", "uses.py", "--env", "sceince"))
    assert "no environment named 'sceince'" in line and "known: science" in line


def test_python_by_version_and_by_path(project: Project, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    project.write("which.py", "import sys\nprint('version', sys.version_info[:2], "
                              "sys.executable)\nfrom jupyter_compute.tracking import get_run\n")
    # Another X.Y where the machine has one (pyenv's, here); else this one's X.Y, which
    # the selector must still find on PATH rather than fall back to the agent's python.
    other, path = other_python() or (f"{sys.version_info[0]}.{sys.version_info[1]}",
                                     Path(sys.executable).resolve())
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / f"python{other}").symlink_to(path)  # found on PATH by its version
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    run = api.submit("which.py", python=other)
    assert run.wait(timeout=120).value == "Completed", run.log()
    assert f"version ({other.replace('.', ', ')})" in run.log()
    assert str(tmp_path / "bin" / f"python{other}") in run.log()  # the one on PATH
    run = api.submit("which.py", environment=Environment(python="/usr/bin/python3"))
    assert run.wait(timeout=120).value == "Completed", run.log()
    assert "/usr/bin/python3" in run.log()
    assert built(project) == []  # nothing to install: no environment was built


def test_a_sweep_shares_one_environment_across_its_trials(project: Project) -> None:
    from jupyter_compute.sweep.handle import sweep

    project.write("requirements.txt", "six\n")
    project.write("train.py", "import sys, six\nfrom jupyter_compute.tracking import get_run\n"
                              "get_run().log('acc', float(sys.argv[-1]))\n")
    project.write("sweep.yml", """
        sampling:
          type: grid
          parameter_space:
          - name: --x
            expression: choice
            values: [1, 2, 3]
        primary_metric_name: acc
        primary_metric_goal: maximize
        max_total_runs: 3
        max_concurrent_runs: 3
    """)
    s = sweep("train.py", config="sweep.yml", environment="requirements.txt", wait=True)
    assert s.status().value == "Completed"
    assert len(built(project)) == 1
    logs = [t.log() for t in s.children()]
    assert len(logs) == 3
    assert sum("building environment" in log for log in logs) == 1, logs


# -- concurrency ---------------------------------------------------------------------------


def test_two_concurrent_submits_build_the_environment_once(project: Project) -> None:
    """pip builds for seconds, so the second run surely arrives during the build."""
    project.write("requirements.txt", "six\nidna\n")
    project.write("uses.py", USES)
    runs: list = []
    barrier = threading.Barrier(2)

    def submit() -> None:
        barrier.wait()
        runs.append(api.submit("uses.py", environment={"requirements": "requirements.txt",
                                                       "installer": "pip"}))

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for run in runs:
        assert run.wait(timeout=300).value == "Completed", run.log()
    logs = [run.log() for run in runs]
    assert sum("building environment" in log for log in logs) == 1, logs
    assert len(built(project)) == 1
    key, = built(project)
    other = next(log for log in logs if "building environment" not in log)
    assert f"waiting for the build of environment {key}" in other
    assert "reusing environment" in other


def test_envs_prune_spares_an_environment_a_running_run_uses(project: Project) -> None:
    project.write("requirements.txt", "six\n")
    go = project.root / "go"
    project.write("hold.py", f"import os, time\nwhile not os.path.exists({str(go)!r}):\n"
                             "    time.sleep(0.05)\n")
    run = api.submit("hold.py", requirements="requirements.txt")
    deadline = time.monotonic() + 300
    while run.status().value != "Running":
        assert time.monotonic() < deadline and not run.status().is_terminal(), run.log()
        time.sleep(0.1)
    listed = api.environments(workspace=project.root)
    assert [e["runs"] for e in listed] == [1]
    assert api.environments(prune=True, workspace=project.root) == []
    assert len(built(project)) == 1
    go.touch()
    assert run.wait(timeout=60).value == "Completed", run.log()
    out = project.cli("envs", "--prune", "--days", "1")
    assert out.returncode == 0 and "removed 0 environments" in out.stderr
    out = project.cli("envs", "--prune")
    assert out.returncode == 0 and "removed 1 environment:" in out.stderr
    assert built(project) == []


# -- bad input: one line, nothing half-built reused ------------------------------------------


def test_a_missing_package_is_named_and_nothing_is_left(project: Project) -> None:
    project.write("requirements.txt", "six\njc-nothing-here-xyz==1.0\n")
    project.write("uses.py", USES)
    for installer in ("uv", "pip"):  # each says it its own way
        run = api.submit("uses.py", environment={"requirements": "requirements.txt",
                                                 "installer": installer})
        assert run.wait(timeout=300).value == "Failed"
        assert run.record.error == (
            "environment: package 'jc-nothing-here-xyz' (from requirements requirements.txt) "
            "was not found on the package index; fix its name or version, or remove it")
        assert f"with {installer}" in run.log()
        assert built(project) == []


def test_an_impossible_python_pin_is_one_line(project: Project) -> None:
    project.write("environment.yml", "dependencies:\n  - python=3.99\n  - six\n")
    project.write("uses.py", USES)
    out = project.cli("submit", "uses.py", "--conda-file", "environment.yml", "--wait")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        "error: environment: no Python 3.99 on this host (looked for python3.99 on PATH and "
        "in uv); install it there or change the python pin")
    assert built(project) == []


def test_a_malformed_conda_file_names_its_line(project: Project) -> None:
    project.write("environment.yml", "name: x\ndependencies:\n  - six\n - idna\n  - attrs\n")
    project.write("uses.py", USES)
    line = one_line(project.cli("submit", "uses.py", "--conda-file", "environment.yml"))
    assert f"{project.root}/environment.yml:4: malformed YAML: expected <block end>" in line
    assert json.loads(project.cli("runs", "--json").stdout) == []


def test_a_requirements_file_that_does_not_exist_fails_at_submit(project: Project) -> None:
    project.write("uses.py", USES)
    line = one_line(project.cli("submit", "uses.py", "--requirements", "nope.txt"))
    assert line.endswith(f"error: requirements file 'nope.txt' does not exist (looked in "
                         f"{project.root} or the current folder); fix --requirements or the "
                         "run.yml environment")
    assert json.loads(project.cli("runs", "--json").stdout) == []  # nothing was recorded


def test_a_build_that_fails_halfway_is_built_afresh_next_time(project: Project,
                                                              tmp_path: Path) -> None:
    """A local package whose build fails while a flag file exists: the first build fails
    after six is resolved; the leftovers of a crashed build are then planted where the
    environment goes; the next try removes them and builds afresh."""
    flag = tmp_path / "fail-now"
    flag.touch()
    project.write("pkg/setup.py", f"""
        import os
        from setuptools import setup
        if os.path.exists({str(flag)!r}):
            raise SystemExit("jc-halfway: the build breaks here")
        setup(name="halfway", version="1.0", py_modules=["halfway"])
    """)
    project.write("pkg/halfway.py", "VALUE = 42\n")
    project.write("requirements.txt", "six\n./pkg\n")
    project.write("uses.py", "import halfway, six\nprint('value', halfway.VALUE)\n")
    run = api.submit("uses.py", requirements="requirements.txt")
    assert run.wait(timeout=300).value == "Failed"
    assert run.record.error.startswith("environment: uv pip install failed:"), run.record.error
    assert "\n" not in run.record.error
    assert built(project) == []
    key = run.log().split("building environment ")[1].split()[0]
    half = envs_dir(project) / key
    (half / "bin").mkdir(parents=True)  # what a crash mid-build leaves: no completion mark
    flag.unlink()
    again = api.submit("uses.py", requirements="requirements.txt")
    assert again.wait(timeout=300).value == "Completed", again.log()
    log = again.log()
    assert f"removing the unfinished build of environment {key}" in log
    assert "building environment" in log and "value 42" in log


def test_pip_builds_where_uv_is_not_wanted_and_build_time_is_not_run_time(
        project: Project) -> None:
    """pip's build (a venv with ensurepip, then pip) takes seconds: longer than the run's
    max duration, which must start only when the script does."""
    project.write("requirements.txt", "six\n")
    project.write("uses.py", USES)
    run = api.submit("uses.py", environment={"requirements": "requirements.txt",
                                             "installer": "pip"}, max_run_duration_seconds=1)
    assert run.wait(timeout=300).value == "Completed", run.log()
    assert "with pip (installer: pip)" in run.log() and "six 1." in run.log()
    assert run.to_dict()["prepare_seconds"] > 1
    assert "detail" not in json.loads((project.run_dir(run.id) / "status.json").read_text())


def test_cancel_during_a_build_leaves_nothing_half_built(project: Project) -> None:
    project.write("requirements.txt", "six\n")
    project.write("uses.py", USES)
    run = api.submit("uses.py", environment={"requirements": "requirements.txt",
                                             "installer": "pip"})
    deadline = time.monotonic() + 60
    while "building environment" not in run.log():
        assert time.monotonic() < deadline, run.log()
        time.sleep(0.05)
    assert run.status().value == "Preparing"
    # beside the status (the widget shows it): what the build is doing now
    assert run.detail is not None and run.detail.startswith(("building environment",
                                                             "environment:")), run.detail
    assert run.cancel().value in ("Preparing", "Canceled")
    assert run.wait(timeout=60).value == "Canceled", run.log()
    assert "canceled during" in run.log()
    assert built(project) == []


# -- the model, without a build --------------------------------------------------------------


def test_conda_pins_become_pip_pins(tmp_path: Path) -> None:
    class Doc:
        def error(self, message: str, *keys: str) -> Exception:
            return ValueError(message)

    assert conda_to_pip("numpy=1.26", Doc()) == ("numpy", "==1.26.*")
    assert conda_to_pip("numpy==1.26.4", Doc()) == ("numpy", "==1.26.4")
    assert conda_to_pip("conda-forge::numpy=1.26=py311_0", Doc()) == ("numpy", "==1.26.*")
    assert conda_to_pip("numpy 1.26.*", Doc()) == ("numpy", "==1.26.*")
    assert conda_to_pip("numpy>=1.2", Doc()) == ("numpy", ">=1.2")
    assert conda_to_pip("scipy", Doc()) == ("scipy", "")
    path = tmp_path / "environment.yml"
    path.write_text(CONDA)
    assert read_conda_file(path) == (["six==1.17.*", "idna>=3"], "3.11")


def test_run_yml_and_azure_shapes_resolve_the_same(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("six\n")
    (tmp_path / "run.yml").write_text(
        "script: x.py\nenvironment:\n  python:\n    interpreterPath: /usr/bin/python3\n"
        "  requirements: requirements.txt\n  docker:\n    baseImage: img:1\n")
    (tmp_path / "x.py").write_text("")
    from jupyter_compute.runspec import resolve_spec

    spec = resolve_spec(config=tmp_path / "run.yml", source_dir=tmp_path)
    assert spec.environment == Environment(python="/usr/bin/python3",
                                           requirements="requirements.txt", image="img:1")
    assert (spec.python, spec.docker_image) == ("/usr/bin/python3", "img:1")
    resolved = resolve(spec.environment, tmp_path)
    assert resolved is not None and resolved["requirements"] == ["six"]
    assert resolved["source"] == "requirements requirements.txt"
    assert resolved["python"] == "/usr/bin/python3" and resolved["image"] == "img:1"
    again = resolve(Environment.parse({"requirements": str(tmp_path / "requirements.txt"),
                                       "python": "/usr/bin/python3"}), Path("/"))
    assert again is not None and again["digest"] == resolved["digest"]
    assert Environment.parse("science") == Environment(named="science")
    with pytest.raises(UsageError, match="unknown environment 'no such thing'"):
        Environment.parse("no such thing")
    (tmp_path / "bad.toml").write_text("[project\n")
    with pytest.raises(ConfigError, match="malformed TOML"):
        resolve(Environment(pyproject="bad.toml"), tmp_path)


def test_an_edited_local_package_makes_a_new_environment(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "setup.py").write_text("from setuptools import setup\nsetup()\n")
    (tmp_path / "requirements.txt").write_text("six\n./pkg\n")
    env = Environment(requirements="requirements.txt")
    before = resolve(env, tmp_path)
    assert before is not None and list(before["local"]) == ["./pkg"]
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert resolve(env, tmp_path)["digest"] == before["digest"]  # type: ignore[index]
    (tmp_path / "pkg" / "mod.py").write_text("X = 1\n")
    assert resolve(env, tmp_path)["digest"] != before["digest"]  # type: ignore[index]


def test_an_unquoted_python_version_in_run_yml_is_one_clear_line(project: Project) -> None:
    project.write("uses.py", USES)
    project.write("run.yml", "script: uses.py\nenvironment:\n  python: 3.10\n")
    line = one_line(project.cli("submit", "--config", "run.yml"))
    assert line.endswith("run.yml:3: write the Python version in quotes (python: \"3.1\"): "
                         "unquoted, YAML reads 3.10 as the number 3.1"), line


def test_magics_take_the_same_environment_flags(project: Project, kernel: Kernel) -> None:
    project.write("requirements.txt", "six\n")
    project.write("uses.py", USES)
    out = kernel.run("%submit uses.py --requirements requirements.txt --wait -o r",
                     timeout=300)
    assert out.status == "ok", out.error_text
    assert kernel.value("r.status().value") == "Completed"
    log = kernel.value("r.log()")
    assert "building environment" in log and "six 1." in log
    out = kernel.run("%%submit --conda-file environment.yml\nprint(1)")
    assert out.status == "error" and "conda file 'environment.yml' does not exist" in \
        out.error_text
