"""YAML configuration: ``run.yml`` (a run configuration) and ``targets.yml``.

Keys follow Azure ML's runconfig in snake_case, and the camelCase spellings of an
Azure file (``maxRunDurationSeconds``, ``environmentVariables``, ``nodeCount``,
``environment.python.interpreterPath``, ``environment.docker.baseImage``) are
accepted too, so an existing file works as it is. Every error names the file, the
line and the key, and suggests the closest valid key.
"""

from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_compute.exceptions import ConfigError

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

RUN_KEYS = {
    "script": str, "arguments": list, "target": str, "name": str,
    "source_directory": str, "environment": dict, "environment_variables": dict,
    "max_run_duration_seconds": (int, float), "node_count": int,
    "snapshot_max_mb": (int, float), "snapshot_max_files": int,
    "cancel_grace_seconds": (int, float), "secret_env": list, "distribution": (dict, str),
}
#: ``environment:`` keys; the model and its sources are in ``environments.py``.
ENVIRONMENT_KEYS = {"python": (str, dict), "requirements": str, "pyproject": str,
                    "extras": list, "conda_file": str, "image": str, "docker_image": str,
                    "dockerfile": str, "docker": dict, "kernel": bool, "installer": str,
                    "name": str}
#: Run settings where 0 means nothing sensible (no time, no files, no nodes).
_POSITIVE_RUN_KEYS = frozenset({"max_run_duration_seconds", "node_count", "snapshot_max_mb",
                                "snapshot_max_files"})
_AZURE_ALIASES = {
    "maxRunDurationSeconds": "max_run_duration_seconds", "nodeCount": "node_count",
    "environmentVariables": "environment_variables", "sourceDirectory": "source_directory",
}


@dataclass
class RunConfig:
    """A run configuration, from ``run.yml`` or from arguments; None means "not set"."""

    script: str | None = None
    arguments: list[str] = field(default_factory=list)
    target: str | None = None
    name: str | None = None
    source_directory: str | None = None
    environment: dict[str, Any] | None = None  # the environment: keys (environments.py)
    python: str | None = None            # interpreter path; None = the current one
    requirements: str | None = None      # requirements file (relative to the source)
    docker_image: str | None = None
    environment_variables: dict[str, str] = field(default_factory=dict)
    secret_env: list[str] = field(default_factory=list)  # variables whose values are secret
    max_run_duration_seconds: float | None = None
    node_count: int = 1
    snapshot_max_mb: float | None = None
    snapshot_max_files: int | None = None
    cancel_grace_seconds: float = 3.0
    distribution: Any = None             # distribution.Distribution (parsed at load)


#: A configuration file larger than this is refused unread (a run.yml is a few hundred bytes).
MAX_CONFIG_BYTES = 1024 * 1024
#: Most values a document may hold once its aliases (``*name``) are expanded: far more
#: than any real configuration, far less than an alias bomb's billions.
MAX_EXPANDED_NODES = 100_000


