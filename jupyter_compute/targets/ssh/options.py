"""What an ssh target is attached with: plain data, so the kinds that reach a head or
login node over SSH (slurm, spark) can offer the same options without importing
paramiko (~100 ms) when they run on this machine."""

from __future__ import annotations

from jupyter_compute.targets.ssh.launcher import ProcessOrContainer

DEFAULT_WORKDIR = "~/.jupyter_compute"
DEFAULT_PYTHON = "python3"
DEFAULT_TIMEOUT = 10
DEFAULT_SSH_CONFIG = "~/.ssh/config"

#: The SSH host's own options (``SSHHost.options``).
HOST_OPTIONS = {
    "host": (str, "host name or address"),
    "port": (int, "SSH port (default 22)"),
    "user": (str, "user to log in as (default: your local user name)"),
    "key": (str, "private key file (default: ssh-agent, then ~/.ssh/id_*)"),
    "password_env": (str, "NAME of an environment variable holding the password"),
    "key_passphrase_env": (str, "NAME of an environment variable holding the key's "
                                "passphrase"),
    "workdir": (str, f"folder on the host for blobs, runs and environments (default "
                     f"{DEFAULT_WORKDIR})"),
    "python": (str, f"Python ≥ 3.9 on the host (default {DEFAULT_PYTHON})"),
    "trust_host_key": (str, "SHA256:… fingerprint of the host key to trust (printed "
                            "when the key is unknown)"),
    "connect_timeout": (int, f"seconds to wait for a connection (default "
                             f"{DEFAULT_TIMEOUT})"),
    "offline": (bool, "the host has no package index: environments install from wheels "
                      "sent from here (found out by asking the host when not given)"),
}

#: The ssh target's options (``SSHTarget.options``): the host's, the launcher's (a
#: container on the host), and how the host is found.
TARGET_OPTIONS = {
    **HOST_OPTIONS, **ProcessOrContainer.options,
    "host": (str, "host name or address, or a Host alias of the ssh config"),
    "ssh_config": (str, f"ssh config file whose Host entries --host may name (default "
                        f"{DEFAULT_SSH_CONFIG} if it exists)"),
    "proxy_jump": (str, "[user@]bastion[:port] to reach the host through (a,b for a "
                        "chain; default: the ssh config's ProxyJump)"),
    "trust_jump_host_key": (str, "SHA256:… fingerprint of the jump host's key to trust "
                                 "(comma-separated for a chain)"),
}
