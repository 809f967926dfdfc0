"""Runs ON the target for a Spark run: the snapshot's Python packages as ``--py-files``,
then ``exec spark-submit``.

::

    python -m jupyter_compute.sparksubmit [--env NAME=VALUE]... SPARK_SUBMIT [OPTION]... \\
        -- SCRIPT [ARG]...

The agent runs this in the run's ``workdir/`` (the materialized snapshot). Each
top-level package of the snapshot (a folder with ``__init__.py``) is zipped into the
run folder's ``pyfiles/``, and each top-level module but the script goes as it is,
so executors import what the driver imports. Then the process *becomes*
``spark-submit`` (``os.execvp``): the agent's signals, its process group and its exit
code are Spark's own, and nothing of this helper stays.

Standard library only: this file travels to every target with the agent.
"""

from __future__ import annotations

import os
import sys
import zipfile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn


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


def main(argv: list[str]) -> NoReturn:
    args = list(argv)
    while args and args[0] == "--env":
        key, _, value = args[1].partition("=")
        os.environ[key] = value
        del args[:2]
    if "--" not in args or args.index("--") == 0:
        sys.exit("usage: python -m jupyter_compute.sparksubmit [--env K=V]... SPARK_SUBMIT "
                 "[OPTION]... -- SCRIPT [ARG]...")
    cut = args.index("--")
    submit, script, rest = args[:cut], args[cut + 1], args[cut + 2:]
    files = py_files(os.getcwd(), script, os.path.join(os.path.dirname(os.getcwd()),
                                                       "pyfiles"))
    if files:
        submit += ["--py-files", ",".join(files)]
    try:
        os.execvp(submit[0], [*submit, script, *rest])
    except OSError as exc:
        sys.exit(f"could not run {submit[0]}: {exc.strerror or exc}; is Spark installed "
                 "where the run goes (pip install pyspark)?")


if __name__ == "__main__":
    main(sys.argv[1:])
