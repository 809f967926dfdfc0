"""The job-log transport: a run's folder carried home inside its Ray job's log.

Used when the cluster's nodes do not share a filesystem with the client (a remote
Ray cluster, KubeRay behind ``kubectl port-forward``). The run travels as the job's
``working_dir`` package (the runtime, the snapshot's manifest and blobs, and this
file as ``_jc_entry.py``); on the node this module's ``node_main`` writes the run
folder, starts the agent on it, and prints what the agent writes — ``output.log``
lines as they are (so ``ray job logs`` reads normally), and everything else as
control lines::

    \\x1ejc1 start {"run_dir": …, "host": …}
    \\x1ejc1 status {…status.json…}
    \\x1ejc1 metric {…one metrics.jsonl record…}
    \\x1ejc1 outputs {"data": "<base64 of a tar.gz chunk>"}
    \\x1ejc1 outputs-end {"bytes": …, "files": …}
    \\x1ejc1 end {"exit_code": …}

On the client, ``Mirror.feed`` (called by ``host.JobLogHost``) reads the job log
(``GET /api/jobs/ID/logs``) from where it stopped and rebuilds ``output.log``,
``metrics.jsonl``, ``status.json`` and ``outputs/`` in the workspace's run folder,
so a ``Run`` reads it like any other. A terminal status is sent only after the log,
the metrics and the outputs, so a reader that sees it has everything; a terminal
status already in the mirror (a run canceled before its agent started) is kept.

Standard library only, and no import of ``jupyter_compute`` at module level: on
the node this file runs on its own.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MARK = "\x1ejc1 "
SPEC_ENV = "JUPYTER_COMPUTE_RAY_RUN"
#: Where run folders go on a node (default: <tmp>/jupyter_compute-<uid>).
RUNS_ENV = "JUPYTER_COMPUTE_RAY_ROOT"
ENTRY = "_jc_entry.py"
#: Outputs larger than this (compressed) stay on the node: the job log is no file store.
MAX_OUTPUT_BYTES = 64 * 1024 * 1024
_CHUNK = 48 * 1024
_TERMINAL = ("Completed", "Failed", "Canceled", "TimedOut")
POLL = 0.05


# -- on the node -------------------------------------------------------------------------


def _emit(kind: str, payload: Any) -> None:
    line = f"{MARK}{kind} {json.dumps(payload, separators=(',', ':'))}\n"
    sys.stdout.buffer.write(line.encode())
    sys.stdout.buffer.flush()


class _Forwarder:
    """Prints what the agent appends to the run folder, in order, as it appears."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.offsets = {"output.log": 0, "metrics.jsonl": 0}
        self.partial = {"output.log": b"", "metrics.jsonl": b""}
        self.status_raw = b""

    def _new(self, name: str, final: bool) -> list[bytes]:
        try:
            with open(os.path.join(self.run_dir, name), "rb") as f:
                f.seek(self.offsets[name])
                data = f.read()
        except FileNotFoundError:
            return []
        self.offsets[name] += len(data)
        data = self.partial[name] + data
        lines = data.split(b"\n")
        self.partial[name] = b"" if final else lines.pop()
        if final and lines and lines[-1] == b"":
            lines.pop()
        return lines

    def log(self, final: bool = False) -> None:
        lines = self._new("output.log", final)
        if lines:
            out = sys.stdout.buffer
            for line in lines:
                # A log line that looks like a control line would be misread: escape it.
                out.write((b"\x1e" if line.startswith(b"\x1e") else b"") + line + b"\n")
            out.flush()

    def metrics(self, final: bool = False) -> None:
        for line in self._new("metrics.jsonl", final):
            try:
                _emit("metric", json.loads(line))
            except ValueError:
                continue

    def status(self, allow_terminal: bool) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.run_dir, "status.json"), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        try:
            st = json.loads(raw)
        except ValueError:
            return None
        if raw == self.status_raw or (st.get("status") in _TERMINAL and not allow_terminal):
            return st
        self.status_raw = raw
        _emit("status", st)
        return st


def _send_outputs(run_dir: str) -> None:
    folder = os.path.join(run_dir, "outputs")
    files = [os.path.join(root, n) for root, _, names in os.walk(folder) for n in names]
    if not files:
        return
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in files:
            tar.add(path, arcname=os.path.relpath(path, folder))
    data = buf.getvalue()
    if len(data) > MAX_OUTPUT_BYTES:
        sys.stdout.buffer.write(
            f"[agent] outputs/ ({len(data) / 1e6:.1f} MB compressed) is too large to come "
            f"back through the Ray job log (limit {MAX_OUTPUT_BYTES // 2**20} MiB); it stays "
            f"on the node in {folder}: write large files to shared storage\n".encode())
        return
    for at in range(0, len(data), _CHUNK):
        _emit("outputs", {"data": base64.b64encode(data[at:at + _CHUNK]).decode()})
    _emit("outputs-end", {"bytes": len(data), "files": len(files)})


