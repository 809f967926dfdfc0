"""Pipelines: Azure ML v2 pipeline YAML run for real, through the CLI, the API and a kernel.

Every step is a real run on a real target (local processes; a real dockerd for the
docker step), data flows through the blob store, and the controller is the real
detached process. Steps are tiny scripts, so a whole pipeline takes a few seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import dockerd
import sshd
from conftest import Project
from kernel import Kernel

PREP = """\
import argparse, os
p = argparse.ArgumentParser()
p.add_argument("--n", type=int)
p.add_argument("--out")
a = p.parse_args()
with open(os.path.join(a.out, "data.csv"), "w") as f:
    f.write("\\n".join(str(i) for i in range(a.n)) + "\\n")
print("prep wrote", a.n, "rows")
"""

TRAIN = """\
import argparse, sys
p = argparse.ArgumentParser()
p.add_argument("--data")
a = p.parse_args()
rows = [int(x) for x in open(a.data + "/data.csv").read().split()]
print("weights", sum(rows) * {factor})
print("trained on", sys.executable, file=sys.stderr)
"""

EVAL = """\
import sys
model, data = sys.argv[1], sys.argv[2]
weights = open(model + "/model.txt").read().split()[1]
rows = len(open(data + "/data.csv").read().split())
print(f"eval: weights {weights} on {rows} rows")
"""

FLOW = """\
$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json
type: pipeline
display_name: prep-train-eval
inputs:
  n: 4
settings:
  default_compute: azureml:local
jobs:
  prep:
    type: command
    code: ./prep
    command: python prep.py --n ${{{{inputs.n}}}} --out ${{{{outputs.clean}}}}
    environment: azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest
    inputs:
      n: ${{{{parent.inputs.n}}}}
    outputs:
      clean:
        type: uri_folder
  train:
    type: command
    code: ./train
    compute: azureml:{train_target}
    command: >-
      python train.py --data ${{{{inputs.data}}}} > ${{{{outputs.model}}}}/model.txt
    inputs:
      data: ${{{{parent.jobs.prep.outputs.clean}}}}
    outputs:
      model:
        type: uri_folder
  eval:
    type: command
    code: ./eval
    command: python eval.py ${{{{inputs.model}}}} ${{{{inputs.data}}}}
    inputs:
      model: ${{{{parent.jobs.train.outputs.model}}}}
      data: ${{{{parent.jobs.prep.outputs.clean}}}}
