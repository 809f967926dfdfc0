"""The host's side of an SSH session: one long-lived helper per host and client.

The ssh target starts it once per connection (``python -c <this file> WORKDIR``,
over one exec channel) and talks to it over stdin and stdout. It serves every run
the client follows on that host, so 20 followed runs cost one helper, one channel
and no polling over the network: the helper looks at the run files here, where it
is cheap (``TICK``), and pushes what changed.

Every message either way is a header line and two payloads::

    <op> <id> <json bytes> <data bytes>\\n <json> <data>

except a streamed ``sync``, whose data length is ``*``: its frames follow, read as
they come until ``E`` (a first submit's megabytes are written while they arrive).

Client → helper (``id`` numbers the request; its answer carries it back):

    watch     {run, log, metrics}         push the run's log and metrics from these
                                          byte offsets, its status.json whenever it
                                          changes, and its agent's liveness
    unwatch   {run}
    read      {run, name, offset}         → data: the file from offset
    write     {run, name, mode} + data    replace the file atomically
    alive     {ident}                     → {alive}: True, False or None (can't tell)
    beat      {run}                       → {age}: seconds since the heartbeat, by
                                          this host's clock; None without one
    signal    {ident, signal, group}      if the process lives
    start     {run, runtime, python,      start that runtime's agent detached (with
               watch}                     this Python unless named); → {pid}; then
                                          watch the run from ``watch``'s offsets
    outputs   {run, have}                 → data: the outputs/ files this side lacks
    have      {runtime} + digests, one    → {missing, runtime}: the blobs this host
               a line                     lacks, and whether it lacks the runtime
    sync      {run, runtime, start} +     blobs and run files (frames: ``receive``;
               frames                     the manifest whole or as a change), then
                                          ``start`` if given

Helper → client: ``ok``/``err`` with the request's id, and pushes with id 0:
``data {run, name, at}`` + bytes (appended at offset ``at``), ``status {run}`` +
the whole file, ``live {run, alive, beat}`` when the agent's liveness changes.

For one run, bytes are pushed in file order and a log's new bytes before the status
that follows them, so a client that sees a terminal status already has the whole
log. The helper ends when its stdin closes (the connection dropped); the agents
it started live on in their own sessions.

Standard library only, one file: it travels as source and runs on any Python ≥ 3.9.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib

#: How often the watched files are looked at, in seconds (a few stat calls per run).
TICK = 0.02
#: How often the agents of watched runs are looked up in /proc.
ALIVE_EVERY = 0.5
#: At most this much of one file is pushed at once (a flood goes on at the next tick).
PUSH_MAX = 4 << 20
#: The heartbeat counts as stale after this long (the client's HEARTBEAT_TIMEOUT).
STALE_AFTER = 15.0
RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
NAME = re.compile(rb"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
DIGEST = re.compile(rb"[0-9a-f]{64}\Z")
APPENDED = ("output.log", "metrics.jsonl")
STATUS = "status.json"
HEARTBEAT = "heartbeat"
TERMINAL = ("Completed", "Failed", "Canceled", "TimedOut")
#: ``python -c AGENT_BOOT RUNTIME RUN``: protocol.agent_command's, which this file cannot
#: import (it travels alone); the agent runs from its cached bytecode.
AGENT_BOOT = ("import sys; sys.path[0] = sys.argv.pop(1); "
              "from jupyter_compute.agent import main; sys.exit(main())")
#: sh -c START sh ARGV…: the agent detached, its output in agent.out; its pid.
START = ('S=; command -v setsid >/dev/null 2>&1 && S=setsid; '
         '$S nohup "$@" </dev/null >agent.out 2>&1 & echo $!')


class Helper:
    def __init__(self, workdir, inp, out):
        self.workdir = os.path.abspath(os.path.expanduser(workdir))
        self.inp = inp
        self.out = out
        self.send_lock = threading.Lock()
        self.lock = threading.Lock()
        self.watches = {}

    # -- framing ------------------------------------------------------------------

    def send(self, op, ident, meta=None, data=b""):
        head = json.dumps(meta or {}).encode()
        with self.send_lock:
            self.out.write(b"%s %d %d %d\n" % (op.encode(), ident, len(head), len(data)))
            self.out.write(head)
            if data:
                self.out.write(data)
            self.out.flush()

    def exact(self, n):
        data = self.inp.read(n) if n else b""
        if len(data) != n:
            raise EOFError
        return data

    def serve(self):
        threading.Thread(target=self.watch_loop, daemon=True).start()
        while True:
            head = self.inp.readline().split()
            if not head:
                return  # stdin closed: the client went away
            op, ident = head[0].decode(), int(head[1])
            meta = json.loads(self.exact(int(head[2])) or b"{}")
            # a streamed sync's frames are read from stdin by the op itself
            data = self.inp if head[3] == b"*" and op == "sync" else self.exact(int(head[3]))
            try:
                meta_out, data_out = getattr(self, "op_" + op)(meta, data)
            except Exception as exc:  # noqa: BLE001 - the client shows it
                self.send("err", ident, {"error": f"{type(exc).__name__}: {exc}"})
            else:
                self.send("ok", ident, meta_out, data_out)

    # -- requests -----------------------------------------------------------------

    def run_dir(self, run):
        if not RUN_ID.match(run):
            raise ValueError(f"bad run id {run!r}")
        return os.path.join(self.workdir, "runs", run)

    def path(self, run, name):
        if not NAME.match(name.encode()):
            raise ValueError(f"bad file name {name!r}")
        return os.path.join(self.run_dir(run), name)

    def op_watch(self, meta, data):
        run = meta["run"]
        watch = Watch(self.run_dir(run), {n: int(meta.get(k, 0)) for n, k in (
            ("output.log", "log"), ("metrics.jsonl", "metrics"))})
        with self.lock:
            self.watches[run] = watch
            self.check(run, watch)  # the first push, before the answer: the client waits
        return {}, b""

    def op_unwatch(self, meta, data):
        with self.lock:
            self.watches.pop(meta["run"], None)
        return {}, b""

    def op_read(self, meta, data):
        try:
            with open(self.path(meta["run"], meta["name"]), "rb") as f:
                f.seek(int(meta.get("offset", 0)))
                return {"found": True}, f.read()
        except FileNotFoundError:
            return {"found": False}, b""

    def op_write(self, meta, data):
        write_atomic(self.path(meta["run"], meta["name"]), data, int(meta.get("mode", 0o600)))
        return {}, b""

    def op_alive(self, meta, data):
        return {"alive": process_alive(meta["ident"])}, b""

    def op_beat(self, meta, data):
        return {"age": beat_age(self.path(meta["run"], HEARTBEAT))}, b""

    def op_signal(self, meta, data):
        ident = meta["ident"]
        if process_alive(ident) and ident.get("pid"):
            kill = os.killpg if meta.get("group") else os.kill
            try:
                kill(int(ident["pid"]), getattr(signal, meta["signal"]))
            except OSError:
                pass
        return {}, b""

    def op_start(self, meta, data):
        """Start the agent of runtime ``runtime`` on the run, with ``python`` (default
        this one); then watch the run if ``watch`` (the offsets) is given."""
        run = self.run_dir(meta["run"])
        if not RUN_ID.match(meta["runtime"]):
            raise ValueError(f"bad runtime {meta['runtime']!r}")
        runtime = os.path.join(self.workdir, "runtime", meta["runtime"])
        # Through sh, in the background, in a session of its own (setsid) with SIGHUP
        # ignored (nohup): the agent is nobody's child here, so it outlives this
        # helper, the connection and sshd's sessions.
        started = subprocess.run(["sh", "-c", START, "sh", meta.get("python") or sys.executable,
                                  "-c", AGENT_BOOT, runtime, run], cwd=run,
                                 stdin=subprocess.DEVNULL,
                                 capture_output=True)
        if started.returncode:
            raise OSError(started.stderr.decode(errors="replace").strip() or "sh failed")
        if meta.get("watch"):
            self.op_watch(dict(meta["watch"], run=meta["run"]), b"")
        return {"pid": int(started.stdout.split()[-1])}, b""

    def op_outputs(self, meta, data):
        chunks = []
        send_outputs(os.path.join(self.run_dir(meta["run"]), "outputs"),
                     meta.get("have") or {}, chunks.append)
        return {}, b"".join(chunks)

    def op_have(self, meta, data):
        if not RUN_ID.match(meta["runtime"]):
            raise ValueError(f"bad runtime {meta['runtime']!r}")
        blobs = os.path.join(self.workdir, "blobs", "sha256")
        missing = [d.decode() for d in data.split() if DIGEST.match(d) and not
                   os.path.exists(os.path.join(blobs, d[:2].decode(), d.decode()))]
        package = os.path.join(self.workdir, "runtime", meta["runtime"], "jupyter_compute")
        return {"missing": missing,
                "runtime": not os.path.exists(os.path.join(package, "__init__.py"))}, b""

    def op_sync(self, meta, data):
        inp = BytesReader(data) if isinstance(data, bytes) else data
        try:  # a bad request still reads its frames to their end: the next one follows
            run = self.run_dir(meta["run"])
            if not RUN_ID.match(meta["runtime"]):
                raise ValueError(f"bad runtime {meta['runtime']!r}")
        except ValueError:
            receive(inp, None, None, None)
            raise
        runtime = os.path.join(self.workdir, "runtime", meta["runtime"])
        blobs, size = receive(inp, self.workdir, run, runtime)
        answer = {"blobs": blobs, "bytes": size}
        if meta.get("start") is not None:
            answer.update(self.op_start(dict(meta["start"], run=meta["run"],
                                             runtime=meta["runtime"]), b"")[0])
        return answer, b""

    # -- pushes ---------------------------------------------------------------------

    def watch_loop(self):
        while True:
            time.sleep(TICK)
            with self.lock:
                for run, watch in list(self.watches.items()):
                    try:
                        self.check(run, watch)
                    except OSError:
                        pass  # a file between writes, or the folder gone: next tick

    def check(self, run, watch):
        """Push what changed in ``run``: the status, log and metrics bytes.

        The status is read first, so the log read after it is at least as new. A status
        that is still live goes out first (a client that sees a line has the status
        its run had by then: Running, its agent); a terminal one goes out last, after
        every byte of the log, so a client that sees the end has the whole log."""
        status = watch.stat(STATUS)
        raw = None
        if status != watch.status_stamp:
            try:
                with open(watch.file(STATUS), "rb") as f:
                    raw = f.read()
            except FileNotFoundError:
                raw = b""
            if not _is_terminal(raw):
                self.push_status(run, watch, status, raw)
                raw = None
        capped = False
        for name in APPENDED:
            size = watch.size(name)
            if size > watch.sent[name]:
                capped = capped or size - watch.sent[name] > PUSH_MAX
                with open(watch.file(name), "rb") as f:
                    f.seek(watch.sent[name])
                    data = f.read(min(size - watch.sent[name], PUSH_MAX))
                if data:
                    self.send("data", 0, {"run": run, "name": name, "at": watch.sent[name]},
                              data)
                    watch.sent[name] += len(data)
        now = time.monotonic()
        if capped:
            raw = None  # a flood not all pushed yet: the status waits for the log's end
        if raw is not None:
            self.push_status(run, watch, status, raw)
            self.watches.pop(run, None)  # all of it is there now: the client needs no more
        elif now - watch.checked >= ALIVE_EVERY:
            watch.checked = now
            live = watch.liveness()
            if live != watch.live_sent:
                watch.live_sent = live
                self.send("live", 0, self.live(run, watch))

    def push_status(self, run, watch, stamp, raw):
        watch.status_stamp = stamp
        watch.learn(raw)
        watch.checked = time.monotonic()
        watch.live_sent = watch.liveness()  # about the agent this status names
        self.send("status", 0, dict(self.live(run, watch), run=run), raw)

    def live(self, run, watch):
        alive, stale = watch.live_sent
        return {"run": run, "alive": alive, "stale": stale,
                "beat": beat_age(watch.file(HEARTBEAT))}


class Watch:
    """What the client has of one run, and what the helper saw last."""

    def __init__(self, folder, offsets):
        self.folder = folder
        self.sent = offsets
        self.status_stamp = None
        self.agent = None
        self.terminal = False
        self.checked = 0.0
        self.live_sent = None

    def file(self, name):
        return os.path.join(self.folder, name)

    def stat(self, name):
        try:
            st = os.stat(self.file(name))
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def size(self, name):
        try:
            return os.stat(self.file(name)).st_size
        except FileNotFoundError:
            return 0

    def learn(self, raw):
        try:
            st = json.loads(raw)
        except ValueError:
            return
        if isinstance(st, dict):
            self.agent = st.get("agent")
            self.terminal = st.get("status") in TERMINAL

    def liveness(self):
        """(agent alive: True/False/None, heartbeat stale) as the client decides by it."""
        if self.terminal or not self.agent:
            return (None, False)
        alive = process_alive(self.agent)
        if alive is not None:
            return (alive, False)
        # no pid check possible (a container): the heartbeat, or without one the
        # status's last change, by this host's clock
        age = beat_age(self.file(HEARTBEAT))
        if age is None:
            age = beat_age(self.file(STATUS))
        return (None, age is not None and age > STALE_AFTER)


# -- the host's processes and files ---------------------------------------------------


def boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def process_alive(ident):
    """protocol.process_alive, here: True, False or None (another host, a container)."""
    pid = ident.get("pid")
    if not pid or ident.get("container") or ident.get("host") != os.uname().nodename:
        return None
    boot = boot_id()
    if boot is None or ident.get("boot_id") != boot:
        return None if boot is None else False
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return False
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0] != "Z" and int(fields[19]) == ident.get("start_ticks")


def beat_age(path):
    try:
        return time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return None


def _is_terminal(raw):
    try:
        st = json.loads(raw)
    except ValueError:  # empty (no status yet) or torn: not an end
        return False
    return isinstance(st, dict) and st.get("status") in TERMINAL


def write_atomic(path, data, mode):
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


class BytesReader:
    """``readline`` and ``read`` over bytes in memory (a sync's frames)."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def readline(self):
        end = self.data.find(b"\n", self.pos)
        end = len(self.data) if end < 0 else end + 1
        line, self.pos = self.data[self.pos:end], end
        return line

    def read(self, n):
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk


def receive(inp, workdir, run, runtime):
    """Write the frames on ``inp``; return (blobs written, their bytes) at ``E``::

        B <digest> <size> <z>\n <size bytes>          a blob (z: 1 if zlib-compressed),
                                                     checked against its sha256
        R <name> <size> <z>\n <size bytes>            a file of the runtime's package
        F <name> <size> <z> <mode>\n <size bytes>     a file of the run folder
        K <digest> <size> <z>\n <size bytes>          the run's manifest, whole (kept
                                                     as a blob)
        D <digest> <size> <z> <base>\n <size bytes>   the manifest as a change of blob
                                                     ``base`` (set, drop, head)
        E\n                                           the end

    A blob is written under a temporary name and renamed into place only when its
    sha256 matches, so it is whole and right or absent (one already here is replaced
    by the same bytes: a first submit may send before it knows what is here). After
    an error the frames are still read to ``E`` (the stream stays in step), then the
    first error is raised. ``workdir`` None: read them all, write nothing.
    """
    failed = None
    if workdir is None:
        failed = ValueError("nothing written")
    else:
        package = os.path.join(runtime, "jupyter_compute")
        os.makedirs(os.path.dirname(run), exist_ok=True)
        try:
            os.mkdir(run, 0o700)  # its spec may hold the run's environment variables
        except FileExistsError:
            pass
    made = set()

    def folder(path):
        if path not in made:
            os.makedirs(path, exist_ok=True)
            made.add(path)
        return path

    def blob_path(digest):
        return os.path.join(folder(os.path.join(workdir, "blobs", "sha256", digest[:2])),
                            digest)

    blobs = sent = 0
    while True:
        h = inp.readline().split()
        if not h:
            raise EOFError("the stream ended between files")
        kind = h[0]
        if kind == b"E":
            if failed is not None:
                raise failed
            return blobs, sent
        try:
            name, size, z = h[1], int(h[2]), h[3] == b"1"
        except (IndexError, ValueError):
            raise ValueError("bad frame " + repr(h[:2])) from None  # out of step: stop
        if failed is not None:
            skip(inp, size)
            continue
        try:
            if kind == b"B" and DIGEST.match(name):
                receive_file(inp, blob_path(name.decode()), size, z, 0o666, name.decode())
                blobs += 1
                sent += size
            elif kind == b"R" and NAME.match(name):
                receive_file(inp, os.path.join(folder(package), name.decode()), size, z,
                             0o666)
            elif kind == b"F" and NAME.match(name):
                receive_file(inp, os.path.join(run, name.decode()), size, z, int(h[4], 8))
            elif kind == b"K" and DIGEST.match(name):  # the manifest, whole: kept as a blob
                blob = blob_path(name.decode())
                receive_file(inp, blob, size, z, 0o666, name.decode())
                shutil.copyfile(blob, os.path.join(run, "manifest.json"))
            elif kind == b"D" and DIGEST.match(name) and DIGEST.match(h[4]):
                patch = json.loads(zlib.decompress(exact(inp, size)) if z else
                                   exact(inp, size))
                apply_manifest(blob_path(h[4].decode()), patch, name.decode(),
                               os.path.join(run, "manifest.json"))
            else:
                skip(inp, size)
                failed = ValueError("bad frame " + repr(h[:2]))
        except (Corrupt, NoBase, ValueError) as exc:
            failed = exc  # its bytes were read whole: the rest is read and dropped


def exact(inp, size):
    data = inp.read(size)
    if len(data) != size:
        raise EOFError("the stream ended in the middle of a file")
    return data


def skip(inp, size):
    while size:
        data = inp.read(min(size, 1 << 20))
        if not data:
            raise EOFError("the stream ended in the middle of a file")
        size -= len(data)


class Corrupt(Exception):
    """A blob's bytes did not match its sha256."""


class NoBase(Exception):
    """The manifest a change was made against is not here (the client sends it whole)."""


def apply_manifest(base, patch, digest, dest):
    """The manifest blob ``base`` with ``patch`` (set, drop, head) applied, checked against
    its sha256 ``digest`` (of its canonical JSON), kept as a blob and written to ``dest``."""
    try:
        with open(base, "rb") as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError):
        raise NoBase("no manifest " + os.path.basename(base)) from None
    for path in patch.get("drop", ()):
        files.pop(path, None)
    files.update(patch.get("set", {}))
    manifest = dict(patch.get("head", {}), files=files)
    data = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    if hashlib.sha256(data).hexdigest() != digest:
        raise Corrupt("corrupt manifest " + digest)
    blob = os.path.join(os.path.dirname(os.path.dirname(base)), digest[:2], digest)
    if not os.path.exists(blob):
        os.makedirs(os.path.dirname(blob), exist_ok=True)
        write_atomic(blob, data, 0o644)
    write_atomic(dest, data, 0o644)


