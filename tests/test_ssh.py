"""The ssh target against real OpenSSH servers on loopback (no mock SSH).

Two private sshd instances (tests/sshd.py) serve the whole session: ``host`` on
127.0.0.2 (keys only) and ``second`` on 127.0.0.3 (keys and passwords; re-keyed by
the changed-key test). Each test has its own workspace, so its own known_hosts and
its own pooled connection; the runs of a session share one remote workdir.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_compute import api  # noqa: E402
from jupyter_compute.exceptions import TargetError  # noqa: E402
from jupyter_compute.targets.ssh import SYNC_RECORD, HostKeyError, SSHTarget  # noqa: E402

import sshd
from conftest import CLI, Project

TRAIN = """
import json, sys
from jupyter_compute.tracking import get_run
run = get_run()
for step in range(3):
    print(f"step {step}", flush=True)
    run.log("loss", 1.0 / (step + 1), step=step)
print("to stderr", file=sys.stderr)
with open("outputs/result.txt", "w") as f:
    f.write("done")
with open("outputs/argv.json", "w") as f:
    json.dump(sys.argv[1:], f)
"""

# Spaces, quotes, command substitution, separators: each must arrive as one argument.
TRICKY = ["two words", "it's", 'say "hi"', "$(touch {canary})", "a; touch {canary}", "`id`",
          "--x=1", "\\back\\slash", "new\nline", "*"]


Server = sshd.Login  # one running sshd and what a test needs to attach it


@pytest.fixture(scope="session")
def keys() -> Iterator[dict[str, Path]]:
    reason = sshd.unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    # Not pytest's tmp dirs: those are 0700 root, and sshd reads authorized keys as
    # the user, so the folder must be traversable.
    root = Path(tempfile.mkdtemp(prefix="jc-sshd-"))
    root.chmod(0o755)
    sshd.ensure_user(sshd.USER)
    yield {"root": root, "good": sshd.make_key(root / "id_good"),
           "other": sshd.make_key(root / "id_other")}
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def host(keys: dict[str, Path]) -> Iterator[Server]:
    with sshd.SSHServer(keys["root"] / "a", "127.0.0.2") as server:
        server.authorize(sshd.USER, keys["good"])
        server.start()
        workdir = f"jc-test-{os.getpid()}"
        yield Server(server, keys["good"], f"~/{workdir}")
        for user in (sshd.USER, sshd.PASSWORD_USER):
            home = Path(os.path.expanduser(f"~{user}"))
            shutil.rmtree(home / workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def second(keys: dict[str, Path], host: Server) -> Iterator[Server]:
    with sshd.SSHServer(keys["root"] / "b", "127.0.0.3",
                        users=(sshd.USER, sshd.PASSWORD_USER), password_auth=True) as server:
        server.authorize(sshd.USER, keys["good"])
        server.start()
        yield Server(server, keys["good"], host.workdir)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Neither the user's known_hosts and keys nor an ssh-agent may decide a test.
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def cli(project: Project, *args: str, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real CLI, with no terminal on stdin (so it never prompts)."""
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=project.root, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def follow_in_thread(run: Any) -> tuple[list[str], list[BaseException], threading.Thread]:
    """Follow ``run`` on a daemon thread (it never hangs the session): the lines it
    yields, the error it raised (if any), and the thread, already started."""
    seen: list[str] = []
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            seen.extend(run.follow())
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    return seen, errors, follower


# -- a run end to end ----------------------------------------------------------------


def test_cli_unknown_key_is_refused_then_trusted_and_a_run_completes(
        project: Project, host: Server, tmp_path: Path) -> None:
    flags = host.flags(trust_host_key=None)
    line = one_line_error(cli(project, "attach", "vm", "--type", "ssh", *flags))
    assert "unknown host key" in line and host.sshd.fingerprint in line
    trust = re.search(r"--trust-host-key (SHA256:\S+)", line)
    assert trust and trust.group(1) == host.sshd.fingerprint

    wrong = cli(project, "attach", "vm", "--type", "ssh", *flags, "--trust-host-key",
                "SHA256:" + "A" * 43)
    assert "refusing" in one_line_error(wrong)

    out = cli(project, "attach", "vm", "--type", "ssh", *flags, *trust.group(0).split())
    assert out.returncode == 0, out.stderr
    known = (project.root / ".jupyter_compute" / "known_hosts").read_text()
    assert f"[127.0.0.2]:{host.port} ssh-ed25519 " in known

    canary = tmp_path / "pwned"
    tricky = [a.format(canary=canary) for a in TRICKY]
    project.write("train.py", TRAIN)
    out = cli(project, "submit", "train.py", "--target", "vm", "--wait", "--", *tricky)
    assert out.returncode == 0, out.stderr
    assert "step 0\nstep 1\nstep 2\n" in out.stdout and "to stderr" in out.stdout
    run_id = out.stderr.split()[1]
    assert out.stdout.rstrip().endswith(f"run {run_id} Completed")

    shown = json.loads(cli(project, "show", run_id, "--json").stdout)
    assert shown["status"] == "Completed" and shown["exit_code"] == 0
    assert shown["target"] == "vm"
    metrics = json.loads(cli(project, "metrics", run_id, "--json").stdout)
    assert [m["value"] for m in metrics["loss"]] == [1.0, 0.5, 1.0 / 3]
    assert "step 2" in cli(project, "logs", run_id).stdout
    outputs = project.run_dir(run_id) / "outputs"
    assert (outputs / "result.txt").read_text() == "done"
    assert json.loads((outputs / "argv.json").read_text()) == tricky
    assert not canary.exists()


