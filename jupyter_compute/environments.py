"""One ``Environment`` for every face and target: what packages a run needs.

The same model is written in ``run.yml`` (``environment:``), passed to
``submit(..., environment=...)``, and given to the magics and the CLI (``--env``,
``--requirements``, ``--pyproject``, ``--conda-file``, ``--image``, ``--python``)::

    Environment(requirements="requirements.txt")
    Environment(pyproject="pyproject.toml", extras=["test"])
    Environment(conda_file="environment.yml")      # conda/Azure file, from PyPI
    Environment(python="3.11")                     # or a path on the target
    Environment(kernel=True)                       # this interpreter's packages
    Environment.parse("kernel") / .parse("environment.yml") / .parse("pyproject.toml[test]")

``resolve`` reads the files on this machine at submit time (so a missing file or a
malformed one is one line before anything is recorded) and gives the JSON the agent
builds from on the target (``envbuild.prepare``): requirement lines, a python
selector, shipped wheels and a content digest. Its shape is written down in
``resolve``'s docstring.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from jupyter_compute.exceptions import ConfigError, UsageError

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.workspace import Workspace

INSTALLERS = ("auto", "uv", "pip")
_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")
_EXTRAS = re.compile(r"^(?P<path>.+?)\[(?P<extras>[^\]]*)\]$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
#: The workspace folder of named environments: ``--env NAME`` is ``NAME.yml`` there.
NAMED_DIR = "environments"
#: The ``environment:`` keys of ``run.yml`` (besides ``environment_variables``).
KEYS = {"python": (str, dict), "requirements": str, "pyproject": str, "extras": list,
        "conda_file": str, "image": str, "docker_image": str, "dockerfile": str,
        "docker": dict, "kernel": bool, "installer": str, "name": str}


@dataclass
class Environment:
    """What a run's Python needs; every field optional, sources may be combined."""

    python: str | None = None        # an interpreter path on the target, or "X.Y"
    requirements: str | None = None  # a requirements.txt
    pyproject: str | None = None     # a pyproject.toml ([project] dependencies)
    extras: list[str] = field(default_factory=list)  # the pyproject's optional groups
    conda_file: str | None = None    # a conda / Azure environment.yml, installed from PyPI
    image: str | None = None         # docker targets: run in this image
    dockerfile: str | None = None    # docker targets: build the image from this file
    kernel: bool = False             # this interpreter's distributions, pinned
    installer: str = "auto"          # auto (uv where found, else pip) | uv | pip
    named: str | None = None         # --env NAME: .jupyter_compute/environments/NAME.yml

    @classmethod
    def parse(cls, value: Any) -> Environment | None:
        """An Environment from what a user may pass: None, an Environment, a mapping
        (``run.yml``'s keys), ``"kernel"``, or a file: requirements (``.txt``),
        ``pyproject.toml[extras]``, a conda ``environment.yml``, or a YAML file holding
        ``environment:`` keys."""
        if value is None or isinstance(value, Environment):
            return value
        if isinstance(value, dict):
            return cls.from_mapping(value)
        if not isinstance(value, (str, Path)):
            raise UsageError(f"environment must be a name, a file or a mapping, got "
                             f"{type(value).__name__}")
        text = str(value)
        if text == "kernel":
            return cls(kernel=True)
        m = _EXTRAS.match(text)
        path = Path(m.group("path") if m else text).expanduser()
        suffix = path.suffix.lower()
        if suffix == ".toml":
            return cls(pyproject=str(path), extras=_split_extras(m.group("extras")) if m else [])
        if suffix in (".yml", ".yaml"):
            return cls._from_yaml_file(path)
        if suffix in (".txt", ".in") or path.exists():
            return cls(requirements=str(path))
        if _NAME.match(text):  # found in the workspace when resolved (see resolve)
            return cls(named=text)
        raise UsageError(f"unknown environment {text!r}: give 'kernel', a name from "
                         ".jupyter_compute/environments/, or a file (requirements .txt, "
                         "pyproject.toml[extras], conda environment.yml)")

    @classmethod
    def _from_yaml_file(cls, path: Path) -> Environment:
        from jupyter_compute.config import _Located

        if not path.is_file():
            raise UsageError(f"environment file {path} does not exist")
        doc = _Located(path)
        data = doc.data
        if isinstance(data, dict) and "dependencies" in data:
            return cls(conda_file=str(path))
        if isinstance(data, dict) and isinstance(data.get("environment"), dict):
            data = data["environment"]
        from jupyter_compute.config import check_keys

        check_keys(doc, data, {**KEYS, "environment_variables": dict})
        env = cls.from_mapping(data)
        base = path.parent
        for name in ("requirements", "pyproject", "conda_file", "dockerfile"):
            rel = getattr(env, name)
            if rel and not Path(rel).expanduser().is_absolute():
                setattr(env, name, str(base / rel))  # relative to the file that names it
        return env

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> Environment:
        """From ``run.yml``'s ``environment:`` (keys already checked), Azure spellings too:
        ``python: {interpreterPath, condaDependenciesFile}``, ``docker: {baseImage}``."""
        env = cls()
        python = raw.get("python")
        if isinstance(python, dict):  # Azure: environment.python.interpreterPath
            conda = python.get("condaDependenciesFile") or python.get("conda_dependencies_file")
            if conda:
                env.conda_file = str(conda)
            python = python.get("interpreterPath") or python.get("interpreter_path")
        env.python = str(python) if python is not None else None
        env.requirements = raw.get("requirements")
        pyproject = raw.get("pyproject")
        if pyproject:
            m = _EXTRAS.match(str(pyproject))
            env.pyproject = m.group("path") if m else str(pyproject)
            env.extras = _split_extras(m.group("extras")) if m else []
        env.extras += [str(x) for x in raw.get("extras") or []]
        env.conda_file = raw.get("conda_file") or env.conda_file
        docker = raw.get("docker") or {}
        env.image = (raw.get("image") or raw.get("docker_image") or docker.get("baseImage")
                     or docker.get("base_image"))
        env.dockerfile = raw.get("dockerfile")
        env.kernel = bool(raw.get("kernel"))
        env.installer = raw.get("installer") or "auto"
        env.named = raw.get("named")  # only in to_mapping's output (a sweep's trials)
        env.check()
        return env

    def check(self) -> None:
        if self.installer not in INSTALLERS:
            raise UsageError(f"installer must be one of {', '.join(INSTALLERS)}, got "
                             f"{self.installer!r}")
        if self.extras and not self.pyproject:
            raise UsageError("extras apply to a pyproject; give --pyproject FILE[extra,...]")

    def merged(self, over: Environment | None) -> Environment:
        """This environment with every field ``over`` sets replaced by its value."""
        if over is None:
            return self
        out = Environment(**{f.name: getattr(self, f.name) for f in fields(self)})
        default = Environment()
        for f in fields(over):
            value = getattr(over, f.name)
            if value != getattr(default, f.name):
                setattr(out, f.name, value)
        return out

    def to_mapping(self, source_dir: Path) -> dict[str, Any]:
        """``run.yml``'s keys, with files as absolute paths (for runs started later from
        elsewhere: a sweep's trials)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, what, flag in (("requirements", "requirements file", "--requirements"),
                                 ("pyproject", "pyproject file", "--pyproject"),
                                 ("conda_file", "conda file", "--conda-file")):
            if out[name]:
                out[name] = str(_find(out[name], source_dir, what, flag).resolve())
        return out

    @property
    def python_path(self) -> str | None:
        """``python`` when it names an interpreter (not an ``X.Y`` version)."""
        return self.python if self.python and not _VERSION.match(self.python) else None

    def installs(self) -> bool:
        """Whether this environment has packages to install (else: a plain interpreter)."""
        return bool(self.requirements or self.pyproject or self.conda_file or self.kernel)

    def is_empty(self) -> bool:
        return self == Environment()


def from_flags(env: str | None = None, *, requirements: str | None = None,
               pyproject: str | None = None, conda_file: str | None = None,
               image: str | None = None, python: str | None = None) -> Environment | None:
    """The Environment the CLI's and the magics' flags describe (``--env`` first, then the
    single-source flags over it); None when no flag was given."""
    out = Environment.parse(env) or Environment()
    flat = Environment.parse({"requirements": requirements, "pyproject": pyproject,
                              "conda_file": conda_file, "image": image, "python": python})
    out = out.merged(flat)
    return None if out.is_empty() else out


def _split_extras(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


# -- resolving ----------------------------------------------------------------------------


def resolve(env: Environment | None, source_dir: Path,
            workspace: Workspace | None = None) -> dict[str, Any] | None:
    """The agent's ``environment`` (JSON), or None when there is nothing to prepare::

        {"source": "requirements requirements.txt",  # for humans: logs, `envs`
         "python": None | "/path/to/python" | "3.11",  # the base interpreter
         "requirements": ["six==1.17.0", ...],         # requirement lines, in order
         "wheels": {"x-1.0-py3-none-any.whl": "<sha256>"},  # blobs, via --find-links
         "no_index": False,                            # install only from the wheels
         "local": {"./pkg": "<sha256>"},  # content of local folders the lines name
         "venv": True,     # build one (a package source was given, even an empty one)
         "uv_wheel": None | {"uv-….whl": "<sha256>"},  # a uv to use where none is
         "installer": "auto" | "uv" | "pip",
         "image": None | str, "dockerfile": None | str,  # docker launchers only
         "notices": ["one line each"],  # what the kernel source left out (said in the log)
         "digest": "<sha256>"}   # spec_digest: python, requirements, wheels, no_index, venv

    Files are read here, relative to ``source_dir`` (else the current folder).
    """
    if env is None or env.is_empty():
        return None
    if env.named:
        env = _named(env.named, workspace).merged(Environment(**{
            f.name: getattr(env, f.name) for f in fields(env) if f.name != "named"}))
    env.check()
    lines: list[str] = []
    sources: list[str] = []
    python = env.python
    wheels: dict[str, str] = {}
    no_index = False
    uv_wheel = None
    notices: list[str] = []
    if env.requirements:
        path = _find(env.requirements, source_dir, "requirements file", "--requirements")
        lines += read_requirements(path)
        sources.append(f"requirements {env.requirements}")
    if env.pyproject:
        path = _find(env.pyproject, source_dir, "pyproject file", "--pyproject")
        lines += read_pyproject(path, env.extras)
        extras = f"[{','.join(env.extras)}]" if env.extras else ""
        sources.append(f"pyproject {env.pyproject}{extras}")
    if env.conda_file:
        path = _find(env.conda_file, source_dir, "conda file", "--conda-file")
        pins, conda_python = read_conda_file(path)
        lines += pins
        python = python or conda_python
        sources.append(f"conda_file {env.conda_file}")
    if env.kernel:
        part = _kernel_part(workspace, python)
        lines += list(part.get("requirements") or [])
        wheels.update(part.get("wheels") or {})
        python = python or part.get("python")
        no_index = bool(part.get("no_index"))
        uv_wheel = part.get("uv_wheel")
        notices += [str(n) for n in part.get("notices") or []]
        sources.append("kernel")
    if python and not sources:
        sources.append(f"python {python}")
    local = _local_digests(lines, source_dir)
    resolved = {"source": ", ".join(sources) or "image", "python": python,
                "requirements": lines, "wheels": wheels, "no_index": no_index,
                "local": local,  # content of local folders the lines name: a change rebuilds
                "venv": env.installs(),  # a package source, even an empty one: isolate it
                "uv_wheel": uv_wheel,
                "installer": env.installer, "image": env.image, "dockerfile": env.dockerfile,
                "notices": notices}
    resolved["digest"] = spec_digest(resolved)
    return resolved


def spec_digest(resolved: dict[str, Any]) -> str:
    """The content hash of a resolved environment: what decides what gets installed."""
    content = {k: resolved.get(k) for k in ("python", "requirements", "wheels", "no_index",
                                            "venv")}
    if resolved.get("local"):
        content["local"] = resolved["local"]
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


_LOCAL_LINE = re.compile(r"^(?:(?:-e|--editable)\s+)?(?P<path>\.{1,2}/\S*|/\S+)$")
_NOT_SOURCE = {"__pycache__", ".git", "build", "dist", ".tox", ".venv"}


def _local_digests(lines: list[str], source_dir: Path) -> dict[str, str]:
    """``{line: sha256}`` of the files under each local folder a line names (``./pkg``,
    ``-e ../lib``), so an edit there makes a new environment rather than reusing one."""
    found: dict[str, str] = {}
    for line in lines:
        m = _LOCAL_LINE.match(line)
        if not m:
            continue
        root = (source_dir / m.group("path")).resolve()
        h = hashlib.sha256()
        if root.is_file():
            h.update(root.read_bytes())
        elif root.is_dir():
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root)
                if path.is_file() and not _NOT_SOURCE.intersection(rel.parts) and \
                        not any(p.endswith(".egg-info") for p in rel.parts):
                    h.update(rel.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        else:
            continue  # the installer names it when it is missing
        found[line] = h.hexdigest()
    return found


def _named(name: str, workspace: Workspace | None) -> Environment:
    """The environment file ``NAME.yml`` of the workspace's ``environments/`` folder."""
    folder = workspace.dir / NAMED_DIR if workspace is not None else None
    path = folder / f"{name}.yml" if folder is not None else None
    if path is None or not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yml")) if folder and folder.is_dir() \
            else []
        raise UsageError(f"no environment named {name!r} (looked for {path or NAMED_DIR}); "
                         f"known: {', '.join(known) or 'none'} — or give a file or 'kernel'")
    env = Environment._from_yaml_file(path)
    if env.named:
        raise UsageError(f"{path}: a named environment cannot name another")
    return env