def node_main() -> int:
    """The job's entrypoint on the node: ``python _jc_entry.py`` in the working_dir."""
    payload = json.loads(base64.b64decode(os.environ.pop(SPEC_ENV)))
    spec, status = payload["spec"], payload["status"]
    here = os.getcwd()  # the job's working_dir: runtime, _jc_entry.py, snapshot/
    root = os.environ.get(RUNS_ENV) or os.path.join(tempfile.gettempdir(),
                                                      f"jupyter_compute-{os.getuid()}")
    run_dir = os.path.join(root, "runs", spec["run_id"])
    os.makedirs(run_dir, exist_ok=True)
    spec.update(manifest=os.path.join(here, "snapshot", "manifest.json"),
                blobs=os.path.join(here, "snapshot", "blobs"),
                env_root=os.path.join(root, "envs"), pythonpath=[here])
    for name, data in (("spec.json", spec), ("status.json", status)):
        with open(os.path.join(run_dir, name), "w", encoding="utf-8") as f:
            json.dump(data, f)
    _emit("start", {"run_dir": run_dir, "host": os.uname().nodename, "pid": os.getpid()})
    from jupyter_compute.protocol import agent_command  # the runtime, beside this file

    with open(os.path.join(run_dir, "agent.out"), "wb") as out:
        agent = subprocess.Popen(agent_command(sys.executable, here, run_dir),
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=out)

    def on_stop(*_: Any) -> None:  # Ray's stop_job: the agent cancels, we keep forwarding
        try:
            agent.send_signal(signal.SIGTERM)
        except OSError:
            pass

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    fwd = _Forwarder(run_dir)
    while agent.poll() is None:
        fwd.log()
        fwd.metrics()
        fwd.status(allow_terminal=False)
        time.sleep(POLL)
    fwd.log(final=True)
    fwd.metrics(final=True)
    _send_outputs(run_dir)
    st = fwd.status(allow_terminal=True) or {}
    if st.get("status") not in _TERMINAL:  # the agent died before it could say so
        try:
            with open(os.path.join(run_dir, "agent.out"), "rb") as out_file:
                tail = out_file.read().decode(errors="replace").strip().splitlines()[-5:]
        except OSError:
            tail = []
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        st.update(status="Failed", ended=now, exit_code=None,
                  error="agent lost: the agent exited before the run ended"
                  + (": " + " | ".join(tail) if tail else ""))
        st.setdefault("history", []).append(["Failed", now])
        _emit("status", st)
    _emit("end", {"exit_code": agent.returncode})
    return 0 if st.get("status") == "Completed" else 1


# -- on the client -----------------------------------------------------------------------


class Mirror:
    """Rebuilds a run folder from its job log; call ``feed`` with the whole log each time.

    What was consumed is kept in ``.joblog.json`` in the run folder, so any process
    (under ``lock``) continues where the last one stopped.

    >>> m = Mirror(run_dir)
    >>> m.feed(jobs.logs(run_id), final=False)
    """

    STATE = ".joblog.json"

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.state: dict[str, Any] = {"consumed": 0, "started": False, "partial": "",
                                      "ended": False}
        try:
            with open(os.path.join(run_dir, self.STATE), encoding="utf-8") as f:
                self.state.update(json.load(f))
        except (FileNotFoundError, ValueError):
            pass

    def _p(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    @property
    def ended(self) -> bool:
        return bool(self.state["ended"])

    def feed(self, text: str, final: bool) -> bool:
        """Apply what ``text`` (the whole job log) has beyond the last feed; True if any."""
        new = text[self.state["consumed"]:]
        if not new and not (final and self.state["partial"]):
            return False
        self.state["consumed"] = len(text)
        lines = (self.state["partial"] + new).split("\n")
        self.state["partial"] = "" if final else lines.pop()
        if final and lines and lines[-1] == "":
            lines.pop()
        log: list[str] = []
        for line in lines:
            if line.startswith(MARK):
                self._flush(log)
                self._control(line[len(MARK):])
            elif self.state["started"] and not self.state["ended"]:
                log.append(line[1:] if line.startswith("\x1e\x1e") else line)
            else:  # Ray's own lines before our entrypoint ran (runtime env setup …)
                with open(self._p("ray-job.log"), "a", encoding="utf-8") as f:
                    f.write(line + "\n")
        self._flush(log)
        tmp = self._p(f".{self.STATE}.{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.state, f)
        os.replace(tmp, self._p(self.STATE))
        return True

    def _flush(self, log: list[str]) -> None:
        if log:
            with open(self._p("output.log"), "ab") as f:
                f.write("".join(line + "\n" for line in log).encode())
            log.clear()

    def _control(self, body: str) -> None:
        kind, _, raw = body.partition(" ")
        try:
            data = json.loads(raw)
        except ValueError:
            return
        if kind == "start":
            self.state["started"] = True
            self.state["node"] = data
        elif kind == "metric":
            with open(self._p("metrics.jsonl"), "ab") as f:
                f.write((json.dumps(data, default=str) + "\n").encode())
        elif kind == "status":
            if self._ended_here():
                return  # a terminal status is never replaced (a cancel before the start)
            tmp = self._p(f".status.json.{os.getpid()}")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(tmp, self._p("status.json"))
        elif kind == "outputs":
            with open(self._p(".outputs.tar.gz.part"), "ab") as f:
                f.write(base64.b64decode(data["data"]))
        elif kind == "outputs-end":
            self._unpack_outputs()
        elif kind == "end":
            self.state["ended"] = True

    def _ended_here(self) -> bool:
        try:
            with open(self._p("status.json"), encoding="utf-8") as f:
                return json.load(f).get("status") in _TERMINAL
        except (OSError, ValueError, AttributeError):
            return False

    def _unpack_outputs(self) -> None:
        part = self._p(".outputs.tar.gz.part")
        dest = os.path.realpath(self._p("outputs"))
        os.makedirs(dest, exist_ok=True)
        try:
            with tarfile.open(part, "r:gz") as tar:
                for member in tar.getmembers():
                    target = os.path.realpath(os.path.join(dest, member.name))
                    # Regular files inside outputs/ only: never a link, device or "../".
                    if not member.isfile() or not target.startswith(dest + os.sep):
                        continue
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    src = tar.extractfile(member)
                    if src is not None:
                        with open(target, "wb") as f:
                            f.write(src.read())
        finally:
            os.unlink(part)


if __name__ == "__main__":
    sys.exit(node_main())
