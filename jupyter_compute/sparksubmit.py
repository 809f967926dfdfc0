"""Runs ON the target for a Spark run: the ``spark-submit`` command the agent starts,
with the snapshot's Python packages as ``--py-files``.

The launcher (``targets/spark/launcher.py``) writes into the agent's spec::

    "command_builder": "sparksubmit",
    "spark_submit": {"submit": ".../bin/spark-submit", "env": {"SPARK_HOME": ...},
                     "options": ["--master", "spark://…", "--conf",
                                 "spark.pyspark.python={python}", …]}

and the agent calls ``command(spec, python, workdir)`` once the snapshot is in
``workdir/`` and the run's interpreter is known: ``{python}`` becomes that
interpreter, each top-level package of the snapshot (a folder with ``__init__.py``)
is zipped into the run folder's ``pyfiles/``, and each top-level module but the
script goes as it is, so executors import what the driver imports. The agent then
starts spark-submit itself: no interpreter in between.

Standard library only: this file travels to every target with the agent.
"""

from __future__ import annotations

import os
import zipfile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def command(spec: dict[str, Any], python: str, workdir: str
            ) -> tuple[list[str], dict[str, str]]:
    """``(argv, environment additions)`` of the run's spark-submit; see the module."""
    submit = spec.get("spark_submit") or {}
    script = str(spec["script"])
    argv = [str(submit.get("submit") or "spark-submit")]
    argv += [str(a).replace("{python}", python) for a in submit.get("options") or []]
    files = py_files(workdir, script, os.path.join(os.path.dirname(workdir), "pyfiles"))
    if files:
        argv += ["--py-files", ",".join(files)]
    argv += [script, *map(str, spec.get("arguments") or [])]
    return argv, {str(k): str(v) for k, v in (submit.get("env") or {}).items()}


def py_files(workdir: str, script: str, dest: str) -> list[str]:
    """The snapshot's packages (zipped into ``dest``) and modules, for ``--py-files``."""
    found = []
    for name in sorted(os.listdir(workdir)):
        path = os.path.join(workdir, name)
        if os.path.islink(path):
            continue  # outputs/, and nothing the snapshot did not hold
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, "__init__.py")):
            os.makedirs(dest, mode=0o700, exist_ok=True)
            archive = os.path.join(dest, f"{name}.zip")
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                for root, dirs, files in os.walk(path):
                    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                    for file in sorted(files):
                        if not file.endswith(".pyc"):
                            full = os.path.join(root, file)
                            zf.write(full, os.path.relpath(full, workdir))
            found.append(archive)
        elif name.endswith(".py") and os.path.isfile(path) and \
                os.path.normpath(name) != os.path.normpath(script):
            found.append(path)
    return found
