"""Wheels for environments, on the client: the notebook's own packages, and wheels that travel.

Three things an environment may need from the client before a target builds it:

- **the ``kernel`` source** (:func:`kernel_environment`): the client interpreter's
  installed distributions pinned ``name==version``. pip, setuptools and wheel are left
  out (every venv has its own) and so is jupyter_compute (its runtime travels with
  every run and is first on the script's ``PYTHONPATH``). A package installed from a
  local folder (editable or not: ``direct_url.json`` with ``dir_info``) or from a local
  wheel file is what no index has: it is built into a wheel (once per content of its
  folder) and travels, pinned to the built version. Everything else comes from the
  target's own index, where there is one: large binary wheels do not travel.
- **wheels for a host with no index** (:func:`for_host`): an offline VM or an
  air-gapped cluster installs from wheels downloaded once here, for the *target's*
  Python and platform (``pip download --only-binary=:all: --platform …``), kept in
  ``.jupyter_compute/wheels/`` and put into the workspace's blob store, so they reach the
  host as snapshot files do: only the blobs it lacks, each once. A distribution for
  which no wheel exists for that platform is left out, with a one-line notice.
- **uv where the host has none**: uv is on PyPI as a wheel with the binary inside; its
  wheel for the host's platform travels the same way and the builder unpacks it once.

Whether a host has an index is asked of the host itself (:func:`host_facts`: one small
standard-library script that also reports its Python and platform): each index its pip
or uv would use (environment variables, ``pip.conf``, else PyPI) is tried with a short
timeout; none answering means offline. The answer is cached per target in
``.jupyter_compute/hosts/<target>.json`` for :data:`FACTS_TTL` seconds; ``attach``
refreshes it, and the target option ``offline: true`` (``--offline``) says so without
asking (an index that answers but must not be used, or a probe that cannot tell).

Example::

    >>> env = kernel_environment(ws)
    >>> env["requirements"][:2], list(env["wheels"])
    (['attrs==25.3.0', 'six==1.17.0'], ['mylib-0.1.0-py3-none-any.whl'])
    >>> facts = host_facts(target.host, ws)
    >>> facts.online, facts.platforms()[:2]
    (False, ['manylinux_2_36_x86_64', 'manylinux_2_35_x86_64'])
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jupyter_compute.exceptions import ComputeError, UsageError
from jupyter_compute.protocol import write_json_atomic

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, Protocol

    from jupyter_compute.workspace import Workspace

    class Host(Protocol):
        """What is asked of a target's host here (``targets.base.Host`` has it; that
        module calls this one, so it is not imported)."""

        name: str
        config: dict[str, Any]

        def run(self, argv: list[str], stdin: bytes = b"", timeout: float = 60
                ) -> tuple[int, bytes, bytes]: ...

__all__ = ["FACTS_TTL", "HostFacts", "WheelError", "for_host", "host_facts",
           "kernel_environment", "wheel_sources"]

#: Under the workspace's ``.jupyter_compute/``: downloaded and built wheels.
WHEELS = "wheels"
#: Under the workspace's ``.jupyter_compute/``: what each target's host is (HostFacts).
HOSTS = "hosts"
#: Seconds a host's facts (platform, index reachable, uv) are trusted before asking again.
FACTS_TTL = 3600.0
#: Never pinned into a ``kernel`` environment (canonical names); see the module docstring.
LEFT_OUT = frozenset({"pip", "setuptools", "wheel", "distribute", "jupyter-compute"})
#: Seconds the host's probe waits for an index to answer.
INDEX_TIMEOUT = 3.0


class WheelError(ComputeError):
    """A wheel could not be built or downloaded; the message names it and what to do."""


def canonical(name: str) -> str:
    """A distribution's name as PEP 503 compares them.

    >>> canonical("Jupyter_Compute")
    'jupyter-compute'
    """
    return re.sub(r"[-_.]+", "-", name).lower()


# -- the client's installed distributions ------------------------------------------------

# Run in the client interpreter (in this process, or another Python's with -c): its
# distributions in sys.path order, the first of each name winning, as imports do.
_INSTALLED = r"""
import importlib.metadata as md, json, re, sys
def installed():
    seen, dists = set(), []
    for d in md.distributions():
        name = d.metadata["Name"]
        if not name:
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        dists.append([name, d.version, d.read_text("direct_url.json")])
    return {"python": "%d.%d" % sys.version_info[:2], "dists": dists}
