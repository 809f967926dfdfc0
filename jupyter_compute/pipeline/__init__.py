"""Pipelines: DAGs of steps on different targets, Azure ML v2 pipeline-job YAML.

::

    from jupyter_compute.pipeline import submit_file, Pipeline

    p = submit_file("pipeline.yml", overrides={"inputs.epochs": 3}, wait=True)
    p.steps()                 # [{"name": "prep", "status": "Completed", "reused": False, …}]
    Pipeline.get(p.id)        # from any kernel or shell

    from jupyter_compute.pipeline import command, pipeline, Input

    prep = command(code="prep", command="python prep.py --out ${{outputs.clean}}",
                   outputs=["clean"])
    train = command(code="train", command="python train.py --data ${{inputs.data}}",
                    inputs=["data"], compute="docker")

    @pipeline(compute="local")
    def flow():
        cleaned = prep()
        train(data=cleaned.outputs.clean)

    flow().submit(wait=True)

The same from a notebook (``%pipeline pipeline.yml``) and a shell
(``jupyter-compute pipeline pipeline.yml --wait --set inputs.epochs=3``).

* ``config``: the YAML (Azure's form and ours), checked with file:line:step errors;
* ``graph``: topological order, cycles; ``data``: outputs ↔ the blob store;
* ``reuse``: the key of an unchanged step and the index of completed ones;
* ``controller``: the detached process that runs a pipeline; ``handle``: ``Pipeline``;
* ``builder``: the Python form (``PipelineBuilder``, ``@pipeline``).
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Input", "Pipeline", "PipelineBuilder", "cli_main", "command", "load_pipeline",
           "magic_main", "notebook", "pipeline", "submit", "submit_file"]

_WHERE = {
    "Pipeline": "jupyter_compute.pipeline.handle",
    "submit": "jupyter_compute.pipeline.handle",
    "submit_file": "jupyter_compute.pipeline.handle",
    "load_pipeline": "jupyter_compute.pipeline.config",
    "Input": "jupyter_compute.pipeline.builder",
    "PipelineBuilder": "jupyter_compute.pipeline.builder",
    "command": "jupyter_compute.pipeline.builder",
    "notebook": "jupyter_compute.pipeline.builder",
    "pipeline": "jupyter_compute.pipeline.builder",
    "cli_main": "jupyter_compute.pipeline.cli",
    "magic_main": "jupyter_compute.pipeline.magics",
}


def __getattr__(name: str) -> Any:
    # Lazy: `jupyter-compute pipeline` and `%pipeline` load only what they use.
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'jupyter_compute.pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