def _kernel_part(workspace: Workspace | None, python: str | None) -> dict[str, Any]:
    try:
        from jupyter_compute.wheelhouse import (  # type: ignore[attr-defined]
            kernel_environment,
        )
    except ImportError:
        raise UsageError("the 'kernel' environment is not available in this version of "
                         "jupyter_compute (jupyter_compute.wheelhouse is missing)") from None
    if workspace is None:
        raise UsageError("the 'kernel' environment needs a workspace to keep its wheels in")
    # Its python is the client interpreter whose packages to pin: this one (the
    # environment's python selector names the target's interpreter instead).
    part: dict[str, Any] = kernel_environment(workspace)
    return part


def _find(name: str, source_dir: Path, what: str, flag: str) -> Path:
    """A file named relative to the source directory (else the current folder)."""
    given = Path(name).expanduser()
    candidates = [given] if given.is_absolute() else [source_dir / given, Path.cwd() / given]
    for path in candidates:
        if path.is_file():
            return path
    where = str(given) if given.is_absolute() else f"{source_dir} or the current folder"
    raise UsageError(f"{what} {name!r} does not exist (looked in {where}); fix {flag} or "
                     "the run.yml environment")


def read_requirements(path: Path, seen: set[Path] | None = None) -> list[str]:
    """A requirements file's lines without comments and blanks; ``-r`` files inlined."""
    seen = seen or set()
    real = path.resolve()
    if real in seen:
        return []
    seen.add(real)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read requirements file {path}: {exc}") from None
    lines: list[str] = []
    for raw in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        m = re.match(r"^(-r|--requirement)[\s=]+(\S+)$", line)
        if m:
            inner = (path.parent / m.group(2)).expanduser()
            if not inner.is_file():
                raise UsageError(f"{path}: included requirements file {m.group(2)!r} does not "
                                 "exist")
            lines += read_requirements(inner, seen)
            continue
        lines.append(line)
    return lines