"""


@dataclass
class Installed:
    """One installed distribution and where it came from (``direct_url.json``)."""

    name: str
    version: str
    direct_url: dict[str, Any] = field(default_factory=dict)

    @property
    def local_path(self) -> Path | None:
        """The local folder or file it was installed from, or None (an index)."""
        url = str(self.direct_url.get("url") or "")
        if not url.startswith("file://"):
            return None
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(url).path))


def installed_distributions(python: str | None = None) -> tuple[str, list[Installed]]:
    """The client interpreter's ``X.Y`` and its distributions (``python``: another one's)."""
    # Not realpath: a venv's python is a link to its base interpreter, with other packages.
    # A version ("3.11") or a path not on this machine selects the target's interpreter,
    # not a client's: the kernel is this process.
    if python is None or _is_version(python) or not os.path.isfile(python) or \
            os.path.abspath(python) == os.path.abspath(sys.executable):
        ns: dict[str, Any] = {}
        exec(_INSTALLED, ns)  # noqa: S102 - our own constant, shared with the subprocess path
        found = ns["installed"]()
    else:
        done = subprocess.run([python, "-c", _INSTALLED + "print(json.dumps(installed()))"],
                              capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise UsageError(f"could not list the packages of {python}: "
                             f"{_last_line(done.stderr) or f'exit {done.returncode}'}")
        found = json.loads(done.stdout)
    dists = []
    for name, version, direct in found["dists"]:
        try:
            info = json.loads(direct) if direct else {}
        except ValueError:
            info = {}
        dists.append(Installed(name, version, info if isinstance(info, dict) else {}))
    return found["python"], sorted(dists, key=lambda d: canonical(d.name))


def kernel_environment(workspace: Workspace, python: str | None = None,
                       say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The client interpreter's distributions as a partial resolved environment spec.

    ``{"requirements": [pins], "wheels": {filename: sha256}, "python": "X.Y",
    "no_index": False, "notices": [one line each]}``: packages installed from a local
    folder or wheel file are built (or taken) as wheels, stored in the workspace's blob
    store and pinned to the wheel's version; the rest are pinned for the target's index.
    ``python`` names another client interpreter (default: this one).

    >>> kernel_environment(ws)["requirements"][0]
    'attrs==25.3.0'
    """
    from jupyter_compute.blobstore import BlobStore

    version, dists = installed_distributions(python)
    store = BlobStore(workspace.blobs_dir)
    lines: list[str] = []
    wheels: dict[str, str] = {}
    notices: list[str] = []
    for dist in dists:
        if canonical(dist.name) in LEFT_OUT:
            continue
        local = dist.local_path
        if local is None:
            vcs = dist.direct_url.get("vcs_info")
            if vcs and dist.direct_url.get("url"):  # pip's way to pin a VCS install
                lines.append(f"{dist.name} @ {vcs.get('vcs', 'git')}+{dist.direct_url['url']}"
                             f"@{vcs.get('commit_id', '')}")
            else:
                lines.append(f"{dist.name}=={dist.version}")
            continue
        if not local.exists():
            notices.append(f"{dist.name} {dist.version} was installed from {local}, which is "
                           "gone: left out of the kernel environment")
            continue
        if local.is_file() and local.name.endswith(".whl"):
            wheel = local
        else:
            if say is not None:
                say(f"environment: building a wheel of {dist.name} from {local}")
            wheel = build_wheel(workspace, local, dist.name, python)
        digest, _size, _new = store.put_file(str(wheel), wheel.stat().st_size)
        wheels[wheel.name] = digest
        lines.append(f"{dist.name}=={_wheel_version(wheel.name)}")
    return {"requirements": lines, "wheels": wheels, "python": version, "no_index": False,
            "notices": notices}


