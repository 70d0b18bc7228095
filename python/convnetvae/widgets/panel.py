"""A panel is just a function: build an ipywidgets form from an annotated Python function.

magicgui-style mapping from annotations to widgets:

======================================  ==========================================
annotation                              widget
======================================  ==========================================
``bool``                                Checkbox
``int`` / ``float``                     IntText / FloatText; a slider when both bounds
                                        are given (``Annotated[int, {"min": 1, "max": 9}]``)
``Literal["a", "b"]`` / an ``Enum``     Dropdown
``str`` / ``pathlib.Path``              Text (``Path`` values are converted)
:class:`ObsColumn` / :class:`Layer`     Dropdown of the AnnData's obs columns / layers
``list[Literal | Enum | ObsColumn]``    SelectMultiple
``X | None``                            the same, with an empty choice meaning ``None``
``anndata.AnnData``                     not a widget: the panel's AnnData is passed in
======================================  ==========================================

Options go in ``Annotated`` metadata (a dict) or as keyword arguments of :func:`panel`:
``min``, ``max``, ``step``, ``widget`` (``"slider"`` or ``"box"``), ``label``, ``choices``
(for ``str``), ``tooltip``.

There is no registry and there are no entry points: ``panel(func)`` returns a :class:`Panel`,
which displays itself in a notebook and can be docked into a workbench with
``workbench.add_panel(func)``.
"""

from __future__ import annotations

import contextlib
import html
import inspect
import io
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..errors import ConvNetVAEError
from .annotations import Layer, ObsColumn
from .fields import NONE_LABEL, fields_of, param_docs, title_of
from .jobs import Job
from .render import error_widget, to_widgets

__all__ = ["Layer", "ObsColumn", "Panel", "panel"]


