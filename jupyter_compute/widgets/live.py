"""Live displays, and the one way each becomes static: its end, or its kernel's.

::

    from jupyter_compute.widgets import live

    live.show(widget, static=lambda quick: run.summary())   # shown with a display id
    ...
    live.end(widget)   # the view has ended: its output becomes static() (HTML + text)

A live widget belongs in a notebook output only while its model lives in a kernel:
a saved notebook whose output still names a widget model shows "Error displaying
widget: model not found" once that kernel is gone. So every live view is displayed
here, with a display id, and its output is replaced by its static summary bundle
(no widget-view mimetype) by ``update_display_data``:

* when the view ends (a run or sweep reached a terminal status, a cluster view
  stopped polling): the view calls ``end``;
* when the kernel is shut down or restarted: ipykernel handles a
  ``shutdown_request`` on its control thread by calling ``kernel.do_shutdown``, then
  ``_at_shutdown``, and only then stops its loops, while the IOPub thread still
  sends. ``install_shutdown_hook`` wraps ``do_shutdown`` so every display still live
  is made static there, before the kernel replies. (``atexit`` is too late: the
  IOPub thread may be gone. A kernel killed outright gets no hook at all.)

A frontend routes ``update_display_data`` by display id to every output that
showed it, while that output's execution is still known to it. JupyterLab forgets
its executions the moment a person clicks "Restart" (before the kernel is told),
so there the restart case needs the frontend's help; shutdown works from here.
"""

from __future__ import annotations

import threading
import time
import weakref

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

#: How long the shutdown hook may spend drawing summaries before the kernel goes
#: (jupyter_client waits ``shutdown_wait_time``, 5 s by default, before killing it).
SHUTDOWN_BUDGET = 3.0
STOP_WAIT = 0.5  # how long it waits for a view's thread to finish its current round

_lock = threading.Lock()
_ended_unshown: weakref.WeakSet[Any] = weakref.WeakSet()  # ended before show() saw them
_publish_lock = threading.Lock()
_live: dict[int, _Entry] = {}  # id(view) → its display
_hooked: set[int] = set()      # id() of kernels whose do_shutdown is wrapped


class _Entry:
    def __init__(self, view: Any, handle: Any, static: Callable[[bool], Any],
                 until_end: bool) -> None:
        self.view, self.handle, self.static, self.until_end = view, handle, static, until_end
        self.displayed = False  # the live view has gone out (show() has displayed it)
        self.ended = False      # it ended before that: show() sends the static at once


def show(view: Any, static: Callable[[bool], Any], until_end: bool = True) -> Any:
    """Display ``view`` live; its output becomes ``static(quick)`` (an object with a
    text/HTML ``_repr_mimebundle_``) when ``end(view)`` is called (with
    ``until_end``) or the kernel shuts down (then ``quick``: no slow network fetch).
    Returns the display handle.

    ``until_end=False`` keeps the live view after ``end`` (a run that had already
    ended when shown, brought back to explore): only the kernel's end makes it static.
    """
    from IPython.display import DisplayHandle

    handle = DisplayHandle()
    entry = _Entry(view, handle, static, until_end)
    with _lock:  # registered first: a quick run's view may end before display returns
        _live[id(view)] = entry
    install_shutdown_hook()
    handle.display(view)
    with _lock:
        entry.displayed = True
        ended = entry.ended or view in _ended_unshown  # its follower was quicker
        _ended_unshown.discard(view)
        if ended and until_end:
            _live.pop(id(view), None)
    if ended and until_end:
        _publish(entry, _static_of(entry, quick=False))
    return handle


def end(view: Any) -> bool:
    """``view`` has ended: replace its output by its static summary. True if it was
    shown live here (and is now static); False for a view shown some other way."""
    with _lock:
        entry = _live.get(id(view))
        if entry is None:  # not shown (yet): a view starts following when it is made
            _ended_unshown.add(view)
            return False
        if not entry.until_end:
            return False
        del _live[id(view)]
        if not entry.displayed:
            entry.ended = True  # show() sends the static summary once it has displayed
            return True
    _publish(entry, _static_of(entry, quick=False))
    return True


def live_views() -> list[Any]:
    """The views whose outputs are still live (tests and the shutdown hook read it)."""
    with _lock:
        return [entry.view for entry in _live.values()]


def make_all_static(budget: float = SHUTDOWN_BUDGET) -> int:
    """Replace every still-live output by its static summary (the kernel is going);
    returns how many were replaced. Summaries are drawn in parallel, each given what
    is left of ``budget`` seconds, so one unreachable host cannot use up the kernel's
    last seconds; a summary not ready in time keeps the view's last known state."""
    with _lock:
        entries = list(_live.values())
        _live.clear()
    deadline = time.monotonic() + budget
    # The views' own threads stop first: after the static summary, nothing of theirs
    # may change the view or end it (a second update) while the kernel goes.
    for entry in entries:
        _stop(entry.view)
    for entry in entries:
        _join(entry.view, min(STOP_WAIT, max(0.0, deadline - time.monotonic())))
    drawn: dict[int, Any] = {}

    def draw(entry: _Entry) -> None:
        drawn[id(entry)] = _static_of(entry, quick=True)

    threads = [threading.Thread(target=draw, args=(entry,), daemon=True,
                                name="jupyter-compute-static") for entry in entries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for entry in entries:  # published one by one, from here
        shown = drawn.get(id(entry))
        if shown is None and hasattr(entry.view, "summary"):
            shown = entry.view.summary()  # not drawn in time: its last known state
        _publish(entry, shown)
    return len(entries)


def install_shutdown_hook() -> bool:
    """Wrap this kernel's ``do_shutdown`` (once) so live outputs become static before
    it replies to a shutdown or restart request. False outside an ipykernel."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None or not hasattr(kernel, "do_shutdown"):
        return False
    with _lock:
        if id(kernel) in _hooked:
            return True
        _hooked.add(id(kernel))
    original = kernel.do_shutdown

    def do_shutdown(restart: bool) -> Any:
        try:
            make_all_static()
        except Exception:  # noqa: BLE001 - the kernel must shut down whatever happens
            kernel.log.exception("jupyter_compute: could not make outputs static")
        return original(restart)

    kernel.do_shutdown = do_shutdown
    return True


def _stop(view: Any) -> None:
    follower = getattr(view, "follower", None)
    if follower is not None and hasattr(follower, "stop"):
        follower.stop()
    elif hasattr(view, "stop"):  # a cluster view's polling
        view.stop()


def _join(view: Any, timeout: float) -> None:
    thread = getattr(view, "follower", None) or view
    if hasattr(thread, "join"):
        thread.join(timeout)


def _static_of(entry: _Entry, quick: bool) -> Any:
    """The entry's static summary, or the view's own last state if that fails."""
    try:
        return entry.static(quick)
    except Exception:  # noqa: BLE001 - the view's own last state, rather than nothing
        summary = getattr(entry.view, "summary", None)
        return summary() if summary is not None else None


def _publish(entry: _Entry, shown: Any) -> None:
    if shown is None:
        return
    with _publish_lock:  # one at a time: two threads could interleave their sends
        entry.handle.update(_Static(shown))


class _Static:
    """Only the static bundle (text/plain + text/html), whatever else ``shown`` has."""

    def __init__(self, shown: Any) -> None:
        self.shown = shown

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = self.shown._repr_mimebundle_()
        if isinstance(bundle, tuple):  # (data, metadata)
            bundle = bundle[0]
        return {k: v for k, v in bundle.items() if k in ("text/plain", "text/html")}
