"""What does the ssh target cost over running the script by hand with paramiko?

Starts a private sshd on 127.0.0.2 (tests/sshd.py; needs root and openssh-server)
and measures, in the same session:

  first line   submit → first log line, against a bare paramiko
               ``exec_command("python3 script.py")`` → first stdout line; both on a
               warm connection (the target keeps one per process), and both cold (a
               new process: the CLI, against a bare connect + exec)
  resubmit     bytes sent after one 1 KB file changed in a 50 MB snapshot, against
               that file's size and the whole snapshot
  sync         a first submit of 5,000 files / 10 MB (half text, half random bytes),
               on a new connection, against ``rsync -a`` over ssh of the same tree to
               a new folder; through tests/netproxy.py at a 50 ms round trip (in a
               process of its own: in this one, the proxy's thread and the upload
               would fight for the GIL) and on loopback; then a resubmit after one
               1 KB file changed, against rsync of the same change (needs rsync:
               scripts/install-test-deps.sh)
  link         through tests/netproxy.py at a 50 ms round trip: submit → first log
               line against a bare paramiko exec of ``python3 -u t.py`` → first line
               (both on a warm connection through the same proxy; goal ≤ +3 round
               trips), and print → Run.follow() consumer, p95 over 100 lines (the
               script stamps each line with time.time(), the consumer compares it with
               its own clock: same machine; goal ≤ RTT + 100 ms); then 20 runs followed
               at once: connections opened and bytes over an idle second

    python benchmarks/bench_ssh.py [--repeat 20] [--snapshot-mb 50] [--sync-repeat 3]
                                   [--only sync|latency|link]
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


def first_line(target: str) -> float:
    """Seconds from ``submit`` to the script's first line of output, then wait it out."""
    from jupyter_compute import api

    t0 = time.perf_counter()
    run = api.submit("hello.py", target=target)
    for line in run.follow():
        if not line.startswith("[agent]"):
            break
    elapsed = time.perf_counter() - t0
    run.wait()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--snapshot-mb", type=int, default=50)
    parser.add_argument("--sync-repeat", type=int, default=3)
    parser.add_argument("--sync-files", type=int, default=5000)
    parser.add_argument("--only", choices=("sync", "latency", "link"))
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
        if args.only == "sync":
            sync_rows = bench_sync(project, server, key, workdir, options, args)
            print_sync(sync_rows, args)
            return
        if args.only == "link":
            print_link(bench_link(project, server, key, workdir, options, args), args)
            return

        def submit_first_line() -> float:
            return first_line("vm")

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
        sync_rows = None if args.only == "latency" else \
            bench_sync(project, server, key, workdir, options, args)
        link_rows = None if args.only == "latency" else \
            bench_link(project, server, key, workdir, options, args)
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
        ("resubmit: all payload", sent["total"]),
        ("resubmit: stream bytes", sent["sent_bytes"]),
        ("resubmit: round trips", sent["round_trips"]),
        ("resubmit: SSH wire bytes", wire),
    ]
    for name, value in rows:
        print(f"{name:<30} {value:>12,}")
    print(f"\nresubmit blobs / changed file: {sent['blob_bytes'] / changed:.2f}x; all "
          f"payload / snapshot: {sent['total'] / snapshot_bytes:.5f}x; submit took "
          f"{first_seconds:.2f}s first, {second_seconds:.2f}s after the change")
    print_sync(sync_rows, args)
    if link_rows:
        print_link(link_rows, args)