def read_config_text(path: Path) -> str:
    """The text of a configuration file: at most ``MAX_CONFIG_BYTES``, valid UTF-8."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=path) from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"over {MAX_CONFIG_BYTES // 1024 // 1024} MiB; a configuration file "
                          "is a few lines of YAML — is this the right file?", path=path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"not a text file (byte 0x{raw[exc.start]:02x} is not UTF-8); "
                          "expected YAML", path=path, line=line) from None


def _expanded_size(node: Any, sizes: dict[int, int], path: Path) -> int:
    """How many nodes ``node`` stands for with every alias expanded (memoized per node).

    An alias is the very node it names, so the graph is small while its expansion
    can be exponential; counting over the graph costs one visit per distinct node.
    """
    import yaml

    key = id(node)
    if key in sizes:
        if sizes[key] < 0:
            raise ConfigError("an alias refers to the node that contains it (a loop)",
                              path=path, line=node.start_mark.line + 1)
        return sizes[key]
    sizes[key] = -1  # being counted: meeting it again below is a loop
    total = 1
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            total += _expanded_size(item, sizes, path)
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            total += _expanded_size(k, sizes, path) + _expanded_size(v, sizes, path)
    if total > MAX_EXPANDED_NODES:
        raise ConfigError(f"its aliases (*name) expand to over {MAX_EXPANDED_NODES:,} values; "
                          "write the values out instead", path=path,
                          line=node.start_mark.line + 1)
    sizes[key] = total
    return total


class _Located:
    """A parsed YAML document that remembers the line of every key."""

    def __init__(self, path: Path) -> None:
        import yaml

        self.path = path
        text = read_config_text(path)
        try:
            loader = yaml.SafeLoader(text)
            try:
                node = loader.get_single_node()
                if node is not None:
                    _expanded_size(node, {}, path)  # before building: a bomb stops here
                self.data: Any = loader.construct_document(node) if node is not None else None
            finally:
                loader.dispose()
        except RecursionError:
            raise ConfigError("nested too deeply to be a configuration", path=path) from None
        except yaml.reader.ReaderError as exc:  # a control character: binary, most likely
            ch = exc.character if isinstance(exc.character, int) else ord(exc.character)
            raise ConfigError(f"not a text file (character U+{ch:04X} is not allowed in YAML)",
                              path=path,
                              line=text.count("\n", 0, exc.position) + 1) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
            if context and cmark is not None and mark is not None and cmark.line != mark.line:
                problem += f" ({context} started on line {cmark.line + 1})"
            raise ConfigError(f"malformed YAML: {problem}", path=path,
                              line=mark.line + 1 if mark else None) from None
        self.lines: dict[tuple[str, ...], int] = {}
        if node is not None:
            self._index(node, ())
        if self.data is None:
            self.data = {}

    def _index(self, node: Any, prefix: tuple[str, ...]) -> None:
        import yaml

        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                where = prefix + (str(key.value),)
                self.lines[where] = key.start_mark.line + 1
                self._index(value, where)

    def line(self, *keys: str) -> int | None:
        return self.lines.get(keys)

    def error(self, message: str, *keys: str) -> ConfigError:
        return ConfigError(message, path=self.path, line=self.line(*keys),
                           key=keys[-1] if keys else None)


def check_keys(doc: _Located, mapping: Any, allowed: dict[str, Any], *where: str,
               what: str = "key") -> None:
    """Refuse unknown keys and values of the wrong type, naming the closest key."""
    if not isinstance(mapping, dict):
        raise doc.error(f"expected a mapping of {what}s, got {type(mapping).__name__}", *where)
    for key, value in mapping.items():
        if key not in allowed:
            raise doc.error(unknown(what, str(key), allowed), *where, str(key))
        types = allowed[key] if isinstance(allowed[key], tuple) else (allowed[key],)
        # YAML's `yes` is a bool, and bool is an int to Python: refuse it for numbers.
        if value is not None and (not isinstance(value, types)
                                  or isinstance(value, bool) and bool not in types):
            names = " or ".join(t.__name__ for t in types)
            raise doc.error(f"{key!r} must be a {names}, got {value!r}", *where, str(key))


def check_numbers(doc: _Located, mapping: Any, *where: str,
                  positive: Any = ()) -> None:
    """Refuse numbers that are NaN, infinite or negative (0 too, for keys in ``positive``).

    YAML reads ``.nan``, ``.inf`` and ``-5`` as numbers, so the type check alone lets
    them through to a timer or a limit that then never fires or fires at once.
    """
    import math

    for key, value in mapping.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value) or value < 0 or (value == 0 and key in positive):
            least = "above 0" if key in positive else "0 or more"
            raise doc.error(f"{key!r} must be a number {least}, got {value!r}", *where,
                            str(key))


def unknown(what: str, name: str, valid: Any) -> str:
    """``unknown key 'scirpt' — did you mean 'script'? valid: …``"""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" — did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {name!r}{hint} (valid: {', '.join(valid)})"


def load_run_config(path: str | Path) -> RunConfig:
    """Read a ``run.yml``; raise ``ConfigError`` with file:line on anything wrong."""
    doc = _Located(Path(path))
    raw = {_AZURE_ALIASES.get(k, k): v for k, v in doc.data.items()} \
        if isinstance(doc.data, dict) else doc.data
    check_keys(doc, raw, RUN_KEYS)
    check_numbers(doc, raw, positive=_POSITIVE_RUN_KEYS)
    cfg = RunConfig()
    for key, value in raw.items():
        if key in ("environment", "arguments", "secret_env") or value is None:
            continue
        setattr(cfg, str(key), value)
    cfg.arguments = [str(a) for a in raw.get("arguments") or []]
    if raw.get("distribution") is not None:
        from jupyter_compute.distribution import Distribution
        from jupyter_compute.exceptions import UsageError

        try:
            cfg.distribution = Distribution.parse(raw["distribution"])
        except UsageError as exc:
            raise doc.error(str(exc), "distribution") from None
    cfg.secret_env = [str(n) for n in raw.get("secret_env") or []]
    cfg.environment_variables = {str(k): str(v) for k, v in
                                 (raw.get("environment_variables") or {}).items()}
    env = raw.get("environment") or {}
    env = {_AZURE_ALIASES.get(k, k): v for k, v in env.items()} if isinstance(env, dict) else env
    if isinstance(env, dict) and isinstance(env.get("python"), (int, float)) \
            and not isinstance(env.get("python"), bool):  # YAML reads 3.10 as the number 3.1
        raise doc.error(f"write the Python version in quotes (python: \"{env['python']}\"): "
                        "unquoted, YAML reads 3.10 as the number 3.1", "environment", "python")
    check_keys(doc, env, {**ENVIRONMENT_KEYS, "environment_variables": dict}, "environment")
    if env.get("installer") not in (None, "auto", "uv", "pip"):
        raise doc.error(f"installer must be auto, uv or pip, got {env['installer']!r}",
                        "environment", "installer")
    packages = {k: v for k, v in env.items() if k != "environment_variables" and v is not None}
    if packages:  # environments.Environment.from_mapping reads it (config stays below it)
        cfg.environment = packages
    python = env.get("python")
    if isinstance(python, dict):  # Azure: environment.python.interpreterPath
        python = python.get("interpreterPath") or python.get("interpreter_path")
    cfg.python = python
    cfg.requirements = env.get("requirements")
    docker = env.get("docker") or {}
    cfg.docker_image = env.get("image") or env.get("docker_image") or docker.get(
        "baseImage") or docker.get("base_image")
    cfg.environment_variables.update({str(k): str(v) for k, v in
                                      (env.get("environment_variables") or {}).items()})
    return cfg


def load_targets(path: Path, kinds_options: Any) -> dict[str, dict[str, Any]]:
    """Read ``targets.yml``: ``{targets: {name: {type: kind, ...options}}}``.

    ``kinds_options(kind)`` returns the option names a kind accepts (or raises for
    an unknown kind with the installed kinds listed).
    """
    if not path.exists():
        return {}
    doc = _Located(path)
    if not isinstance(doc.data, dict):
        raise doc.error("expected a mapping with a 'targets' key")
    check_keys(doc, doc.data, {"targets": dict})
    targets = doc.data.get("targets") or {}
    for name, body in targets.items():
        if not isinstance(body, dict) or "type" not in body:
            raise doc.error(f"target {name!r} needs a 'type' (local, ssh, docker, ray)",
                            "targets", str(name))
        try:
            allowed = kinds_options(body["type"])
        except ConfigError as exc:
            raise doc.error(str(exc), "targets", str(name), "type") from None
        check_keys(doc, body, {"type": str, **allowed}, "targets", str(name),
                   what=f"option for {body['type']} target")
        check_numbers(doc, body, "targets", str(name))
    return targets


@contextlib.contextmanager
def targets_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``targets.yml`` (through ``.targets.yml.lock`` beside it).

    Wrap every read-modify-write of the file in it, so that two processes attaching
    at once both land instead of the later write dropping the earlier target.
    Readers need no lock: :func:`dump_targets` replaces the file atomically.
    """
    import fcntl
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def dump_targets(path: Path, targets: dict[str, dict[str, Any]]) -> None:
    """Write ``targets.yml`` atomically, keeping its explanatory header."""
    import yaml

    from jupyter_compute.protocol import write_atomic

    body = yaml.safe_dump({"targets": targets}, sort_keys=False, default_flow_style=False)
    write_atomic(str(path), (TARGETS_HEADER + body).encode("utf-8"))