class Panel:
    """A form built from a function: one widget per parameter, a run button, an output area.

    Create with :func:`panel`. Attributes:

    widgets
        ``{parameter name: ipywidget}`` for the editable parameters.
    button
        The run button (``panel.button.click()`` runs the function, as a user would).
    output
        A ``VBox`` holding the display of the last result (or of the error).
    caption
        Above the output: the values that made it, the time it took and when.
    result
        The last return value (``None`` before the first run or after an error).
    error
        The exception of the last run, or ``None`` when it succeeded.
    box
        The whole panel as one widget (what a notebook or a workbench shows).
    busy, job
        Whether it runs now; the :class:`~convnetvae.widgets.jobs.Job` that runs it (busy
        state, captioned output).
    """

    def __init__(
        self,
        func: Callable[..., Any],
        adata: Any = None,
        *,
        title: str | None = None,
        button_text: str = "Run",
        auto_call: bool = False,
        context: dict[str, Any] | None = None,
        capture_stdout: bool = True,
        background: bool = False,
        options: dict[str, dict] | None = None,
    ) -> None:
        if not callable(func):
            raise ConvNetVAEError(f"panel() needs a function, got {type(func).__name__}")
        self.func = func
        self.adata = adata
        self.context = context if context is not None else {}
        self.capture_stdout = capture_stdout
        self.background = background
        self.result: Any = None
        self.error: BaseException | None = None
        self.n_runs = 0
        self.docked = False  # set by a Workbench: a docked panel does not display itself again
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Panel], None]] = []
        self.name = getattr(func, "__name__", "panel")
        self.title = title or title_of(self.name)
        doc = inspect.getdoc(func) or ""
        self.description = doc.split("\n\n")[0].strip()
        tooltips = param_docs(doc)
        self._fields = fields_of(func, adata, options or {}, tooltips, self.context)
        self.widgets: dict[str, w.Widget] = {
            f.name: f.widget for f in self._fields if f.widget is not None
        }
        self.button = w.Button(description=button_text, button_style="primary",
                               icon="play", tooltip=f"run {self.name}()")
        self.button.add_class("convnetvae-run")
        self.button.on_click(lambda _b: self.run())
        self.output = w.VBox([])
        self.output.add_class("convnetvae-output")
        self.caption = w.HTML("")
        self.job = Job(self.title, self.button, self.output, caption=self.caption,
                       when_busy="latest" if auto_call else "refuse")
        self.header = w.HTML(f"<b>{html.escape(self.title)}</b>")
        header = [self.header]
        if self.description:
            header.append(w.HTML(f"<small>{html.escape(self.description)}</small>"))
        self.box = w.VBox(header + list(self.widgets.values()) + [self.button, self.caption,
                                                                 self.output],
                          layout=w.Layout(width="100%"))
        self.box.add_class("convnetvae-panel")
        self.box.add_class(f"convnetvae-panel-{re.sub(r'[^A-Za-z0-9_-]', '-', self.name)}")
        if auto_call:
            for wid in self.widgets.values():
                wid.observe(lambda _c: self.run(), names="value")

    # ---- notebook display ------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        if self.docked:  # already shown in its workbench: a second view would duplicate it
            return {"text/plain": f"{self!r} (docked in the workbench)"}
        return self.box._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"Panel({self.name}, parameters={list(self.widgets)})"

    # ---- values ----------------------------------------------------------------------------
    @property
    def values(self) -> dict[str, Any]:
        """The keyword arguments the function would be called with now (injected ones too).

        Raises :class:`ConvNetVAEError` naming the parameter when a value is missing or invalid.
        """
        kwargs: dict[str, Any] = {}
        for f in self._fields:
            if f.inject == "adata":
                if self.adata is None:
                    raise ConvNetVAEError(
                        f"parameter {f.name!r} of {self.name}() needs an AnnData: build the panel "
                        "with panel(func, adata=adata) or dock it in a Workbench")
                kwargs[f.name] = self.adata
            elif f.inject is not None:
                kwargs[f.name] = self.context[f.inject]
            else:
                kwargs[f.name] = f.convert(f.widget.value)
        return kwargs

    def set_values(self, **values: Any) -> None:
        """Set widget values by parameter name, as a user editing the form would."""
        for name, value in values.items():
            if name not in self.widgets:
                raise ConvNetVAEError(
                    f"{self.name}() has no editable parameter {name!r}; it has {list(self.widgets)}")
            wid = self.widgets[name]
            if isinstance(value, Path):
                value = str(value)
            if isinstance(wid, w.SelectMultiple):
                value = tuple(value)
            elif isinstance(wid, w.Text) and not isinstance(value, str):
                # a number in a box where empty means None (max_epochs, lr...)
                value = "" if value is None else str(value)
            wid.value = value

    def set_adata(self, adata: Any) -> None:
        """Point the panel at ``adata``: obs-column and layer dropdowns offer its names."""
        self.adata = adata
        self.refresh_choices()

    def refresh_choices(self) -> None:
        """Re-read obs columns / layers of the AnnData (e.g. after a new column was added)."""
        for f in self._fields:
            if f.marker is None:
                continue
            names = f.marker.choices(self.adata)
            old = f.widget.value
            opts: list[Any] = [(n, n) for n in names]
            if f.optional and not f.multi:
                opts = [(NONE_LABEL, None)] + opts
            if [o[1] for o in f.widget.options] == [o[1] for o in opts]:
                continue
            f.widget.options = opts
            if f.multi:
                f.widget.value = tuple(v for v in (old or ()) if v in names)
            elif old in names or (old is None and f.optional):
                f.widget.value = old
            elif f.extra.get("default") in names:
                f.widget.value = f.extra["default"]

    def on_result(self, callback: Callable[[Panel], None]) -> None:
        """Call ``callback(panel)`` after every run (successful or not)."""
        self._callbacks.append(callback)

    # ---- running ---------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Whether the function is running now (in the background or not)."""
        return self.job.busy

    def __call__(self, **overrides: Any) -> Any:
        """Set the given values, then run and wait; returns the result (errors are shown, not
        raised)."""
        if overrides:
            self.set_values(**overrides)
        return self.run(wait=True)

    def run(self, wait: bool | None = None) -> Any:
        """Call the function with the form's values and show the result or the error.

        A background panel (``background=True``) returns at once (``None``) while the
        function runs in a thread, its button disabled; :meth:`wait` blocks until it is done.
        ``wait=True`` runs in the calling thread. Returns the result (``None`` on error; the
        exception is in :attr:`error` and shown in the panel, which stays usable). The output
        is captioned with the values that made it; a run asked for while one is going is
        refused with a note in the panel, never queued.
        """
        wait = (not self.background) if wait is None else wait
        if self.job.busy and (wait or self.job.when_busy != "latest"):
            self.job.refuse()  # refused, with a visible note; never queued
            return None
        try:
            kwargs = self.values
        except Exception as exc:  # a bad value: shown at once, nothing runs
            self.result, self.error = None, exc
            self.caption.value = ""
            self.output.children = [error_widget(exc)]
            self.n_runs += 1
            self._notify()
            return None
        shown = {f.name: kwargs[f.name] for f in self._fields if f.inject is None}
        stdout = io.StringIO()
        capture = self.capture_stdout and wait

        def call() -> Any:
            redirect = contextlib.redirect_stdout(stdout) if capture else contextlib.nullcontext()
            with redirect:
                return self.func(**kwargs)

        def show(result: Any) -> list[w.Widget]:
            children = to_widgets(result)
            text = stdout.getvalue()
            if text:
                children = [w.HTML(f"<pre>{html.escape(text)}</pre>")] + children
            return children

        def done(result: Any, error: BaseException | None) -> None:
            self.result, self.error = (None, error) if error is not None else (result, None)
            self.n_runs += 1
            self._notify()

        if not wait:
            self.job.submit(call, shown, show, on_done=done)
            return None
        with self._lock:
            self.job.submit(call, shown, show, on_done=done, wait=True)
        return self.result

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a background run has finished; ``True`` if it has."""
        return self.job.wait(timeout)

    def _notify(self) -> None:
        for cb in self._callbacks:
            cb(self)


def panel(
    func: Callable[..., Any],
    adata: Any = None,
    *,
    title: str | None = None,
    button_text: str = "Run",
    auto_call: bool = False,
    context: dict[str, Any] | None = None,
    capture_stdout: bool = True,
    background: bool = False,
    **options: dict,
) -> Panel:
    """Build an ipywidgets form (a :class:`Panel`) from an annotated function.

    Parameters
    ----------
    func
        Any function whose parameters are annotated (or have defaults) with the supported types
        (see the module docstring).
    adata
        AnnData that :class:`ObsColumn` / :class:`Layer` dropdowns list, and that parameters
        annotated ``AnnData`` receive.
    title
        Heading of the panel; defaults to the function's name.
    button_text
        Label of the run button.
    auto_call
        Run whenever a value changes.
    context
        Values passed to parameters of the same name instead of showing a widget
        (e.g. ``{"model": model}``).
    capture_stdout
        Show what the function prints in the panel's output area (runs in the calling thread
        only: a background thread must not swap ``sys.stdout``).
    background
        Run in a background thread (the notebook stays usable; the button is disabled and the
        output says what runs until the result arrives). :meth:`Panel.wait` waits for it.
    **options
        Per-parameter widget options, e.g. ``n_epochs={"min": 1, "max": 500}``.

    Returns
    -------
    Panel
        Displays itself in a notebook; ``.widgets``, ``.button``, ``.run()``, ``.result``,
        ``.error``, ``.output``.
    """
    return Panel(func, adata, title=title, button_text=button_text, auto_call=auto_call,
                 context=context, capture_stdout=capture_stdout, background=background,
                 options=options)
