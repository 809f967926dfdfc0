"""Host keys for the SSH target: known keys are checked, unknown ones never trusted silently.

Keys come from the user's ``~/.ssh/known_hosts`` and the workspace's own
``.jupyter_compute/known_hosts``. An unknown key is refused with its SHA256
fingerprint and the flag that trusts it; only a key whose fingerprint the user
gave (``trust_host_key``) is added, to the workspace's file. A changed key is
refused loudly, whatever was asked. A jump host (``proxy_jump``) is checked the
same way against the same files; its key is trusted with ``trust_jump_host_key``
(several fingerprints, comma-separated, for a chain of jump hosts)::

    policy = TrustOnlyPolicy(ws.dir / KNOWN_HOSTS, trusted="SHA256:abc…")
    client.set_missing_host_key_policy(policy)
"""

from __future__ import annotations

import os
from pathlib import Path

import paramiko

from jupyter_compute.exceptions import TargetError

#: The workspace's own known_hosts file, next to ``targets.yml``.
KNOWN_HOSTS = "known_hosts"
USER_KNOWN_HOSTS = "~/.ssh/known_hosts"


class HostKeyError(TargetError):
    """The server's host key is unknown, or differs from the one recorded for it."""


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's fingerprint of ``key``: ``SHA256:`` + unpadded base64 of its sha256."""
    return str(key.fingerprint)


def key_name(host: str, port: int) -> str:
    """How known_hosts names a server: ``host``, or ``[host]:port`` off port 22."""
    return host if port == 22 else f"[{host}]:{port}"


class TrustOnlyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown host keys, except one whose fingerprint the user named.

    The named key is appended to the workspace's known_hosts, so the decision is
    visible and later connections check against it like any other known key.
    ``trusted`` may name several fingerprints, comma-separated (a chain of jump
    hosts); ``flag`` is the option the refusal tells the user to pass.
    """

    def __init__(self, known_hosts: Path, trusted: str | None = None,
                 flag: str = "--trust-host-key", what: str = "host") -> None:
        self.known_hosts = known_hosts
        self.trusted = [t.strip() for t in (trusted or "").split(",") if t.strip()]
        self.flag = flag
        self.what = what

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        found = fingerprint(key)
        if not self.trusted:
            raise HostKeyError(
                f"unknown host key for {self.what} {hostname}: {key.get_name()} {found}; if "
                f"that is the server's key (on it: ssh-keygen -lf "
                f"/etc/ssh/ssh_host_*_key.pub), attach again with {self.flag} {found}")
        if not any(_same_fingerprint(t, found) for t in self.trusted):
            raise HostKeyError(
                f"{self.what} {hostname} offers host key {found}, not the "
                f"{', '.join(self.trusted)} you asked to trust ({self.flag}); refusing to "
                "connect. Check the fingerprint on the server")
        remember(self.known_hosts, hostname, key)


def remember(known_hosts: Path, hostname: str, key: paramiko.PKey) -> None:
    """Append ``hostname``'s ``key`` to ``known_hosts`` (OpenSSH format)."""
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
    # O_APPEND: two processes trusting at once each add a whole line
    fd = os.open(known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def changed_key_error(exc: paramiko.BadHostKeyException, hostname: str,
                      files: list[Path], flag: str = "--trust-host-key") -> HostKeyError:
    """The loud refusal for a server whose key is not the one recorded for it."""
    recorded = next((str(f) for f in files if _mentions(f, hostname)), " or ".join(map(str, files)))
    offered = fingerprint(exc.key)
    return HostKeyError(
        f"HOST KEY CHANGED for {hostname}: it offers {offered}, but {recorded} records "
        f"{fingerprint(exc.expected_key)}. Someone may be intercepting the connection; "
        f"refusing. If the server was re-keyed, delete its line (ssh-keygen -R "
        f"'{hostname}' -f {recorded}) and attach again with {flag} {offered}")


def _same_fingerprint(given: str, found: str) -> bool:
    # "SHA256:abc" or just "abc"; base64 is case-sensitive, the prefix is not
    given = given.split(":", 1)[1] if given.upper().startswith("SHA256:") else given
    return given.rstrip("=") == found.split(":", 1)[1]


def _mentions(path: Path, hostname: str) -> bool:
    try:
        keys = paramiko.HostKeys(str(path))
    except (OSError, paramiko.SSHException):
        return False
    return keys.lookup(hostname) is not None