def test_api_run_completes_with_metrics_outputs_and_arguments(
        project: Project, host: Server, tmp_path: Path) -> None:
    target = api.attach("vm", "ssh", **host.options())
    assert isinstance(target, SSHTarget)
    project.write("train.py", TRAIN)
    tricky = [a.format(canary=tmp_path / "pwned") for a in TRICKY]
    run = api.submit("train.py", target="vm", arguments=tricky)
    assert run.wait(timeout=60).value == "Completed"
    assert [m["value"] for m in run.metrics()["loss"]] == [1.0, 0.5, 1.0 / 3]
    assert "step 2" in run.log()
    names = {p.name for p in run.outputs()}
    assert names == {"result.txt", "argv.json"}
    local = project.run_dir(run.id) / "outputs"
    assert json.loads((local / "argv.json").read_text()) == tricky
    assert not (tmp_path / "pwned").exists()
    # the run's spec may hold its environment variables: the host's other users see nothing
    remote = Path(os.path.expanduser(f"~{sshd.USER}")) / host.workdir[2:] / "runs" / run.id
    assert remote.stat().st_mode & 0o777 == 0o700
    assert (remote / "spec.json").stat().st_mode & 0o777 == 0o600


def test_magic_run_on_the_ssh_target(project: Project, host: Server) -> None:
    from kernel import Kernel

    project.write("train.py", TRAIN)
    k = Kernel(project.root)
    try:
        assert k.run("%load_ext jupyter_compute").status == "ok"
        out = k.run(f"%compute attach vm --type ssh {' '.join(host.flags())}")
        assert out.status == "ok", out.error_text
        assert k.run("%submit train.py --target vm -o r").status == "ok"
        assert k.value("r.wait(timeout=60)") == "Completed"
        assert "step 2" in k.value("r.log()")
        assert k.value("sorted(p.name for p in r.outputs())") == "['argv.json', 'result.txt']"
    finally:
        k.shutdown()


# -- host keys -------------------------------------------------------------------------


def test_changed_host_key_is_refused_loudly(project: Project, second: Server) -> None:
    api.attach("b", "ssh", **second.options())
    old = second.sshd.fingerprint
    second.sshd.rekey()
    new = second.sshd.fingerprint
    project.write("hello.py", "print('hello')\n")
    line = one_line_error(cli(project, "submit", "hello.py", "--target", "b"))
    assert "HOST KEY CHANGED" in line and new in line and old in line
    # even asking to trust the new key does not replace a recorded one silently
    with pytest.raises(HostKeyError, match="HOST KEY CHANGED"):
        api.attach("b2", "ssh", **second.options(trust_host_key=new))


# -- connections -------------------------------------------------------------------------


@pytest.mark.parametrize("case, expected", [
    ("wrong user", "authentication as nosuchuser@"),
    ("wrong key", "authentication as jctest@"),
    ("unreachable port", "refused"),
    ("missing python", "no python at '/nonexistent/python3'"),
    ("unknown host", "cannot resolve host"),
])
def test_connection_failures_are_one_clear_line(project: Project, host: Server,
                                                case: str, expected: str) -> None:
    changes = {"wrong user": {"user": "nosuchuser"},
               "wrong key": {"key": str(host.key.with_name("id_other"))},
               "unreachable port": {"port": sshd.free_port("127.0.0.2")},
               "missing python": {"python": "/nonexistent/python3"},
               "unknown host": {"host": "no-such-host.invalid"}}[case]
    line = one_line_error(cli(project, "attach", "vm", "--type", "ssh",
                              *host.flags(**changes)))
    assert expected in line, line
    assert not (project.root / ".jupyter_compute" / "targets.yml").exists()


def test_password_from_env_never_written_and_clear_error_without_it(
        project: Project, second: Server) -> None:
    password = "pw-" + os.urandom(8).hex()
    sshd.ensure_user(sshd.PASSWORD_USER, password=password)
    flags = second.flags(user=sshd.PASSWORD_USER, key=None, password_env="JC_TEST_PASSWORD")
    out = cli(project, "attach", "pw", "--type", "ssh", *flags)
    assert "JC_TEST_PASSWORD" in one_line_error(out)  # not set, no terminal: no prompt

    out = cli(project, "attach", "pw", "--type", "ssh", *flags,
              env={"JC_TEST_PASSWORD": password})
    assert out.returncode == 0, out.stderr
    project.write("hello.py", "print('hello over a password')\n")
    out = cli(project, "submit", "hello.py", "--target", "pw", "--wait",
              env={"JC_TEST_PASSWORD": password})
    assert out.returncode == 0 and "hello over a password" in out.stdout, out.stderr
    for path in (project.root / ".jupyter_compute").rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path


def test_key_passphrase_from_env_or_a_terminal_prompt(project: Project, host: Server,
                                                      keys: dict[str, Path]) -> None:
    phrase = "phrase-" + os.urandom(6).hex()
    locked = keys["root"] / f"id_locked_{os.urandom(3).hex()}"
    sshd.make_key(locked, passphrase=phrase)
    host.sshd.authorize(sshd.USER, locked)
    flags = host.flags(key=str(locked), key_passphrase_env="JC_TEST_PASSPHRASE")
    assert "JC_TEST_PASSPHRASE" in one_line_error(cli(project, "attach", "vm", "--type",
                                                      "ssh", *flags))
    out = cli(project, "attach", "vm", "--type", "ssh", *flags,
              env={"JC_TEST_PASSPHRASE": phrase})
    assert out.returncode == 0, out.stderr

    # On a terminal, with the variable unset, it asks instead (and echoes nothing).
    import pexpect
    child = pexpect.spawn(CLI, ["attach", "vm2", "--type", "ssh", *flags], cwd=str(project.root),
                          env=dict(os.environ), timeout=30, encoding="utf-8")
    child.expect("passphrase for key")
    child.sendline(phrase)
    child.expect("attached vm2")
    assert phrase not in (child.before or "")
    child.wait()
    for path in (project.root / ".jupyter_compute").rglob("*"):
        if path.is_file():
            assert phrase.encode() not in path.read_bytes(), path