"""


def write_flow(project: Project, train_target: str = "local", factor: int = 1) -> Path:
    project.write("prep/prep.py", PREP)
    project.write("train/train.py", TRAIN.format(factor=factor))
    project.write("eval/eval.py", EVAL)
    return project.write("pipeline.yml", FLOW.format(train_target=train_target))


def run_pipeline(project: Project, *args: str, ok: bool = True) -> dict:
    out = project.cli("pipeline", "pipeline.yml", "--wait", "--json", *args, timeout=300)
    assert (out.returncode == 0) is ok, out.stderr + out.stdout
    return json.loads(out.stdout)


def steps_of(shown: dict) -> dict[str, dict]:
    return {s["name"]: s for s in shown["steps"]}


def step_log(project: Project, shown: dict, step: str) -> str:
    run_id = steps_of(shown)[step]["run_id"]
    return (project.run_dir(run_id) / "output.log").read_text()


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The real engine (started once a session); this session's containers removed after."""
    reason = dockerd.unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    dockerd.ensure()
    yield dockerd.client()
    dockerd.remove_containers(str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session")
def ssh_host() -> Iterator[sshd.Login]:
    """A real sshd on loopback (127.0.0.4) that the test user logs in to with a key."""
    reason = sshd.unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="jc-pipeline-sshd-"))
    root.chmod(0o755)  # sshd reads the authorized keys as the user
    sshd.ensure_user(sshd.USER)
    key = sshd.make_key(root / "id_pipeline")
    workdir = f"jc-pipeline-{os.getpid()}"
    try:
        with sshd.SSHServer(root / "server", "127.0.0.4") as server:
            server.authorize(sshd.USER, key)
            server.start()
            yield sshd.Login(server, key, f"~/{workdir}")
    finally:
        shutil.rmtree(Path(os.path.expanduser(f"~{sshd.USER}")) / workdir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


# -- a pipeline, its reruns ------------------------------------------------------------


def test_prep_train_eval_runs_then_reuses_then_reruns_what_changed(project: Project) -> None:
    write_flow(project)
    first = run_pipeline(project)
    assert first["kind"] == "pipeline" and first["status"] == "Completed"
    steps = steps_of(first)
    assert list(steps) == ["prep", "train", "eval"]  # topological order
    assert all(s["status"] == "Completed" and not s["reused"] for s in steps.values())
    assert sorted(steps["eval"]["depends_on"]) == ["prep", "train"]
    assert steps["train"]["target"] == "local" and steps["train"]["kind"] == "command"
    # data flowed: prep's 4 rows → train's model (written with '>') → eval
    assert "eval: weights 6 on 4 rows" in step_log(project, first, "eval")
    # the steps are runs of the pipeline, named by step
    children = project.cli("runs", "--json")
    listed = {r["id"]: r for r in json.loads(children.stdout)}
    for s in steps.values():
        assert listed[s["run_id"]]["parent_id"] == first["id"]
        assert listed[s["run_id"]]["name"] == s["name"]

    again = run_pipeline(project)
    assert again["id"] != first["id"]
    assert all(s["reused"] and s["status"] == "Completed" for s in again["steps"])
    assert [s["run_id"] for s in again["steps"]] == [s["run_id"] for s in first["steps"]]
    log = (project.run_dir(again["id"]) / "output.log").read_text()
    assert "step train reused" in log and "done: 3 reused; Completed" in log
    # nothing ran, so no controller was started: the client finished it
    assert "agent" not in json.loads((project.run_dir(again["id"]) / "status.json").read_text())

    project.write("train/train.py", TRAIN.format(factor=10))  # train's code changes
    third = run_pipeline(project)
    steps = steps_of(third)
    assert steps["prep"]["reused"] and steps["prep"]["run_id"] == steps_of(first)["prep"]["run_id"]
    assert not steps["train"]["reused"] and not steps["eval"]["reused"]
    assert "eval: weights 60 on 4 rows" in step_log(project, third, "eval")

    # --set changes prep's input, so all three run; --no-reuse runs all of them anyway
    fourth = run_pipeline(project, "--set", "inputs.n=5")
    assert not any(s["reused"] for s in fourth["steps"])
    assert "eval: weights 100 on 5 rows" in step_log(project, fourth, "eval")
    fifth = run_pipeline(project, "--set", "inputs.n=5", "--no-reuse")
    assert not any(s["reused"] for s in fifth["steps"])


def test_a_docker_step_feeds_local_steps(engine, project: Project) -> None:
    assert project.cli("attach", "box", "--type", "docker").returncode == 0
    write_flow(project, train_target="box")
    shown = run_pipeline(project)
    steps = steps_of(shown)
    assert steps["train"]["target"] == "box"
    assert all(s["status"] == "Completed" for s in steps.values())
    # train ran in the container (its python is the image's), eval read its model here
    assert "trained on /usr/bin/python3" in step_log(project, shown, "train")
    assert "eval: weights 6 on 4 rows" in step_log(project, shown, "eval")
    again = run_pipeline(project)
    assert all(s["reused"] for s in again["steps"])


def test_a_failed_step_skips_its_dependents_and_a_rerun_resumes(project: Project) -> None:
    project.write("src/ok.py", """\
        import sys, time
        time.sleep(float(sys.argv[1]))
        open(sys.argv[2] + "/done.txt", "w").write("ok")
        """)
    project.write("train/train.py", "raise SystemExit('train is broken')\n")
    project.write("pipeline.yml", """\
        type: pipeline
        settings: {max_concurrent_steps: 3}
        jobs:
          prep:
            code: src
            command: python ok.py 0 ${{outputs.o}}
            outputs: {o: }
          train:
            code: train
            command: python train.py ${{inputs.d}}
            inputs: {d: "${{parent.jobs.prep.outputs.o}}"}
            outputs: {model: }
          eval:
            code: src
            command: python ok.py 0 ${{outputs.o}} ${{inputs.m}}
            inputs: {m: "${{parent.jobs.train.outputs.model}}"}
            outputs: {o: }
          report:
            code: src
            command: python ok.py 1.5 ${{outputs.o}} ${{inputs.d}}
            inputs: {d: "${{parent.jobs.prep.outputs.o}}"}
            outputs: {o: }
        """)
    shown = run_pipeline(project, ok=False)
    steps = steps_of(shown)
    assert shown["status"] == "Failed"
    assert "step 'train' Failed" in shown["error"] and "skipped: eval" in shown["error"]
    assert steps["train"]["status"] == "Failed"
    assert steps["eval"]["status"] == "Skipped" and steps["eval"]["run_id"] is None
    assert steps["eval"]["reason"] == "skipped: step 'train' Failed"
    # the parallel branch finished, after train had already failed
    assert steps["report"]["status"] == "Completed"
    assert steps["report"]["ended"] > steps["train"]["ended"]

    project.write("train/train.py", "import sys\nprint('fixed', sys.argv[1])\n")
    resumed = steps_of(run_pipeline(project))
    assert resumed["prep"]["reused"] and resumed["report"]["reused"]
    assert not resumed["train"]["reused"] and not resumed["eval"]["reused"]
    assert all(s["status"] == "Completed" for s in resumed.values())


def test_cancel_cancels_running_steps_and_skips_the_rest(project: Project) -> None:
    project.write("src/slow.py", "import time\ntime.sleep(60)\n")
    project.write("pipeline.yml", """\
        type: pipeline
        jobs:
          slow:
            code: src
            script: slow.py
            outputs: {o: }
          after:
            code: src
            script: slow.py
            inputs: {x: "${{parent.jobs.slow.outputs.o}}"}
        """)
    pipeline_id = project.cli("pipeline", "pipeline.yml").stdout.strip()
    deadline = time.monotonic() + 60
    while project.show(pipeline_id)["steps"][0]["status"] != "Running":
        assert time.monotonic() < deadline, "the first step never started"
        time.sleep(0.1)
    assert project.cli("cancel", pipeline_id).returncode == 0
    deadline = time.monotonic() + 60
    while (shown := project.show(pipeline_id))["status"] != "Canceled":
        assert time.monotonic() < deadline, f"not canceled: {shown['status']}"
        time.sleep(0.2)
    steps = steps_of(shown)
    assert steps["slow"]["status"] == "Canceled"
    assert steps["after"]["status"] == "Skipped"


def test_independent_steps_run_at_once_up_to_max_concurrent_steps(project: Project) -> None:
    project.write("src/nap.py", "import time\ntime.sleep(1)\n")
    jobs = "".join(f"  s{i}:\n    code: src\n    script: nap.py\n" for i in range(3))
    for limit, overlapping in ((3, True), (1, False)):
        project.write("pipeline.yml", f"type: pipeline\nsettings: {{max_concurrent_steps: "
                      f"{limit}}}\njobs:\n{jobs}")
        steps = run_pipeline(project, "--no-reuse")["steps"]
        spans = sorted((s["started"], s["ended"]) for s in steps)
        overlaps = any(b[0] < a[1] for a, b in zip(spans, spans[1:]))
        assert overlaps is overlapping, spans


# -- step kinds ------------------------------------------------------------------------


def test_notebook_step_gets_its_inputs_as_parameters(project: Project) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("alpha = 0.0\ndata = ''\nreport = ''")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "rows = open(data + '/data.csv').read().split()\n"
        "open(report + '/r.txt', 'w').write(f'{alpha * len(rows)}')\n"
        "print('alpha', alpha, 'rows', len(rows))")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    project.write("prep/prep.py", PREP)
    (project.root / "nb").mkdir()
    nbformat.write(nb, project.root / "nb" / "analyze.ipynb")
    project.write("pipeline.yml", """\
        type: pipeline
        inputs: {alpha: 0.5}
        jobs:
          prep:
            code: prep
            command: python prep.py --n 6 --out ${{outputs.clean}}
            outputs: {clean: }
          analyze:
            type: notebook
            code: nb
            notebook: analyze.ipynb
            inputs:
              alpha: ${{parent.inputs.alpha}}
              data: ${{parent.jobs.prep.outputs.clean}}
            outputs: {report: "${{parent.outputs.report}}"}
        outputs:
          report: {type: uri_folder}
        """)
    shown = run_pipeline(project)
    assert steps_of(shown)["analyze"]["kind"] == "notebook"
    assert "alpha 0.5 rows 6" in step_log(project, shown, "analyze")
    # the pipeline's own output is the notebook's, in the pipeline's outputs/
    assert (project.run_dir(shown["id"]) / "outputs" / "report" / "r.txt").read_text() == "3.0"


