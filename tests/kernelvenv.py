"""A small client interpreter for ``kernel`` environments: a venv with a few packages from
the index and one local package installed editable, as a notebook's kernel might have.

``make_kernel_venv(folder)`` builds it once per folder (uv where it is, else pip) and
returns its Python. The client runs jupyter_compute from this checkout (``PYTHONPATH``),
so jupyter_compute itself is not one of the venv's distributions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

#: From the index: the ssh target's client needs (paramiko, yaml, pathspec) and one more.
FROM_INDEX = ("paramiko", "pyyaml", "pathspec", "six==1.17.0")
LOCAL = "jc_local_lib"
CHECKOUT = Path(__file__).resolve().parents[1]
LOCAL_VERSION = "0.3.1"


def make_local_project(folder: Path, greeting: str = "hello from the notebook's own code"
                       ) -> Path:
    """A tiny setuptools project (``jc_local_lib``) whose module says ``greeting``."""
    (folder / LOCAL).mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(
        "[build-system]\nrequires = ['setuptools>=61']\nbuild-backend = "
        "'setuptools.build_meta'\n\n"
        f"[project]\nname = 'jc-local-lib'\nversion = '{LOCAL_VERSION}'\n"
        "dependencies = ['six']\n\n[tool.setuptools]\npackages = ['jc_local_lib']\n")
    (folder / LOCAL / "__init__.py").write_text(f"GREETING = {greeting!r}\n")
    return folder


def make_kernel_venv(folder: Path, extra: tuple[str, ...] = (),
                     packages: tuple[str, ...] = FROM_INDEX) -> Path:
    """The venv at ``folder/venv`` (made once), with ``packages``, ``extra`` and the local
    project at ``folder/src`` installed editable; returns its Python."""
    python = folder / "venv" / "bin" / "python"
    if python.exists():
        return python
    src = make_local_project(folder / "src")
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if os.path.exists(uv):
        subprocess.run([uv, "venv", "--quiet", "--seed", "--python", sys.executable,
                        str(folder / "venv")], check=True)
        subprocess.run([uv, "pip", "install", "--quiet", "--python", str(python), *packages,
                        *extra, "-e", str(src)], check=True)
    else:
        subprocess.run([sys.executable, "-m", "venv", str(folder / "venv")], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages, *extra, "-e",
                        str(src)],
                       check=True)
    return python


def kernel_cli(python: Path, cwd: Path, *args: str, timeout: float = 600
               ) -> subprocess.CompletedProcess[str]:
    """This checkout's CLI run by the kernel venv's ``python`` (a notebook's client)."""
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    return subprocess.run([str(python), "-m", "jupyter_compute.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)