def read_pyproject(path: Path, extras: list[str]) -> list[str]:
    """``[project].dependencies`` and the named ``optional-dependencies`` groups."""
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]
        except ImportError:
            raise UsageError("reading a pyproject needs Python 3.11+ or the tomli package: "
                             "pip install tomli") from None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"malformed TOML: {exc}", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    project = data.get("project")
    if not isinstance(project, dict):
        raise ConfigError("has no [project] table with dependencies; use a requirements "
                          "file instead", path=path)
    if "dependencies" in (project.get("dynamic") or []):
        raise ConfigError("declares its dependencies dynamic, so they cannot be read here; "
                          "use a requirements file instead", path=path)
    name = _canonical(str(project.get("name") or ""))
    optional = project.get("optional-dependencies") or {}
    lines = [str(d) for d in project.get("dependencies") or []]
    todo, done = list(extras), set()
    while todo:
        extra = todo.pop(0)
        if extra in done:
            continue
        done.add(extra)
        if extra not in optional:
            raise ConfigError(f"has no optional dependency group {extra!r} (it has: "
                              f"{', '.join(sorted(optional)) or 'none'})", path=path)
        for dep in optional[extra]:
            m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*\[([^\]]*)\]\s*$", str(dep))
            if m and name and _canonical(m.group(1)) == name:  # "pkg[dev]" of pkg itself
                todo += _split_extras(m.group(2))
            else:
                lines.append(str(dep))
    return lines