def test_script_step_takes_an_argument_list_not_a_shell(project: Project) -> None:
    project.write("src/show.py", "import sys\nprint(sys.argv[1:])\n")
    project.write("pipeline.yml", """\
        type: pipeline
        inputs: {word: "a b; echo hacked"}
        jobs:
          show:
            code: src
            script: show.py
            arguments: [--word, "${{inputs.w}}"]
            inputs: {w: "${{parent.inputs.word}}"}
        """)
    shown = run_pipeline(project)
    assert "['--word', 'a b; echo hacked']" in step_log(project, shown, "show")


def test_python_builder_and_decorator(project: Project) -> None:
    from jupyter_compute.pipeline import PipelineBuilder, command, pipeline

    project.write("prep/prep.py", PREP)
    project.write("train/train.py", TRAIN.format(factor=2))
    prep = command(code="prep", command="python prep.py --n ${{inputs.n}} "
                   "--out ${{outputs.clean}}", inputs=["n"], outputs=["clean"])
    train = command(code="train", command="python train.py --data ${{inputs.data}} "
                    "> ${{outputs.model}}/model.txt", inputs=["data"], outputs=["model"])

    @pipeline(compute="local")
    def flow(n):
        cleaned = prep(n=n)
        return {"model": train(data=cleaned.outputs.clean).outputs.model}

    p = flow(n=3).submit(wait=True)
    assert p.status().value == "Completed", p.log()
    assert [s["name"] for s in p.steps()] == ["prep", "train"]
    model = project.run_dir(p.id) / "outputs" / "model" / "model.txt"
    assert model.read_text().strip() == "weights 6"

    b = PipelineBuilder("built", folder=project.root)
    first = b.command("prep", code="prep", outputs=["clean"], inputs={"n": 3},
                      command="python prep.py --n ${{inputs.n}} --out ${{outputs.clean}}")
    b.command("train", code="train", inputs={"data": first.outputs.clean},
              command="python train.py --data ${{inputs.data}}")
    b.to_yaml(project.root / "built.yml")
    out = project.cli("pipeline", "built.yml", "--wait", "--json", timeout=300)
    assert out.returncode == 0, out.stderr
    # the same prep as the decorator's (same code, command, inputs): reused
    assert [s["reused"] for s in json.loads(out.stdout)["steps"]] == [True, False]


