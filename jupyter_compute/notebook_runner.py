"""Runs a notebook as a run's entry point, through papermill's Python API.

::

    python -m jupyter_compute.notebook_runner NOTEBOOK --parameters params.json [--kernel K]

The agent starts this in the run's ``workdir/`` for runs of kind ``notebook``.
Papermill injects the parameters after the cell tagged ``parameters`` and
executes the notebook in a kernel; this module adds what a run needs around it:

- the executed notebook is ``outputs/<name>.ipynb``, saved (atomically) as cells
  end (at most once a second), every few seconds during a long cell, at the end
  and on SIGTERM — so a cancel, a timeout or a crash keeps the cells that ran;
- each cell's progress (``[notebook] cell 3/12: <first line>``) and its outputs
  go to stdout, i.e. the run's log, as they happen;
- progress is also a ``metrics.jsonl`` record of kind ``progress``, for widgets::

      {"name": "progress", "kind": "progress", "step": 3,
       "value": {"cell": 3, "of": 12, "source": "<first line>"}, "time": …}

- stderr carries one line only when the run fails — it becomes the run's error
  summary: the failing cell, its exception and message.

It travels to every target with the agent, so it imports the standard library
and, once running, papermill (with nbclient, nbformat and jupyter_client) from
the target's interpreter.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import signal
import sys
import time

from jupyter_compute import protocol

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from types import FrameType, ModuleType
    from typing import Any

#: Seconds between saves of the executed notebook while one cell keeps printing.
AUTOSAVE_SECONDS = 10
#: At most one save per this many seconds as cells start and end. Papermill saves (and
#: validates) the whole notebook twice per cell, quadratic in its length: 400 quick
#: cells took ~30 s. A stop, a failure and the end always save.
CELL_SAVE_SECONDS = 1.0
#: A kernel exits ~0.1 s after its shutdown request, but ipykernel 7 sometimes hangs at
#: exit until SIGTERM, which jupyter_client sends after half of this (default 5 s).
KERNEL_SHUTDOWN_SECONDS = 2.0
#: Optional modules that jsonschema loads at import for format checks nbformat never
#: uses; rfc3987_syntax alone builds a Lark grammar taking ~1.1 s of papermill's import.
SLOW_UNUSED_MODULES = ("rfc3987_syntax",)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class Stopped(BaseException):
    """SIGTERM (cancel, timeout) or SIGINT arrived; unwinds papermill so it saves."""

    def __init__(self, signum: int, running: bool) -> None:
        super().__init__(signum)
        self.signum = signum
        self.signame = signal.Signals(signum).name
        self.running = running  # False: it came between two cells


class Progress:
    """What the run sees of the notebook: progress lines, outputs and records."""

    def __init__(self, run_dir: str | None) -> None:
        self.run_dir = run_dir
        self._metrics_fd: int | None = None
        self.cell = 0       # 1-based position of the last cell started (0: none yet)
        self.cells = 0
        self.running = False  # whether that cell is still executing
        self.stopped: Stopped | None = None
        self.manager: Any = None  # papermill's execution manager, once it exists
        self.client: Any = None   # the nbclient client, once it exists

    def say(self, message: str) -> None:
        sys.stdout.write(f"[notebook] {message}\n")
        sys.stdout.flush()

    def cell_started(self, index: int, total: int, source: str) -> None:
        self.cell, self.cells, self.running = index + 1, total, True
        first = first_line(source)
        self.say(f"cell {self.cell}/{total}: {first}")
        if self.run_dir is None:  # run by hand, outside any run: the log line is enough
            return
        if self._metrics_fd is None:
            self._metrics_fd = os.open(os.path.join(self.run_dir, protocol.METRICS),
                                       os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        record = protocol.metric_record("progress", {"cell": self.cell, "of": total,
                                                 "source": first}, step=self.cell,
                                        kind="progress")
        os.write(self._metrics_fd, record.encode())  # one write: lines never interleave

    def where(self) -> str:
        """Where execution is (or broke off): ``during cell 3/12``, ``after cell 3/12``."""
        if not self.cell:
            return "before the first cell"
        between = self.stopped is not None and not self.stopped.running
        return f"{'after' if between else 'during'} cell {self.cell}/{self.cells}"

    def echo(self, output: Any) -> None:
        """Write one cell output to the log as it arrives (text only)."""
        kind = output.get("output_type")
        if kind == "stream":
            text = output.get("text", "")
        elif kind == "error":
            text = _ANSI.sub("", "\n".join(output.get("traceback") or
                                           [f"{output.get('ename')}: {output.get('evalue')}"]))
        elif kind in ("execute_result", "display_data"):
            data = output.get("data", {})
            text = data.get("text/plain") or f"<{', '.join(sorted(data)) or 'empty'} output>"
        else:
            return
        if isinstance(text, list):
            text = "".join(text)
        sys.stdout.write(text if text.endswith("\n") or kind == "stream" else text + "\n")
        sys.stdout.flush()

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        """Save what ran, then unwind papermill (which saves again and ends the kernel)."""
        if self.stopped is not None:
            return
        self.stopped = Stopped(signum, self.running)
        if self.client is not None:
            self.client.shutdown_kernel = "immediate"  # no graceful wait within the grace
        if self.manager is not None:
            try:
                self.manager.save()
            except Exception as exc:  # noqa: BLE001 - stopping matters more than this save
                self.say(f"could not save the executed notebook on {self.stopped.signame}: "
                         f"{exc}")
        raise self.stopped


def first_line(source: str | list[str]) -> str:
    """The first non-blank line of a cell's source, shortened for one log line."""
    text = "".join(source) if isinstance(source, list) else source
    for line in text.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= 80 else line[:79] + "…"
    return ""


