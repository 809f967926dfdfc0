"""The run folder's protocol: file names, the status enum, record formats.

This module travels to every target with ``agent.py`` and ``tracking.py``, so it
uses the standard library only and must import in well under a millisecond.
Everything that writes or reads a run folder — the agent on the target, the
tracking API inside the script, the client's ``Run`` handle — goes through the
names and helpers here, so the format is written down once::

    runs/<run-id>/
      spec.json       what to run (client → agent)
      manifest.json   the snapshot to materialize (path → [sha256, size, mode])
      status.json     lifecycle record, replaced atomically by the agent
      heartbeat       touched by the agent every few seconds (its mtime is the beat)
      output.log      stdout and stderr of the script, plus "[agent]" lines
      metrics.jsonl   one JSON record per line, appended by the tracking API
      cancel          present when someone asked the run to stop
      secrets         secret environment values (mode 0600), deleted by the agent on start
      outputs/        artifacts; the script's ./outputs points here
      workdir/        the materialized snapshot; the script's working directory
      ranks.json      a multi-rank run: which rank runs on which node (``ranks.py``)
"""

from __future__ import annotations

import _thread
import datetime as _dt
import enum
import itertools
import json
import os
import re  # json imports it already: free

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

SPEC = "spec.json"
MANIFEST = "manifest.json"
STATUS = "status.json"
HEARTBEAT = "heartbeat"
LOG = "output.log"
METRICS = "metrics.jsonl"
CANCEL = "cancel"
SECRETS = "secrets"
OUTPUTS = "outputs"
WORKDIR = "workdir"
RANKS = "ranks.json"

#: Environment variables the agent gives the script (read by ``tracking``).
ENV_RUN_ID = "JUPYTER_COMPUTE_RUN_ID"
ENV_RUN_DIR = "JUPYTER_COMPUTE_RUN_DIR"

HEARTBEAT_SECONDS = 2.0
#: A beat older than this means the agent is gone (used where no pid check is possible).
HEARTBEAT_TIMEOUT = 15.0
#: A run the agent never picked up is lost after this long.
START_TIMEOUT = 60.0


def agent_command(python: str, runtime: str, run_dir: str) -> list[str]:
    """How every target starts the agent on ``run_dir``: ``python`` imports it from the
    runtime folder ``runtime`` (the one holding ``jupyter_compute/``), so it runs from
    its cached bytecode. Named as a script (``python …/jupyter_compute/agent.py``), it
    would be compiled again on every start: ~8 ms of CPU per run. The folder comes
    through ``argv`` (no path quoted into code) and takes the place of ``-c``'s current
    folder on ``sys.path``.

    >>> agent_command("python3", "/w/runtime/0f1e", "/w/runs/r1")[3:]
    ['/w/runtime/0f1e', '/w/runs/r1']
    """
    return [python, "-c", AGENT_BOOT, runtime, run_dir]


#: The agent's ``-c`` code (``hostsession.py``, which travels alone, has its own copy).
AGENT_BOOT = ("import sys; sys.path[0] = sys.argv.pop(1); "
               "from jupyter_compute.agent import main; sys.exit(main())")


class RunStatus(str, enum.Enum):
    """Where a run is in its life: ``Queued → Preparing → Running → <terminal>``."""

    QUEUED = "Queued"
    PREPARING = "Preparing"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"
    TIMED_OUT = "TimedOut"

    def is_terminal(self) -> bool:
        """True once the run can no longer change (``Completed``, ``Failed``, …)."""
        return self in _TERMINAL

    def __str__(self) -> str:  # "Completed", never "RunStatus.COMPLETED"
        return self.value


_TERMINAL = {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED, RunStatus.TIMED_OUT}
#: The same, as the strings status.json holds (an Enum member does not hash as its value).
TERMINAL_STATUSES = frozenset(status.value for status in _TERMINAL)
#: How a sweep's policy words the reason it stopped a trial (the cancel file carries it;
#: the run ends Canceled with it as its error).
STOPPED_EARLY = "stopped early"


def early_stop_reason(status: str, error: str | None) -> str | None:
    """The policy's reason when a run was stopped early by its sweep, else None.

    >>> early_stop_reason("Canceled", "stopped early by bandit: 0.3 is below 0.5")
    'Stopped early by bandit: 0.3 is below 0.5'
    """
    if status != RunStatus.CANCELED.value or not error or \
            not error.lower().startswith(STOPPED_EARLY):
        return None
    return error[0].upper() + error[1:].strip().splitlines()[0]