#: Conda packages that are the interpreter or its installer: nothing to install from PyPI.
_CONDA_SKIP = {"python", "pip"}


def read_conda_file(path: Path) -> tuple[list[str], str | None]:
    """A conda ``environment.yml`` as ``(requirement lines, python X.Y or None)``.

    ``numpy=1.26`` becomes ``numpy==1.26.*`` (conda's ``=`` is a prefix match),
    ``numpy==1.26.4`` stays, a channel prefix (``conda-forge::``) and a build string
    are dropped, and the ``pip:`` list is taken as it is.
    """
    from jupyter_compute.config import _Located

    doc = _Located(path)
    data = doc.data
    if not isinstance(data, dict) or "dependencies" not in data:
        raise doc.error("a conda environment file needs a 'dependencies:' list")
    deps = data.get("dependencies") or []
    if not isinstance(deps, list):
        raise doc.error("'dependencies' must be a list", "dependencies")
    lines: list[str] = []
    python = None
    for item in deps:
        if isinstance(item, dict):
            pip = item.get("pip")
            if not isinstance(pip, list) or len(item) != 1:
                raise doc.error(f"a dependency mapping may only be 'pip: [...]', got "
                                f"{sorted(map(str, item))}", "dependencies")
            lines += [str(p) for p in pip]
            continue
        name, spec = conda_to_pip(str(item), doc)
        if name == "python":
            m = re.match(r"^==(\d+(?:\.\d+)?)", spec)
            if m:
                python = m.group(1)
            continue
        if name in _CONDA_SKIP:
            continue
        lines.append(name + spec)
    return lines, python


def conda_to_pip(item: str, doc: Any) -> tuple[str, str]:
    """``"conda-forge::numpy=1.26=py311_0"`` → ``("numpy", "==1.26.*")``."""
    text = item.split("::")[-1].strip()
    m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$", text)
    if not m:
        raise doc.error(f"cannot read dependency {item!r}", "dependencies")
    name, rest = m.group(1).lower(), m.group(2).strip()
    if not rest:
        return name, ""
    if "|" in rest:
        raise doc.error(f"dependency {item!r}: conda's '|' (either version) has no pip "
                        "equivalent; pin one version", "dependencies")
    if rest.startswith("=") and not rest.startswith("=="):
        version = rest[1:].split("=")[0].strip()
    elif rest[0].isdigit():  # "numpy 1.26 py311_0": version, then build
        version = rest.split()[0]
    else:
        return name, rest.split()[0] if " " in rest else rest
    if not version:
        return name, ""
    version = version.rstrip("*").rstrip(".")
    return name, f"=={version}.*" if version else ""


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
