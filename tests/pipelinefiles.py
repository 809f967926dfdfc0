"""A pipeline file for the views' tests: five steps on the local target that reach
every state a step can be in, one of them held until the test releases it."""

from __future__ import annotations

from pathlib import Path

STEPS = {
    "prep.py": "import os, sys\nopen(os.path.join(sys.argv[1], 'data.txt'), 'w').write('1 2 3')\n"
               "print('prepared', flush=True)\n",
    # Runs until the test releases it: the views are looked at while it runs.
    "train.py": "import os, sys, time\nprint('training', flush=True)\n"
                "while not os.path.exists(sys.argv[2]):\n    time.sleep(0.1)\n"
                "print('trained', flush=True)\n",
    "check.py": "import sys\nprint('the check fails', flush=True)\nsys.exit(3)\n",
    "report.py": "print('reported')\n",
    "eval.py": "print('evaluated')\n",
}

PIPELINE = """\
type: pipeline
settings: {default_compute: azureml:local}
jobs:
  prep:
    type: command
    code: ./steps
    command: python prep.py ${{outputs.clean}}
    outputs:
      clean: {type: uri_folder}
  train:
    type: command
    code: ./steps
    command: python train.py ${{inputs.data}} RELEASE
    inputs:
      data: ${{parent.jobs.prep.outputs.clean}}
    outputs:
      model: {type: uri_folder}
  check:
    type: command
    code: ./steps
    command: python check.py ${{inputs.data}}
    inputs:
      data: ${{parent.jobs.prep.outputs.clean}}
    outputs:
      verdict: {type: uri_folder}
  report:
    type: command
    code: ./steps
    command: python report.py ${{inputs.verdict}}
    inputs:
      verdict: ${{parent.jobs.check.outputs.verdict}}
  eval:
    type: command
    code: ./steps
    command: python eval.py ${{inputs.model}}
    inputs:
      model: ${{parent.jobs.train.outputs.model}}
"""


def write_pipeline(root: Path, release: str = "release-train") -> Path:
    """prep → train (held until the file ``release`` exists) → eval, and prep → check
    (fails) → report (skipped): every state a step can be in, on the real local target.
    Returns the release file's path."""
    path = root / release
    for name, text in STEPS.items():
        (root / "steps").mkdir(exist_ok=True)
        (root / "steps" / name).write_text(text)
    (root / "pipeline.yml").write_text(PIPELINE.replace("RELEASE", str(path)))
    return path