def build_wheel(workspace: Workspace, source: Path, name: str, python: str | None = None
                ) -> Path:
    """A wheel of the project in folder (or sdist) ``source``, built once per content.

    Kept in ``.jupyter_compute/wheels/built/<name>-<key>/``, where the key hashes the
    path, size and mtime of every file a snapshot of the folder would hold (its ignore
    rules apply), so an edit rebuilds it and nothing else does. Built with ``uv build``
    where uv is on PATH, else ``pip wheel --no-deps``.
    """
    key = hashlib.sha256(f"{source.resolve()}\0".encode())
    if source.is_dir():
        from jupyter_compute.snapshot import list_files

        for rel in list_files(source):
            if _BUILD_OUTPUT.search(rel):  # a build writes these: they must not change the key
                continue
            try:
                st = os.stat(source / rel)
            except OSError:
                continue
            key.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        st = source.stat()
        key.update(f"{st.st_size}\0{st.st_mtime_ns}".encode())
    folder = workspace.dir / WHEELS / "built" / f"{canonical(name)}-{key.hexdigest()[:16]}"
    found = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if found:
        return found[0]
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
    try:
        uv = _client_uv()
        command = ([uv, "build", "--wheel", "--out-dir", str(tmp), str(source)] if uv else
                   [python or sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "--disable-pip-version-check", "--wheel-dir", str(tmp), str(source)])
        done = subprocess.run(command, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=900)
        built = sorted(tmp.glob("*.whl"))
        if done.returncode or not built:
            raise WheelError(f"could not build a wheel of {name} from {source} "
                             f"({_last_line(done.stderr + done.stdout) or 'no wheel'}); fix "
                             f"its build, or uninstall it from the kernel's environment")
        try:
            os.replace(tmp, folder)
        except OSError:  # built meanwhile by another submit: theirs is as good
            pass
        return sorted(folder.glob("*.whl"))[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_BUILD_OUTPUT = re.compile(r"(^|/)(build|dist|\.eggs|__pycache__|[^/]*\.egg-info)/")


def _client_uv() -> str | None:
    """uv on this machine: on PATH, else the ``uv`` package's binary, else None."""
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found,unused-ignore]

        return str(find_uv_bin())
    except Exception:  # noqa: BLE001 - not installed, or a broken install: use pip
        return None


def _wheel_version(filename: str) -> str:
    """The version part of a wheel's file name.

    >>> _wheel_version("my_lib-0.1.dev3+g1a2b-py3-none-any.whl")
    '0.1.dev3+g1a2b'
    """
    return filename.split("-")[1]


# -- what a host is ------------------------------------------------------------------------

