"""OpenSSH habits for the ssh target: ``Host`` aliases from ``~/.ssh/config`` and jump hosts.

``--host ALIAS`` is looked up in the ssh config (``--ssh-config PATH``, default
``~/.ssh/config`` if it exists) with paramiko's ``SSHConfig``, as ``ssh`` would:
``HostName``, ``User``, ``Port``, ``IdentityFile``, ``ProxyJump`` and
``ProxyCommand`` come from it (with paramiko's ``%h``/``%p``/``~`` expansions);
options given to ``attach`` win over it (``--proxy-jump`` over ``ProxyCommand`` too)::

    # ~/.ssh/config                       # then: attach gpu --type ssh --host gpu
    Host gpu
        HostName 10.0.0.6
        User me
        IdentityFile ~/.ssh/id_ed25519
        ProxyJump bastion.example.org

A jump host (``--proxy-jump [user@]bastion[:port]``, or ``ProxyJump``; a chain
``a,b`` goes through ``a`` then ``b``) is itself looked up in the config. It logs
in with its own ``IdentityFile`` if the config gives one, else with the target's
key (then ssh-agent). The endpoint is resolved when the connection is first made,
so editing the config takes effect in a new process.
"""

from __future__ import annotations

import getpass
import os

import paramiko

from jupyter_compute.exceptions import UsageError
from jupyter_compute.targets.ssh.connection import Endpoint
from jupyter_compute.targets.ssh.options import DEFAULT_SSH_CONFIG

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def load(path: str | None) -> tuple[paramiko.SSHConfig, str]:
    """The parsed ssh config and its path: ``path``, else ``~/.ssh/config`` if it exists.

    With neither, an empty config and ``""``.
    """
    chosen = os.path.expanduser(path) if path else os.path.expanduser(DEFAULT_SSH_CONFIG)
    if not os.path.isfile(chosen):
        if path:
            raise UsageError(f"ssh config {chosen} does not exist; fix --ssh-config, or leave "
                             f"it out to use {DEFAULT_SSH_CONFIG}")
        return paramiko.SSHConfig(), ""
    try:
        return paramiko.SSHConfig.from_path(chosen), chosen
    except (OSError, ValueError, paramiko.SSHException) as exc:
        raise UsageError(f"cannot read ssh config {chosen} ({exc}); fix that file or pass "
                         "--ssh-config with another") from exc


def parse_jump(spec: str) -> list[tuple[str, str, int | None]]:
    """``[user@]host[:port]`` hops, comma-separated, as ``(user, host, port)``.

    >>> parse_jump("me@bastion:2222,inner")
    [('me', 'bastion', 2222), ('', 'inner', None)]
    """
    hops = []
    for part in spec.split(","):
        hop = part.strip()
        if hop.startswith("ssh://"):
            hop = hop[len("ssh://"):]
        user, _, rest = hop.rpartition("@")
        host, port = rest, None
        if rest.startswith("["):  # [v6]:port
            host, _, tail = rest[1:].partition("]")
            if tail.startswith(":"):
                port = _port(tail[1:], part)
        elif rest.count(":") == 1:
            host, text = rest.split(":")
            port = _port(text, part)
        if not host:
            raise UsageError(f"bad jump host {part.strip()!r}: give [user@]host[:port] to "
                             "--proxy-jump (several: a,b)")
        hops.append((user, host, port))
    return hops


def _port(text: str, part: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"bad port in jump host {part.strip()!r}: give [user@]host[:port] "
                         "to --proxy-jump")
    return int(text)


def _lookup(config: paramiko.SSHConfig, path: str, name: str) -> dict[str, Any]:
    try:
        return dict(config.lookup(name))
    except Exception as exc:  # noqa: BLE001 - Match exec without invoke, bad tokens, ...
        raise UsageError(f"cannot look up {name!r} in ssh config {path} ({exc}); fix that "
                         "file or pass --ssh-config with another") from exc


def _first_key(found: dict[str, Any]) -> str | None:
    """The first ``IdentityFile`` that exists (``ssh`` skips missing ones too)."""
    for path in found.get("identityfile") or []:
        if os.path.isfile(os.path.expanduser(path)):
            return str(path)
    return None


def resolve(options: dict[str, Any], known_hosts: str, timeout: float) -> Endpoint:
    """The endpoint (with its jump hosts) for an ssh target's options; see the module
    docstring. Options given explicitly win over the ssh config."""
    config, config_path = load(options.get("ssh_config"))
    alias = str(options["host"])
    found = _lookup(config, config_path, alias)
    user = str(options.get("user") or found.get("user") or getpass.getuser())
    key = options.get("key") or _first_key(found)
    jump_spec = options.get("proxy_jump") or found.get("proxyjump") or ""
    jump = None
    if jump_spec.strip().lower() not in ("", "none"):
        for hop_user, hop_host, hop_port in parse_jump(jump_spec):
            hop = _lookup(config, config_path, hop_host)
            jump = Endpoint(
                host=hop.get("hostname", hop_host),
                port=int(hop_port or hop.get("port") or 22),
                user=hop_user or hop.get("user") or getpass.getuser(),
                key=_first_key(hop) or key,
                key_passphrase_env=options.get("key_passphrase_env"),
                trusted=options.get("trust_jump_host_key"), known_hosts=known_hosts,
                timeout=timeout, jump=jump, alias=hop_host, ssh_config=config_path)
    command = "" if jump is not None else str(found.get("proxycommand") or "")
    if command.strip().lower() == "none":
        command = ""
    return Endpoint(
        proxy_command=command,
        host=found.get("hostname", alias), port=int(options.get("port") or found.get("port")
                                                    or 22),
        user=user, key=key, password_env=options.get("password_env"),
        key_passphrase_env=options.get("key_passphrase_env"),
        trusted=options.get("trust_host_key"), known_hosts=known_hosts, timeout=timeout,
        jump=jump, alias=alias, ssh_config=config_path)