#: How far along each status is; every terminal status shares the last rank.
STATUS_RANK = {RunStatus.QUEUED.value: 0, RunStatus.PREPARING.value: 1,
               RunStatus.RUNNING.value: 2, **{s: 3 for s in TERMINAL_STATUSES}}


def status_rank(status: str | None) -> int:
    """How far along ``status`` is: Queued 0 < Preparing 1 < Running 2 < terminal 3.

    None (no status yet) ranks below Queued; an unknown name ranks as Queued.
    """
    return -1 if status is None else STATUS_RANK.get(str(status), 0)


def advances(old: str | None, new: str) -> bool:
    """Whether a run at status ``old`` may move to ``new``: only forward, never out of
    a terminal status (so a stale reader cannot turn Completed back into Running).

    >>> advances("Running", "Completed"), advances("Completed", "Running")
    (True, False)
    """
    return status_rank(new) > status_rank(old)


def utcnow() -> str:
    """ISO-8601 UTC with microseconds: ``2026-11-26T09:31:02.123456+00:00``."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``: a reader sees the old or the new file, never half.

    The one atomic write of the project. The temporary file sits next to ``path``
    under a hidden name unique to this process, thread and call, so threads, forked
    processes and hosts sharing a folder never write into each other's temp file.
    ``mode`` is the new file's mode (less the umask). Not fsynced: a crash can lose
    the new content, never tear it.

    Example::

        >>> write_atomic("runs/x/cancel", b"")
    """
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}-{_thread.get_ident()}-{_TOKEN}-"
                               f"{next(_COUNTER)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


_TOKEN = os.urandom(4).hex()  # tells apart hosts (and pid namespaces) sharing a folder
_COUNTER = itertools.count()  # next() on it is atomic under the GIL


