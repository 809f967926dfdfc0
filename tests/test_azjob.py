"""Command runs and Azure ML v2 job files (issue 18, points 2 and 4), against real targets.

A command line runs through ``bash -c`` on the target, as Azure ML runs ``command:``,
with the run's interpreter first on ``PATH``; ``jupyter compute job FILE`` runs Azure
ML v2 ``command`` and ``sweep`` job files unchanged. The docker tests use the real
engine of tests/dockerd.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_compute import api
from jupyter_compute.protocol import RunStatus
from jupyter_compute.runs import Run

import dockerd
import sshd
from conftest import Project
from kernel import Kernel


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The real engine with the base image (as tests/test_docker.py's fixture)."""
    reason = dockerd.unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    dockerd.ensure()
    yield dockerd.client()
    dockerd.remove_containers(str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="module")
def ssh_host() -> Iterator[sshd.Login]:
    """A real sshd on a loopback address of its own (tests/test_ssh.py uses others)."""
    reason = sshd.unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    # Not pytest's tmp dirs: sshd reads the authorized keys as the user.
    root = Path(tempfile.mkdtemp(prefix="jc-azjob-sshd-"))
    root.chmod(0o755)
    sshd.ensure_user(sshd.USER)
    key = sshd.make_key(root / "id_azjob")
    workdir = f"jc-azjob-{os.getpid()}"
    with sshd.SSHServer(root / "srv", "127.0.0.9") as server:
        server.authorize(sshd.USER, key)
        server.start()
        yield sshd.Login(server, key, f"~/{workdir}")
    shutil.rmtree(Path(os.path.expanduser(f"~{sshd.USER}")) / workdir, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


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


def test_command_on_ssh_uses_the_hosts_python(ssh_host: sshd.Login, project: Project,
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "home").mkdir()  # neither our known_hosts nor an ssh-agent decides it
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    api.attach("vm", "ssh", workspace=project.root, **ssh_host.options())
    project.write("show.py", SHOW_PYTHON)
    run = api.submit(command="cd .. && cd workdir && python show.py 'x y' \"it's\" "
                     "> outputs/o.json && python3 -c 'print(1)' | grep -q 1",
                     source_dir=project.root, target="vm", wait=True)
    assert run.status() is RunStatus.COMPLETED, run.log()
    facts = json.loads((run.target.outputs_dir(run.id) / "o.json").read_text())
    assert facts["argv"] == ["x y", "it's"]
    # the host's own interpreter (the one its agent runs on), not this client's venv
    assert facts["executable"] != sys.executable and facts["prefix"] != sys.prefix


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


# -- job files: type command ---------------------------------------------------------------

MAIN = """
import argparse, json, sys
p = argparse.ArgumentParser()
p.add_argument("--greeting")
p.add_argument("--data")
a = p.parse_args()
print(json.dumps({"greeting": a.greeting, "data": open(a.data).read(),
                  "executable": sys.executable}))
"""

# As azureml-examples' cli/jobs/basics files are written: folded command, ${{…}} bindings,
# a data input, an output folder, an azureml: environment and compute.
COMMAND_JOB = """\
$schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
code: ../src
command: >-
  mkdir -p sub && cd sub &&
  python ../main.py --greeting ${{inputs.greeting}} --data ${{inputs.data}}
  > ${{outputs.result}}/greeting.json
  && echo wrote it
inputs:
  greeting: "it's a \\"quoted\\" $(touch pwned) value"
  data:
    type: uri_file
    path: ../data/my data.csv
outputs:
  result:
    type: uri_folder
environment: azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest
compute: azureml:local
display_name: hello-job
experiment_name: hello
description: A command job with shell syntax.
"""


def _job_project(project: Project, tmp_path: Path) -> Path:
    """The job above, with its environment aliased to an interpreter reached by an odd name
    (so ``python`` in the command resolves to it only through the agent's PATH)."""
    odd = tmp_path / "interp" / "py3odd"
    odd.parent.mkdir()
    odd.symlink_to(Path(sys.executable).resolve())
    project.write("src/main.py", MAIN)
    project.write("data/my data.csv", "a,b\n1,2\n")
    project.write("jobs/job.yml", COMMAND_JOB)
    project.write(".jupyter_compute/environments.yml",
                  f"AzureML-sklearn-1.0-ubuntu20.04-py38-cpu: {{python: {odd}}}\n")
    return odd


def test_command_job_runs_with_shell_syntax_and_quoted_inputs(project: Project,
                                                              tmp_path: Path) -> None:
    odd = _job_project(project, tmp_path)
    out = project.cli("job", "jobs/job.yml", "--wait")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "wrote it" in out.stdout
    run_id = out.stdout.strip().splitlines()[-1].split()[1]
    shown = project.show(run_id)
    assert shown["name"] == "hello-job" and shown["kind"] == "command"
    got = json.loads((project.run_dir(run_id) / "outputs" / "result" / "greeting.json")
                     .read_text())
    assert got["greeting"] == "it's a \"quoted\" $(touch pwned) value"  # one word, as written
    assert got["data"] == "a,b\n1,2\n"  # the input from outside the code folder travelled
    assert got["executable"] == str(odd)  # the alias's interpreter is the command's python
    assert not list(project.root.rglob("pwned"))


def test_set_overrides_an_input_and_a_missing_alias_is_one_notice(project: Project,
                                                                   tmp_path: Path) -> None:
    _job_project(project, tmp_path)
    (project.root / ".jupyter_compute" / "environments.yml").unlink()
    out = project.cli("job", "jobs/job.yml", "--wait", "--set", "inputs.greeting=hi there",
                      "--set", "inputs.data=../src/main.py")
    assert out.returncode == 0, out.stderr + out.stdout
    notices = [line for line in out.stderr.splitlines() if "has no alias" in line]
    assert len(notices) == 1 and "azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest" \
        in notices[0]
    run_id = out.stdout.strip().splitlines()[-1].split()[1]
    got = json.loads((project.run_dir(run_id) / "outputs" / "result" / "greeting.json")
                     .read_text())
    assert got["greeting"] == "hi there" and got["data"].startswith("\nimport argparse")
    assert got["executable"] == sys.executable  # no alias: the target's own python


def test_azure_hello_world_runs_unchanged(project: Project) -> None:
    # cli/jobs/basics/hello-world.yml, as azureml-examples has it
    project.write("hello-world.yml", """\
        $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
        command: echo "hello world"
        environment:
          image: library/python:latest
        compute: azureml:cpu-cluster
    """)
    api.attach("cpu-cluster", "local", workspace=project.root)
    out = project.cli("job", "hello-world.yml", "--wait")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "hello world\n" in out.stdout
    assert "environment image library/python:latest: target 'cpu-cluster' runs processes" \
        in out.stderr
    assert "submitted command job" in out.stderr and "to cpu-cluster" in out.stderr


def test_command_job_environment_variables_and_timeout(project: Project) -> None:
    project.write("job.yml", """\
        command: echo "$WHO says $0" && sleep 60
        environment_variables: {WHO: the job}
        limits: {timeout: 2}
    """)
    out = project.cli("job", "job.yml", "--wait")
    assert out.returncode == 1, out.stderr + out.stdout
    assert re.search(r"^the job says \S*bash$", out.stdout, re.M), out.stdout
    run_id = out.stdout.strip().splitlines()[-1].split()[1]
    shown = project.show(run_id)
    assert shown["status"] == "TimedOut" and "max_run_duration_seconds=2" in shown["error"]


def test_cloud_inputs_pass_as_urls_and_optional_parts_drop(project: Project) -> None:
    # cli/jobs/single-step/scikit-learn/iris: a wasbs:// input (not downloaded here)
    project.write("job.yml", """\
        command: >-
          echo ${{inputs.iris_csv}} $[[--seed ${{inputs.seed}}]] > outputs/url.txt
        inputs:
          iris_csv:
            type: uri_file
            path: wasbs://datasets@azuremlexamples.blob.core.windows.net/iris.csv
          seed:
    """)
    out = project.cli("job", "job.yml", "--wait")
    assert out.returncode == 0, out.stderr + out.stdout
    url = "https://azuremlexamples.blob.core.windows.net/datasets/iris.csv"
    assert f"input iris_csv: {url} is passed to the command as a URL" in out.stderr
    run_id = out.stdout.strip().splitlines()[-1].split()[1]
    assert (project.run_dir(run_id) / "outputs" / "url.txt").read_text() == url + "\n"


# -- job files: type sweep -----------------------------------------------------------------

CURVE_MLFLOW = """
import argparse, time
import mlflow
p = argparse.ArgumentParser()
p.add_argument("--trial", type=int)
p.add_argument("--qualities")
p.add_argument("--label")
a = p.parse_args()
quality = float(a.qualities.split(",")[a.trial - 1])
mlflow.log_param("label", a.label)
for step in range(8):
    mlflow.log_metric("accuracy", quality, step=step)
    time.sleep(0.15)
"""

# cli/jobs/single-step/*/sweep shapes: trial, search_space, objective, limits, early_termination
SWEEP_JOB = """\
$schema: https://azuremlschemas.azureedge.net/latest/sweepJob.schema.json
type: sweep
trial:
  code: src
  command: >-
    python curve.py
    --trial ${{search_space.trial}}
    --qualities ${{inputs.qualities}}
    --label ${{search_space.label}}
  environment: azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest
inputs:
  qualities: "0.9,0.3,0.9,0.2"
compute: azureml:local
sampling_algorithm: grid
search_space:
  trial:
    type: choice
    values: [1, 2, 3, 4]
  label:
    type: choice
    values: ["a b"]
objective:
  goal: maximize
  primary_metric: accuracy
limits:
  max_total_trials: 4
  max_concurrent_trials: 2
  timeout: 600
  trial_timeout: 120
early_termination:
  type: bandit
  evaluation_interval: 1
  delay_evaluation: 0
  slack_factor: 0.2
display_name: curve-sweep
"""


def test_sweep_job_with_mlflow_trials_and_early_termination(project: Project) -> None:
    from jupyter_compute.sweep import Sweep

    project.write("src/curve.py", CURVE_MLFLOW)
    project.write("sweep.yml", SWEEP_JOB)
    project.write(".jupyter_compute/environments.yml",
                  f"AzureML-sklearn-1.0-ubuntu20.04-py38-cpu: {{python: {sys.executable}}}\n")
    out = project.cli("job", "sweep.yml")
    assert out.returncode == 0, out.stderr
    s = Sweep.get(out.stdout.strip())
    assert s.wait(timeout=180).value == "Completed", s.log()
    assert s.name == "curve-sweep"
    state = s.state()
    assert state["policy"].startswith("BanditPolicy(") and "slack_factor=0.2" in state["policy"]
    assert state["sampling"] == "grid" and state["max_concurrent_runs"] == 2
    trials = {t["index"]: t for t in s.trials()}
    assert {i for i, t in trials.items() if t["status"] == "Canceled"} == {2, 4}, s.log()
    for i, t in trials.items():
        run = Run.get(t["run_id"])
        assert run.record.script.startswith(f"python curve.py --trial {i} --qualities "
                                            "0.9,0.3,0.9,0.2 --label 'a b'")
        assert run.record.spec["max_run_duration_seconds"] == 120
        assert run.metrics()["accuracy"][0]["value"] in (0.9, 0.3, 0.2)  # through MLflow
    assert trials[2]["stop_reason"].startswith("stopped early by BanditPolicy: ")
    assert s.best()["index"] == 1 and s.best()["params"] == {"trial": 1, "label": "a b"}


def test_sweep_job_search_space_types_map_onto_the_engine(project: Project) -> None:
    from jupyter_compute.sweep import Sweep

    project.write("sweep.yml", """\
        type: sweep
        trial:
          command: >-
            echo ${{search_space.lr}} ${{search_space.units}} > outputs/v.txt &&
            python -c 'from jupyter_compute.tracking import get_run; get_run().log("loss", 1)'
        sampling_algorithm: {type: random, seed: 3}
        search_space:
          lr: {type: loguniform, min_value: -6, max_value: -1}
          units: {type: quniform, min_value: 8, max_value: 64, q: 8}
          drop: {type: normal, mu: 0.1, sigma: 0.01}
          seed: {type: randint, upper: 5}
        objective: {goal: minimize, primary_metric: loss}
        limits: {max_total_trials: 1}
        early_termination: {type: truncation_selection, truncation_percentage: 20,
                            evaluation_interval: 2, delay_evaluation: 4}
    """)
    out = project.cli("job", "sweep.yml", "--wait")
    assert out.returncode == 0, out.stderr + out.stdout
    s = Sweep.get(next(r.id for r in api.runs() if r.record.kind == "sweep"))
    config = s.record.spec["config"]
    assert config["sampling"]["type"] == "random" and s.state()["seed"] == 3
    space = {p["name"]: (p["expression"], p["values"])
             for p in config["sampling"]["parameter_space"]}
    assert space == {"lr": ("loguniform", [-6, -1]), "units": ("quniform", [8, 64, 8]),
                     "drop": ("normal", [0.1, 0.01]), "seed": ("randint", [5])}
    assert config["policy"] == {"type": "TruncationSelectionPolicy", "evaluation_interval": 2,
                                "delay_evaluation": 4, "truncation_percentage": 20,
                                "exclude_finished_jobs": False}
    trial = s.trials()[0]
    words = (project.run_dir(trial["run_id"]) / "outputs" / "v.txt").read_text().split()
    assert float(words[0]) == trial["params"]["lr"] and 0.0024 < float(words[0]) < 0.37
    assert int(words[1]) == trial["params"]["units"] and int(words[1]) % 8 == 0


# -- %job in a real kernel -------------------------------------------------------------------


def test_job_magic_in_a_kernel(project: Project, kernel: Kernel, tmp_path: Path) -> None:
    odd = _job_project(project, tmp_path)
    out = kernel.run("%job jobs/job.yml --set inputs.greeting='from a kernel' -o r --wait",
                     timeout=180)
    assert out.status == "ok", out.error_text
    assert any("application/vnd.jupyter.widget-view+json" in d for d in out.data)
    assert kernel.value("r.status()") == "Completed"
    run_id = kernel.value("r.id")
    got = json.loads((project.run_dir(run_id) / "outputs" / "result" / "greeting.json")
                     .read_text())
    assert got == {"greeting": "from a kernel", "data": "a,b\n1,2\n", "executable": str(odd)}

    project.write("jobs/bad.yml", COMMAND_JOB.replace("compute: azureml:local",
                                                      "compute: azureml:gpu-clster"))
    bad = kernel.run("%job jobs/bad.yml")
    assert bad.status == "error"
    assert bad.error_text.count("\n") == 0, bad.error_text
    assert "jobs/bad.yml:17: no target named 'gpu-clster'" in bad.error_text


# -- bad input: one line, naming the file, the line and the key --------------------------------


@pytest.mark.parametrize("change,expected", [
    (("command: >-", "comand: >-"),
     "job.yml:3: unknown key 'comand' — did you mean 'command'?"),
    (("--greeting ${{inputs.greeting}}", "--greeting ${{inputs.gretting}}"),
     "job.yml:3: ${{inputs.gretting}} names nothing — did you mean 'inputs.greeting'?"),
    (("compute: azureml:local", "compute: azureml:gpu-clster"),
     "job.yml:17: no target named 'gpu-clster'"),
    (("code: ../src", "code: ../srcs"), "job.yml:2: code folder '../srcs' does not exist"),
    (("path: ../data/my data.csv", "path: azureml:iris:1"),
     "job.yml:12: input data is azureml:iris:1, which lives in Azure; give a local path "
     "(--set inputs.data=FILE)"),
    (("type: uri_file", "type: uri_fille"),
     "job.yml:11: unknown input type 'uri_fille' — did you mean 'uri_file'?"),
    (("$schema", "type: commnd\n$schema"),
     "job.yml:1: unknown job type 'commnd' — did you mean 'command'?"),
    (("command: >-", "command: [\n"), "job.yml:"),  # malformed YAML
])
def test_bad_command_job_is_one_line(project: Project, tmp_path: Path,
                                     change: tuple[str, str], expected: str) -> None:
    _job_project(project, tmp_path)
    path = project.root / "jobs" / "job.yml"
    path.write_text(path.read_text().replace(*change, 1))
    out = project.cli("job", "jobs/job.yml")
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
    assert expected in out.stderr
    assert not (project.root / ".jupyter_compute" / "runs").exists() or \
        not list((project.root / ".jupyter_compute" / "runs").iterdir())  # nothing started


@pytest.mark.parametrize("change,expected", [
    (("type: choice\n    values: [1, 2, 3, 4]", "type: choise\n    values: [1, 2, 3, 4]"),
     "sweep.yml:17: unknown search space type 'choise' — did you mean 'choice'?"),
    (("type: bandit", "type: bandid"),
     "sweep.yml:31: unknown early_termination type 'bandid' — did you mean 'bandit'?"),
    (("slack_factor: 0.2", "truncation_percentage: 20"),
     "sweep.yml:34: bandit takes no truncation_percentage"),
    (("--label ${{search_space.label}}", "--label ${{search_space.lable}}"),
     "sweep.yml:5: ${{search_space.lable}} names nothing — did you mean 'search_space.label'?"),
    (("goal: maximize", "goal: maximise"),
     "sweep.yml:23: primary_metric_goal must be Maximize or Minimize"),
    (("  environment: azureml:",
      "  environment_variables: {HF_TOKEN: abc}\n  environment: azureml:"),
     "sweep.yml:10: a sweep's trials take no secret variables (HF_TOKEN)"),
    (("max_concurrent_trials: 2", "max_concurrent_trials: -2"),
     "sweep.yml:27: 'max_concurrent_trials' must be a number above 0"),
])
def test_bad_sweep_job_is_one_line(project: Project, change: tuple[str, str],
                                   expected: str) -> None:
    project.write("src/curve.py", CURVE_MLFLOW)
    project.write("sweep.yml", SWEEP_JOB.replace(*change, 1))
    out = project.cli("job", "sweep.yml")
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
    assert expected in out.stderr


PIPELINE_JOB = """\
$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json
type: pipeline
settings:
  default_compute: azureml:local
jobs:
  hello:
    type: command
    command: echo hello > ${{outputs.greeting}}/hello.txt
    outputs:
      greeting:
"""


def test_pipeline_job_goes_to_the_pipeline_engine(project: Project) -> None:
    import importlib.util

    project.write("pipeline.yml", PIPELINE_JOB)
    out = project.cli("job", "pipeline.yml", "--wait", timeout=300)
    engine = importlib.util.find_spec("jupyter_compute.pipeline")
    if engine is None or not hasattr(importlib.import_module("jupyter_compute.pipeline"),
                                     "submit_file"):
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert "pipeline.yml:2: type: pipeline jobs need jupyter_compute.pipeline" in out.stderr
        return
    assert out.returncode == 0, out.stderr + out.stdout
    run_id = out.stdout.strip().splitlines()[-1].split()[1]
    step = project.show(run_id)["steps"][0]
    assert step["name"] == "hello" and step["status"] == "Completed"
    assert list(project.run_dir(step["run_id"]).rglob("hello.txt"))[0].read_text() == "hello\n"
