"""``RunSpec``: one run, fully resolved — what the target is asked to execute.

Secret environment values (``protocol.is_secret_name``, or named in ``secret_env``)
never travel in ``spec.json`` nor rest in the store: ``split_environment`` keeps them
apart, the spec and every display show ``***``, and ``secret_payload`` is what a
target delivers to the agent in the run folder's 0600 ``secrets`` file::

    spec = RunSpec("train.py", Path("."), environment_variables={"API_TOKEN": "abc"})
    spec                    # RunSpec(..., environment_variables={'API_TOKEN': '***'}, ...)
    masked_environment(spec)  # {'API_TOKEN': '***'}
    secret_payload(spec)      # b'{"API_TOKEN": "abc"}'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from jupyter_compute import protocol


@dataclass
class RunSpec:
    """What to run where. Built by ``api.submit`` from arguments, ``run.yml`` and defaults."""

    script: str                          # posix path relative to source_dir
    source_dir: Path                     # absolute; the folder that is snapshotted
    target: str = "local"
    name: str | None = None
    arguments: list[str] = field(default_factory=list)
    kind: str | None = None              # script | notebook (None: from the file's suffix)
    python: str | None = None            # interpreter on the target; None = target default
    requirements: str | None = None      # requirements file inside the snapshot
    docker_image: str | None = None
    environment_variables: dict[str, str] = field(default_factory=dict)
    secret_env: list[str] = field(default_factory=list)  # names secret whatever they look like
    max_run_duration_seconds: float | None = None
    node_count: int = 1
    snapshot_max_bytes: int | None = None
    snapshot_max_files: int | None = None
    cancel_grace_seconds: float = 3.0
    parent_id: str | None = None         # the sweep this run belongs to
    extra_files: dict[str, bytes] | None = None  # added to the snapshot (a %%submit cell)
    parameters: dict[str, object] = field(default_factory=dict)  # a notebook's (papermill)
    kernel: str | None = None            # a notebook's kernel; None = its own metadata

    @property
    def display_name(self) -> str:
        return self.name or Path(self.script).stem

    def __repr__(self) -> str:  # the dataclass repr, with secret values masked
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["environment_variables"] = masked_environment(self)
        return f"RunSpec({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def split_environment(env: dict[str, str], secret_env: list[str] | tuple[str, ...] = ()
                      ) -> tuple[dict[str, str], dict[str, str]]:
    """``(plain, secret)``: the variables that may be written down, and those that may not.

    >>> split_environment({"EPOCHS": "3", "API_TOKEN": "abc"})
    ({'EPOCHS': '3'}, {'API_TOKEN': 'abc'})
    """
    named = set(secret_env)
    plain: dict[str, str] = {}
    secret: dict[str, str] = {}
    for name, value in env.items():
        is_secret = name in named or protocol.is_secret_name(name)
        (secret if is_secret else plain)[name] = value
    return plain, secret


def masked_environment(spec: RunSpec) -> dict[str, str]:
    """The spec's variables as they may be stored and shown: secret values are ``***``."""
    plain = split_environment(spec.environment_variables, spec.secret_env)[0]
    return {name: plain.get(name, protocol.SECRET_MASK) for name in spec.environment_variables}


def secret_names(spec: RunSpec) -> list[str]:
    """The names of the spec's secret variables (``spec.json``'s ``secret_env``)."""
    return sorted(split_environment(spec.environment_variables, spec.secret_env)[1])


def secret_payload(spec: RunSpec) -> bytes | None:
    """The run folder's ``secrets`` file (JSON ``{name: value}``), or None with no secrets.

    A target writes it with mode 0600 next to ``spec.json`` before the agent starts;
    the agent reads it, deletes it, and adds the values to the script's environment.
    """
    secret = split_environment(spec.environment_variables, spec.secret_env)[1]
    return json.dumps(secret).encode() if secret else None