# Run by the host's Python (standard library, ≥ 3.6): its version, platform and libc,
# whether uv is on PATH, and which of the indexes its pip or uv would use answer.
_FACTS = r"""
import configparser, json, os, platform, shutil, sys, threading
from urllib import request, error
facts = {"python": "%d.%d" % sys.version_info[:2], "implementation": sys.implementation.name,
         "machine": platform.machine(), "system": sys.platform,
         "abiflags": getattr(sys, "abiflags", ""), "uv": shutil.which("uv") or ""}
try:
    facts["glibc"] = os.confstr("CS_GNU_LIBC_VERSION").split()[1]
except (AttributeError, ValueError, OSError, IndexError):
    facts["glibc"] = ""
env = os.environ
urls = []
for name in ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "UV_INDEX", "UV_EXTRA_INDEX_URL",
             "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
    urls += env.get(name, "").split()
pip_index = env.get("PIP_INDEX_URL", "")
home = os.path.expanduser("~")
conf = configparser.RawConfigParser()
try:
    conf.read(["/etc/xdg/pip/pip.conf", "/etc/pip.conf", os.path.join(home, ".pip", "pip.conf"),
               os.path.join(env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"),
                            "pip", "pip.conf"), env.get("PIP_CONFIG_FILE") or ""])
except configparser.Error:
    pass
for section in ("global", "install", "download"):
    for key in ("index-url", "extra-index-url"):
        if conf.has_option(section, key):
            urls += conf.get(section, key).split()
            pip_index = pip_index or (key == "index-url" and conf.get(section, key))
if not pip_index and not env.get("UV_DEFAULT_INDEX") and not env.get("UV_INDEX_URL"):
    urls.append("https://pypi.org/simple/")
answered = []
def reach(url):
    if url.startswith("file:") or url.startswith("/"):
        if os.path.isdir(url[7:] if url.startswith("file://") else url):
            answered.append(url)
        return
    try:
        request.urlopen(request.Request(url, method="HEAD"), timeout=__TIMEOUT__).close()
        answered.append(url)
    except error.HTTPError:
        answered.append(url)  # the server answered: it is there
    except Exception:
        pass
if env.get("PIP_NO_INDEX", "").lower() not in ("", "0", "false", "no", "off"):
    urls = []
threads = [threading.Thread(target=reach, args=(u,), daemon=True) for u in dict.fromkeys(urls)]
for t in threads:
    t.start()
for t in threads:
    t.join(__TIMEOUT__ + 1)
facts["indexes"] = list(dict.fromkeys(urls))
facts["online"] = bool(answered)
print(json.dumps(facts))
"""


@dataclass
class HostFacts:
    """What decides which wheels a host's Python can install, and whether it has an index.

    >>> HostFacts(python="3.11", machine="x86_64", glibc="2.36").platforms()[-2:]
    ['manylinux1_x86_64', 'linux_x86_64']
    """

    python: str = f"{sys.version_info[0]}.{sys.version_info[1]}"
    implementation: str = "cpython"
    machine: str = "x86_64"
    system: str = "linux"
    glibc: str = ""
    abiflags: str = ""
    uv: str = ""                 # uv on the host's PATH ("" if none)
    online: bool = True          # an index its pip or uv would use answered
    indexes: list[str] = field(default_factory=list)
    probed: float = 0.0          # time.time() of the probe

    def platforms(self) -> list[str]:
        """``pip download --platform`` values, most specific first."""
        arch = self.machine
        if not self.system.startswith("linux"):
            if self.system == "darwin":
                arch = "arm64" if arch == "arm64" else "x86_64"
                return [f"macosx_{v}_0_{arch}" for v in range(15, 10, -1)] + \
                    [f"macosx_10_{m}_{arch}" for m in range(15, 8, -1)]
            return ["win_amd64" if arch.lower() in ("amd64", "x86_64") else "win32"]
        tags = []
        if self.glibc:
            major, minor = (int(p) for p in self.glibc.split(".")[:2])
            if major == 2:
                tags += [f"manylinux_2_{m}_{arch}" for m in range(minor, 16, -1)]
                legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
                tags += [f"{legacy[m]}_{arch}" for m in (17, 12, 5) if minor >= m]
        return [*tags, f"linux_{arch}"]

    def abi(self, python: str | None = None) -> str:
        """``cp311`` (or ``cp313t``): the ABI of CPython ``python`` (default the host's)."""
        return f"cp{(python or self.python).replace('.', '')}{self.abiflags}"


