"""Images for docker targets, made on the engine itself: there is no registry to pull from.

A run's base image is, first found: run.yml's ``environment.docker_image`` (one
run), the target's ``--dockerfile`` (built), its ``--image``, or
:data:`DEFAULT_IMAGE` (built by ``scripts/docker-base-image.sh``). Requirements
(the target's ``--requirements`` file, then the run's ``environment.requirements``)
are installed with pip into an image made on top of it, tagged by a hash of the
base image's id and the requirements, so it is made once and then reused.

A requirements image is not built from a Dockerfile: pip runs in a container of the
base image with its settings bind-mounted read-only (:func:`pip_build_files`), and the
container is committed. A bind mount is never part of a layer, so index URLs and the
tokens they carry appear nowhere in the image (``docker history``, ``inspect``,
``save``); the legacy builder has no build secrets, and a file copied in and deleted
later would stay in the layer that copied it.

This module writes the build's files and reads build output; ``launcher.py`` talks to
the engine.

Example::

    >>> requirements_tag("sha256:ab12…", b"numpy==2.1\\n", "python3")
    'jupyter-compute/requirements:5c0e9d1f2a3b4c5d'
"""

from __future__ import annotations

import configparser
import hashlib
import itertools
import os
import re
import sys
from pathlib import Path

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

DEFAULT_IMAGE = "jupyter-compute/python3:base"
BASE_IMAGE_SCRIPT = "scripts/docker-base-image.sh"
REQUIREMENTS_REPO = "jupyter-compute/requirements"
DOCKERFILE_REPO = "jupyter-compute/dockerfile"
#: Where a requirements build's files are mounted (read-only) while pip runs.
BUILD_DIR = "/tmp/jupyter-compute-build"


class BuildError(Exception):
    """A build failed: ``str()`` is the engine's error (``The command … returned a
    non-zero code: 1``); ``telling`` the output line that says why (pip's ``ERROR: …``)
    if one did; ``last`` the last line of output."""

    def __init__(self, error: str, telling: str, last: str) -> None:
        super().__init__(error)
        self.telling, self.last = telling, last


def requirements_tag(base_id: str, requirements: bytes, python: str) -> str:
    """The tag of the image with ``requirements`` installed on the image ``base_id``."""
    h = hashlib.sha256(b"\0".join([base_id.encode(), python.encode(), requirements]))
    return f"{REQUIREMENTS_REPO}:{h.hexdigest()[:16]}"


def dockerfile_tag(path: Path) -> str:
    """The tag of the image built from the Dockerfile at ``path`` (its place and content)."""
    h = hashlib.sha256(str(path.resolve()).encode() + b"\0" + path.read_bytes())
    return f"{DOCKERFILE_REPO}:{h.hexdigest()[:16]}"


def dockerfile_bases(text: str) -> list[str]:
    """The images a Dockerfile starts ``FROM`` (not its own stages, ``scratch`` or ARGs).

    Example::

        >>> dockerfile_bases("FROM base AS build\\nFROM build\\nFROM python3:base")
        ['base', 'python3:base']
    """
    stages: set[str] = set()
    bases = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or words[0].upper() != "FROM":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if not args:
            continue
        image = args[0]
        if len(args) >= 3 and args[1].upper() == "AS":
            stages.add(args[2].lower())
        if image.lower() in stages or image == "scratch" or "$" in image:
            continue
        bases.append(image)
    return bases


def pip_build_files(requirements: bytes) -> dict[str, bytes]:
    """The files of a requirements build, mounted read-only at :data:`BUILD_DIR` while
    pip runs: ``requirements.txt``, ``pip.conf`` and, if this machine has one, pip's CA
    bundle ``pip-ca.pem``.

    pip runs with this machine's pip settings (index URLs, trusted hosts, CA bundle),
    so a build reaches the same package index as pip here, proxy and all. Index URLs
    often carry a token: they are in ``pip.conf`` only, which reaches pip through a
    bind mount, so they never enter an image layer, its history or its config.
    """
    cert, settings = pip_settings()
    settings.update({"no-cache-dir": "true", "disable-pip-version-check": "true",
                     "no-color": "true", "progress-bar": "off", "root-user-action": "ignore",
                     # Debian's Python refuses system-wide installs (PEP 668); an image
                     # is exactly the place where they belong.
                     "break-system-packages": "true"})
    files = {"requirements.txt": requirements}
    if cert is not None:
        settings["cert"] = f"{BUILD_DIR}/pip-ca.pem"
        files["pip-ca.pem"] = cert
    conf = "[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(settings.items()))
    files["pip.conf"] = conf.encode()
    return files


