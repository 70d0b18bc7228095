"""Long actions of the workbench in a background thread, with a busy state and labelled output.

A :class:`Job` owns one trigger button and one output area. While its action runs the button is
disabled and says so, and the output area shows what runs with which inputs (the previous output
is gone: nothing stale stays on screen). When the action ends the output shows the result under a
caption naming the inputs that made it and the time it took. A request while busy is never
queued silently: with ``when_busy="refuse"`` it is refused with a visible note; with
``"latest"`` (views driven by value changes) the latest request waits visibly and the running
action's result, superseded, is dropped.
"""

from __future__ import annotations

import enum
import html
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ipywidgets as w

from .render import error_widget, html_box

#: how a value is shown in a caption (long reprs are cut)
_MAX_VALUE_CHARS = 60


def describe_inputs(inputs: dict[str, Any]) -> str:
    """``{"region": "chr1:0-1", "n": 3}`` -> ``"region='chr1:0-1', n=3"`` (for captions)."""
    parts = []
    for k, v in inputs.items():
        if isinstance(v, enum.Enum):
            text = v.name
        elif isinstance(v, (list, tuple)):
            text = "[" + ", ".join(map(str, v)) + "]"
        else:
            text = repr(v)
        if len(text) > _MAX_VALUE_CHARS:
            text = text[:_MAX_VALUE_CHARS - 3] + "..."
        parts.append(f"{k}={text}")
    return ", ".join(parts)


@dataclass
class _Request:
    func: Callable[[], Any]
    inputs: dict[str, Any]
    show: Callable[[Any], list[w.Widget]]
    on_done: Callable[[Any, BaseException | None], None] | None


class Job:
    """Run a workbench action in the background: busy button, labelled output, no queueing.

    Parameters
    ----------
    title
        What the action is called in captions (``"Show tracks"``).
    button
        The trigger; disabled while running, its description switched to ``busy_text``.
    output
        A ``Box`` whose children show the running state, then the result.
    caption
        An ``HTML`` widget (shown above ``output``) naming the inputs of the result on
        screen; empty while running.
    when_busy
        ``"refuse"``: a request while running is refused with a note; ``"latest"``: the latest
        request runs next (shown as waiting) and the running one's result is dropped.

    Attributes
    ----------
    busy
        Whether an action runs now.
    result, error
        Of the last finished action whose output was shown.
    inputs
        The inputs of the output on screen.
    n_runs, n_refused, n_superseded
        Counters (finished runs, refused requests, results dropped for a newer request).
    seconds
        Wall time of the last finished action.
    """

    def __init__(self, title: str, button: w.Button | None, output: w.Box,
                 when_busy: str = "refuse", busy_text: str = "Running…",
                 caption: w.HTML | None = None) -> None:
        self.title = title
        self.button = button
        self.output = output
        self.caption = caption if caption is not None else w.HTML("")
        self.caption.add_class("convnetvae-caption")
        self.when_busy = when_busy
        self.busy_text = busy_text
        self.result: Any = None
        self.error: BaseException | None = None
        self.inputs: dict[str, Any] = {}
        self.n_runs = 0
        self.n_refused = 0
        self._refused_now = 0  # refused during the running action (shown in its note)
        self.n_superseded = 0
        self.seconds = 0.0
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._pending: _Request | None = None
        self._running: _Request | None = None
        self._started = 0.0
        self._button_text = button.description if button is not None else ""
        self._button_icon = button.icon if button is not None else ""
        self.thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    # ---- requests ----------------------------------------------------------------------
    def submit(self, func: Callable[[], Any], inputs: dict[str, Any],
               show: Callable[[Any], list[w.Widget]],
               on_done: Callable[[Any, BaseException | None], None] | None = None,
               wait: bool = False) -> bool:
        """Run ``func()`` (in a thread unless ``wait``); ``show(result)`` gives the widgets shown
        under the caption; ``on_done(result, error)`` runs after. Returns ``False`` when the
        request was refused because the job is busy."""
        req = _Request(func, dict(inputs), show, on_done)
        with self._lock:
            if self.busy:
                if self.when_busy == "latest" and not wait:
                    self._pending = req
                    self._show_running(self._running, then=req)
                    return True
                self.n_refused += 1
                self._refused_now += 1
                self._show_running(self._running)
                return False
            self._idle.clear()
            self._running = req
        self._begin(req)
        if wait:
            self._work(req)
        else:
            self.thread = threading.Thread(target=self._work, args=(req,), daemon=True,
                                           name=f"convnetvae-{self.title}")
            self.thread.start()
        return True

    def refuse(self) -> None:
        """Count a request that arrived while busy and say so in the running note."""
        with self._lock:
            self.n_refused += 1
            self._refused_now += 1
            self._show_running(self._running)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no action runs; ``True`` if idle."""
        return self._idle.wait(timeout)

    # ---- the running state -------------------------------------------------------------
    def _begin(self, req: _Request) -> None:
        self._started = time.perf_counter()
        if self.button is not None:
            self.button.disabled = True
            self.button.description = self.busy_text
            self.button.icon = "hourglass-half"
        self._show_running(req)

    def _show_running(self, req: _Request | None, then: _Request | None = None) -> None:
        if req is None:
            return
        text = (f"<b>{html.escape(self.title)}</b> running&hellip; "
                f"<small>{html.escape(describe_inputs(req.inputs))}</small>")
        if then is not None:
            text += (f"<br>then, as asked last: <small>{html.escape(describe_inputs(then.inputs))}"
                     "</small>")
        if self._refused_now:
            n = self._refused_now
            text += (f"<br><small>{n} request{'s' * (n != 1)} while running ignored: wait for "
                     "this one to finish</small>")
        box = html_box(text, "info")
        box.add_class("convnetvae-busy")
        self.caption.value = ""
        self.output.children = [box]

    def _work(self, req: _Request) -> None:
        try:
            result, error = req.func(), None
        except Exception as exc:  # shown in the output: a widget must not die
            result, error = None, exc
        seconds = time.perf_counter() - self._started
        with self._lock:
            nxt, self._pending = self._pending, None
            if nxt is not None:  # superseded: drop this result, run the latest request
                self.n_superseded += 1
                self._running = nxt
        if nxt is not None:
            self._begin(nxt)
            self._work(nxt)
            return
        try:
            self._finish(req, result, error, seconds)
            if req.on_done is not None:  # before idle: wait() returns once all is done
                req.on_done(result, error)
        finally:
            if self.button is not None:
                self.button.disabled = False
                self.button.description = self._button_text
                self.button.icon = self._button_icon
            self._refused_now = 0
            with self._lock:
                self._running = None
                self._idle.set()

    def _finish(self, req: _Request, result: Any, error: BaseException | None,
                seconds: float) -> None:
        self.result, self.error, self.inputs, self.seconds = result, error, req.inputs, seconds
        self.n_runs += 1
        if error is not None:
            body = [error_widget(error)]
        else:
            try:
                body = req.show(result)
            except Exception as exc:
                self.error = exc
                body = [error_widget(exc)]
        self.caption.value = (
            f"<small><b>{html.escape(self.title)}</b>"
            f"({html.escape(describe_inputs(req.inputs))}) &middot; {seconds:.1f} s &middot; "
            f"{time.strftime('%H:%M:%S')}</small>")
        self.output.children = list(body)
