"""The ssh target's helper (``jupyter_compute/hostsession.py``) as a real process on
pipes, the way sshd runs it: the order of what it pushes, what it refuses, and the
manifest sent as a change. The whole path over a real sshd is in test_ssh.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

import jupyter_compute.hostsession as hostsession
from jupyter_compute import protocol


class Helper:
    """The helper on ``workdir``, and the client's half of its framing."""

    def __init__(self, workdir: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, hostsession.__file__, str(workdir)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.ids = 0

    def send(self, op: str, meta: dict[str, Any], data: bytes = b"") -> int:
        assert self.proc.stdin is not None
        self.ids += 1
        head = json.dumps(meta).encode()
        self.proc.stdin.write(f"{op} {self.ids} {len(head)} {len(data)}\n".encode() + head + data)
        self.proc.stdin.flush()
        return self.ids

    def message(self) -> tuple[str, int, dict[str, Any], bytes]:
        assert self.proc.stdout is not None
        op, ident, n, m = self.proc.stdout.readline().split()
        meta = json.loads(self.proc.stdout.read(int(n)))
        return op.decode(), int(ident), meta, self.proc.stdout.read(int(m))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # as a dropped connection: the helper ends
        assert self.proc.wait(timeout=10) == 0


@pytest.fixture
def helper(tmp_path: Path) -> Any:
    h = Helper(tmp_path)
    yield h
    h.close()


def test_a_live_status_is_pushed_before_the_log_and_an_end_after_it(tmp_path: Path,
                                                                      helper: Helper) -> None:
    """A client that sees a line has the status its run had by then (Running, with its
    agent); one that sees the end has every line before it."""
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    me = protocol.process_identity(os.getpid())
    protocol.write_json_atomic(str(run / "status.json"), {"status": "Running", "agent": me})
    (run / "output.log").write_bytes(b"one\n")
    ident = helper.send("watch", {"run": "r1", "log": 0, "metrics": 0})
    op, _, meta, raw = helper.message()
    assert op == "status" and json.loads(raw)["status"] == "Running"
    assert meta["alive"] is True and meta["stale"] is False  # this very process
    assert helper.message()[::2] == ("data", {"run": "r1", "name": "output.log", "at": 0})
    assert helper.message()[:2] == ("ok", ident)

    with open(run / "output.log", "ab") as f:
        f.write(b"two\n")
    protocol.write_json_atomic(str(run / "status.json"), {"status": "Completed", "agent": me})
    op, _, meta, data = helper.message()
    assert (op, meta["at"], data) == ("data", 4, b"two\n")  # first the log's end,
    op, _, meta, raw = helper.message()
    assert op == "status" and json.loads(raw)["status"] == "Completed"  # then the status
    # the run is complete on the client now: the helper no longer watches it
    with open(run / "output.log", "ab") as f:
        f.write(b"late\n")
    time.sleep(0.2)
    ident = helper.send("read", {"run": "r1", "name": "output.log", "offset": 4})
    assert helper.message() == ("ok", ident, {"found": True}, b"two\nlate\n")


def test_bad_names_and_corrupt_blobs_are_refused(tmp_path: Path, helper: Helper) -> None:
    ident = helper.send("read", {"run": "../etc", "name": "passwd"})
    op, got, meta, _ = helper.message()
    assert (op, got) == ("err", ident) and "bad run id" in meta["error"]
    ident = helper.send("write", {"run": "r1", "name": "../x"}, b"no")
    assert helper.message()[0] == "err"
    digest = hashlib.sha256(b"right").hexdigest()
    frames = f"B {digest} 5 0\n".encode() + b"wrong" + b"E\n"
    ident = helper.send("sync", {"run": "r2", "runtime": "v1"}, frames)
    op, got, meta, _ = helper.message()
    assert (op, got) == ("err", ident) and f"corrupt {digest}" in meta["error"]
    assert list((tmp_path / "blobs" / "sha256" / digest[:2]).iterdir()) == []


def canonical(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()


def test_a_manifest_goes_whole_once_then_as_the_entries_that_changed(
        tmp_path: Path, helper: Helper) -> None:
    first = {"id": "s1", "files": {f"f{i}.py": [f"{i:064x}", i, 420] for i in range(100)}}
    data = canonical(first)
    d1 = hashlib.sha256(data).hexdigest()
    ident = helper.send("sync", {"run": "r1", "runtime": "v1"},
                        f"K {d1} {len(data)} 0\n".encode() + data + b"E\n")
    assert helper.message()[:2] == ("ok", ident)
    assert (tmp_path / "runs" / "r1" / "manifest.json").read_bytes() == data

    second = {"id": "s2", "files": {**first["files"], "f1.py": ["e" * 64, 9, 420]}}
    del second["files"]["f2.py"]
    d2 = hashlib.sha256(canonical(second)).hexdigest()
    patch = zlib.compress(json.dumps({"set": {"f1.py": ["e" * 64, 9, 420]},
                                      "drop": ["f2.py"], "head": {"id": "s2"}}).encode())
    ident = helper.send("sync", {"run": "r2", "runtime": "v1"},
                        f"D {d2} {len(patch)} 1 {d1}\n".encode() + patch + b"E\n")
    assert helper.message()[:2] == ("ok", ident)
    assert json.loads((tmp_path / "runs" / "r2" / "manifest.json").read_bytes()) == second

    # against a manifest the host does not have: refused, so the client sends it whole
    ident = helper.send("sync", {"run": "r3", "runtime": "v1"},
                        f"D {d2} {len(patch)} 1 {'0' * 64}\n".encode() + patch + b"E\n")
    op, got, meta, _ = helper.message()
    assert (op, got) == ("err", ident) and meta["error"].startswith("NoBase")


def test_the_helper_starts_the_agent_as_every_target_does() -> None:
    """The helper travels alone, so it keeps its own copy of the agent's ``-c`` code."""
    assert hostsession.AGENT_BOOT == protocol.AGENT_BOOT
    assert protocol.agent_command("py", "/rt", "/run") == ["py", "-c", hostsession.AGENT_BOOT,
                                                          "/rt", "/run"]
