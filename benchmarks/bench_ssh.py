"""What does the ssh target cost over running the script by hand with paramiko?

Starts a private sshd on 127.0.0.2 (tests/sshd.py; needs root and openssh-server)
and measures, in the same session:

  first line   submit → first log line, against a bare paramiko
               ``exec_command("python3 script.py")`` → first stdout line; both on a
               warm connection (the target keeps one per process), and both cold (a
               new process: the CLI, against a bare connect + exec)
  resubmit     bytes sent over SFTP after one 1 KB file changed in a 50 MB
               snapshot, against that file's size and the whole snapshot

    python benchmarks/bench_ssh.py [--repeat 20] [--snapshot-mb 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import sshd  # noqa: E402

CLI = str(Path(sys.executable).with_name("jupyter-compute"))
SCRIPT = "print('hello', flush=True)\n"
# A fresh interpreter that imports paramiko, connects, execs and prints the first
# line: what the CLI's cold path is fairly compared with.
BARE_PROCESS = """
import sys, paramiko
host, port, user, key, known, command = sys.argv[1:]
client = paramiko.SSHClient()
client.load_host_keys(known)
client.connect(host, int(port), username=user, key_filename=key, look_for_keys=False,
               allow_agent=False)
_, out, _ = client.exec_command(command)
sys.stdout.write(out.readline())
sys.stdout.flush()
out.channel.recv_exit_status()
"""


def interleaved(fns: dict[str, Callable[[], float]], repeat: int) -> dict[str, list[float]]:
    """Each ``fn`` returns the seconds to its first line (it may clean up after that).

    Round-robin, so a busy machine slows every variant alike, not just the one that
    happened to run while it was busy.
    """
    for fn in fns.values():
        fn()  # warm caches: the blob store, the runtime on the host, the page cache
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            times[name].append(fn())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--snapshot-mb", type=int, default=50)
    args = parser.parse_args()
    reason = sshd.unavailable()
    if reason:
        sys.exit(f"bench_ssh: {reason}")

    import paramiko

    from jupyter_compute import api
    from jupyter_compute.targets.ssh import SYNC_RECORD

    def sent_by(run_id: str) -> dict[str, int]:
        """What a submit sent, as it records it in the local run folder."""
        record: dict[str, int] = json.loads(
            (project / ".jupyter_compute" / "runs" / run_id / SYNC_RECORD).read_text())
        return record

    root = Path(tempfile.mkdtemp(prefix="bench-ssh-"))
    root.chmod(0o755)  # sshd reads the authorized keys as the user
    sshd.ensure_user(sshd.USER)
    key = sshd.make_key(root / "id_ed25519")
    workdir = f"bench-ssh-{os.getpid()}"
    server = sshd.SSHServer(root / "sshd", "127.0.0.2")
    server.authorize(sshd.USER, key)
    server.start()
    try:
        project = root / "proj"
        (project / ".jupyter_compute").mkdir(parents=True)
        (project / "hello.py").write_text(SCRIPT)
        os.chdir(project)
        options = {"host": server.address, "port": server.port, "user": sshd.USER,
                   "key": str(key), "workdir": f"~/{workdir}",
                   "trust_host_key": server.fingerprint}
        api.attach("vm", "ssh", **options)

        def submit_first_line() -> float:
            t0 = time.perf_counter()
            run = api.submit("hello.py", target="vm")
            for line in run.follow():
                if not line.startswith("[agent]"):
                    break
            elapsed = time.perf_counter() - t0
            run.wait()
            return elapsed

        def cli_first_line() -> float:
            t0 = time.perf_counter()
            proc = subprocess.Popen([CLI, "submit", "hello.py", "--target", "vm", "--wait"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True)
            assert proc.stdout is not None
            for line in proc.stdout:
                if not line.startswith("[agent]"):
                    break
            elapsed = time.perf_counter() - t0
            proc.wait()
            return elapsed

        def process_first_line() -> float:
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-c", BARE_PROCESS, server.address,
                                     str(server.port), sshd.USER, str(key),
                                     str(project / ".jupyter_compute" / "known_hosts"),
                                     f"python3 {home_script}"],
                                    stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            proc.stdout.readline()
            elapsed = time.perf_counter() - t0
            proc.wait()
            return elapsed

        def connect() -> paramiko.SSHClient:
            client = paramiko.SSHClient()
            client.load_host_keys(str(project / ".jupyter_compute" / "known_hosts"))
            client.connect(server.address, server.port, username=sshd.USER,
                           key_filename=str(key), look_for_keys=False, allow_agent=False)
            return client

        bare = connect()
        home_script = f"{workdir}/hello.py"
        with bare.open_sftp() as sftp, sftp.open(home_script, "w") as f:
            f.write(SCRIPT)

        def paramiko_first_line(client: paramiko.SSHClient | None = None) -> float:
            t0 = time.perf_counter()
            own = client is None
            client = client or connect()
            _, stdout, _ = client.exec_command(f"python3 {home_script}")
            stdout.readline()
            elapsed = time.perf_counter() - t0
            stdout.channel.recv_exit_status()
            if own:
                client.close()
            return elapsed

        latency = interleaved({
            "warm: bare paramiko exec": lambda: paramiko_first_line(bare),
            "warm: API submit": submit_first_line,
            "cold: paramiko connect+exec": paramiko_first_line,
            "cold: new process, paramiko": process_first_line,
            "cold: CLI submit --wait": cli_first_line,
        }, args.repeat)
        bare.close()

        # -- resubmit after one file changed ------------------------------------------
        data = project / "data"
        data.mkdir()
        for i in range(args.snapshot_mb):
            (data / f"part{i:03}.bin").write_bytes(os.urandom(1_000_000))
        small = project / "small.txt"
        small.write_bytes(os.urandom(512).hex().encode())
        t0 = time.perf_counter()
        first = api.submit("hello.py", target="vm")
        first_seconds = time.perf_counter() - t0
        first_sent = sent_by(first.id)
        first.wait()
        small.write_bytes(os.urandom(512).hex().encode())
        transport = first.target.host.conn.client.get_transport()  # type: ignore[attr-defined]
        wire_before = _wire_bytes(transport)
        t0 = time.perf_counter()
        second = api.submit("hello.py", target="vm")
        second_seconds = time.perf_counter() - t0
        wire = _wire_bytes(transport) - wire_before
        sent = sent_by(second.id)
        second.wait()
        snapshot_bytes = second.record.snapshot["bytes"]
        changed = small.stat().st_size
    finally:
        server.stop()
        shutil.rmtree(Path(os.path.expanduser(f"~{sshd.USER}")) / workdir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)

    print(f"{'submit → first log line':<30} {'median':>9} {'p90':>9} {'overhead':>9}   "
          f"({args.repeat} runs)")
    baselines = {"warm": "warm: bare paramiko exec", "cold: CLI": "cold: new process, paramiko",
                 "cold": "cold: paramiko connect+exec"}
    for name, times in latency.items():
        base = statistics.median(latency[next(b for p, b in baselines.items()
                                              if name.startswith(p))])
        med = statistics.median(times)
        p90 = sorted(times)[int(0.9 * (len(times) - 1))]
        print(f"{name:<30} {med * 1000:8.1f}ms {p90 * 1000:8.1f}ms {(med - base) * 1000:+8.1f}ms")
    print()
    print(f"{'resubmit, one file changed':<30} {'bytes':>12}")
    rows = [
        ("snapshot (all files)", snapshot_bytes),
        ("first submit: blobs sent", first_sent["blob_bytes"]),
        ("changed file", changed),
        ("resubmit: blobs sent", sent["blob_bytes"]),
        ("resubmit: manifest", sent["manifest_bytes"]),
        ("resubmit: spec + status", sent["run_bytes"]),
        ("resubmit: all SFTP payload", sent["total"]),
        ("resubmit: SSH wire bytes", wire),
    ]
    for name, value in rows:
        print(f"{name:<30} {value:>12,}")
    print(f"\nresubmit blobs / changed file: {sent['blob_bytes'] / changed:.2f}x; all SFTP "
          f"payload / snapshot: {sent['total'] / snapshot_bytes:.5f}x; submit took "
          f"{first_seconds:.2f}s first, {second_seconds:.2f}s after the change")


def _wire_bytes(transport: object) -> int:
    """Bytes paramiko has written to the socket (a private counter; 0 if it moved)."""
    packetizer = getattr(transport, "packetizer", None)
    return int(getattr(packetizer, "_Packetizer__sent_bytes", 0))


if __name__ == "__main__":
    main()