def load_papermill() -> ModuleType:
    """Import papermill, or exit with the one line that says how to get it."""
    for name in SLOW_UNUSED_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "not installed"
    try:
        import papermill
    except ImportError as exc:
        missing = (exc.name or "papermill").split(".")[0]
        problem = "is not installed" if missing == "papermill" else \
            f"cannot be imported ({missing} is missing)"
        raise SystemExit(f"papermill {problem} in {sys.executable} on this target: "
                         "pip install papermill (or use a requirements environment)") from None
    return papermill


def resolve_kernel(requested: str | None, notebook: dict[str, Any],
                   progress: Progress) -> tuple[str, str]:
    """``(kernel name, language)``: the one asked for, else the notebook's, else python3.

    A notebook names the kernel of the machine it was written on; when that one is
    missing here and the notebook is Python, the target's ``python3`` (the run's
    interpreter) runs it, and the log says so. A kernel asked for with ``--kernel``
    must exist: if not, exit with one line that lists those present.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    manager = KernelSpecManager()
    own = notebook.get("metadata", {}).get("kernelspec") or {}
    name = requested or own.get("name") or "python3"
    try:
        return name, manager.get_kernel_spec(name).language
    except NoSuchKernel:
        present = sorted(manager.find_kernel_specs())
    if not requested and own.get("language", "python") == "python" and "python3" in present:
        progress.say(f"the notebook's kernel {name!r} is not on this target; using python3 "
                     f"({sys.executable}); choose another with --kernel ({', '.join(present)})")
        return "python3", "python"
    hint = "pass --kernel with one of them" if present else \
        "pip install ipykernel (or use a requirements environment)"
    raise SystemExit(f"no kernel named {name!r} on this target ({sys.executable}); "
                     f"available: {', '.join(present) or 'none'} — {hint}")


def papermill_engine() -> type:
    """Papermill's nbclient engine, reporting progress and saving atomically.

    Defined after papermill is imported (it may be missing); registered under the
    name ``jupyter_compute``. ``progress`` arrives through papermill's engine kwargs.
    """
    import nbformat
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, NotebookExecutionManager
    from papermill.log import logger
    from traitlets.config import Config

    class Manager(NotebookExecutionManager):  # type: ignore[misc]
        def __init__(self, nb: Any, progress: Progress, **kwargs: Any) -> None:
            super().__init__(nb, progress_bar=False, log_output=False,
                             autosave_cell_every=AUTOSAVE_SECONDS, **kwargs)
            self.progress = progress
            self.ended_by: BaseException | None = None  # what broke execution off
            self._per_cell = False  # a save papermill makes as a cell starts or ends
            self._saved_at = 0.0

        def save(self, **kwargs: Any) -> None:
            if kwargs.get("nb") is not None:
                self.nb = kwargs["nb"]
            if self._per_cell and time.monotonic() - self._saved_at < CELL_SAVE_SECONDS:
                return
            if self.output_path:
                # Atomic: a reader (or a fetch over SSH) never sees half a notebook, and
                # a save that SIGTERM interrupts cannot spoil the one the handler makes.
                protocol.write_atomic(self.output_path, nbformat.writes(self.nb).encode("utf-8"))
            self._saved_at = time.monotonic()
            self.last_save_time = self.now()  # papermill's, for its autosave

        def cell_start(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
            if cell.get("cell_type") == "code" and cell_index is not None:
                self.progress.cell_started(cell_index, len(self.nb.cells), cell.source)
            self._per_cell = True
            try:
                super().cell_start(cell, cell_index, **kwargs)
            finally:
                self._per_cell = False

        def cell_complete(self, cell: Any, cell_index: int | None = None,
                          **kwargs: Any) -> None:
            self.progress.running = False
            self._per_cell = True
            try:
                super().cell_complete(cell, cell_index, **kwargs)
            finally:
                self._per_cell = False

        def notebook_complete(self, **kwargs: Any) -> None:
            if self.ended_by is None:
                return super().notebook_complete(**kwargs)
            # Execution broke off (a signal, a dead kernel): papermill's own cleanup would
            # mark the cell it broke off in, and every cell after it, as completed.
            self.end_time = self.now()
            meta = self.nb.metadata.papermill
            meta["end_time"] = self.end_time.isoformat()
            meta["duration"] = (self.end_time - self.start_time).total_seconds()
            progress, stop = self.progress, self.ended_by
            broke_off = progress.cell and (stop.running if isinstance(stop, Stopped) else True)
            if broke_off:
                self.nb.cells[progress.cell - 1].metadata.papermill["status"] = \
                    "canceled" if isinstance(stop, Stopped) else self.FAILED
            meta["exception"] = not isinstance(stop, Stopped)
            why = f"Execution was stopped ({stop.signame}: canceled or out of time)" if \
                isinstance(stop, Stopped) else f"Execution ended ({type(stop).__name__}: {stop})"
            self.nb.cells.insert(0, nbformat.v4.new_markdown_cell(
                f'<span style="color:red">{html.escape(why)} {progress.where()}.</span>',
                metadata={"tags": ["papermill-error-cell-tag"]}))
            self.save()

    class Client(PapermillNotebookClient):  # type: ignore[misc]
        def process_message(self, *args: Any, **kwargs: Any) -> Any:
            output = super().process_message(*args, **kwargs)
            if output is not None:
                self.nb_man.progress.echo(output)
            return output

    class Engine(NBClientEngine):  # type: ignore[misc]
        @classmethod
        def execute_notebook(cls, nb: Any, kernel_name: str, output_path: str | None = None,
                             progress: Progress | None = None, **kwargs: Any) -> Any:
            assert progress is not None
            for key in ("progress_bar", "log_output", "autosave_cell_every"):
                kwargs.pop(key, None)
            nb_man = Manager(nb, progress, output_path=output_path)
            progress.manager = nb_man
            nb_man.notebook_start()
            try:
                cls.execute_managed_notebook(nb_man, kernel_name, progress=progress, **kwargs)
            except BaseException as exc:
                nb_man.ended_by = exc
                raise
            finally:
                nb_man.notebook_complete()
            return nb_man.nb

        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str,
                                     progress: Progress | None = None,
                                     start_timeout: float = 60,
                                     execution_timeout: float | None = None,
                                     **kwargs: Any) -> Any:
            for key in ("input_path", "stdout_file", "stderr_file"):
                kwargs.pop(key, None)
            client = Client(nb_man, kernel_name=kernel_name, log=logger,
                            startup_timeout=start_timeout, timeout=execution_timeout,
                            config=Config(KernelManager={
                                "shutdown_wait_time": KERNEL_SHUTDOWN_SECONDS}), **kwargs)
            if progress is not None:
                progress.client = client
            return client.execute()

    return Engine


def main(argv: list[str] | None = None) -> int:
    """Execute NOTEBOOK with papermill; 0 when every cell ran without error."""
    parser = argparse.ArgumentParser(prog="python -m jupyter_compute.notebook_runner")
    parser.add_argument("notebook")
    parser.add_argument("--parameters", help="JSON file of parameters to inject")
    parser.add_argument("--kernel", help="kernel name (default: the notebook's own)")
    parser.add_argument("--output", help="executed notebook (default: outputs/<name>)")
    args = parser.parse_args(argv)

    # The agent keeps the tail of stderr as a failed run's error summary, so only the
    # final one-line verdict goes there. Everything else written to fd 2 — the kernel's
    # own warnings, library warnings — joins stdout, in order, in the run's log.
    summary = os.fdopen(os.dup(2), "w")
    sys.stdout.flush()
    os.dup2(1, 2)
    progress = Progress(os.environ.get(protocol.ENV_RUN_DIR))
    # From here a cancel or a timeout unwinds through papermill, which saves on its way out.
    signal.signal(signal.SIGTERM, progress.on_signal)
    signal.signal(signal.SIGINT, progress.on_signal)
    try:
        return _execute(args, progress, summary)
    except Stopped as stop:
        progress.say(f"stopped by {stop.signame} {progress.where()}; the executed notebook "
                     "keeps the cells that ran")
        return 128 + stop.signum
    except SystemExit as exc:
        if isinstance(exc.code, str):  # one line that says what to do
            print(exc.code, file=summary)
            return 2
        raise
    finally:
        summary.flush()


def _execute(args: argparse.Namespace, progress: Progress, summary: Any) -> int:
    notebook = _read_json(args.notebook, "notebook")
    parameters: dict[str, Any] = _read_json(args.parameters, "parameters") \
        if args.parameters else {}
    # In a run, the run folder's outputs/ (./outputs is a link to it): named as the user
    # sees it among the run's outputs.
    shown = args.output or f"{protocol.OUTPUTS}/{os.path.basename(args.notebook)}"
    output = os.path.abspath(os.path.join(progress.run_dir, shown) if progress.run_dir and
                             not args.output else shown)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    # As in Jupyter, the kernel runs in the notebook's folder, so its relative paths work.
    folder = os.path.dirname(os.path.abspath(args.notebook))
    if progress.run_dir:
        _link_outputs(folder, os.path.join(progress.run_dir, protocol.OUTPUTS))

    t0 = time.perf_counter()
    papermill = load_papermill()
    imported = time.perf_counter() - t0
    kernel, language = resolve_kernel(args.kernel, notebook, progress)
    from nbclient.exceptions import DeadKernelError
    from papermill.engines import papermill_engines
    from papermill.exceptions import PapermillExecutionError

    papermill_engines.register("jupyter_compute", papermill_engine())
    _log_papermill_to_stdout()
    given = ", ".join(f"{k}={v!r}" for k, v in parameters.items()) or "none"
    progress.say(f"{args.notebook} on kernel {kernel} with parameters: {given} "
                 f"(papermill {papermill.__version__}, imported in {imported:.2f}s)")
    try:
        papermill.execute_notebook(
            args.notebook, output, parameters=parameters, engine_name="jupyter_compute",
            kernel_name=kernel, language=language, progress_bar=False, cwd=folder,
            progress=progress)
    except PapermillExecutionError as exc:
        progress.say(f"executed notebook (up to the error): {shown}")
        total = progress.cells or "?"
        # The one stderr line: the agent keeps stderr's tail as the run's error summary.
        print(f"cell {exc.cell_index + 1}/{total} (index {exc.cell_index}, "
              f"In [{exc.exec_count}]) failed: {exc.ename}: {exc.evalue}", file=summary)
        return 1
    except (Stopped, SystemExit):
        raise
    except DeadKernelError:
        progress.say(f"executed notebook (up to the kernel's death): {shown}")
        print(f"the kernel died {progress.where()} (out of memory, killed, or the code "
              "exited the process)", file=summary)
        return 1
    except Exception as exc:  # noqa: BLE001 - a broken notebook, a kernel that won't start
        import traceback

        traceback.print_exc(file=sys.stdout)  # the full story in the log
        print(f"notebook run failed {progress.where()}: {type(exc).__name__}: "
              f"{' '.join(str(exc).split())[:300]}", file=summary)
        return 1
    progress.say(f"executed notebook: {shown}")
    return 0


def _read_json(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot read the {what} file {path}: {exc}") from None


def _link_outputs(folder: str, outputs: str) -> None:
    """Give a notebook in a subfolder its own ``outputs`` link to the run's outputs/."""
    link = os.path.join(folder, protocol.OUTPUTS)
    if not os.path.lexists(link):
        os.symlink(os.path.relpath(outputs, folder), link)


def _log_papermill_to_stdout() -> None:
    """Papermill's (and nbclient's) warnings into the log; stderr stays the error summary."""
    import logging

    logger = logging.getLogger("papermill")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[papermill] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False


if __name__ == "__main__":
    sys.exit(main())
