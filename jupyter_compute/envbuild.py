"""Build or reuse a run's Python environment, ON the target (standard library only).

The agent calls :func:`prepare` with the resolved environment of ``spec.json`` (see
``environments.resolve``: requirement lines, a python selector, shipped wheels). The
environment lives in ``<env_root>/<key>/``, where the key hashes the resolved spec,
the base interpreter and the platform, so runs, sweeps and pipeline steps that need
the same packages share one folder per host::

    <env_root>/<key>/           a virtualenv; ``.jc-complete`` is written last
    <env_root>/<key>.lock       flock: exclusive while building, shared while runs use it
    <env_root>/uv-cache/        uv's cache, shared by every build on the host
    <env_root>/uv-bin/<sha>/uv  a uv extracted from a shipped wheel

It is built with uv where uv can be found (on PATH, next to the interpreter, in the
agent's own Python, or shipped as a wheel), with ``python -m venv`` + pip otherwise;
the log names which one ran. Concurrent runs wait for one build. A folder without
``.jc-complete`` is a failed or interrupted build: it is removed, never used.

``python -m jupyter_compute.envbuild list|prune ENV_ROOT [--days N]`` prints JSON for
``jupyter compute envs``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

COMPLETE = ".jc-complete"
META = ".jc-env.json"
LAST_USED = ".jc-last-used"
UV_CACHE = "uv-cache"
UV_BIN = "uv-bin"
_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")


class BuildError(Exception):
    """A build that cannot succeed; its message is the one line the user sees."""


class Lease:
    """A shared lock on an environment, held for as long as a run uses it."""

    def __init__(self, fd: int, env_dir: str, python: str, key: str, reused: bool,
                 installer: str | None, seconds: float) -> None:
        self.fd, self.env_dir, self.python, self.key = fd, env_dir, python, key
        self.reused, self.installer, self.seconds = reused, installer, seconds

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def is_version(selector: str | None) -> bool:
    """``"3.11"`` selects an interpreter by version; anything else is a path."""
    return bool(selector) and bool(_VERSION.match(str(selector)))


def find_python(selector: str | None, default: str, uv: str | None = None) -> str:
    """The base interpreter: ``default`` for None, a path as given, or one of version X.Y
    (``pythonX.Y`` on PATH, else one uv knows, never downloaded)."""
    if not selector:
        return default
    if not is_version(selector):
        path = os.path.expanduser(selector)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            found = shutil.which(path)
            if not found:
                raise BuildError(f"python {selector} does not exist on this host; give the path "
                                 "of an installed interpreter")
            path = found
        return path
    major_minor = ".".join(selector.split(".")[:2])
    for candidate in (f"python{major_minor}", f"python{selector}"):
        found = shutil.which(candidate)
        if found and _version_of(found).startswith(selector):
            return found
    if _version_of(default).startswith(selector + ".") or _version_of(default) == selector:
        return default
    if uv:
        done = subprocess.run([uv, "python", "find", "--no-python-downloads", selector],
                              capture_output=True, text=True, env=_uv_env(None))
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[-1]
    raise BuildError(f"no Python {selector} on this host (looked for python{major_minor} on "
                     f"PATH{' and in uv' if uv else ''}); install it there or change the python "
                     "pin")


def _version_of(python: str) -> str:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def env_key(digest: str, python: str) -> str:
    """The environment's key: the resolved spec, the base interpreter, the platform."""
    real = os.path.realpath(python)
    try:
        st = os.stat(real)
        stamp = f"{st.st_size}:{int(st.st_mtime)}"
    except OSError:
        stamp = ""
    plat = f"{sys.platform}-{platform.machine()}"
    return hashlib.sha256("\0".join([digest, real, stamp, plat]).encode()).hexdigest()[:16]


# -- finding uv ---------------------------------------------------------------------------