def host_facts(host: Host, workspace: Workspace, python: str | None = None,
               refresh: bool = False) -> HostFacts:
    """The facts of ``host`` (asked of its ``python``, else its own), cached per target.

    ``offline: true`` in the target's options overrides what the probe says.
    """
    path = workspace.dir / HOSTS / f"{host.name}.json"
    if python:  # another interpreter of the host: its own facts (its version, its uv)
        path = path.with_name(f"{host.name}@{hashlib.sha256(python.encode()).hexdigest()[:8]}"
                              ".json")
    facts = None
    if not refresh:
        try:
            facts = HostFacts(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            facts = None
        if facts is not None and time.time() - facts.probed > FACTS_TTL:
            facts = None
    if facts is None:
        facts = _probe(host, python)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(str(path), asdict(facts), 0o644)
    if host.config.get("offline"):
        facts.online = False
    return facts


def _probe(host: Host, python: str | None, prefix: tuple[str, ...] = ()) -> HostFacts:
    """Run :data:`_FACTS` with ``python`` on ``host`` (inside ``prefix``: a container)."""
    python = python or host_python(host)
    code = _FACTS.replace("__TIMEOUT__", repr(INDEX_TIMEOUT))
    rc, out, err = host.run([*prefix, python, "-c", code], timeout=INDEX_TIMEOUT + 60)
    try:
        raw = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise WheelError(f"could not ask {python} on target {host.name!r} what it is "
                         f"({_last_line(err.decode(errors='replace')) or f'exit {rc}'})"
                         ) from None
    known = set(HostFacts.__dataclass_fields__)
    return HostFacts(**{k: v for k, v in raw.items() if k in known}, probed=time.time())


def host_python(host: Host) -> str:
    """The interpreter the agent runs with on ``host`` when none is given."""
    conn = getattr(host, "conn", None)
    if conn is not None:  # an SSH host: its probe knows the absolute path
        return str(conn.ensure().python)
    return str(host.config.get("python") or sys.executable)


# -- wheels for a host ----------------------------------------------------------------------


def for_image(host: Host, workspace: Workspace, environment: dict[str, Any], image: str,
              image_id: str, python: str, digest: Callable[[dict[str, Any]], str]
              ) -> dict[str, Any]:
    """``environment`` made installable into ``image`` on the engine of ``host``: as it is
    where the host has an index, else with wheels for the image's Python and platform
    (asked of the image once, with no network: cached per image id), which pip in the
    image's build installs with ``--no-index``. uv is not shipped: images build with pip."""
    if host_facts(host, workspace).online:
        return environment
    path = workspace.dir / HOSTS / f"{host.name}@image-{image_id.split(':')[-1][:16]}.json"
    try:
        facts = HostFacts(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        facts = _probe(host, python, ("docker", "run", "--rm", "--network", "none", image))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(str(path), asdict(facts), 0o644)
    facts.online = False
    shipped = for_host(workspace, environment, facts, uv=False)
    if shipped != environment:
        shipped["digest"] = digest(shipped)
    return shipped


def for_host(workspace: Workspace, environment: dict[str, Any], facts: HostFacts,
             say: Callable[[str], None] | None = None, uv: bool = True) -> dict[str, Any]:
    """``environment`` (a resolved spec) made installable on the host ``facts`` describes.

    Offline: every requirement line becomes wheels for the host's Python and platform
    (downloaded once into ``.jupyter_compute/wheels/``, put into the blob store), and
    ``no_index`` is set; what has no wheel for that platform is left out with a notice.
    Without uv on the host (and unless the installer is pip, or ``uv`` is False),
    ``uv_wheel`` names uv's wheel for it, if one can be had. Returns a new dict; the caller
    recomputes the digest.
    """
    env = dict(environment)
    notices = list(env.get("notices") or [])
    python = str(env["python"]) if _is_version(env.get("python")) else facts.python
    if "kernel" in str(env.get("source") or "").split(", "):
        foreign = client_only(facts, python)
        if foreign:
            lines = list(env.get("requirements") or [])
            left_out = {canonical(_requirement_name(line)) for line in lines} & set(foreign)
            for name in sorted(left_out):  # only what was pinned: the rest was never asked
                notices.append(f"{name}: left out, only needed where {foreign[name]} (not on "
                               f"the target: Python {python}, {facts.system})")
            env["requirements"] = [line for line in lines
                                   if canonical(_requirement_name(line)) not in left_out]
    if not facts.online:
        lines = list(env.get("requirements") or [])
        pinned = all(re.fullmatch(r"[A-Za-z0-9_.-]+==[^\s;,]+", line) for line in lines)
        have = {canonical(f.split("-")[0]) for f in env.get("wheels") or {}}
        wanted = [line for line in lines
                  if not (pinned and canonical(line.split("==")[0]) in have)]
        wheels, dropped = download(workspace, wanted, facts, python, no_deps=pinned, say=say)
        for name in dropped:
            notices.append(f"{name}: no wheel for Python {python} on {facts.machine} "
                           f"({facts.system}), and target's host has no index: left out")
        dropped_keys = {canonical(n) for n in dropped}
        env["requirements"] = [line for line in lines
                               if canonical(_requirement_name(line)) not in dropped_keys]
        env["wheels"] = {**(env.get("wheels") or {}), **wheels}
        env["no_index"] = True
    if uv and not facts.uv and env.get("installer", "auto") != "pip" and \
            not env.get("uv_wheel"):
        env["uv_wheel"] = uv_wheel(workspace, facts, say=say)
    if notices:
        env["notices"] = notices
    return env


def client_only(facts: HostFacts, python: str) -> dict[str, str]:
    """This interpreter's distributions needed here but not on the host ``facts``
    describes: ``{canonical name: the marker that pulled it in}``.

    A distribution is left out only when every requirement naming it has a marker that
    holds here and not there (``appnope; sys_platform == "darwin"``, ``tomli;
    python_version < "3.11"``); one required unconditionally, by no one (the user's
    own choice), or through an extra (which extras were asked for is not recorded) stays.
    """
    import importlib.metadata as md

    from packaging.markers import default_environment
    from packaging.requirements import InvalidRequirement, Requirement

    system = {"linux": "Linux", "darwin": "Darwin", "win32": "Windows"}.get(
        "linux" if facts.system.startswith("linux") else facts.system, "")
    there: dict[str, str] = {
        **{k: str(v) for k, v in default_environment().items()},
        "python_version": python, "python_full_version": f"{python}.0",
        "sys_platform": facts.system, "platform_system": system,
        "platform_machine": facts.machine, "os_name": "nt" if facts.system == "win32"
        else "posix", "implementation_name": facts.implementation,
        "platform_python_implementation": "CPython" if facts.implementation == "cpython"
        else facts.implementation}
    keep: set[str] = set()
    reasons: dict[str, str] = {}
    for dist in md.distributions():
        for line in dist.requires or []:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            name, marker = canonical(req.name), req.marker
            if marker is None or "extra" in str(marker):
                keep.add(name)
            elif marker.evaluate():  # why it is installed here
                if marker.evaluate(there):  # type: ignore[arg-type,unused-ignore]
                    keep.add(name)
                else:
                    reasons.setdefault(name, str(marker))
    return {name: why for name, why in reasons.items() if name not in keep}


def download(workspace: Workspace, lines: list[str], facts: HostFacts, python: str,
             no_deps: bool = True, say: Callable[[str], None] | None = None
             ) -> tuple[dict[str, str], list[str]]:
    """Wheels for ``lines`` on the host ``facts`` describes: ``({filename: sha256}, names
    left out)``. Cached: the same lines for the same platform ask pip nothing again."""
    from jupyter_compute.blobstore import BlobStore

    if not lines:
        return {}, []
    cache = workspace.dir / WHEELS
    cache.mkdir(parents=True, exist_ok=True)
    platforms = facts.platforms()
    key = hashlib.sha256(json.dumps([lines, platforms, python, facts.abi(python), no_deps]
                                    ).encode()).hexdigest()[:24]
    index_path = cache / "index.json"
    index = _read_json(index_path)
    known = index.get("sets", {}).get(key)
    if known is None or not all((cache / f).is_file() for f in known["files"]):
        if say is not None:
            say(f"environment: downloading wheels for Python {python} on {platforms[0]} "
                f"({len(lines)} requirements; the target's host has no index)")
        files, dropped = _pip_download(cache, lines, platforms, python, facts.abi(python),
                                       no_deps)
        known = {"files": files, "dropped": dropped}
        index = _read_json(index_path)
        index.setdefault("sets", {})[key] = known
        write_json_atomic(str(index_path), index, 0o644)
    return _stored(BlobStore(workspace.blobs_dir), cache, known["files"]), known["dropped"]


def _pip_download(cache: Path, lines: list[str], platforms: list[str], python: str, abi: str,
                  no_deps: bool, build: bool = True) -> tuple[list[str], list[str]]:
    """Run ``pip download`` into ``cache``; returns (wheel file names, names left out).

    pip stops at the first requirement with no wheel for the platform: that one is built
    into a wheel here instead (an sdist-only project is usually pure Python, and a pure
    wheel installs anywhere) or, when what is built would not install there, left out;
    then pip runs again without it.
    """
    dropped: list[str] = []
    built: list[str] = []
    todo = list(lines)
    while todo:
        out = Path(tempfile.mkdtemp(prefix=".download-", dir=cache))
        try:
            reqs = out / "requirements.txt"
            reqs.write_text("\n".join(todo) + "\n")
            command = [sys.executable, "-m", "pip", "download", "--only-binary=:all:",
                       "--disable-pip-version-check", "--progress-bar", "off",
                       "--python-version", python, "--implementation", "cp", "--abi", abi,
                       "--abi", "abi3", "--abi", "none", "-d", str(out), "-r", str(reqs),
                       *(a for p in platforms for a in ("--platform", p))]
            if no_deps:
                command.append("--no-deps")
            done = subprocess.run(command, capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=1800)
            if done.returncode == 0:
                files = sorted(p.name for p in out.glob("*.whl"))
                for name in files:
                    os.replace(out / name, cache / name)
                return sorted([*files, *built]), dropped
            missing = re.search(r"(?:No matching distribution found for|Could not find a "
                                r"version that satisfies the requirement) ([^\s(]+)",
                                done.stderr)
            name = _requirement_name(missing.group(1)) if missing else ""
            left = [line for line in todo
                    if name and canonical(_requirement_name(line)) == canonical(name)]
            if "No module named pip" in done.stderr:
                raise WheelError(f"the target's host has no package index, and wheels for it "
                                 f"are downloaded with pip, which {sys.executable} lacks: "
                                 f"install pip there ({sys.executable} -m ensurepip)")
            if not left or not no_deps:
                raise WheelError(f"could not download wheels for the target's host "
                                 f"(Python {python}, {platforms[0]}): "
                                 f"{_last_line(done.stderr) or f'exit {done.returncode}'}")
            wheel = _build_for(cache, left[0], platforms, abi) if build else None
            if wheel:
                built.append(wheel)
            else:
                dropped.append(name)
            todo = [line for line in todo if line not in left]
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return sorted(built), dropped


def _build_for(cache: Path, line: str, platforms: list[str], abi: str) -> str | None:
    """A wheel of requirement ``line`` built here (``pip wheel --no-deps``) into ``cache``,
    if it builds and installs on the platforms (pure, or theirs); else None."""
    out = Path(tempfile.mkdtemp(prefix=".wheel-", dir=cache))
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                               "--disable-pip-version-check", "--progress-bar", "off",
                               "--wheel-dir", str(out), line], capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=1800)
        for wheel in out.glob("*.whl"):
            *_rest, wheel_abi, plat = wheel.name[:-4].split("-")
            fits = plat == "any" or bool(set(plat.split(".")) & set(platforms))
            if done.returncode == 0 and fits and wheel_abi in ("none", "abi3", abi):
                os.replace(wheel, cache / wheel.name)
                return wheel.name
        return None
    finally:
        shutil.rmtree(out, ignore_errors=True)