def write_json_atomic(path: str, data: Any, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically (see :func:`write_atomic`);
    private by default (0600): a run's spec and status are its owner's business."""
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"), mode)


def link_problem(link: str, root: str, folder: str = "the folder") -> str | None:
    """Why the symlink at ``link`` may not be kept in the folder ``root``, or None if it may.

    The one rule for symlinks in a snapshot, applied where a snapshot is taken and
    again where the agent materializes it: the link, fully resolved (every link in
    its chain followed, not its text compared), must land strictly inside ``root``
    (a real path) and not on itself or a folder that contains it — that is a loop
    (``dot -> .``, ``sub/up -> ..``) that walks forever. ``link``'s parent folders
    must not be symlinks (both callers make sure). ``folder`` names ``root`` in the
    message.

    Example::

        >>> link_problem("/src/sub/up", "/src")    # sub/up -> ..
        'it points at a folder that contains it (a loop)'
    """
    target = os.path.realpath(link)
    if not target.startswith(root.rstrip(os.sep) + os.sep):
        if target == root:
            return "it points at a folder that contains it (a loop)"
        return f"it points outside {folder}"
    if target == link or link.startswith(target + os.sep):
        return ("it points at itself (a loop)" if target == link
                else "it points at a folder that contains it (a loop)")
    return None


def read_json(path: str) -> Any:
    """The JSON in ``path``, or None when it does not exist (yet)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


# -- secrets -------------------------------------------------------------------------

#: What a secret's value shows as, wherever it is shown or stored.
SECRET_MASK = "***"
_SECRET_WORDS = ("TOKEN", "PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "KEY")


def is_secret_name(name: str) -> bool:
    """Whether environment variable ``name`` looks like it holds a secret.

    A word of the name (split at ``_``, ``-``, ``.`` and camelCase) is TOKEN, PASSWORD,
    PASSWD, PASSPHRASE, SECRET or KEY (or its plural), or a word ends in TOKEN,
    PASSWORD or SECRET, or in APIKEY/ACCESSKEY: ``API_TOKEN``, ``DB_PASSWORD``,
    ``AWS_SECRET_ACCESS_KEY``, ``githubToken``, ``OPENAI_APIKEY``. ``MONKEY`` and
    ``KEYBOARD_LAYOUT`` are not secrets.

    >>> is_secret_name("API_TOKEN"), is_secret_name("EPOCHS")
    (True, False)
    """
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    for word in re.split(r"[^A-Za-z0-9]+", spaced.upper()):
        stem = word[:-1] if word.endswith("S") else word
        if stem in _SECRET_WORDS or word.endswith(("APIKEY", "ACCESSKEY")) or \
                word.endswith(("TOKEN", "PASSWORD", "SECRET")):
            return True
    return False


def metric_record(name: str, value: Any, step: int | None = None, kind: str = "scalar",
                  time: float | None = None, rank: int | None = None) -> str:
    """One line of ``metrics.jsonl``: ``{"name", "value", "step", "time", "kind"}``.

    ``kind`` is ``scalar``, ``list``, ``row`` or ``image`` (value: path in outputs/),
    ``tag`` (value: the tag's value), ``param`` (a parameter the script logged) or
    ``progress`` (a notebook run's current cell: ``{"cell": k, "of": n, "source": first
    line}``). ``rank``: the rank of a multi-node run that logged it (absent otherwise).
    """
    import time as _time

    rec = {"name": name, "value": value, "step": step, "kind": kind,
           "time": _time.time() if time is None else time}
    if rank is not None:
        rec["rank"] = rank
    return json.dumps(rec, default=str) + "\n"


def whole_json_lines(data: bytes) -> tuple[list[Any], int]:
    """The JSON records in the whole lines of ``data``, and how many bytes they take.

    A line still being written (no newline yet) is left for the next read.
    """
    end = data.rfind(b"\n") + 1
    records = []
    for line in data[:end].splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records, end


#: Records that describe the run rather than measure it: not metrics.
NOT_METRICS = ("tag", "param", "progress")


def parse_metrics(data: bytes, kind: str | None = None, rank: int | None = 0
                  ) -> dict[str, list[dict[str, Any]]]:
    """Group ``metrics.jsonl`` records by name: ``{name: [{value, step, time, kind}]}``.

    By default the metrics; with ``kind="tag"`` (``"param"``, ``"progress"``) only those
    records. Of a multi-node run, rank 0's (``rank``), or with ``rank=None`` every rank's,
    each record keeping its ``rank``. A torn last line (still being written) is skipped.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for line in data.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rank is not None and rec.get("rank", rank) != rank:
            continue
        if rec.get("kind") == kind or kind is None and rec.get("kind") not in NOT_METRICS:
            out.setdefault(rec.pop("name"), []).append(rec)
    return out


# -- who is alive --------------------------------------------------------------------


def process_identity(pid: int, container: bool = False) -> dict[str, Any]:
    """What identifies process ``pid`` across pid reuse: pid, start time, boot, host.

    ``container``: the process runs in a container its launcher started, so its pid is
    the container's own (with host networking even the host name is the host's) and
    nobody outside can check it by pid: its heartbeat speaks for it.
    """
    ident: dict[str, Any] = {"pid": pid, "start_ticks": _start_ticks(pid),
                             "boot_id": _boot_id(), "host": os.uname().nodename}
    if container:
        ident["container"] = True
    return ident


def process_alive(ident: dict[str, Any]) -> bool | None:
    """Whether the process in ``ident`` still runs here: True, False, or None (unknown).

    None means this machine cannot tell (another host, no /proc); the caller then
    falls back to the heartbeat.
    """
    pid = ident.get("pid")
    if not pid or ident.get("container") or ident.get("host") != os.uname().nodename:
        return None
    boot = _boot_id()
    if boot is None or ident.get("boot_id") != boot:
        return None if boot is None else False
    state = _proc_stat(pid)
    if state is None:
        return False
    # A zombie has exited; PID 1 here is slow to reap, so treat 'Z' as gone.
    return state[0] != "Z" and state[1] == ident.get("start_ticks")


def parse_proc_stat(raw: str) -> tuple[str, int]:
    """``(state, start_ticks)`` from the text of a ``/proc/PID/stat`` file.

    The ssh target's helper on the host (``hostsession.process_alive``, which travels
    alone) reads it the same way, so liveness is decided alike everywhere.
    """
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may contain spaces
    return fields[0], int(fields[19])


def _proc_stat(pid: int) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    return parse_proc_stat(raw)


def _start_ticks(pid: int) -> int | None:
    st = _proc_stat(pid)
    return st[1] if st else None


_BOOT_ID: list[str | None] = []  # read once: it cannot change while this process lives


def _boot_id() -> str | None:
    if not _BOOT_ID:
        try:
            with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
                _BOOT_ID.append(f.read().strip())
        except OSError:
            _BOOT_ID.append(None)
    return _BOOT_ID[0]