def find_uv(env_root: str, blobs: str | None, uv_wheel: dict[str, str] | None,
            base_python: str) -> str | None:
    """A uv to build with: on PATH, beside an interpreter, in our Python, or shipped."""
    found = shutil.which("uv")
    if found:
        return found
    for python in (base_python, sys.executable):
        beside = os.path.join(os.path.dirname(python), "uv")
        if os.path.isfile(beside) and os.access(beside, os.X_OK):
            return beside
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found]

        return str(find_uv_bin())
    except Exception:  # noqa: BLE001 - not installed, or a broken install: look further
        pass
    if uv_wheel and blobs:
        (name, digest), = uv_wheel.items()
        return _extract_uv(env_root, os.path.join(blobs, "sha256", digest[:2], digest), digest)
    return None


def _extract_uv(env_root: str, wheel: str, digest: str) -> str | None:
    """The ``uv`` binary of a shipped uv wheel, extracted once per host."""
    import zipfile

    folder = os.path.join(env_root, UV_BIN, digest[:16])
    binary = os.path.join(folder, "uv")
    if os.path.isfile(binary):
        return binary
    try:
        with zipfile.ZipFile(wheel) as z:
            member = next((n for n in z.namelist()
                           if n.endswith("/scripts/uv") or n.endswith(".data/scripts/uv")), None)
            if member is None:
                return None
            os.makedirs(folder, exist_ok=True)
            tmp = f"{binary}.{os.getpid()}.tmp"
            with z.open(member) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.chmod(tmp, 0o755)
            os.replace(tmp, binary)
    except (OSError, zipfile.BadZipFile):
        return None
    return binary