# -- a pipeline outlives its kernel ----------------------------------------------------


def test_a_kernel_restart_mid_pipeline_does_not_stop_it(project: Project) -> None:
    write_flow(project)
    project.write("prep/prep.py", "import time\ntime.sleep(3)\n" + PREP)
    first = Kernel(project.root)
    try:
        out = first.run("%load_ext jupyter_compute\n%pipeline pipeline.yml -o p")
        assert out.status == "ok", out.error_text
        pipeline_id = first.value("p.id")
        assert first.value("p.steps()[0]['status']") in ("NotStarted", "Queued",
                                                         "Preparing", "Running")
    finally:
        first.shutdown()  # the kernel goes away mid-pipeline; the pipeline does not
    second = Kernel(project.root)
    try:
        code = (f"from jupyter_compute.pipeline import Pipeline\n"
                f"p = Pipeline.get({pipeline_id[-6:]!r})")
        assert second.run(code).status == "ok"
        assert second.value("p.wait(120).value") == "Completed"
        assert second.value("[s['status'] for s in p.steps()]") == \
            "['Completed', 'Completed', 'Completed']"
    finally:
        second.shutdown()


# -- bad input -------------------------------------------------------------------------

BAD = {
    "cycle": ("""\
        type: pipeline
        jobs:
          a:
            code: src
            command: python a.py
            inputs: {x: "${{parent.jobs.b.outputs.o}}"}
            outputs: {o: }
          b:
            code: src
            command: python a.py
            inputs: {x: "${{parent.jobs.a.outputs.o}}"}
            outputs: {o: }
        """, 6, "a", "the steps form a cycle: a → b → a"),
    "unknown step": ("""\
        type: pipeline
        jobs:
          prep:
            code: src
            command: python a.py
            outputs: {o: }
          train:
            code: src
            command: python a.py
            inputs:
              x: ${{parent.jobs.prepp.outputs.o}}
        """, 11, "train", "input 'x' binds to unknown step 'prepp' — did you mean 'prep'?"),
    "unknown target": ("""\
        type: pipeline
        jobs:
          train:
            code: src
            compute: azureml:gpu-clster
            command: python a.py
        """, 5, "train", "no target named 'gpu-clster'"),
    "output bound twice": ("""\
        type: pipeline
        outputs: {model: {type: uri_folder}}
        jobs:
          a:
            code: src
            command: python a.py
            outputs: {o: "${{parent.outputs.model}}"}
          b:
            code: src
            command: python a.py
            outputs: {o: "${{parent.outputs.model}}"}
        """, 11, "b", "binds pipeline output 'model', which step 'a' (output 'o') already"),
    "missing code folder": ("""\
        type: pipeline
        jobs:
          a:
            code: ./nope
            command: python a.py
        """, 4, "a", "code folder './nope' does not exist"),
    "a typo in a command": ("""\
        type: pipeline
        jobs:
          a:
            code: src
            command: python a.py ${{inputs.dat}}
            inputs: {data: 1}
        """, 5, "a", "${{inputs.dat}} names nothing the step has — did you mean 'inputs.data'?"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_naming_file_line_and_step(project: Project, case: str) -> None:
    text, line, step, message = BAD[case]
    project.write("src/a.py", "print(1)\n")
    path = project.write("pipeline.yml", text)
    out = project.cli("pipeline", "pipeline.yml")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"jupyter-compute pipeline: error: {path}:{line}: step {step!r}: ")
    assert message in lines[0]
    # nothing half-written: no run was recorded
    assert json.loads(project.cli("runs", "--json").stdout) == []


def test_pipeline_is_a_run_kind_with_steps_in_show(project: Project) -> None:
    write_flow(project)
    pipeline_id = project.cli("pipeline", "pipeline.yml", "--name", "nightly").stdout.strip()
    deadline = time.monotonic() + 120
    while (shown := project.show(pipeline_id))["status"] not in ("Completed", "Failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert shown["status"] == "Completed"
    assert shown["name"] == "nightly" and shown["kind"] == "pipeline"
    assert set(shown["steps"][0]) >= {"name", "run_id", "status", "reused", "target",
                                      "depends_on", "kind"}
    text = project.cli("show", pipeline_id).stdout
    assert "prep" in text and "after prep" in text


def test_sweep_step_tunes_on_prep_output_and_passes_its_best_trial_on(project: Project) -> None:
    project.write("prep/prep.py", PREP)
    project.write("tune/tune.py", """\
        import argparse
        from jupyter_compute.tracking import get_run
        p = argparse.ArgumentParser()
        p.add_argument("--data")
        p.add_argument("--lr", type=float)
        p.add_argument("--out")
        a = p.parse_args()
        rows = len(open(a.data + "/data.csv").read().split())
        get_run().log("score", rows * a.lr)
        open(a.out + "/best.txt", "w").write(f"lr {a.lr}")
        """)
    project.write("eval/show.py", "import sys\nprint(open(sys.argv[1] + '/best.txt').read())\n")
    project.write("pipeline.yml", """\
        type: pipeline
        jobs:
          prep:
            code: prep
            command: python prep.py --n 4 --out ${{outputs.clean}}
            outputs: {clean: }
          tune:
            type: sweep
            trial:
              code: tune
              command: >-
                python tune.py --data ${{inputs.data}} --lr ${{search_space.lr}}
                --out ${{outputs.model}}
            inputs: {data: "${{parent.jobs.prep.outputs.clean}}"}
            outputs: {model: }
            sampling_algorithm: grid
            search_space:
              lr: {type: choice, values: [0.1, 0.5, 0.2]}
            objective: {goal: maximize, primary_metric: score}
            limits: {max_total_trials: 3, max_concurrent_trials: 3}
          show:
            code: eval
            command: python show.py ${{inputs.model}}
            inputs: {model: "${{parent.jobs.tune.outputs.model}}"}
        """)
    shown = run_pipeline(project)
    steps = steps_of(shown)
    assert steps["tune"]["kind"] == "sweep" and steps["tune"]["status"] == "Completed"
    sweep = project.show(steps["tune"]["run_id"])
    assert sweep["kind"] == "sweep" and sweep["parent_id"] == shown["id"]
    assert len(sweep["children"]) == 3
    assert "lr 0.5" in step_log(project, shown, "show")  # the best trial's output
    assert all(s["reused"] for s in run_pipeline(project)["steps"])


def test_workspace_files_and_step_outputs_reach_steps_past_ignore_rules(project: Project
                                                                        ) -> None:
    project.write("data/raw.csv", "a,b\n1,2\n")
    project.write("data/more/extra.csv", "x\n")
    project.write("src/.gitignore", "*.csv\n")  # the code's own rule must not drop inputs
    project.write("src/copy.py", """\
        import os, shutil, sys
        src, folder, out = sys.argv[1:4]
        shutil.copy(src, os.path.join(out, "copy.csv"))
        print(sorted(os.listdir(folder)))
        """)
    project.write("src/read.py", """\
        import sys
        print("read:", open(sys.argv[1] + "/copy.csv").read().split())
        """)
    project.write("pipeline.yml", """\
        type: pipeline
        inputs:
          raw: {type: uri_file, path: data/raw.csv}
          more: {type: uri_folder, path: data/more}
        jobs:
          copy:
            code: src
            script: copy.py
            arguments: ["${{inputs.raw}}", "${{inputs.more}}", "${{outputs.o}}"]
            inputs: {raw: "${{parent.inputs.raw}}", more: "${{parent.inputs.more}}"}
            outputs: {o: }
          read:
            code: src
            script: read.py
            arguments: ["${{inputs.c}}"]
            inputs: {c: "${{parent.jobs.copy.outputs.o}}"}
        """)
    shown = run_pipeline(project)
    assert "['extra.csv']" in step_log(project, shown, "copy")
    assert "read: ['a,b', '1,2']" in step_log(project, shown, "read")
    project.write("data/raw.csv", "a,b\n3,4\n")  # a changed input file: both run again
    again = steps_of(run_pipeline(project))
    assert not again["copy"]["reused"] and not again["read"]["reused"]


def test_a_step_may_name_a_command_component_file(project: Project) -> None:
    project.write("components/prep/prep.py", PREP)
    project.write("components/prep.yml", """\
        $schema: https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json
        type: command
        name: prep_data
        version: 1
        code: ./prep
        command: python prep.py --n ${{inputs.n}} --out ${{outputs.clean}}
        inputs:
          n: {type: integer, default: 3}
        outputs:
          clean: {type: uri_folder}
        """)
    project.write("eval/count.py", "import sys\nprint('rows', len(open(sys.argv[1] + "
                  "'/data.csv').read().split()))\n")
    project.write("pipeline.yml", """\
        type: pipeline
        jobs:
          prep:
            component: ./components/prep.yml
          prep_more:
            component: ./components/prep.yml
            inputs: {n: 7}
          count:
            code: eval
            command: python count.py ${{inputs.d}}
            inputs: {d: "${{parent.jobs.prep_more.outputs.clean}}"}
        """)
    shown = run_pipeline(project)
    assert "prep wrote 3 rows" in step_log(project, shown, "prep")  # the component's default
    assert "rows 7" in step_log(project, shown, "count")


def test_an_ssh_step_gets_only_the_blobs_its_host_lacks(project: Project,
                                                       ssh_host: sshd.Login,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyter_compute import api
    from jupyter_compute.targets.ssh import SYNC_RECORD

    monkeypatch.setenv("HOME", str(project.root.parent))  # not the user's known_hosts
    api.attach("vm", "ssh", workspace=project.root, **ssh_host.options())
    project.write("prep/make.py", """\
        import random, sys
        random.seed(7)  # the same megabyte every time
        open(sys.argv[1] + "/blob.bin", "wb").write(random.randbytes(1_000_000))
        """)
    project.write("remote/size.py", """\
        import os, sys
        size = os.path.getsize(sys.argv[1] + "/blob.bin")
        open(sys.argv[2] + "/size.txt", "w").write(str(size))
        """)
    project.write("local/show.py", "import sys\nprint('size', open(sys.argv[1] + "
                  "'/size.txt').read())\n")
    project.write("pipeline.yml", """\
        type: pipeline
        jobs:
          make:
            code: prep
            command: python make.py ${{outputs.data}}
            outputs: {data: }
          measure:
            code: remote
            compute: vm
            command: python size.py ${{inputs.data}} ${{outputs.size}}
            inputs: {data: "${{parent.jobs.make.outputs.data}}"}
            outputs: {size: }
          show:
            code: local
            command: python show.py ${{inputs.size}}
            inputs: {size: "${{parent.jobs.measure.outputs.size}}"}
        """)

    def sent(shown: dict) -> dict:
        run_id = steps_of(shown)["measure"]["run_id"]
        return json.loads((project.run_dir(run_id) / SYNC_RECORD).read_text())

    first = run_pipeline(project)
    assert "size 1000000" in step_log(project, first, "show")  # local → ssh → local
    assert sent(first)["blob_bytes"] >= 1_000_000  # the megabyte went to the host
    again = run_pipeline(project, "--no-reuse")  # everything runs; the host has the data
    assert "size 1000000" in step_log(project, again, "show")
    assert sent(again)["blob_bytes"] < 1_000_000, sent(again)


def test_an_ssh_step_feeds_a_ray_step(ray_project, ssh_host: sshd.Login,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyter_compute import api

    p = ray_project  # the session's Ray workspace, its cpu-cluster running
    monkeypatch.setenv("HOME", str(p.root.parent))  # not the user's known_hosts
    api.attach("pipeline-vm", "ssh", workspace=p.root, **ssh_host.options())
    try:
        p.write("pl/make.py", "import sys\nopen(sys.argv[1] + '/n.txt', 'w').write('21')\n")
        p.write("pl/double.py", "import sys\nn = int(open(sys.argv[1] + '/n.txt').read())\n"
                "print('doubled', 2 * n)\n")
        p.write("pl/pipeline.yml", """\
            type: pipeline
            jobs:
              make:
                code: .
                compute: azureml:pipeline-vm
                command: python make.py ${{outputs.n}}
                outputs: {n: }
              double:
                code: .
                compute: azureml:cpu-cluster
                command: python double.py ${{inputs.n}}
                inputs: {n: "${{parent.jobs.make.outputs.n}}"}
            """)
        out = p.cli("pipeline", "pl/pipeline.yml", "--wait", "--json", "--no-reuse",
                    timeout=300)
        assert out.returncode == 0, out.stderr + out.stdout
        steps = steps_of(json.loads(out.stdout))
        assert [steps[n]["target"] for n in ("make", "double")] == ["pipeline-vm",
                                                                   "cpu-cluster"]
        assert "doubled 42" in (p.run_dir(steps["double"]["run_id"]) / "output.log").read_text()
    finally:
        api.detach("pipeline-vm", workspace=p.root)


def test_continue_on_step_failure_false_starts_nothing_after_a_failure(project: Project
                                                                      ) -> None:
    project.write("src/nap.py", "import sys, time\ntime.sleep(float(sys.argv[1]))\n"
                  "sys.exit(int(sys.argv[2]))\n")
    project.write("pipeline.yml", """\
        type: pipeline
        settings: {continue_on_step_failure: false}
        jobs:
          broken:
            code: src
            script: nap.py
            arguments: [0, 1]
          slow:
            code: src
            script: nap.py
            arguments: [1.5, 0]
            outputs: {o: }
          after_slow:
            code: src
            script: nap.py
            arguments: [0, 0]
            inputs: {x: "${{parent.jobs.slow.outputs.o}}"}
        """)
    steps = steps_of(run_pipeline(project, ok=False))
    assert steps["broken"]["status"] == "Failed"
    assert steps["slow"]["status"] == "Completed"  # it was running: it finishes
    assert steps["after_slow"]["status"] == "Skipped"
    assert "continue_on_step_failure is false" in steps["after_slow"]["reason"]


def test_builder_mistakes_are_one_clear_line(project: Project) -> None:
    from jupyter_compute.exceptions import ComputeError
    from jupyter_compute.pipeline import PipelineBuilder, command, pipeline

    project.write("prep/prep.py", PREP)
    prep = command(code="prep", command="python prep.py --out ${{outputs.clean}}",
                   outputs=["clean"])
    with pytest.raises(ComputeError, match="call it inside a function decorated with"):
        prep()

    @pipeline
    def wrong_output():
        prep().outputs.cleaned  # noqa: B018 - the attribute access is the mistake

    with pytest.raises(ComputeError, match=r"step 'prep' has no output 'cleaned' "
                                           r"\(outputs: clean\)"):
        wrong_output()

    b = PipelineBuilder(folder=project.root)
    b.command("prep", code="prep", command="python prep.py --out ${{outputs.clean}}",
              outputs=["clean"])
    with pytest.raises(ComputeError, match="has a step 'prep' already"):
        b.command("prep", code="prep", command="true")
    b.command("train", code="nowhere", command="true")
    with pytest.raises(ComputeError, match="step 'train': code folder 'nowhere' does not "
                                           "exist"):
        b.submit()
    assert json.loads(project.cli("runs", "--json").stdout) == []  # nothing was started