def uv_wheel(workspace: Workspace, facts: HostFacts,
             say: Callable[[str], None] | None = None) -> dict[str, str] | None:
    """``{filename: sha256}`` of a uv wheel for the host's platform (in the blob store), or
    None when none can be had (the builder then uses pip). Downloaded once per workspace."""
    from jupyter_compute.blobstore import BlobStore

    cache = workspace.dir / WHEELS
    platforms = set(facts.platforms())
    for path in sorted(cache.glob("uv-*.whl"), reverse=True) if cache.is_dir() else []:
        if platforms & set(path.name[:-4].split("-")[-1].split(".")):
            return _stored(BlobStore(workspace.blobs_dir), cache, [path.name])
    if say is not None:
        say("environment: fetching uv's wheel for the target's host (once)")
    try:
        files, _dropped = _pip_download(_made(cache), ["uv"], facts.platforms(), facts.python,
                                        facts.abi(), no_deps=True, build=False)
    except WheelError:
        return None
    uv = [f for f in files if f.startswith("uv-")]
    return _stored(BlobStore(workspace.blobs_dir), cache, uv) if uv else None


def wheel_sources(environment: dict[str, Any] | None) -> list[str]:
    """The blob digests an environment spec needs on the target (its wheels and uv's)."""
    if not environment:
        return []
    digests = list((environment.get("wheels") or {}).values())
    digests += list((environment.get("uv_wheel") or {}).values())
    return digests


