"""Command runs and Azure ML v2 job files (issue 18, points 2 and 4), against real targets.

A command line runs through ``bash -c`` on the target, as Azure ML runs ``command:``,
with the run's interpreter first on ``PATH``; ``jupyter compute job FILE`` runs Azure
ML v2 ``command`` and ``sweep`` job files unchanged. The docker tests use the real
engine of tests/dockerd.py.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_compute import api
from jupyter_compute.protocol import RunStatus

import dockerd
from conftest import Project


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The real engine with the base image (as tests/test_docker.py's fixture)."""
    reason = dockerd.unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    dockerd.ensure()
    yield dockerd.client()
    dockerd.remove_containers(str(tmp_path_factory.getbasetemp()))


SHOW_PYTHON = """
import json, sys
print(json.dumps({"executable": sys.executable, "prefix": sys.prefix, "argv": sys.argv[1:]}))
"""


# -- command runs ------------------------------------------------------------------------


def test_command_runs_through_bash_with_redirection(project: Project) -> None:
    project.write("show.py", SHOW_PYTHON)
    run = api.submit(command="mkdir -p outputs && python show.py 'a b' \"c'd\" > outputs/o.json"
                     " && echo done; echo $0 >&2", source_dir=project.root, wait=True)
    assert run.status() is RunStatus.COMPLETED, run.log()
    assert run.name == "show" and run.record.kind == "command"
    facts = json.loads((project.run_dir(run.id) / "outputs" / "o.json").read_text())
    assert facts["argv"] == ["a b", "c'd"]
    # ``python`` is the target's interpreter (the local target's: this one), not PATH's
    assert facts["executable"] == sys.executable
    assert "done" in run.log() and "bash" in run.log()


def test_command_python_is_the_targets_python(project: Project, tmp_path: Path) -> None:
    # An interpreter in a folder with no ``python`` beside it (only python3.X): the
    # agent's shim makes ``python`` in the command that interpreter.
    folder = tmp_path / "only"
    folder.mkdir()
    odd = folder / "py3odd"
    odd.symlink_to(Path(sys.executable).resolve())
    project.write("show.py", SHOW_PYTHON)
    run = api.submit(command="python show.py > o.json && python3 show.py > o3.json && "
                     "mv o.json o3.json outputs/", source_dir=project.root,
                     python=str(odd), wait=True)
    assert run.status() is RunStatus.COMPLETED, run.log()
    out = project.run_dir(run.id) / "outputs"
    for name in ("o.json", "o3.json"):
        assert json.loads((out / name).read_text())["executable"] == str(odd)


def test_command_failure_fails_the_run(project: Project) -> None:
    run = api.submit(command="echo before && exit 3", source_dir=project.root, wait=True)
    assert run.status() is RunStatus.FAILED
    assert run.to_dict()["exit_code"] == 3


def test_script_and_arguments_never_go_through_a_shell(project: Project) -> None:
    project.write("show.py", SHOW_PYTHON + "open('outputs/argv.json','w').write("
                  "json.dumps(sys.argv[1:]))\n")
    run = api.submit("show.py", arguments=["$(touch pwned)", "a && b", ">x"],
                     source_dir=project.root, wait=True)
    assert run.status() is RunStatus.COMPLETED
    argv = json.loads((project.run_dir(run.id) / "outputs" / "argv.json").read_text())
    assert argv == ["$(touch pwned)", "a && b", ">x"]
    assert not list(project.run_dir(run.id).rglob("pwned"))


def test_command_on_docker_uses_the_images_python(engine, project: Project) -> None:
    api.attach("box", "docker", workspace=project.root)
    project.write("show.py", SHOW_PYTHON)
    run = api.submit(command="python show.py 'x y' > outputs/o.json && test -s outputs/o.json",
                     source_dir=project.root, target="box", wait=True)
    assert run.status() is RunStatus.COMPLETED, run.log()
    facts = json.loads((run.target.outputs_dir(run.id) / "o.json").read_text())
    assert facts["argv"] == ["x y"]
    assert not facts["executable"].startswith(str(Path(sys.executable).parent))


# -- azureml: bindings, computes, environment aliases --------------------------------------


def test_substitute_quotes_every_value_and_keeps_the_shell_syntax() -> None:
    from jupyter_compute import azureml

    hostile = "it's a \"b\" $(touch x); rm -rf ~"
    text = azureml.substitute(
        "python a.py --x ${{inputs.x}} --o ${{ outputs.o }} > ${{outputs.o}}/log.txt && "
        "echo ${{parent.jobs.prep.outputs.data}} $[[--seed ${{inputs.seed}}]]",
        {"inputs.x": hostile, "outputs.o": "/tmp/o", "parent.jobs.prep.outputs.data": "d"})
    assert text == ("python a.py --x 'it'\"'\"'s a \"b\" $(touch x); rm -rf ~' --o /tmp/o > "
                    "/tmp/o/log.txt && echo d ")
    assert azureml.substitute("a $[[--seed ${{inputs.seed}}]]", {"inputs.seed": "7"}) \
        == "a --seed 7"
    assert azureml.references("${{inputs.a}} $[[${{search_space.lr}}]] ${{inputs.a}}") == \
        ["inputs.a", "search_space.lr"]


def test_substitute_names_an_unknown_binding() -> None:
    from jupyter_compute import azureml
    from jupyter_compute.exceptions import UsageError

    with pytest.raises(UsageError, match=r"\$\{\{inputs.lrr\}\} names nothing — did you mean "
                                         r"'inputs.lr'\? \(known: inputs.lr\)"):
        azureml.substitute("python a.py ${{inputs.lrr}}", {"inputs.lr": "1"})


def test_compute_name() -> None:
    from jupyter_compute import azureml

    assert azureml.compute_name("azureml:cpu-cluster") == "cpu-cluster"
    assert azureml.compute_name("local") == "local"
    assert azureml.compute_name("azureml:/subscriptions/s/resourceGroups/g/providers/"
                                "Microsoft.MachineLearningServices/workspaces/w/computes/gpu") \
        == "gpu"


def test_environment_aliases(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    from jupyter_compute import azureml
    from jupyter_compute.exceptions import ConfigError
    from jupyter_compute.workspace import find

    ws = find(start=project.root)
    project.write("requirements.txt", "six\n")
    project.write(".jupyter_compute/environments.yml", """
        AzureML-sklearn-1.0-ubuntu20.04-py38-cpu: {requirements: requirements.txt}
        sklearn-1.5: kernel
    """)
    env = azureml.resolve_environment("azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest",
                                      ws)
    assert env is not None and env.requirements == str(project.root / "requirements.txt")
    env = azureml.resolve_environment(
        "azureml://registries/azureml/environments/sklearn-1.5/labels/latest", ws)
    assert env is not None and env.kernel
    assert capsys.readouterr().err == ""
    assert azureml.resolve_environment("azureml:pytorch-env:3", ws) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "azureml:pytorch-env:3 has no alias" in err \
        and "'pytorch-env: requirements.txt'" in err
    inline = azureml.resolve_environment({"image": "python:3.11", "conda_file": "env.yml"}, ws,
                                         base_dir=project.root / "jobs")
    assert inline is not None and inline.image == "python:3.11"
    assert inline.conda_file == str(project.root / "jobs" / "env.yml")
    project.write(".jupyter_compute/environments.yml", """
        good: kernel
        bad: {requirement: requirements.txt}
    """)
    with pytest.raises(ConfigError, match=r"environments.yml:3: unknown key 'requirement' — "
                                          r"did you mean 'requirements'"):
        azureml.resolve_environment("azureml:bad", ws)
