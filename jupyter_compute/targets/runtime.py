"""The run-side runtime: the files that travel to every target with each run.

``agent.py``, ``envbuild.py``, ``protocol.py``, ``tracking.py``,
``notebook_runner.py``, ``hostsession.py`` (the ssh target's helper on the host),
``mlflow_endpoint.py`` (MLflow's REST API on loopback, per run), ``sparksubmit.py``
(how a Spark run calls spark-submit) and ``ranks.py`` (the ranks of a multi-node run;
``ranks_ray.py`` places them with Ray, where Ray is) use the standard library
only (the notebook runner needs papermill where it runs; ``mlflow_store.py``, MLflow's
in-process store for a script, is imported by ``mlflow`` only), so a host needs nothing
but Python 3 for ``from jupyter_compute.tracking import get_run`` to work in a script. Each
version is written once per place, keyed by ``runtime_digest()``; ``__init__.py`` is
written last, so its presence says the folder is complete. A local copy is written with
its bytecode: an agent or script started where ``PYTHONDONTWRITEBYTECODE`` is set (as
in many container images) would otherwise compile the modules it imports on every
start (~10 ms of CPU per run).
"""

from __future__ import annotations

from pathlib import Path

from jupyter_compute import protocol

#: Files that make the run-side runtime; they travel to every target.
RUNTIME_MODULES = ("protocol.py", "tracking.py", "agent.py", "envbuild.py",
                   "notebook_runner.py", "hostsession.py", "mlflow_endpoint.py",
                   "mlflow_store.py", "sparksubmit.py", "ranks.py", "ranks_ray.py")
_INIT = b'"""jupyter_compute run-side runtime: tracking and agent."""\n'
_digest: list[str] = []


def runtime_files() -> dict[str, bytes]:
    """The runtime as ``{file name: bytes}`` for a target's ``jupyter_compute/`` folder,
    in the order to write them (``__init__.py`` last)."""
    here = Path(__file__).resolve().parent.parent
    files = {name: (here / name).read_bytes() for name in RUNTIME_MODULES}
    files["__init__.py"] = _INIT
    return files


def runtime_digest() -> str:
    """A short hash of the runtime files, so each version is shipped once."""
    if not _digest:
        import hashlib

        h = hashlib.sha256()
        for name, data in sorted(runtime_files().items()):
            h.update(name.encode() + b"\0" + data)
        _digest.append(h.hexdigest()[:16])
    return _digest[0]


def install_runtime(root: Path) -> Path:
    """``root/runtime/<digest>``, a folder to put on ``PYTHONPATH``; written on first use.

    >>> (install_runtime(ws.dir) / "jupyter_compute" / "agent.py").is_file()
    True
    """
    folder = root / "runtime" / runtime_digest()
    package = folder / "jupyter_compute"
    if not (package / "__init__.py").exists():
        import py_compile

        package.mkdir(parents=True, exist_ok=True)
        for name, data in runtime_files().items():
            protocol.write_atomic(str(package / name), data, 0o644)
            # for this interpreter; another one compiles (and caches) its own
            py_compile.compile(str(package / name), doraise=False)
    return folder