def _stored(store: Any, cache: Path, files: Iterable[str]) -> dict[str, str]:
    """``{filename: sha256}`` of cached wheels, each put into the blob store (hashed once:
    the digests are remembered in ``index.json`` by name, size and mtime)."""
    index_path = cache / "index.json"
    index = _read_json(index_path)
    digests = index.setdefault("sha256", {})
    out: dict[str, str] = {}
    changed = False
    for name in files:
        path = cache / name
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        known = digests.get(name)
        if known and known[1:] == stamp and store.has(known[0]):
            out[name] = known[0]
            continue
        digest, _size, _new = store.put_file(str(path), st.st_size)
        digests[name] = [digest, *stamp]
        out[name] = digest
        changed = True
    if changed:
        fresh = _read_json(index_path)
        fresh.setdefault("sha256", {}).update(digests)
        write_json_atomic(str(index_path), fresh, 0o644)
    return out


def _requirement_name(line: str) -> str:
    """The project name a requirement line starts with.

    >>> _requirement_name("PyYAML[extra]>=6; python_version > '3'")
    'PyYAML'
    """
    return re.split(r"[\s<>=!~;\[@(]", line.strip(), maxsplit=1)[0]


def _made(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _is_version(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"\d+\.\d+", value) is not None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -- on the submit path -----------------------------------------------------------------------

def prepare_environment(host: Host, workspace: Workspace, agent: dict[str, Any],
                        digest: Callable[[dict[str, Any]], str],
                        say: Callable[[str], None] | None = None) -> None:
    """Make ``agent["environment"]`` (a resolved spec in the agent's ``spec.json``)
    installable on ``host``: wheels where it has no index, uv's wheel where it has no uv
    (see :func:`for_host`); ``digest`` (``environments.spec_digest``) hashes the changed
    spec. Nothing is asked of a host for a spec with nothing to install."""
    env = agent.get("environment")
    if not env or not (env.get("requirements") or env.get("wheels")):
        return
    python = agent.get("interpreter")
    facts = host_facts(host, workspace, python=python if python and not _is_version(
        python) else None)
    shipped = for_host(workspace, env, facts, say=say)
    if shipped != env:
        shipped["digest"] = digest(shipped)
        agent["environment"] = shipped


def forget_host(workspace: Workspace, name: str) -> None:
    """Drop the cached facts of target ``name`` (``attach`` asks again on first use)."""
    folder = workspace.dir / HOSTS
    for path in [folder / f"{name}.json", *folder.glob(f"{name}@*.json")]:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