def _uv_env(cache: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if cache:
        env["UV_CACHE_DIR"] = cache
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    env.setdefault("UV_NATIVE_TLS", "1")  # the host's trust store, as pip uses (a proxy's CA)
    env["UV_NO_PROGRESS"] = "1"
    env.pop("VIRTUAL_ENV", None)
    # uv does not read pip's settings: carry the index a user set for pip over to it
    for pip_name, uv_name in (("PIP_INDEX_URL", "UV_INDEX_URL"),
                              ("PIP_EXTRA_INDEX_URL", "UV_EXTRA_INDEX_URL"),
                              ("PIP_FIND_LINKS", "UV_FIND_LINKS")):
        if os.environ.get(pip_name) and not os.environ.get(uv_name):
            env[uv_name] = os.environ[pip_name]
    return env


# -- preparing ------------------------------------------------------------------------------


def prepare(env: dict[str, Any], *, default_python: str, env_root: str, blobs: str | None,
            cwd: str, say: Callable[[str], None], log_fd: int,
            stopped: Callable[[], bool] = lambda: False,
            progress: Callable[[str], None] | None = None) -> Lease | str:
    """The interpreter for a run: a plain one (returned as a path) when nothing is to be
    installed, else a :class:`Lease` on a built (or reused) environment.

    ``say`` writes a line to the run's log; ``progress`` (if given) shows what the build
    is doing now (``environment: 12/40 packages``) beside the run's status."""
    if progress is not None:
        plain_say = say

        def say(message: str) -> None:  # every build line is also the current progress
            plain_say(message)
            if message.startswith(("environment:", "building", "waiting")):
                progress(message)

    if env.get("provided"):  # the launcher's platform installed it (Ray's runtime_env)
        say(f"environment ({env.get('source')}): {env['provided']}")
        return default_python
    for notice in env.get("notices") or ():
        say(f"environment: {notice}")
    started = time.monotonic()
    installer = env.get("installer") or "auto"
    wants_uv = installer in ("auto", "uv")
    uv = find_uv(env_root, blobs, env.get("uv_wheel"), default_python) if wants_uv else None
    if installer == "uv" and uv is None:
        raise BuildError("installer uv was asked for, but no uv is on this host; install it "
                         "or use installer: auto")
    base = find_python(env.get("python"), default_python, uv)
    if not env.get("venv", bool(env.get("requirements") or env.get("wheels"))):
        return base  # an interpreter alone: nothing to build
    key = env_key(str(env.get("digest", "")), base)
    os.makedirs(env_root, mode=0o700, exist_ok=True)
    env_dir = os.path.join(env_root, key)
    python = os.path.join(env_dir, "bin", "python")
    source = env.get("source") or "the run's environment"
    fd = _lock(env_dir + ".lock", fcntl.LOCK_SH, say, key, stopped, quiet=True) \
        if os.path.exists(os.path.join(env_dir, COMPLETE)) else -1
    if fd >= 0 and os.path.exists(os.path.join(env_dir, COMPLETE)):
        _touch(os.path.join(env_dir, LAST_USED))
        say(f"reusing environment {key} ({source}) at {env_dir}")
        return Lease(fd, env_dir, python, key, True, None, time.monotonic() - started)
    if fd >= 0:
        os.close(fd)
    fd = _lock(env_dir + ".lock", fcntl.LOCK_EX, say, key, stopped)
    try:
        if os.path.exists(os.path.join(env_dir, COMPLETE)):
            say(f"reusing environment {key} ({source}), built by another run meanwhile")
            reused, used = True, None
        else:
            if os.path.lexists(env_dir):
                say(f"removing the unfinished build of environment {key} (a failed or "
                    "interrupted build is never reused)")
                shutil.rmtree(env_dir, ignore_errors=True)
            used = _build(env, base, env_dir, env_root, blobs, cwd, uv, say, log_fd, stopped)
            reused = False
        _touch(os.path.join(env_dir, LAST_USED))
        fcntl.flock(fd, fcntl.LOCK_SH)  # others may use it now; a pruner may not
    except BaseException:
        os.close(fd)
        raise
    seconds = time.monotonic() - started
    if not reused:
        say(f"environment {key} built with {used} in {seconds:.1f}s")
    return Lease(fd, env_dir, python, key, reused, used, seconds)


def _lock(path: str, kind: int, say: Callable[[str], None], key: str,
          stopped: Callable[[], bool], quiet: bool = False) -> int:
    """Open and flock ``path`` (waiting, and saying so once); the file must still be the
    one at ``path`` when locked (a pruner may have removed it meanwhile)."""
    waited = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.flock(fd, kind | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            if not waited and not quiet:
                say(f"waiting for the build of environment {key} (another run is building it)")
            waited = True
            if stopped():
                os.close(fd)
                raise BuildError("canceled while waiting for the environment build")
            time.sleep(0.1)
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _touch(path: str) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.utime(path)


def _build(env: dict[str, Any], base: str, env_dir: str, env_root: str, blobs: str | None,
           cwd: str, uv: str | None, say: Callable[[str], None], log_fd: int,
           stopped: Callable[[], bool]) -> str:
    """Build ``env_dir`` (removed again on any failure); return the installer's name."""
    started = time.monotonic()
    lines = list(env.get("requirements") or [])
    build = env_dir + ".build"
    shutil.rmtree(build, ignore_errors=True)
    os.makedirs(build, mode=0o700)
    wheels = env.get("wheels") or {}
    links = os.path.join(build, "wheels")
    if wheels:
        os.makedirs(links)
        for name, digest in wheels.items():
            if "/" in name or name.startswith("."):
                raise BuildError(f"refusing wheel name {name!r}")
            src = os.path.join(blobs or "", "sha256", digest[:2], digest)
            if not os.path.isfile(src):
                raise BuildError(f"wheel {name} did not reach this host (blob {digest[:12]} is "
                                 "missing)")
            try:
                os.link(src, os.path.join(links, name))
            except OSError:
                shutil.copyfile(src, os.path.join(links, name))
        # a wheel no line names is installed by its path; the others via --find-links
        lines += [os.path.join(links, name) for name in wheels if not _named_in(name, lines)]
    req = os.path.join(build, "requirements.txt")
    with open(req, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    extra = (["--find-links", links] if wheels else []) + (["--no-index"]
                                                          if env.get("no_index") else [])
    source = env.get("source") or "the run's environment"
    try:
        if uv:
            say(f"building environment {os.path.basename(env_dir)} from {source} with uv "
                f"({len(lines)} requirement{'s' if len(lines) != 1 else ''})")
            cache = os.path.join(env_root, UV_CACHE)
            uv_env = _uv_env(cache)
            _run([uv, "venv", "--quiet", "--python", base, env_dir], cwd, uv_env, log_fd, say,
                 stopped, "uv venv")
            if lines:
                _run([uv, "pip", "install", "--python", os.path.join(env_dir, "bin", "python"),
                      "-r", req, *extra], cwd, uv_env, log_fd, say, stopped,
                     "uv pip install", source)
            used = "uv"
        else:
            why = "installer: pip" if env.get("installer") == "pip" else "no uv on this host"
            say(f"building environment {os.path.basename(env_dir)} from {source} with pip "
                f"({why})")
            _run([base, "-m", "venv", env_dir], cwd, None, log_fd, say, stopped,
                 "python -m venv")
            if lines:
                _run([os.path.join(env_dir, "bin", "python"), "-m", "pip", "install",
                      "--disable-pip-version-check", "-r", req, *extra], cwd, None, log_fd,
                     say, stopped, "pip install", source)
            used = "pip"
        with open(os.path.join(env_dir, META), "w", encoding="utf-8") as f:
            json.dump({"key": os.path.basename(env_dir), "source": source, "python": base,
                       "installer": used, "requirements": lines,
                       "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "build_seconds": round(time.monotonic() - started, 3)}, f, indent=1)
        _touch(os.path.join(env_dir, COMPLETE))  # last: its presence says "usable"
    except BaseException:
        shutil.rmtree(env_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return used


def _named_in(wheel: str, lines: list[str]) -> bool:
    """Whether a requirement line already names the wheel's distribution."""
    dist = _canonical(wheel.split("-")[0])
    return any(_canonical(re.split(r"[\s<>=!~;\[@]", line, maxsplit=1)[0]) == dist
               for line in lines)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


_PROGRESS = (
    (re.compile(r"^Resolved (\d+) packages?"), "resolved"),
    (re.compile(r"^Prepared (\d+) packages?"), "prepared"),
    (re.compile(r"^Installed (\d+) packages?"), "installed"),
    (re.compile(r"^Collecting (\S+)"), "collecting"),
    (re.compile(r"^Installing collected packages: (.*)"), "installing"),
    (re.compile(r"^Successfully installed (.*)"), "done"),
)


class _Progress:
    """Turns the installer's lines into ``environment: 12/40 packages`` lines."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.total = 0
        self.collected = 0

    def line(self, text: str) -> None:
        text = text.strip()
        for pattern, event in _PROGRESS:
            m = pattern.match(text)
            if not m:
                continue
            if event == "resolved":
                self.total = int(m.group(1))
                self.say(f"environment: 0/{self.total} packages (resolved)")
            elif event in ("prepared", "installed"):
                n = int(m.group(1))
                self.say(f"environment: {n}/{max(self.total, n)} packages ({event})")
            elif event == "collecting":
                self.collected += 1
                self.say(f"environment: {self.collected} packages collected")
            elif event == "installing":
                self.total = len(m.group(1).split(","))
                self.say(f"environment: 0/{self.total} packages (installing)")
            elif event == "done":
                n = len(m.group(1).split())
                self.say(f"environment: {n}/{max(self.total, n)} packages (installed)")
            return


def _run(argv: list[str], cwd: str, env: dict[str, str] | None, log_fd: int,
         say: Callable[[str], None], stopped: Callable[[], bool], what: str,
         source: str | None = None) -> None:
    """Run one build step, its output into the log; raise a one-line BuildError."""
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        raise BuildError(f"{what} could not start: {exc.strerror or exc}") from None
    output: list[str] = []
    progress = _Progress(say)

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            os.write(log_fd, raw)
            text = raw.decode(errors="replace")
            output.append(text)
            progress.line(text)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    while proc.poll() is None:
        if stopped():
            proc.kill()
            proc.wait()
            reader.join(timeout=5)
            raise BuildError(f"canceled during {what}")
        time.sleep(0.05)
    reader.join(timeout=5)
    if proc.returncode:
        raise BuildError(explain_failure(what, output, source))


_MISSING = (
    re.compile(r"Because ([A-Za-z0-9][A-Za-z0-9._-]*) was not found in the package registry"),
    re.compile(r"there (?:are|is) no versions? of ([A-Za-z0-9][A-Za-z0-9._-]*)"),
    re.compile(r"No matching distribution found for ([A-Za-z0-9][A-Za-z0-9._-]*)"),
    re.compile(r"Could not find a version that satisfies the requirement "
               r"([A-Za-z0-9][A-Za-z0-9._-]*)"),
    re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*) was not found in the (?:package registry|"
               r"provided package locations)"),
)


def explain_failure(what: str, output: list[str], source: str | None) -> str:
    """One line for a failed build step: the package that exists nowhere, by name, or
    the installer's own last error line."""
    text = "".join(output)
    for pattern in _MISSING:
        m = pattern.search(text)
        if m:
            where = f" (from {source})" if source else ""
            return (f"package {m.group(1)!r}{where} was not found on the package index; "
                    "fix its name or version, or remove it")
    errors = [ln.strip() for ln in output if ln.strip().lower().startswith(("error", "×"))]
    tail = [ln.strip() for ln in output if ln.strip()]
    last = errors[-1] if errors else (tail[-1] if tail else "no output")
    return f"{what} failed: {last[:300]}"


# -- listing and pruning -----------------------------------------------------------------


def list_envs(env_root: str) -> list[dict[str, Any]]:
    """Every environment under ``env_root``: key, source, size, last used, runs using it."""
    found = []
    try:
        names = sorted(os.listdir(env_root))
    except FileNotFoundError:
        return []
    holders = _lock_holders()
    for key in names:
        env_dir = os.path.join(env_root, key)
        if not re.fullmatch(r"[0-9a-f]{16}", key) or not os.path.isdir(env_dir):
            continue
        meta: dict[str, Any] = {}
        try:
            with open(os.path.join(env_dir, META), encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            pass
        try:
            last = os.stat(os.path.join(env_dir, LAST_USED)).st_mtime
        except OSError:
            last = os.stat(env_dir).st_mtime
        try:
            lock_ino = os.stat(env_dir + ".lock").st_ino
        except OSError:
            lock_ino = None
        found.append({
            "key": key, "source": meta.get("source", "?"), "installer": meta.get("installer"),
            "python": meta.get("python"), "complete": os.path.exists(
                os.path.join(env_dir, COMPLETE)),
            "bytes": _size(env_dir), "last_used": last,
            "runs": holders.get(lock_ino, 0) if holders is not None and lock_ino else None,
            "path": env_dir})
    return found


def prune(env_root: str, days: float | None) -> list[dict[str, Any]]:
    """Remove environments no run uses (and, with ``days``, unused for that long)."""
    removed = []
    now = time.time()
    for env in list_envs(env_root):
        if days is not None and now - env["last_used"] < days * 86400:
            continue
        path = env["path"] + ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a run uses it, or one is building it
            shutil.rmtree(env["path"], ignore_errors=True)
            os.unlink(path)  # while locked: a waiter notices (see _lock) and opens anew
            removed.append(env)
        finally:
            os.close(fd)
    return removed


def _lock_holders() -> dict[int, int] | None:
    """How many flock holders each inode has (Linux /proc/locks), None if unknown."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            rows = f.read().splitlines()
    except OSError:
        return None
    counts: dict[int, int] = {}
    for row in rows:
        parts = row.split()
        if len(parts) < 6 or parts[1] != "FLOCK" or parts[0].endswith("->"):
            continue
        try:
            inode = int(parts[5].split(":")[2])
        except (IndexError, ValueError):
            continue
        counts[inode] = counts.get(inode, 0) + 1
    return counts


def _size(folder: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def main(argv: list[str] | None = None) -> int:
    """``python -m jupyter_compute.envbuild list|prune ENV_ROOT [--days N]`` (JSON out)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] not in ("list", "prune"):
        print("usage: python -m jupyter_compute.envbuild list|prune ENV_ROOT [--days N]",
              file=sys.stderr)
        return 2
    root = os.path.expanduser(args[1])
    if args[0] == "list":
        print(json.dumps(list_envs(root)))
        return 0
    days = float(args[args.index("--days") + 1]) if "--days" in args else None
    print(json.dumps(prune(root, days)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