TARGETS_HEADER = """\
# Compute targets attached to this workspace. Edit here or use
#   jupyter-compute attach NAME --type KIND [options]   (or %compute attach in a notebook)
# No secrets belong here: keys are paths and passwords are names of environment variables.
# The 'local' target always exists, attached or not.
"""

TEMPLATES = {
    "targets.yml": TARGETS_HEADER + """\
targets:
  local:
    type: local
    # python: /usr/bin/python3        # interpreter for runs; default: the current one
""",
    "run.yml": """\
# A run configuration, close to Azure ML's runconfig. Used only when passed:
#   jupyter-compute submit --config .jupyter_compute/run.yml
# Command-line flags override what is set here.
script: train.py                    # relative to the source directory
arguments: []                       # e.g. [--lr, 0.01, --epochs, 3]
target: local                       # a name from targets.yml
# name: my-experiment
# source_directory: .               # the folder that is snapshotted
environment:                        # the packages the script needs; sources combine
  # python: /usr/bin/python3        # an interpreter on the target, or a version: "3.11"
  # requirements: requirements.txt  # a virtualenv built once per host from this file
  # pyproject: pyproject.toml[test] # [project] dependencies (+ optional extras)
  # conda_file: environment.yml     # a conda/Azure file, installed from PyPI (no conda)
  # kernel: true                    # this notebook's own packages, pinned; local ones
  #                                 #   are built into wheels and shipped
  # image: python-base:3.11         # docker targets: the image to run in
  # dockerfile: Dockerfile          # docker targets: build the image from this file
  # installer: auto                 # auto (uv where it runs, else pip) | uv | pip
environment_variables: {}
# secret_env: [MY_CREDENTIAL]       # also secret (names with TOKEN, KEY, SECRET, PASSWORD are)
max_run_duration_seconds: null      # TimedOut after this long
node_count: 1                       # more: a multi-node run (local, ray, slurm)
# distribution: {type: pytorch, process_count_per_node: 1}   # pytorch | mpi | tensorflow
# snapshot_max_mb: 300
# snapshot_max_files: 2000          # changed (new) files per snapshot
# cancel_grace_seconds: 3           # SIGTERM, then SIGKILL after this long
""",
    "sweep.yml": """\
# A HyperDrive-compatible sweep:  %sweep train.py --target local --config sweep.yml
sampling:
    type: random # Supported options: Random, Grid, Bayesian
    parameter_space:
    - name: --penalty
      expression: choice
      values: [0.5, 1, 1.5]
policy:
    type: BanditPolicy
    evaluation_interval: 1
    slack_factor: 0.2
primary_metric_name: Accuracy
primary_metric_goal: Maximize
max_total_runs: 8
max_concurrent_runs: 2
max_duration_minutes: 100
""",
}


def parse_value(text: str) -> Any:
    """A ``-p NAME VALUE`` value typed as papermill's CLI types it (True, None, 3, 0.5, str).

    Written out rather than imported: importing papermill costs ~3 s.
    """
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def load_parameters(typed: list[tuple[str, str]] | None = None,
                    raw: list[tuple[str, str]] | None = None,
                    files: list[str] | None = None) -> dict[str, Any]:
    """Notebook parameters from ``-f params.yml`` files, then ``-p`` (typed), then ``-r`` (raw)."""
    params: dict[str, Any] = {}
    for name in files or []:
        doc = _Located(Path(name))
        if not isinstance(doc.data, dict):
            raise doc.error("a parameters file must be a mapping of name: value")
        params.update(doc.data)
    params.update({k: parse_value(v) for k, v in typed or []})
    params.update(dict(raw or []))
    return params