def write_tree(folder: Path, files: int, total: int) -> None:
    """``files`` files of ``total`` bytes in all, 100 to a folder: even ones text (as
    source code compresses), odd ones random bytes (as data does not); new content
    every call, so the host has none of it."""
    size = total // files
    salt = os.urandom(8).hex()
    for i in range(files):
        path = folder / f"d{i // 100:03}" / f"f{i:05}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i % 2:
            path.write_bytes(os.urandom(size))
        else:
            line = f"value_{i} = compute({salt!r}, {i}) + 1  # a line of code\n".encode()
            path.write_bytes((line * (size // len(line) + 1))[:size])


def bench_sync(project: Path, server: object, key: Path, workdir: str,
               options: dict[str, object], args: argparse.Namespace) -> dict[str, object]:
    """First submit (and sync alone) against rsync -a, at 50 ms and on loopback; then a
    resubmit after one 1 KB change at 50 ms against rsync of the same change."""
    from netproxy import ProxyProcess

    from jupyter_compute import api
    from jupyter_compute.targets.ssh import SYNC_RECORD

    tree = project / "tree"
    os.environ["JUPYTER_COMPUTE_SNAPSHOT_MAX_FILES"] = str(2 * args.sync_files)
    (project / "sync.py").write_text("print('synced', flush=True)\n")
    total = 10_000_000 * args.sync_files // 5000
    rows: dict[str, object] = {}
    home = Path(os.path.expanduser(f"~{sshd.USER}")) / workdir
    for link_name, delay in (("50 ms", 0.025), ("loopback", 0.0)):
        proxy = ProxyProcess(server.address, server.port, delay=delay).start()  # type: ignore[attr-defined]
        try:
            host, port = (proxy.host, proxy.port) if delay else (server.address, server.port)  # type: ignore[attr-defined]
            name = f"sync-{link_name.split()[0]}"
            api.attach(name, "ssh", **{**options, "host": host, "port": port})
            ssh = (f"ssh -p {port} -i {key} -o BatchMode=yes -o StrictHostKeyChecking=no "
                   f"-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")

            def rsync(dest: str, ssh: str = ssh, host: str = host) -> float:
                t0 = time.perf_counter()
                subprocess.run(["rsync", "-a", "-e", ssh, f"{tree}/",
                                f"{sshd.USER}@{host}:{workdir}/{dest}/"], check=True)
                return time.perf_counter() - t0

            def submit(name: str = name) -> tuple[float, dict[str, float]]:
                from jupyter_compute.targets.ssh.connection import close_all

                close_all()  # a new connection, as rsync's ssh makes one
                t0 = time.perf_counter()
                run = api.submit("sync.py", target=name)
                elapsed = time.perf_counter() - t0
                record = json.loads((project / ".jupyter_compute" / "runs" / run.id /
                                     SYNC_RECORD).read_text())
                run.wait()
                return elapsed, record

            times: dict[str, list[float]] = {"rsync -a": [], "submit": [], "sync": []}
            records = []
            for rep in range(args.sync_repeat + 1):  # the first is a warm-up
                shutil.rmtree(tree, ignore_errors=True)
                write_tree(tree, args.sync_files, total)
                # alternate who goes first: the page cache favours neither
                order = ("rsync", "submit") if rep % 2 else ("submit", "rsync")
                for who in order:
                    if who == "rsync":
                        took = rsync(f"rsync-{link_name.split()[0]}-{rep}")
                        if rep:
                            times["rsync -a"].append(took)
                    else:
                        took, record = submit()
                        if rep:
                            times["submit"].append(took)
                            times["sync"].append(record["seconds"])
                            records.append(record)
            rows[link_name] = (times, records)
            if delay:  # a resubmit after one 1 KB change, on the warm connection
                changed = tree / "d000" / "f00000.txt"
                resub: dict[str, list[float]] = {"rsync -a": [], "submit": [], "sync": []}
                rrecords = []
                api.submit("sync.py", target=name).wait()
                rsync("rsync-resubmit")
                for _ in range(args.sync_repeat):
                    changed.write_bytes(os.urandom(512).hex().encode())
                    resub["rsync -a"].append(rsync("rsync-resubmit"))
                    t0 = time.perf_counter()
                    run = api.submit("sync.py", target=name)
                    resub["submit"].append(time.perf_counter() - t0)
                    record = json.loads((project / ".jupyter_compute" / "runs" / run.id /
                                         SYNC_RECORD).read_text())
                    resub["sync"].append(record["seconds"])
                    rrecords.append(record)
                    run.wait()
                rows["resubmit, 1 KB changed, 50 ms"] = (resub, rrecords)
        finally:
            from jupyter_compute.targets.ssh.connection import close_all

            close_all()
            proxy.close()
            for dest in home.glob("rsync-*"):
                shutil.rmtree(dest, ignore_errors=True)
    shutil.rmtree(tree, ignore_errors=True)
    return rows


def print_sync(rows: dict[str, object] | None, args: argparse.Namespace) -> None:
    if not rows:
        return
    print(f"\n{args.sync_files:,} files / {10 * args.sync_files / 5000:g} MB, "
          f"{args.sync_repeat} runs each, medians")
    print(f"{'link':<32} {'rsync -a':>9} {'submit':>9} {'sync':>9} {'submit/rsync':>13} "
          f"{'sync/rsync':>11} {'round trips':>12} {'sent':>12}")
    for name, (times, records) in rows.items():  # type: ignore[misc]
        med = {k: statistics.median(v) for k, v in times.items()}
        trips = statistics.median(r["round_trips"] for r in records)
        sent = statistics.median(r["sent_bytes"] for r in records)
        print(f"{name:<32} {med['rsync -a']:8.2f}s {med['submit']:8.2f}s {med['sync']:8.2f}s "
              f"{med['submit'] / med['rsync -a']:12.2f}x {med['sync'] / med['rsync -a']:10.2f}x "
              f"{trips:>12g} {sent:>12,.0f}")
        # each rep's rsync and submit ran back to back: their ratio shrugs off a machine
        # whose disk slows everything for a minute (other loads)
        pairs = sorted(b / a for a, b in zip(times["rsync -a"], times["submit"]))
        print(f"{'':<32} submit/rsync per rep: {', '.join(f'{r:.2f}x' for r in pairs)}"
              f" (median {statistics.median(pairs):.2f}x)")

STAMPED = """
import time
time.sleep(0.5)
for i in range({lines}):
    print(f"{{i}} {{time.time():.6f}}", flush=True)
    time.sleep(0.02)
"""


def bench_link(project: Path, server: object, key: Path, workdir: str,
               options: dict[str, object], args: argparse.Namespace) -> dict[str, object]:
    """Submit → first line and print → follower, through a 50 ms proxy (see the top)."""
    import paramiko
    from netproxy import NetProxy

    from jupyter_compute import api

    delay = 0.025
    lines = 100
    (project / "stamped.py").write_text(STAMPED.format(lines=lines))
    with NetProxy(server.address, server.port, delay=delay) as proxy:  # type: ignore[attr-defined]
        api.attach("link", "ssh", **{**options, "host": proxy.host, "port": proxy.port})
        bare = paramiko.SSHClient()
        bare.load_host_keys(str(project / ".jupyter_compute" / "known_hosts"))
        api.submit("hello.py", target="link").wait()  # known_hosts has the key now
        bare.load_host_keys(str(project / ".jupyter_compute" / "known_hosts"))
        bare.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # the proxy's address
        bare.connect(proxy.host, proxy.port, username=sshd.USER, key_filename=str(key),
                     look_for_keys=False, allow_agent=False)
        script = f"{workdir}/t.py"
        with bare.open_sftp() as sftp, sftp.open(script, "w") as f:
            f.write(SCRIPT)

        def bare_first_line() -> float:
            t0 = time.perf_counter()
            _, stdout, _ = bare.exec_command(f"python3 -u {script}")
            stdout.readline()
            elapsed = time.perf_counter() - t0
            stdout.channel.recv_exit_status()
            return elapsed

        def submit_first_line() -> float:
            return first_line("link")

        first = interleaved({"bare paramiko exec, 50 ms": bare_first_line,
                             "API submit, 50 ms": submit_first_line},
                            max(3, args.repeat // 2))
        bare.close()

        lags: list[float] = []
        run = api.submit("stamped.py", target="link")
        for line in run.follow():
            now = time.time()
            words = line.split()
            if len(words) == 2 and words[0].isdigit():
                lags.append(now - float(words[1]))
        run.wait()
        go = Path(os.path.expanduser(f"~{sshd.USER}")) / workdir / "go"
        many = followed_at_once(proxy, 20, go)
        run.target.host.conn.close()  # type: ignore[attr-defined]  # before the proxy goes
    return {"rtt": 2 * delay, "first": first, "lags": lags, "many": many}


def followed_at_once(proxy: object, count: int, go: Path) -> dict[str, float]:
    """``count`` runs that print a line and wait for the file ``go`` (on the host), each
    followed by its own thread: the SSH connections the proxy saw, and the bytes it
    carried over an idle second while all of them were followed."""
    import threading

    from jupyter_compute import api

    go.unlink(missing_ok=True)
    Path("idle.py").write_text(f"import os, time\nprint('a', flush=True)\n"
                               f"while not os.path.exists({str(go)!r}):\n    time.sleep(0.05)\n"
                               "print('b', flush=True)\n")
    before = proxy.connections  # type: ignore[attr-defined]
    runs = [api.submit("idle.py", target="link") for _ in range(count)]
    seen = [threading.Event() for _ in runs]

    def follow(run: object, event: threading.Event) -> None:
        for _line in run.follow():  # type: ignore[attr-defined]
            event.set()

    threads = [threading.Thread(target=follow, args=(r, e), daemon=True)
               for r, e in zip(runs, seen)]
    for t in threads:
        t.start()
    for e in seen:
        e.wait(30)
    time.sleep(0.3)
    start = proxy.bytes_forwarded  # type: ignore[attr-defined]
    time.sleep(1.0)
    idle = proxy.bytes_forwarded - start  # type: ignore[attr-defined]
    go.touch()
    for t in threads:
        t.join(60)
    go.unlink()
    return {"runs": count, "new connections": proxy.connections - before,  # type: ignore[attr-defined]
            "idle bytes/s": idle}


def print_link(rows: dict[str, object], args: argparse.Namespace) -> None:
    rtt: float = rows["rtt"]  # type: ignore[assignment]
    first: dict[str, list[float]] = rows["first"]  # type: ignore[assignment]
    lags: list[float] = sorted(rows["lags"])  # type: ignore[arg-type]
    n = len(next(iter(first.values())))
    print(f"\n{'through the proxy, RTT ' + format(rtt * 1000, '.0f') + ' ms':<30} "
          f"{'median':>9} {'p90':>9} {'overhead':>9}   ({n} runs)")
    base = statistics.median(first["bare paramiko exec, 50 ms"])
    for name, times in first.items():
        med = statistics.median(times)
        p90 = sorted(times)[int(0.9 * (len(times) - 1))]
        print(f"{name:<30} {med * 1000:8.1f}ms {p90 * 1000:8.1f}ms {(med - base) * 1000:+8.1f}ms")
    over = statistics.median(first["API submit, 50 ms"]) - base
    print(f"submit → first line overhead: {over / rtt:+.1f} round trips (goal ≤ +3)")
    p95 = lags[int(0.95 * (len(lags) - 1))]
    print(f"print → follower ({len(lags)} lines): median {statistics.median(lags) * 1000:.1f}"
          f" ms, p95 {p95 * 1000:.1f} ms, max {lags[-1] * 1000:.1f} ms (goal ≤ RTT + 100 ms "
          f"= {(rtt + 0.1) * 1000:.0f} ms)")
    many: dict[str, float] = rows["many"]  # type: ignore[assignment]
    print(f"{many['runs']:g} runs followed at once: {many['new connections']:g} SSH "
          f"connections opened beside the target's one, {many['idle bytes/s']:g} bytes over "
          "an idle second (goal: one connection, no per-run polling)")


def _wire_bytes(transport: object) -> int:
    """Bytes paramiko has written to the socket (a private counter; 0 if it moved)."""
    packetizer = getattr(transport, "packetizer", None)
    return int(getattr(packetizer, "_Packetizer__sent_bytes", 0))


if __name__ == "__main__":
    main()