def pip_command(python: str, wheels: bool = False, no_index: bool = False) -> list[str]:
    """The command of the container that installs the requirements (and, with
    ``wheels``, finds packages in the build's ``wheels/`` folder too; with ``no_index``,
    only there).

    ``PIP_CONFIG_FILE`` is set inside the process, not in the container's
    environment, which a commit would keep in the image's ``Env``; the command line
    (which ``docker history`` shows) holds nothing but paths.
    """
    extra = (["--find-links", f"{BUILD_DIR}/wheels"] if wheels else []) + \
        (["--no-index"] if no_index else [])
    return [python, "-c", "import os, subprocess, sys; sys.exit(subprocess.call("
            "[sys.executable, '-m', 'pip', *sys.argv[2:]], "
            "env=dict(os.environ, PIP_CONFIG_FILE=sys.argv[1])))",
            f"{BUILD_DIR}/pip.conf", "install", "-r", f"{BUILD_DIR}/requirements.txt", *extra]


def environment_payload(requirements: bytes, wheels: dict[str, str] | None,
                        no_index: bool = False) -> bytes:
    """What decides an environment image's content, as bytes for its tag: the
    requirement lines, then each wheel's name and sha256, then ``no_index``.

    >>> environment_payload(b"six\n", {}) == b"six\n"
    True
    """
    if not wheels and not no_index:
        return requirements
    listed = "".join(f"{name} {digest}\n" for name, digest in sorted((wheels or {}).items()))
    return requirements + b"\0" + listed.encode() + (b"\0no-index" if no_index else b"")


def pip_settings() -> tuple[bytes | None, dict[str, str]]:
    """This machine's pip CA bundle and its index settings, as ``pip.conf`` keys.

    Read from pip's configuration files, then the environment (which wins). Local
    indexes (``file://``, paths) are left out: they do not exist inside a build.
    """
    found: dict[str, str] = {}
    parser = configparser.RawConfigParser()
    parser.read(_pip_config_files())
    for section in ("global", "install"):
        if parser.has_section(section):
            found.update(parser.items(section))
    for key in ("cert", "index-url", "extra-index-url", "trusted-host"):
        value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if value:
            found[key] = value
    settings = {}
    for key in ("index-url", "extra-index-url"):
        urls = [u for u in found.get(key, "").split() if u.startswith(("http://", "https://"))]
        if urls:
            settings[key] = " ".join(urls)
    if found.get("trusted-host"):
        settings["trusted-host"] = " ".join(found["trusted-host"].split())
    cert = None
    if found.get("cert"):
        try:
            cert = Path(os.path.expanduser(found["cert"])).read_bytes()
        except OSError:
            cert = None
    return cert, settings


def _pip_config_files() -> list[str]:
    """pip's configuration files on this machine, lowest priority first."""
    home = os.path.expanduser("~")
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    files = ["/etc/xdg/pip/pip.conf", "/etc/pip.conf", os.path.join(home, ".pip", "pip.conf"),
             os.path.join(xdg, "pip", "pip.conf"), os.path.join(sys.prefix, "pip.conf")]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(os.environ["PIP_CONFIG_FILE"])
    return files


_NOISE = re.compile(r"^ ---> |^Removing intermediate container |^Successfully tagged ")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: An output line that says why a build failed.
_TELLING = re.compile(r"^(ERROR|E):|^\S*Error\b|No module named")


def follow_build(chunks: Iterable[dict[str, Any]], say: Callable[[str], None]) -> str:
    """Follow a legacy-builder stream: hand its lines to ``say``; return the image id.

    Raises :class:`BuildError` when the engine reports an error.
    """
    image_id = ""
    last = ""
    telling = ""
    for chunk in chunks:
        if "error" in chunk or "errorDetail" in chunk:
            error = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error") or ""
            error = error.strip().splitlines()[-1] if error.strip() else "the build failed"
            raise BuildError(error, telling, last)
        aux = chunk.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            image_id = aux["ID"]
        for line in _ANSI.sub("", str(chunk.get("stream") or "")).splitlines():
            line = line.rstrip()
            if not line or _NOISE.match(line):
                continue
            if line.startswith("Successfully built "):
                image_id = image_id or line.split()[-1]
                continue
            say(line)
            if not line.startswith("Step "):
                last = line
            if _TELLING.match(line):
                telling = line
    return image_id


def follow_output(chunks: Iterable[bytes], say: Callable[[str], None]) -> tuple[str, str]:
    """Follow a container's output (pip's): hand its lines to ``say``; return the line
    that says why it failed (pip's ``ERROR: …``, or ``""``) and the last line."""
    telling = last = ""
    partial = b""
    for chunk in itertools.chain(chunks, [b"\n"]):  # the newline ends a last partial line
        *lines, partial = (partial + chunk).split(b"\n")
        for raw in lines:
            line = _ANSI.sub("", raw.decode(errors="replace")).rstrip()
            if line:
                say(line)
                last = line
                telling = line if _TELLING.match(line) else telling
    return telling, last
