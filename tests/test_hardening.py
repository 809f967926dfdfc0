"""Hostile or broken input stays contained: crafted manifests, looping links, poisoned
workspace files, bad config files, racing attaches and absurd query values (issue 20,
defects 5, 6, 9, 11, 12 and 13).

Each test drives the real thing: the agent as a target runs it, the CLI as a person
types it, the server extension through HTTP.

pytest-jupyter's fixtures are imported into this module only, as in test_server.py.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
import re
import resource
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from pytest_jupyter.jupyter_server import *  # noqa: F403 - fixtures, for this module only
from tornado.httpclient import HTTPClientError, HTTPResponse

from jupyter_compute import api, protocol
from jupyter_compute.snapshot import LINK_MODE

from conftest import CLI, Project


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def _submitted(out: subprocess.CompletedProcess[str]) -> str:
    """The run id of ``submit --wait``, from its "submitted RUN to TARGET" line."""
    match = re.search(r"^submitted (\S+) to ", out.stderr, re.MULTILINE)
    assert match, out.stderr
    return match.group(1)


# -- defect 5: the agent materializes a hostile manifest without touching the outside -----


def _blob(run_dir: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = run_dir / "blobs" / "sha256" / digest[:2] / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def _run_agent(run_dir: Path, files: dict[str, list[Any]]) -> dict[str, Any]:
    """Run the agent, as a target starts it, on a run folder holding ``files``."""
    (run_dir / protocol.SPEC).write_text(json.dumps({"run_id": run_dir.name,
                                                     "script": "t.py"}))
    (run_dir / protocol.MANIFEST).write_text(json.dumps({"files": files}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-m", "jupyter_compute.agent", str(run_dir)], env=env,
                   timeout=60, capture_output=True, check=False)
    status: dict[str, Any] = json.loads((run_dir / protocol.STATUS).read_text())
    return status


def _script(run_dir: Path) -> list[Any]:
    data = b"print('ran')\n"
    return [_blob(run_dir, data), len(data), 0o644]


def _link(run_dir: Path, text: str) -> list[Any]:
    return [_blob(run_dir, text.encode()), len(text), LINK_MODE]


def _chain(run_dir: Path) -> dict[str, list[Any]]:
    """Links that each read as inside the workdir but lead two folders above it.

    "p/q/r/x -> ../../../s" is the folder s; "k -> p/q/r/x/../../.." reads as p, but x
    being a link, it is s/../../.. : two folders above workdir, that is runs/.
    """
    return {"t.py": _script(run_dir), "s/f.py": _script(run_dir),
            "p/q/r/x": _link(run_dir, "../../../s"), "k": _link(run_dir, "p/q/r/x/../../..")}


def test_chained_symlinks_cannot_replace_a_file_outside_the_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    victim = tmp_path / "runs" / "victim.txt"
    victim.write_text("precious\n")
    status = _run_agent(run_dir, {**_chain(run_dir),
                                  "k/victim.txt": _link(run_dir, "t.py")})
    assert not victim.is_symlink() and victim.read_text() == "precious\n"
    assert status["status"] == "Failed"
    assert "refusing 'k/victim.txt'" in status["error"]
    assert "a folder on its path is a symlink" in status["error"]


def test_a_link_whose_chain_leaves_the_workdir_is_refused(tmp_path: Path) -> None:
    # The same chain without a write through it: only resolving "k" shows where it goes.
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    status = _run_agent(run_dir, _chain(run_dir))
    assert status["status"] == "Failed"
    assert "refusing symlink k -> p/q/r/x/../../..: it points outside the run's workdir" \
        in status["error"]


def test_a_digest_cannot_name_a_file_outside_the_blob_store(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    digest = "../../../secret.txt"  # blobs/sha256/../../../secret.txt = runs/secret.txt
    secret = Path(os.path.normpath(run_dir / "blobs" / "sha256" / digest[:2] / digest))
    secret.write_text("password\n")
    status = _run_agent(run_dir, {"t.py": _script(run_dir), "leak.txt": [digest, 9, 0o644]})
    assert not (run_dir / "workdir" / "leak.txt").exists()
    assert status["status"] == "Failed" and "is not a sha256" in status["error"]


def test_a_legitimate_manifest_with_links_still_runs(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    status = _run_agent(run_dir, {
        "t.py": _script(run_dir), "pkg/m.py": _script(run_dir),
        "alias.py": _link(run_dir, "t.py"), "pkg/up.py": _link(run_dir, "../t.py"),
        "lib": _link(run_dir, "pkg"),
    })
    assert status["status"] == "Completed", status
    workdir = run_dir / "workdir"
    assert (workdir / "lib" / "m.py").read_text() == "print('ran')\n"
    assert os.readlink(workdir / "pkg" / "up.py") == "../t.py"


# -- defect 6: links the agent would refuse are left out by the snapshot -------------------


def test_looping_links_are_left_out_with_a_warning_and_the_run_completes(
        project: Project) -> None:
    project.write("t.py", "import os\nprint(sorted(os.listdir('.')))\n")
    project.write("sub/data.txt", "x\n")
    (project.root / "dot").symlink_to(".")
    (project.root / "sub" / "up").symlink_to("..")
    (project.root / "data").symlink_to("sub/data.txt")  # a good link stays
    out = project.cli("submit", "t.py", "--wait")
    assert out.returncode == 0, out.stderr
    assert "warning: skipped symlink dot -> .: it points at a folder that contains it" \
        in out.stderr
    assert "warning: skipped symlink sub/up -> ..: it points at a folder that contains it" \
        in out.stderr
    run_id = _submitted(out)
    assert project.show(run_id)["status"] == "Completed"
    workdir = project.run_dir(run_id) / "workdir"
    assert os.readlink(workdir / "data") == "sub/data.txt"
    assert not os.path.lexists(workdir / "dot") and not os.path.lexists(workdir / "sub" / "up")


# -- defect 9: config files that are binary, huge, bombs or out of range -------------------


def _cli_limited(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with 1 GiB of address space, given 5 s: a correctness bound for input
    that once took 3.4 GB or minutes, not a benchmark."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=5,
                          cwd=project.root, preexec_fn=limit, check=False)


BOMB = "script: t.py\nenvironment_variables:\n" + "".join(
    f"  {name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip([None, *"abcdefgh"], "abcdefghi"))


@pytest.mark.parametrize("content, expected", [
    (bytes(range(256)) * 2, "run.yml:2: not a text file (byte 0x80"),
    (b"script: t.py\nname: \x00\x01\n", "run.yml:2: not a text file"),
    (BOMB.encode(), "aliases (*name) expand to over"),
    (b"script: t.py\n# " + b"x" * (2 << 20) + b"\n", "run.yml: over 1 MiB"),
    (b"a: &a [*a]\n", "a loop"),
    (b"script: t.py\nmax_run_duration_seconds: -5\n",
     "run.yml:2: 'max_run_duration_seconds' must be a number above 0, got -5"),
    (b"script: t.py\nmax_run_duration_seconds: .nan\n", "must be a number above 0, got nan"),
    (b"script: t.py\ncancel_grace_seconds: .inf\n", "must be a number 0 or more, got inf"),
    (b"script: t.py\nsnapshot_max_files: 0\n", "must be a number above 0, got 0"),
], ids=["binary", "control-chars", "alias-bomb", "2MB", "alias-loop", "negative", "nan",
        "inf", "zero-files"])
def test_bad_run_yml_is_one_line_fast(project: Project, content: bytes, expected: str) -> None:
    assert len(BOMB) < 500
    project.write("t.py", "print(1)\n")
    (project.root / "run.yml").write_bytes(content)
    out = _cli_limited(project, "submit", "--config", "run.yml")
    assert out.returncode == 2, out.stderr
    assert expected in _one_line(out.stderr)
    assert not (project.root / ".jupyter_compute" / "runs").exists()


@pytest.mark.parametrize("content, expected", [
    (b"\xff\xfe" + bytes(range(256)), "targets.yml:1: not a text file"),
    (b"targets:\n  vm:\n    type: ssh\n    host: h\n    port: -22\n",
     "targets.yml:5: 'port' must be a number 0 or more, got -22"),
    (b"targets: &t\n  x: [" + b"*t, " * 10 + b"]\n", "a loop"),
], ids=["binary", "negative-port", "alias-loop"])
def test_bad_targets_yml_is_one_line_fast(project: Project, content: bytes,
                                          expected: str) -> None:
    (project.root / ".jupyter_compute" / "targets.yml").write_bytes(content)
    out = _cli_limited(project, "targets")
    assert out.returncode == 2, out.stderr
    assert expected in _one_line(out.stderr)


def test_attach_does_not_write_what_targets_yml_would_refuse(project: Project) -> None:
    out = project.cli("attach", "vm", "--type", "ssh", "--host", "127.0.0.1", "--port", "-22")
    assert out.returncode == 2
    assert "port must be a number 0 or more, got -22" in _one_line(out.stderr)
    assert not (project.root / ".jupyter_compute" / "targets.yml").exists()
    assert project.cli("targets").returncode == 0


def test_aliases_within_reason_still_work(project: Project) -> None:
    project.write("t.py", "import os\nprint(os.environ['A'], os.environ['B'])\n")
    project.write("run.yml", "script: t.py\nenvironment_variables:\n  A: &v same\n  B: *v\n")
    out = project.cli("submit", "--config", "run.yml", "--wait")
    assert out.returncode == 0, out.stderr
    run_id = _submitted(out)
    assert "same same" in project.cli("logs", run_id).stdout


# -- defect 11: the stat cache is data, never code -----------------------------------------


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_poisoned_snapshot_cache_runs_nothing_and_is_ignored(project: Project) -> None:
    project.write("t.py", "print('fine')\n")
    first = project.cli("snapshot")
    assert first.returncode == 0, first.stderr
    cache = project.root / ".jupyter_compute" / "cache"
    files = [p for p in cache.iterdir() if p.is_file()]
    assert files
    marker = project.root.parent / "pwned"
    for path in files:  # whatever the cache is, someone with write access replaces it
        path.write_bytes(pickle.dumps(_Payload(marker)))
    out = project.cli("submit", "t.py", "--wait")
    assert out.returncode == 0, out.stderr
    assert not marker.exists(), "the snapshot cache ran code from the workspace"
    for path in cache.iterdir():  # and garbage is ignored the same way
        path.write_bytes(b"{not json")
    out = project.cli("submit", "t.py", "--wait")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr


def test_a_cache_with_a_forged_digest_is_not_trusted(project: Project) -> None:
    script = project.write("t.py", "print('fine')\n")
    old = time.time() - 60  # past the racy window, so the cache vouches for t.py
    os.utime(script, (old, old))
    assert project.cli("snapshot").returncode == 0
    [path] = [p for p in (project.root / ".jupyter_compute" / "cache").iterdir()]
    text = path.read_text()
    digest = hashlib.sha256(b"print('fine')\n").hexdigest()
    assert digest in text
    path.write_text(text.replace(digest, "../../etc/passwd".ljust(64, "x")))
    out = project.cli("submit", "t.py", "--wait")
    assert out.returncode == 0, out.stderr
    run_id = _submitted(out)
    assert "fine" in project.cli("logs", run_id).stdout


# -- defect 12: concurrent attaches all land ------------------------------------------------


def _attach(args: tuple[str, str, Any]) -> None:
    root, name, barrier = args
    barrier.wait()
    api.attach(name, "local", workspace=root)


def test_twenty_concurrent_attaches_all_land(project: Project) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(20)
    names = [f"t{i:02d}" for i in range(20)]
    procs = [ctx.Process(target=_attach, args=((str(project.root), name, barrier),))
             for name in names]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 20
    data = yaml.safe_load((project.root / ".jupyter_compute" / "targets.yml").read_text())
    assert sorted(data["targets"]) == names
    out = project.cli("detach", "t07")
    assert out.returncode == 0, out.stderr
    assert "t07" not in api.targets(project.root) and "t08" in api.targets(project.root)


# -- defect 13: absurd offsets are a 400, not a 500 ----------------------------------------


Fetch = Callable[..., Any]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_compute.server": True}}}


@pytest.fixture
def call(jp_fetch: Callable[..., Coroutine[Any, Any, HTTPResponse]],
         jp_asyncio_loop: Any) -> Fetch:
    def fetch(*path: str, **kw: Any) -> tuple[int, Any]:
        try:
            resp = jp_asyncio_loop.run_until_complete(
                jp_fetch("jupyter-compute", "api", *path, **kw))
        except HTTPClientError as exc:
            assert exc.response is not None
            resp = exc.response
        return resp.code, json.loads(resp.body.decode())

    return fetch


OFFSETS = [
    ("99999999999999999999", "at most 9223372036854775807"),
    ("-99999999999999999999", "at least 0"),
    ("-1", "at least 0"),
    ("1e3", "whole number"),
    ("0x10", "whole number"),
    ("1_000", "whole number"),
    ("9" * 5000, "whole number"),
]


def test_out_of_range_offsets_are_a_400_with_json(call: Fetch, jp_root_dir: Path) -> None:
    (jp_root_dir / "t.py").write_text("print('x')\n")
    run = api.submit(jp_root_dir / "t.py", target="local", source_dir=jp_root_dir,
                     workspace=jp_root_dir, wait=True)
    for what in ("log", "metrics"):
        for offset, text in OFFSETS:
            status, body = call("runs", run.id, what, params={"offset": offset})
            assert status == 400, (what, offset[:30], body)
            assert set(body) == {"error", "message"} and text in body["message"], body
            assert len(body["message"]) < 200
        status, body = call("runs", run.id, what, params={"offset": "3"})
        assert status == 200 and body["offset"] == 3
