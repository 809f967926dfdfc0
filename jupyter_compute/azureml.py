"""Azure ML v2 spellings shared by job files and pipelines: bindings, computes, environments.

::

    from jupyter_compute import azureml

    azureml.substitute("python train.py --data ${{inputs.data}} > ${{outputs.log}}/out.txt",
                       {"inputs.data": "my data.csv", "outputs.log": "/tmp/o"})
    # "python train.py --data 'my data.csv' > /tmp/o/out.txt"
    azureml.references("--lr ${{search_space.lr}} $[[--seed ${{inputs.seed}}]]")
    # ['search_space.lr', 'inputs.seed']
    azureml.compute_name("azureml:cpu-cluster")          # 'cpu-cluster'
    azureml.resolve_environment("azureml:AzureML-sklearn-1.0@latest", workspace)
    # the Environment the workspace's environments.yml gives that name, else None

A command runs through ``bash -c`` (as Azure runs ``command:``), so every value put
into it is shell-quoted: a path with a space or a quote stays one word, and a value
can never add a command. ``$[[ … ]]`` is Azure's optional part: it is kept (without
the brackets) when every binding in it has a value, and dropped when one has none.

Azure environments (``azureml:NAME:VERSION``, ``azureml:NAME@latest``,
``azureml://registries/R/environments/NAME/…``) live in Azure; here the workspace's
``.jupyter_compute/environments.yml`` maps such names to environments of ours::

    # name (as written in the job, or without azureml:, version or label) → environment
    AzureML-sklearn-1.0-ubuntu20.04-py38-cpu: {requirements: requirements.txt}
    pytorch-env: torch           # .jupyter_compute/environments/torch.yml
    sklearn-1.5: kernel          # this kernel's packages

Files it names are relative to the workspace's folder. A name with no alias runs
on the target's own interpreter, and one line says so.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from jupyter_compute.exceptions import UsageError

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from jupyter_compute.environments import Environment
    from jupyter_compute.workspace import Workspace

__all__ = ["ALIASES_FILE", "ShellWord", "compute_name", "is_azure_environment", "references",
           "resolve_environment", "run_path", "substitute"]

#: The workspace file of environment aliases (in ``.jupyter_compute/``).
ALIASES_FILE = "environments.yml"
PREFIX = "azureml:"
_BINDING = re.compile(r"\$\{\{\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*\}\}")
_OPTIONAL = re.compile(r"\$\[\[(.*?)\]\]", re.DOTALL)


class ShellWord(str):
    """A binding already written for the shell, put in as it is (``run_path``'s words);
    every other value is quoted."""


def run_path(rel: str) -> ShellWord:
    """An absolute path to ``rel`` (``outputs/model``) in the run's folder on whatever
    host runs it, as one shell word: the agent sets ``$JUPYTER_COMPUTE_RUN_DIR``, so the
    path holds after a ``cd`` in the command, where ``$PWD`` would not.

    >>> run_path("outputs/model")
    '"$JUPYTER_COMPUTE_RUN_DIR"/outputs/model'
    """
    from jupyter_compute.protocol import ENV_RUN_DIR

    return ShellWord(f'"${ENV_RUN_DIR}"/{shlex.quote(rel)}')


def references(text: str) -> list[str]:
    """The names bound in ``text`` (``inputs.x``, ``parent.jobs.s.outputs.o`` …), each
    once, in order of first appearance.

    >>> references("${{inputs.a}} ${{ outputs.b }} ${{inputs.a}}")
    ['inputs.a', 'outputs.b']
    """
    return list(dict.fromkeys(m.group(1) for m in _BINDING.finditer(text)))


def substitute(text: str, bindings: dict[str, str]) -> str:
    """``text`` with every ``${{name}}`` replaced by ``bindings[name]``, shell-quoted.

    A ``$[[ … ]]`` part is kept without its brackets when all its names are bound,
    else dropped. A name outside such a part that is not bound is a ``UsageError``
    that names it and lists those that are.

    >>> substitute("cat ${{inputs.f}} > out.txt", {"inputs.f": "a b.txt"})
    "cat 'a b.txt' > out.txt"
    """
    def optional(m: re.Match[str]) -> str:
        inner = m.group(1)
        return _replace(inner, bindings) if all(n in bindings for n in references(inner)) \
            else ""

    return _replace(_OPTIONAL.sub(optional, text), bindings)


def _replace(text: str, bindings: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in bindings:
            import difflib

            close = difflib.get_close_matches(name, list(bindings), n=1)
            hint = f" — did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"${{{{{name}}}}} names nothing{hint} (known: "
                             f"{', '.join(sorted(bindings)) or 'none'})")
        value = bindings[name]
        return value if isinstance(value, ShellWord) else shlex.quote(str(value))

    return _BINDING.sub(one, text)


def compute_name(compute: str) -> str:
    """The attached target an Azure ``compute:`` names: ``azureml:cpu`` → ``cpu`` (an ARM
    id ``azureml:/subscriptions/…/computes/cpu`` → ``cpu``; a plain name stays).

    >>> compute_name("azureml:cpu-cluster")
    'cpu-cluster'
    """
    name = compute.strip()
    if name.startswith(PREFIX):
        name = name[len(PREFIX):]
    return name.rstrip("/").rsplit("/", 1)[-1]


def is_azure_environment(value: Any) -> bool:
    """Whether ``value`` names an Azure environment asset (``azureml:…``)."""
    return isinstance(value, str) and value.strip().startswith(PREFIX)


def _alias_keys(value: str) -> list[str]:
    """The names an Azure environment reference may have an alias under, most exact first:
    ``azureml:NAME:3`` → itself, ``NAME:3``, ``NAME``."""
    keys = [value]
    rest = value[len(PREFIX):] if value.startswith(PREFIX) else value
    keys.append(rest)
    if rest.startswith("//"):  # azureml://registries/R/environments/NAME[/versions/V|/labels/L]
        parts = rest.strip("/").split("/")
        if "environments" in parts and parts.index("environments") + 1 < len(parts):
            keys.append(parts[parts.index("environments") + 1])
    else:
        keys.append(re.split(r"[:@]", rest, maxsplit=1)[0])
    return list(dict.fromkeys(k for k in keys if k))


def resolve_environment(value: Any, workspace: Workspace | None, *,
                        base_dir: str | Path | None = None,
                        say: Callable[[str], None] | None = None) -> Environment | None:
    """The environment an Azure ``environment:`` means here, or None for the target's own
    interpreter.

    * ``azureml:…`` names resolve through the workspace's ``environments.yml``; with no
      alias, ``say`` (default: print to stderr) gets one line and None is returned;
    * an inline environment (``{image, conda_file}``) becomes ours, its files relative
      to ``base_dir`` (the job file's folder);
    * anything else is what ``Environment.parse`` takes (``kernel``, a name, a file).
    """
    from jupyter_compute.environments import Environment

    if value is None:
        return None
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if isinstance(value, dict):
        return _inline(value, base)
    if not isinstance(value, str):
        raise UsageError(f"environment must be a name or a mapping, got {value!r}")
    if not is_azure_environment(value):
        path = base / value
        return Environment.parse(str(path) if path.exists() else value)
    aliases = _aliases(workspace)
    for key in _alias_keys(value.strip()):
        if key in aliases:
            return aliases[key]
    where = workspace.dir / ALIASES_FILE if workspace is not None else ALIASES_FILE
    (say or _stderr)(f"environment {value} has no alias in {where}; running on the target's "
                     f"own Python (add '{_alias_keys(value.strip())[-1]}: requirements.txt' "
                     "there to give it packages)")
    return None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _inline(raw: dict[str, Any], base: Path) -> Environment:
    """An Azure inline environment: ``image``, ``conda_file``, ``build: {path}`` (a folder
    with a Dockerfile); the asset's name, version and description are ignored."""
    from jupyter_compute.environments import Environment

    def rel(value: Any) -> str | None:
        return None if value is None else str((base / str(value)).expanduser())

    build = raw.get("build") or {}
    dockerfile = None
    if isinstance(build, dict) and build.get("path"):
        dockerfile = str(Path(rel(build["path"]) or "") /
                         str(build.get("dockerfile_path") or "Dockerfile"))
    env = Environment(image=raw.get("image"), conda_file=rel(raw.get("conda_file")),
                      dockerfile=dockerfile)
    env.check()
    return env


def _aliases(workspace: Workspace | None) -> dict[str, Environment]:
    """The workspace's ``environments.yml`` as ``{name: Environment}`` (empty without it)."""
    from jupyter_compute.config import _Located, check_keys
    from jupyter_compute.environments import KEYS, Environment
    from jupyter_compute.exceptions import ConfigError

    if workspace is None or not (workspace.dir / ALIASES_FILE).is_file():
        return {}
    doc = _Located(workspace.dir / ALIASES_FILE)
    if not isinstance(doc.data, dict):
        raise doc.error("expected a mapping of Azure environment names to environments")
    root = workspace.root
    out: dict[str, Environment] = {}
    for name, value in doc.data.items():
        try:
            if isinstance(value, dict):
                check_keys(doc, value, KEYS, str(name))
                env = Environment.from_mapping(value)
                for key in ("requirements", "pyproject", "conda_file", "dockerfile"):
                    given = getattr(env, key)
                    if given and not Path(given).expanduser().is_absolute():
                        setattr(env, key, str(root / given))
            elif isinstance(value, str):
                path = root / value
                parsed = Environment.parse(str(path) if path.exists() else value)
                assert parsed is not None
                env = parsed
            else:
                raise doc.error(f"{name!r} must name an environment (kernel, a name, a file) "
                                f"or map its keys, got {value!r}", str(name))
        except UsageError as exc:
            raise ConfigError(str(exc), path=doc.path, line=doc.line(str(name)),
                              key=str(name)) from None
        out[str(name)] = env
    return out