def test_ssh_agent_authenticates_without_a_key_option(
        project: Project, host: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        subprocess.run(["ssh-add", "-q", str(host.key)], check=True, capture_output=True,
                       env={**os.environ, "SSH_AUTH_SOCK": str(sock)})
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        api.attach("vm", "ssh", **host.options(key=None))
        project.write("hello.py", "print('hello via the agent')\n")
        run = api.submit("hello.py", target="vm")
        assert run.wait(timeout=60).value == "Completed"
        assert "hello via the agent" in run.log()
    finally:
        agent.terminate()
        agent.wait()


# -- surviving the network ---------------------------------------------------------------


COUNT = """
import time
from jupyter_compute.tracking import get_run
run = get_run()
for i in range(40):
    print(i, flush=True)
    run.log("i", i, step=i)
    time.sleep(0.1)
"""


def test_disconnect_mid_run_loses_and_repeats_no_line(project: Project, host: Server) -> None:
    api.attach("vm", "ssh", **host.options())
    project.write("count.py", COUNT)
    run = api.submit("count.py", target="vm")
    seen, errors, follower = follow_in_thread(run)
    deadline = time.monotonic() + 30
    while "8\n" not in seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "8\n" in seen, (seen, errors)

    host.sshd.stop()  # the host's sshd goes down, taking our connection with it
    try:
        # what arrived before the link went (pushed until sshd's sessions were gone; on
        # a busy machine what was in flight may still be read for a moment)
        fetched, settled = [], time.monotonic() + 1.0
        deadline = time.monotonic() + 15
        while time.monotonic() < min(settled, deadline):
            now = [m["value"] for m in run.metrics().get("i", [])]
            if now != fetched:
                fetched, settled = now, time.monotonic() + 1.0
            time.sleep(0.05)
        assert fetched and fetched == list(range(len(fetched)))
        # what was fetched stays readable, and nothing is declared lost
        logs = cli(project, "logs", run.id)
        assert logs.returncode == 0 and "8\n" in logs.stdout, logs.stderr
        shown = cli(project, "show", run.id, "--json")
        assert json.loads(shown.stdout)["status"] == "Running", shown.stderr
        metrics = json.loads(cli(project, "metrics", run.id, "--json").stdout)
        assert [m["value"] for m in metrics["i"]] == fetched == list(range(len(fetched)))
    finally:
        host.sshd.start()

    follower.join(timeout=60)
    assert not follower.is_alive() and not errors, errors
    numbers = [line for line in seen if not line.startswith("[agent]")]
    assert numbers == [f"{i}\n" for i in range(40)]
    assert run.status().value == "Completed"
    assert run.target.host.conn.connects >= 2  # it did reconnect
    mirror = (project.run_dir(run.id) / "output.log").read_text().splitlines()
    assert [n for n in mirror if not n.startswith("[agent]")] == [str(i) for i in range(40)]

    host.sshd.stop()  # a finished run reads entirely from the local copy
    try:
        logs = cli(project, "logs", run.id)
        assert logs.returncode == 0 and logs.stdout.splitlines()[-1] == "39", logs.stderr
        assert json.loads(cli(project, "show", run.id, "--json").stdout)["status"] == \
            "Completed"
        metrics = json.loads(cli(project, "metrics", run.id, "--json").stdout)
        assert [m["value"] for m in metrics["i"]] == list(range(40))
    finally:
        host.sshd.start()


CANCEL = """
import os, subprocess, sys, time
for _ in range(2):   # children, and one that escapes the process group
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(300)"])
print("ready", flush=True)
time.sleep(300)
"""


def test_cancel_leaves_no_process_on_the_host(project: Project, host: Server) -> None:
    api.attach("vm", "ssh", **host.options())
    project.write("tree.py", CANCEL)
    run = api.submit("tree.py", target="vm")
    for line in run.follow():
        if line.startswith("ready"):
            break
    assert len(sshd.processes_of_run(sshd.USER, run.id)) >= 5  # agent, script, 3 children
    t0 = time.monotonic()
    out = cli(project, "cancel", run.id)
    assert out.returncode == 0 and "Canceled" in out.stdout, (out.stdout, out.stderr)
    while (left := sshd.processes_of_run(sshd.USER, run.id)) and time.monotonic() - t0 < 5:
        time.sleep(0.05)
    assert left == [] and time.monotonic() - t0 < 5, left
    assert run.status().value == "Canceled"


def test_killed_agent_becomes_failed_and_its_script_ends(project: Project,
                                                         host: Server) -> None:
    api.attach("vm", "ssh", **host.options())
    project.write("slow.py", "import time\nprint('start', flush=True)\ntime.sleep(60)\n")
    run = api.submit("slow.py", target="vm")
    for line in run.follow():
        if line.startswith("start"):
            break
    status = json.loads((project.run_dir(run.id) / "status.json").read_text())
    os.kill(status["agent"]["pid"], 9)  # the host is this machine: end it as the OOM killer would
    t0 = time.monotonic()
    shown = json.loads(cli(project, "show", run.id, "--json").stdout)
    assert shown["status"] == "Failed" and "agent lost" in shown["error"]
    while sshd.processes_of_run(sshd.USER, run.id) and time.monotonic() - t0 < 5:
        time.sleep(0.05)
    assert sshd.processes_of_run(sshd.USER, run.id) == []


def test_the_agent_lost_rule_reads_the_heartbeat_by_the_hosts_clock(
        project: Project, host: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's clock an hour off either way (patched in this process only: the
    host's helper and agent run under sshd with the real one) changes nothing: the
    heartbeat's age is the host's answer, and a running run is not called lost."""
    api.attach("vm", "ssh", **host.options())
    project.write("slow.py", "import time\nprint('start', flush=True)\ntime.sleep(60)\n")
    run = api.submit("slow.py", target="vm")
    for line in run.follow():
        if line.startswith("start"):
            break
    ssh_host = run.target.host  # type: ignore[attr-defined]
    real = time.time
    for skew in (3600.0, -3600.0):
        monkeypatch.setattr(time, "time", lambda skew=skew: real() + skew)
        asked = ssh_host.session.request("beat", {"run": run.id})[0]["age"]
        assert asked is not None and 0 <= asked < 30, asked
        assert ssh_host.heartbeat_age(run.id) < 30
        assert run.status().value == "Running", run.record.error
    monkeypatch.setattr(time, "time", real)
    run.cancel()
    assert run.wait(timeout=60).value == "Canceled"


# -- sync ----------------------------------------------------------------------------------


def sync_record(project: Project, run_id: str) -> dict[str, int]:
    """What the submit of ``run_id`` sent, as it keeps it in the local run folder."""
    record: dict[str, int] = json.loads((project.run_dir(run_id) / SYNC_RECORD).read_text())
    return record


def test_resubmit_sends_only_the_changed_file(project: Project, host: Server) -> None:
    api.attach("vm", "ssh", **host.options())
    for i in range(50):
        (project.root / "data").mkdir(exist_ok=True)
        (project.root / "data" / f"part{i:02}.bin").write_bytes(os.urandom(1_000_000))
    small = project.root / "small.txt"
    small.write_bytes(os.urandom(512).hex().encode())  # 1 KB
    project.write("check.py", "print(open('small.txt').read()[:16])\n")

    first = api.submit("check.py", target="vm")
    sent = sync_record(project, first.id)
    assert sent["blob_bytes"] >= 50_000_000
    assert first.wait(timeout=60).value == "Completed"

    small.write_bytes(os.urandom(512).hex().encode())
    second = api.submit("check.py", target="vm")
    sent = sync_record(project, second.id)
    manifest = (project.root / ".jupyter_compute" / "snapshots" /
                f"{second.record.snapshot['id']}.json").stat().st_size
    assert (sent["blobs_sent"], sent["blob_bytes"]) == (1, 1024)
    # the first manifest through the session goes whole (compressed); the host keeps it
    assert 0 < sent["manifest_bytes"] <= manifest and sent["runtime_bytes"] == 0
    assert sent["blobs_checked"] == 1  # the connection knew the host had the others
    # a warm host: one request to the helper session, which also starts the agent
    assert sent["channels"] == 0 and sent["round_trips"] == 1, sent
    assert second.wait(timeout=60).value == "Completed"
    assert small.read_text()[:16] in second.log()

    # again: now the manifest goes as the entries that changed against the host's copy
    small.write_bytes(os.urandom(512).hex().encode())
    third = api.submit("check.py", target="vm")
    sent = sync_record(project, third.id)
    assert (sent["blobs_sent"], sent["blob_bytes"]) == (1, 1024)
    assert sent["manifest_bytes"] < 600 < manifest, sent  # small.txt's entry and the head
    assert sent["channels"] == 0 and sent["round_trips"] == 1, sent
    assert third.wait(timeout=60).value == "Completed"
    assert small.read_text()[:16] in third.log()

    # a new process knows nothing: the host is asked, and still only one file goes
    small.write_bytes(os.urandom(512).hex().encode())
    out = cli(project, "submit", "check.py", "--target", "vm", "--wait")
    assert out.returncode == 0 and small.read_text()[:16] in out.stdout, out.stderr
    record = sync_record(project, out.stderr.split()[1])
    assert (record["blobs_sent"], record["blob_bytes"]) == (1, 1024)
    assert record["blobs_checked"] == 52  # 50 parts, small.txt, check.py


def test_requirements_environment_is_built_once_and_reused(project: Project,
                                                          host: Server) -> None:
    api.attach("vm", "ssh", **host.options())
    project.write("requirements.txt", f"# nothing to install ({os.urandom(4).hex()})\n")
    project.write("where.py", "import sys; print('prefix', sys.prefix)\n")
    logs = []
    for _ in range(2):
        run = api.submit("where.py", target="vm", requirements="requirements.txt")
        assert run.wait(timeout=120).value == "Completed", run.log()
        logs.append(run.log())
    assert "building environment" in logs[0]
    assert "reusing environment" in logs[1] and "building" not in logs[1]
    prefix = re.search(r"prefix (\S+)", logs[1])
    assert prefix and f"/{host.workdir[2:]}/envs/" in prefix.group(1)


def test_errors_are_target_errors(project: Project, host: Server) -> None:
    with pytest.raises(TargetError, match="refused") as info:
        api.attach("vm", "ssh", **host.options(port=sshd.free_port("127.0.0.2")))
    assert info.value.__cause__ is not None  # translated, with the paramiko error behind


# -- fetching outputs: the host names the files, this side decides where they go ---------


LINKS = """
import os, sys, time
os.makedirs("outputs/sub", exist_ok=True)
with open("outputs/sub/inner.txt", "w") as f:
    f.write("inner")
with open("outputs/plain.txt", "w") as f:
    f.write("plain")
os.symlink(sys.argv[1], "outputs/link.txt")   # links on the host to files outside
os.symlink(sys.argv[2], "outputs/linkdir")
print("ready", flush=True)
while not os.path.exists("go"):
    time.sleep(0.05)
"""


def test_output_fetch_never_writes_outside_the_local_outputs_folder(
        project: Project, host: Server, tmp_path: Path) -> None:
    api.attach("vm", "ssh", **host.options())
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("not an artifact")
    secret_file.chmod(0o644)
    tmp_path.chmod(0o755)  # readable by the host's user: the links would work there
    victim = tmp_path / "victim"
    victim.mkdir()
    project.write("links.py", LINKS)
    run = api.submit("links.py", target="vm", arguments=[str(secret_file), str(tmp_path)])
    for line in run.follow():
        if line.startswith("ready"):
            break
    # A link in the local outputs folder where the host has a folder of the same name.
    local = project.run_dir(run.id) / "outputs"
    local.mkdir(exist_ok=True)
    (local / "sub").symlink_to(victim)
    remote = Path(os.path.expanduser(f"~{sshd.USER}")) / host.workdir[2:] / "runs" / run.id
    (remote / "workdir" / "go").touch()  # the host is this machine: let the script end
    assert run.wait(timeout=60).value == "Completed", run.log()

    run.outputs()  # fetched
    names = sorted(os.path.relpath(os.path.join(d, n), local)
                   for d, dirs, files in os.walk(local) for n in dirs + files)
    assert names == ["plain.txt", "sub"], names
    assert (local / "plain.txt").read_text() == "plain"
    assert (local / "sub").is_symlink() and list(victim.iterdir()) == []
    assert secret_file.read_text() == "not an artifact"


def hostile_stream(files: dict[str, bytes]) -> bytes:
    """What a compromised host could send in place of the outputs stream (see
    ``hostsession.send_outputs``): OpenSSH's Python walking a real folder cannot name a
    file ``../x``, ``/abs`` or with a NUL; a host that lies can."""
    import struct

    out = b""
    for name, data in files.items():
        head = json.dumps([name, 1, 1]).encode()
        out += struct.pack(">I", len(head)) + head
        out += struct.pack(">IB", len(data), 0) + data + struct.pack(">IB", 0, 0)
    return out + struct.pack(">I", 0)


def test_output_names_from_the_host_are_checked(tmp_path: Path) -> None:
    import io

    from jupyter_compute.targets.ssh.transfer import receive_outputs

    outputs = tmp_path / "runs" / "r1" / "outputs"
    outputs.mkdir(parents=True)
    escaped = tmp_path / "absolute.txt"
    crafted = {str(escaped): b"x", "../up.txt": b"x", "../../up2.txt": b"x",
               "sub/../../../deep.txt": b"x", "nul\0.txt": b"x", "..": b"x", ".": b"x",
               "": b"x", "a\\..\\..\\b.txt": b"x", "sub//x.txt": b"x", "ok.txt": b"fine",
               "deeper/ok.txt": b"fine too"}
    written = receive_outputs(io.BytesIO(hostile_stream(crafted)), outputs)
    assert written == ["ok.txt", "deeper/ok.txt"]
    found = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert found == ["runs/r1/outputs/deeper/ok.txt", "runs/r1/outputs/ok.txt"], found
    assert (outputs / "ok.txt").read_bytes() == b"fine"


# -- a slow link ---------------------------------------------------------------------


def test_an_upload_longer_than_the_start_timeout_is_not_agent_lost(
        project: Project, host: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The defect: a run whose upload outlasted START_TIMEOUT (72 MB at 1 MB/s) was made
    Failed "agent lost" by any reader polling meanwhile, although it then completed.

    Scaled down: START_TIMEOUT is 2 s here and 5 MB go through a 1 MB/s link (~5 s),
    while a second reader (its own workspace object and target, as the sidebar's
    server has) polls every 0.2 s.
    """
    from netproxy import NetProxy

    from jupyter_compute import protocol
    from jupyter_compute.runs import Run
    from jupyter_compute.workspace import Workspace

    monkeypatch.setattr(protocol, "START_TIMEOUT", 2.0)
    project.write("train.py", "print('trained', flush=True)\n")
    (project.root / "data.bin").write_bytes(os.urandom(5_000_000))
    with NetProxy(host.sshd.address, host.port, rate=1_000_000) as link:
        api.attach("slow", "ssh", **host.options(host=link.host, port=link.port))
        submitted: dict[str, object] = {}

        def submit() -> None:
            try:
                submitted["run"] = api.submit("train.py", target="slow")
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                submitted["error"] = exc

        started = time.monotonic()
        thread = threading.Thread(target=submit)
        thread.start()
        seen: set[str] = set()
        while thread.is_alive():
            reader = Workspace(project.root)
            for record in reader.store.list(limit=5):
                seen.add(Run(record, reader).status().value)
            time.sleep(0.2)
        thread.join()
        uploading = time.monotonic() - started
        assert "error" not in submitted, submitted.get("error")
        run = submitted["run"]
        assert isinstance(run, Run)
        assert run.wait(timeout=120).value == "Completed", run.record.error
        assert uploading > 2 * protocol.START_TIMEOUT, uploading  # it really was slow
        assert "Failed" not in seen, seen
        # A fresh reader agrees, and the log is there.
        again = Run.get(run.id, Workspace(project.root))
        assert again.status().value == "Completed"
        assert "trained" in again.log()


# -- sync in one stream --------------------------------------------------------------------

HASHES = """
import hashlib, os
h = hashlib.sha256()
for folder, dirs, files in sorted(os.walk("data")):
    dirs.sort()
    for name in sorted(files):
        with open(os.path.join(folder, name), "rb") as f:
            h.update(name.encode() + f.read())
print("tree", h.hexdigest(), flush=True)
"""


def tree_hash(root: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            h.update(name.encode() + (Path(folder) / name).read_bytes())
    return h.hexdigest()


def remote_home(host: Server) -> Path:
    return Path(os.path.expanduser(f"~{sshd.USER}")) / host.workdir[2:]


def test_sync_of_500_files_over_a_50ms_link_costs_a_few_round_trips(
        project: Project, host: Server) -> None:
    """The defect: each missing blob was its own SFTP upload, several round trips per
    file (500 files took 80 s at 50 ms). Now the upload is one streamed request to the
    helper session, which the check's answer overlaps, however many files."""
    from netproxy import NetProxy

    project.write("hashes.py", HASHES)
    for i in range(500):
        # unique per test run, so the host lacks them all; half text (compressible)
        body = f"{os.urandom(8).hex()} line {i}\n" * 20 if i % 2 else os.urandom(200)
        path = project.root / "data" / f"d{i % 10}" / f"f{i:03}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body.encode() if isinstance(body, str) else body)
    with NetProxy(host.sshd.address, host.port, delay=0.025) as link:
        api.attach("far", "ssh", **host.options(host=link.host, port=link.port))
        run = api.submit("hashes.py", target="far")
        conn = run.target.host.conn  # type: ignore[attr-defined]
        record = sync_record(project, run.id)
        assert record["blobs_sent"] == 501 and record["blobs_checked"] == 501
        assert record["channels"] == 0 and record["round_trips"] <= 2, record
        assert record["sent_bytes"] < record["blob_bytes"]  # the text went compressed
        # the whole submit: the probe's channel and the helper's, which syncs and starts
        assert conn.channels <= 2, conn.channels
        assert run.wait(timeout=60).value == "Completed", run.log()
        conn.close()  # before the proxy goes
    assert f"tree {tree_hash(project.root / 'data')}" in run.log()


def test_a_blob_corrupted_on_the_way_is_refused_by_the_host(project: Project,
                                                             host: Server) -> None:
    """Bytes that do not match their sha256 never become a blob on the host: the file's
    copy in the local blob store is damaged after it was hashed (as a bad disk or a
    flipped bit on the way would), and the host says no, naming the file."""
    from jupyter_compute.snapshot import take_snapshot
    from jupyter_compute.targets.ssh.transfer import CorruptBlobError

    api.attach("vm", "ssh", **host.options())
    project.write("hello.py", "print(open('data.txt').read())\n")
    project.write("data.txt", f"payload {os.urandom(8).hex()}\n")
    snap = take_snapshot(project.root, project.root / ".jupyter_compute")
    digest = snap.files["data.txt"][0]
    blob = project.root / ".jupyter_compute" / "blobs" / "sha256" / digest[:2] / digest
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes().upper())  # same size, other bytes
    with pytest.raises(CorruptBlobError, match=r"data\.txt .*refused") as info:
        api.submit("hello.py", target="vm")
    assert str(blob) in str(info.value)
    stored = remote_home(host) / "blobs" / "sha256" / digest[:2]
    assert not (stored / digest).exists()
    assert [p.name for p in stored.glob(f"{digest}*")] == []  # no half-written temporary
    (failed,) = api.runs(limit=1)
    assert failed.status().value == "Failed" and "data.txt" in (failed.record.error or "")


def test_a_dropped_link_mid_upload_resumes_with_what_is_missing(
        project: Project, host: Server) -> None:
    """The link drops in the middle of a 3 MB upload at 1 MB/s: the submit reconnects,
    asks again what the host lacks, sends only that, and the run sees every byte."""
    from netproxy import NetProxy

    project.write("hashes.py", HASHES)
    for i in range(30):
        (project.root / "data").mkdir(exist_ok=True)
        (project.root / "data" / f"part{i:02}.bin").write_bytes(os.urandom(100_000))
    total = 30 * 100_000
    with NetProxy(host.sshd.address, host.port, delay=0.025, rate=1_000_000) as link:
        api.attach("slow", "ssh", **host.options(host=link.host, port=link.port))
        dropped = threading.Event()

        def drop_once() -> None:
            deadline = time.monotonic() + 60
            while link.bytes_forwarded < total // 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            link.drop()
            dropped.set()

        dropper = threading.Thread(target=drop_once, daemon=True)
        dropper.start()
        run = api.submit("hashes.py", target="slow")
        assert dropped.is_set()
        record = sync_record(project, run.id)
        assert record["attempts"] == 2, record
        assert 0 < record["blob_bytes"] < total * 0.8, record  # the rest, not all again
        conn = run.target.host.conn  # type: ignore[attr-defined]
        assert conn.connects == 2
        assert run.wait(timeout=60).value == "Completed", run.log()
        conn.close()  # before the proxy goes
    assert f"tree {tree_hash(project.root / 'data')}" in run.log()
    leftovers = [p for p in (remote_home(host) / "blobs" / "sha256").rglob("*.tmp-*")]
    assert leftovers == []


GROWING = """
import os, time
os.makedirs("outputs/sub", exist_ok=True)
with open("outputs/first.txt", "w") as f:
    f.write("first")
print("ready", flush=True)
while not os.path.exists("go"):
    time.sleep(0.05)
with open("outputs/sub/second.txt", "w") as f:
    f.write("second")
"""


def test_outputs_fetched_while_running_are_not_sent_again(project: Project,
                                                         host: Server) -> None:
    api.attach("vm", "ssh", **host.options())
    project.write("grow.py", GROWING)
    run = api.submit("grow.py", target="vm")
    for line in run.follow():
        if line.startswith("ready"):
            break
    assert [p.name for p in run.outputs()] == ["first.txt"]  # what is there so far
    local = project.run_dir(run.id) / "outputs"
    first = (local / "first.txt").stat()
    (remote_home(host) / "runs" / run.id / "workdir" / "go").touch()
    assert run.wait(timeout=60).value == "Completed", run.log()
    assert sorted(p.relative_to(local).as_posix() for p in run.outputs()) == \
        ["first.txt", "sub/second.txt"]
    assert (local / "sub" / "second.txt").read_text() == "second"
    assert (local / "first.txt").stat().st_ino == first.st_ino  # unchanged: not re-sent


# -- over a 50 ms link ---------------------------------------------------------------------

NUMBERED = """
import time
for i in range(200):
    print(f"line {i} {time.time():.6f}", flush=True)
    time.sleep(0.02)
"""


def test_a_link_dropped_mid_run_loses_and_repeats_no_line(project: Project,
                                                          host: Server) -> None:
    """Through a 50 ms link, the proxy drops every connection mid-run (twice): the
    follower reconnects and resumes at its byte offset, so its text and the local
    mirror have each of the 200 numbered lines exactly once, in order. The lines
    arrive through the helper session, which starts again after each drop and is
    watched again from the mirror's sizes."""
    from netproxy import NetProxy

    from jupyter_compute.targets.ssh.session import session

    project.write("numbered.py", NUMBERED)
    with NetProxy(host.sshd.address, host.port, delay=0.025) as link:
        api.attach("far", "ssh", **host.options(host=link.host, port=link.port))
        run = api.submit("numbered.py", target="far")
        seen, errors, follower = follow_in_thread(run)
        for mark in ("line 40 ", "line 120 "):
            deadline = time.monotonic() + 30
            while not any(s.startswith(mark) for s in seen) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert any(s.startswith(mark) for s in seen), (seen[-3:], errors)
            link.drop()
        follower.join(timeout=60)
        assert not follower.is_alive() and not errors, errors
        assert run.status().value == "Completed", run.record.error
        conn = run.target.host.conn  # type: ignore[attr-defined]
        assert conn.connects >= 3  # it did reconnect, after each drop
        assert session(conn).starts >= 3  # and started its helper session again each time
        conn.close()  # before the proxy goes
    numbers = [int(s.split()[1]) for s in seen if s.startswith("line ")]
    assert numbers == list(range(200))
    mirror = (project.run_dir(run.id) / "output.log").read_text().splitlines()
    assert [int(s.split()[1]) for s in mirror if s.startswith("line ")] == list(range(200))


def test_sync_follow_cancel_and_outputs_over_a_50ms_link(project: Project,
                                                          host: Server) -> None:
    """The whole round over a 50 ms link: a run is synced, followed to its line and
    canceled (Canceled within the grace and a few seconds, nothing left on the host);
    a second run's outputs come back."""
    from netproxy import NetProxy

    project.write("tree.py", CANCEL)
    project.write("train.py", TRAIN)
    with NetProxy(host.sshd.address, host.port, delay=0.025) as link:
        api.attach("far", "ssh", **host.options(host=link.host, port=link.port))
        run = api.submit("tree.py", target="far")
        for line in run.follow():
            if line.startswith("ready"):
                break
        assert len(sshd.processes_of_run(sshd.USER, run.id)) >= 5
        grace = float((run.record.spec or {}).get("cancel_grace_seconds", 3))
        t0 = time.monotonic()
        run.cancel()
        assert run.wait(timeout=grace + 5).value == "Canceled"
        while (left := sshd.processes_of_run(sshd.USER, run.id)) and \
                time.monotonic() - t0 < grace + 3:
            time.sleep(0.05)
        assert left == [] and time.monotonic() - t0 < grace + 3, left

        second = api.submit("train.py", arguments=["a b"], target="far")
        assert second.wait(timeout=60).value == "Completed", second.log()
        outputs = {p.name: p for p in second.outputs()}
        assert outputs["result.txt"].read_text() == "done"
        assert json.loads(outputs["argv.json"].read_text()) == ["a b"]
        assert "step 2" in second.log()
        second.target.host.conn.close()  # type: ignore[attr-defined]  # before the proxy goes


# -- one helper session per host -----------------------------------------------------------

WAITING = """
import os, time
print("waiting", flush=True)
while not os.path.exists({go!r}):
    time.sleep(0.05)
print("done", flush=True)
"""


def test_twenty_runs_followed_at_once_share_one_connection_quiet_when_idle(
        project: Project, host: Server) -> None:
    """20 runs on one host, each followed by its own thread, ride one SSH connection
    (the proxy accepts one) and one helper session; while none of them prints, the
    link carries nothing (the helper looks at the files on the host; nobody polls
    over the network). Then each follower gets its run's lines once."""
    from netproxy import NetProxy

    from jupyter_compute.targets.ssh.session import session

    go = remote_home(host) / f"go-{os.urandom(4).hex()}"
    project.write("wait.py", WAITING.format(go=str(go)))
    with NetProxy(host.sshd.address, host.port, delay=0.025) as link:
        api.attach("far", "ssh", **host.options(host=link.host, port=link.port))
        runs = [api.submit("wait.py", target="far") for _ in range(20)]
        followed = [follow_in_thread(run) for run in runs]
        deadline = time.monotonic() + 60
        while not all("waiting\n" in seen for seen, _e, _t in followed) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        assert all("waiting\n" in seen for seen, _e, _t in followed), \
            [(seen, errors) for seen, errors, _t in followed if "waiting\n" not in seen]
        time.sleep(0.5)  # the last answers and pushes settle
        before = link.bytes_forwarded
        time.sleep(1.0)
        idle = link.bytes_forwarded - before
        # nothing at all, but for an SSH keepalive that may fall in this second
        assert idle <= 200, idle
        conn = runs[0].target.host.conn  # type: ignore[attr-defined]
        assert link.connections == 1 and conn.connects == 1
        assert session(conn).starts == 1
        go.touch()
        for seen, errors, thread in followed:
            thread.join(timeout=60)
            assert not thread.is_alive() and not errors, errors
            assert [s for s in seen if not s.startswith("[agent]")] == ["waiting\n", "done\n"]
        assert all(run.status().value == "Completed" for run in runs)
        assert link.connections == 1
        conn.close()  # before the proxy goes
    go.unlink()


def test_status_cancel_and_outputs_go_through_the_session(project: Project,
                                                          host: Server) -> None:
    """After a submit, following a run, its status, canceling it and fetching another
    run's outputs use the helper session only: no new exec channel."""
    project.write("tree.py", CANCEL)
    project.write("train.py", TRAIN)
    api.attach("vm", "ssh", **host.options())
    run = api.submit("tree.py", target="vm")
    conn = run.target.host.conn  # type: ignore[attr-defined]
    second = api.submit("train.py", arguments=["x"], target="vm")
    channels = conn.channels
    for line in run.follow():
        if line.startswith("ready"):
            break
    # The script can print before its agent writes Running (a busy machine): the
    # session pushes that status a tick later.
    deadline = time.monotonic() + 5
    while run.status().value != "Running" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.status().value == "Running"
    run.cancel()
    assert run.wait(timeout=20).value == "Canceled"
    assert second.wait(timeout=60).value == "Completed", second.log()
    outputs = {p.name: p.read_text() for p in second.outputs()}
    assert outputs["result.txt"] == "done" and json.loads(outputs["argv.json"]) == ["x"]
    assert [m["value"] for m in second.metrics()["loss"]] == [1.0, 0.5, 1 / 3]
    assert conn.channels == channels  # (and the connection has no SFTP session at all)
    deadline = time.monotonic() + 5
    while sshd.processes_of_run(sshd.USER, run.id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sshd.processes_of_run(sshd.USER, run.id) == []


def test_a_file_changed_between_snapshot_and_upload_is_refused(project: Project,
                                                               host: Server) -> None:
    """A remote submit sends new files from the source folder, not from a local copy
    (writing thousands of local blobs cost more than the upload); only small ones are
    kept in memory as they were hashed. A larger file edited after it was hashed
    therefore arrives with other bytes: the host refuses it, and the error says to
    submit again. The link is held while the snapshot is taken, and the file changes
    before it is released."""
    from netproxy import NetProxy

    from jupyter_compute import snapshot
    from jupyter_compute.targets.ssh.transfer import CorruptBlobError

    project.write("hello.py", "print(open('data.txt').readline())\n")
    padding = "x" * snapshot._KEEP_FILE  # over the size the snapshot keeps in memory
    project.write("data.txt", f"first {os.urandom(8).hex()}\n{padding}")
    snapshots = project.root / ".jupyter_compute" / "snapshots"
    with NetProxy(host.sshd.address, host.port, delay=0.025) as link:
        target = api.attach("far", "ssh", **host.options(host=link.host, port=link.port))
        link.pause()
        failed: list[BaseException] = []

        def submit() -> None:
            try:
                api.submit("hello.py", target="far")
            except BaseException as exc:  # noqa: BLE001 - checked below
                failed.append(exc)

        thread = threading.Thread(target=submit, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not list(snapshots.glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert list(snapshots.glob("*.json")), "no snapshot was taken"
        project.write("data.txt", f"secnd {os.urandom(8).hex()}\n{padding}")  # other bytes
        link.resume()
        thread.join(timeout=60)
        assert not thread.is_alive()
        target.host.conn.close()  # type: ignore[attr-defined]  # before the proxy goes
    assert len(failed) == 1 and isinstance(failed[0], CorruptBlobError), failed
    assert "data.txt changed while it was being submitted" in str(failed[0])
    (run,) = api.runs(limit=1)
    assert run.status().value == "Failed" and "submit again" in (run.record.error or "")


def test_a_file_deleted_between_snapshot_and_upload_is_one_line(project: Project,
                                                                host: Server) -> None:
    """The same, the file deleted instead: the submit says which, not that the
    connection was lost, and the helper session goes on serving the next submit."""
    from netproxy import NetProxy

    from jupyter_compute import snapshot

    project.write("hello.py", "print('hello', flush=True)\n")
    project.write("data.txt", "x" * (snapshot._KEEP_FILE + 1))  # read when sent
    snapshots = project.root / ".jupyter_compute" / "snapshots"
    with NetProxy(host.sshd.address, host.port, delay=0.025) as link:
        target = api.attach("far", "ssh", **host.options(host=link.host, port=link.port))
        link.pause()
        failed: list[BaseException] = []

        def submit() -> None:
            try:
                api.submit("hello.py", target="far")
            except BaseException as exc:  # noqa: BLE001 - checked below
                failed.append(exc)

        thread = threading.Thread(target=submit, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not list(snapshots.glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.01)
        (project.root / "data.txt").unlink()
        link.resume()
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert len(failed) == 1 and isinstance(failed[0], TargetError), failed
        assert "data.txt was deleted while it was being submitted; submit again" in \
            str(failed[0])
        run = api.submit("hello.py", target="far")
        assert run.wait(timeout=60).value == "Completed", run.log()
        target.host.conn.close()  # type: ignore[attr-defined]  # before the proxy goes