#: The file being received under a temporary name, removed if the helper is ended
#: meanwhile (SIGHUP). An unnamed one (``unnamed_file``) needs no removing.
RECEIVING: list[str] = []
#: An fd of "/": ``os.link`` follows /proc/self/fd/N (linkat's AT_SYMLINK_FOLLOW) only
#: given a directory fd. None until probed; False where unnamed files cannot be named.
_NAMER: list = [None]


def unnamed_file(folder, mode):
    """An unnamed file in ``folder`` (O_TMPFILE), named by ``name_file`` once whole and
    checked: one directory operation where a temporary name costs two (its create and
    the rename; ~15 µs a file, and a first sync writes thousands), and nothing is left
    behind if the helper is killed midway. -1 where the system or file system cannot."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or _NAMER[0] is False:
        return -1
    try:
        fd = os.open(folder, os.O_WRONLY | flag, mode)
    except OSError:  # a file system without it (EOPNOTSUPP), an old kernel (EISDIR)
        return -1
    if _NAMER[0] is None:  # can one be named here (/proc mounted, linkat allowed)?
        probe = os.path.join(folder, f".probe-{os.getpid()}")
        try:
            _NAMER[0] = os.open("/", os.O_RDONLY)
            os.link(f"/proc/self/fd/{fd}", probe, src_dir_fd=_NAMER[0])
            os.unlink(probe)
            os.close(fd)  # a linked file cannot be linked again: a fresh one
            fd = os.open(folder, os.O_WRONLY | flag, mode)
        except OSError:
            _NAMER[0] = False
            os.close(fd)
            return -1
    return fd


def name_file(fd, dest, replace):
    """Give the unnamed file ``fd`` the name ``dest``, replacing a file there if
    ``replace`` (else one there is kept: a blob of the same bytes)."""
    try:
        os.link(f"/proc/self/fd/{fd}", dest, src_dir_fd=_NAMER[0])
    except FileExistsError:
        if replace:
            tmp = f"{dest}.tmp-{os.getpid()}"
            os.link(f"/proc/self/fd/{fd}", tmp, src_dir_fd=_NAMER[0])
            os.replace(tmp, dest)


def receive_file(inp, dest, size, z, mode, digest=None):
    """``size`` bytes of ``inp`` (zlib-compressed if ``z``) as the file ``dest``: whole
    and checked against ``digest`` (a sha256) when given, or absent."""
    h = hashlib.sha256() if digest else None
    unz = zlib.decompressobj() if z else None
    fd, tmp = unnamed_file(os.path.dirname(dest), mode), None
    if fd < 0:
        tmp = f"{dest}.tmp-{os.getpid()}"
        RECEIVING[:] = [tmp]
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    done = False
    try:
        left = size
        while left:
            data = inp.read(min(left, 1 << 20))
            if not data:
                raise EOFError("the stream ended in the middle of a file")
            left -= len(data)
            if unz is not None:
                data = unz.decompress(data)
            if h is not None:
                h.update(data)
            while data:
                data = data[os.write(fd, data):]
        if unz is not None:
            data = unz.flush()
            if h is not None:
                h.update(data)
            while data:
                data = data[os.write(fd, data):]
        if h is not None and h.hexdigest() != digest:
            raise Corrupt("corrupt " + digest)
        if tmp is None:
            name_file(fd, dest, replace=digest is None)
        else:
            os.rename(tmp, dest)
        done = True
    finally:
        os.close(fd)
        if tmp is not None:
            RECEIVING.clear()
            if not done:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


def send_outputs(root, have, write):
    """Frame the regular files under ``root`` that ``have`` ({name: [size, mtime]})
    lacks: >I header length, header JSON [name, mtime, atime]; chunks (>IB length,
    zlib flag), a zero length ending the file; a zero header ends all. Links are
    never followed."""

    def send(path, rel, st):
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return  # unreadable (the script made it so) or gone: not an artifact
        with os.fdopen(fd, "rb") as f:
            head = json.dumps([rel, st.st_mtime, st.st_atime]).encode()
            write(struct.pack(">I", len(head)) + head)
            while True:
                data = f.read(1 << 20)
                if not data:
                    break
                z = 0
                if len(data) > 256 and len(set(data[:256])) <= 128:  # not random-looking
                    packed = zlib.compress(data, 1)
                    if len(packed) < 0.9 * len(data):
                        data, z = packed, 1
                write(struct.pack(">IB", len(data), z) + data)
            write(struct.pack(">IB", 0, 0))

    def walk(folder, prefix):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return
        for name in names:
            path = os.path.join(folder, name)
            rel = prefix + name
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                walk(path, rel + "/")
            elif stat.S_ISREG(st.st_mode) and have.get(rel) != [st.st_size, int(st.st_mtime)]:
                send(path, rel, st)

    try:
        top = os.lstat(root)
    except OSError:
        top = None
    if top is not None and stat.S_ISDIR(top.st_mode):
        walk(root, "")
    write(struct.pack(">I", 0))


def hang_up(*_args):
    """The connection dropped: leave no half-received file, then end."""
    for tmp in list(RECEIVING):
        try:
            os.unlink(tmp)
        except OSError:
            pass
    os._exit(0)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGHUP, hang_up)
    try:
        Helper(argv[0], sys.stdin.buffer, sys.stdout.buffer).serve()
    except (EOFError, BrokenPipeError, ConnectionError):
        pass
    os._exit(0)  # the watcher thread is a daemon: end now, not at its next tick


if __name__ == "__main__":
    main()
