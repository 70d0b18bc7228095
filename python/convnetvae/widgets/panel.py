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
import enum
import html
import inspect
import io
import re
import threading
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import ipywidgets as w

from ..errors import ConvNetVAEError
from .annotations import Layer, ObsColumn
from .render import error_widget, html_box, to_widgets

_NONE_LABEL = "(none)"
_LABEL_STYLE = {"description_width": "130px"}
_LAYOUT = {"width": "98%"}


@dataclass
class _Field:
    """One parameter of the function and the widget that edits it."""

    name: str
    widget: w.Widget | None
    convert: Callable[[Any], Any]
    marker: ObsColumn | Layer | None = None
    multi: bool = False
    optional: bool = False
    inject: str | None = None  # "adata" or a context key: not a widget
    extra: dict = field(default_factory=dict)


class Panel:
    """A form built from a function: one widget per parameter, a run button, an output area.

    Create with :func:`panel`. Attributes:

    widgets
        ``{parameter name: ipywidget}`` for the editable parameters.
    button
        The run button (``panel.button.click()`` runs the function, as a user would).
    output
        A ``VBox`` holding the display of the last result (or of the error).
    result
        The last return value (``None`` before the first run or after an error).
    error
        The exception of the last run, or ``None`` when it succeeded.
    box
        The whole panel as one widget (what a notebook or a workbench shows).
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
        options: dict[str, dict] | None = None,
    ) -> None:
        if not callable(func):
            raise ConvNetVAEError(f"panel() needs a function, got {type(func).__name__}")
        self.func = func
        self.adata = adata
        self.context = context if context is not None else {}
        self.capture_stdout = capture_stdout
        self.result: Any = None
        self.error: BaseException | None = None
        self.n_runs = 0
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Panel], None]] = []
        self.name = getattr(func, "__name__", "panel")
        self.title = title or _title_of(self.name)
        doc = inspect.getdoc(func) or ""
        self.description = doc.split("\n\n")[0].strip()
        tooltips = _param_docs(doc)
        self._fields = _fields_of(func, adata, options or {}, tooltips, self.context)
        self.widgets: dict[str, w.Widget] = {
            f.name: f.widget for f in self._fields if f.widget is not None
        }
        self.button = w.Button(description=button_text, button_style="primary",
                               icon="play", tooltip=f"run {self.name}()")
        self.button.add_class("convnetvae-run")
        self.button.on_click(lambda _b: self.run())
        self.output = w.VBox([])
        self.output.add_class("convnetvae-output")
        self.header = w.HTML(f"<b>{html.escape(self.title)}</b>")
        header = [self.header]
        if self.description:
            header.append(w.HTML(f"<small>{html.escape(self.description)}</small>"))
        self.box = w.VBox(header + list(self.widgets.values()) + [self.button, self.output],
                          layout=w.Layout(width="100%"))
        self.box.add_class("convnetvae-panel")
        self.box.add_class(f"convnetvae-panel-{re.sub(r'[^A-Za-z0-9_-]', '-', self.name)}")
        if auto_call:
            for wid in self.widgets.values():
                wid.observe(lambda _c: self.run(), names="value")

    # ---- notebook display ------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
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
                opts = [(_NONE_LABEL, None)] + opts
            if [o[1] for o in f.widget.options] == [o[1] for o in opts]:
                continue
            f.widget.options = opts
            if f.multi:
                f.widget.value = tuple(v for v in (old or ()) if v in names)
            elif old in names or (old is None and f.optional):
                f.widget.value = old
            elif f.extra.get("default") in names:
                f.widget.value = f.extra["default"]

    def on_result(self, callback: Callable[["Panel"], None]) -> None:
        """Call ``callback(panel)`` after every run (successful or not)."""
        self._callbacks.append(callback)

    # ---- running ---------------------------------------------------------------------------
    def __call__(self, **overrides: Any) -> Any:
        """Set the given values, then run; returns the result (errors are shown, not raised)."""
        if overrides:
            self.set_values(**overrides)
        return self.run()

    def run(self) -> Any:
        """Call the function with the form's values and show the result or the error.

        Returns the result (``None`` on error; the exception is in :attr:`error` and shown in
        the panel, which stays usable).
        """
        if not self._lock.acquire(blocking=False):
            return None  # a double click while running: ignore
        self.button.disabled = True
        self.output.children = [html_box("running&hellip;", "info")]
        stdout = io.StringIO()
        try:
            try:
                kwargs = self.values
                redirect = (contextlib.redirect_stdout(stdout) if self.capture_stdout
                            else contextlib.nullcontext())
                with redirect:
                    result = self.func(**kwargs)
                self.result, self.error = result, None
                children = to_widgets(result)
            except Exception as exc:  # shown in the panel: the widget must not die
                self.result, self.error = None, exc
                children = [error_widget(exc)]
            text = stdout.getvalue()
            if text:
                children = [w.HTML(f"<pre>{html.escape(text)}</pre>")] + children
            self.output.children = children
        finally:
            self.n_runs += 1
            self.button.disabled = False
            self._lock.release()
        for cb in self._callbacks:
            cb(self)
        return self.result


def panel(
    func: Callable[..., Any],
    adata: Any = None,
    *,
    title: str | None = None,
    button_text: str = "Run",
    auto_call: bool = False,
    context: dict[str, Any] | None = None,
    capture_stdout: bool = True,
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
        Show what the function prints in the panel's output area.
    **options
        Per-parameter widget options, e.g. ``n_epochs={"min": 1, "max": 500}``.

    Returns
    -------
    Panel
        Displays itself in a notebook; ``.widgets``, ``.button``, ``.run()``, ``.result``,
        ``.error``, ``.output``.
    """
    return Panel(func, adata, title=title, button_text=button_text, auto_call=auto_call,
                 context=context, capture_stdout=capture_stdout, options=options)


# ---- building fields ---------------------------------------------------------------------

def _title_of(name: str) -> str:
    return name.replace("_", " ").strip().capitalize()


def _param_docs(doc: str) -> dict[str, str]:
    """Descriptions of parameters from a numpy-style docstring's ``Parameters`` section."""
    out: dict[str, str] = {}
    m = re.search(r"Parameters\n-+\n(.*?)(?:\n\s*\n[A-Z][a-z]+\n-+\n|\Z)", doc, re.S)
    if not m:
        return out
    current = None
    for line in m.group(1).splitlines():
        if line and not line[0].isspace():
            current = line.split(":")[0].strip()
            out[current] = ""
        elif current and line.strip():
            out[current] = (out[current] + " " + line.strip()).strip()
    return out


def _fields_of(func: Callable, adata: Any, options: dict[str, dict], tooltips: dict[str, str],
               context: dict[str, Any]) -> list[_Field]:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise ConvNetVAEError(f"cannot read the signature of {func!r}: {exc}") from exc
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to what is there
        hints = dict(getattr(func, "__annotations__", {}))
    unknown = set(options) - set(sig.parameters)
    if unknown:
        raise ConvNetVAEError(
            f"options given for {sorted(unknown)}, which are not parameters of "
            f"{getattr(func, '__name__', func)}(); its parameters are {list(sig.parameters)}")
    fields = []
    for name, p in sig.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        fields.append(_field(func, name, hints.get(name, p.annotation), p.default,
                             dict(options.get(name, {})), tooltips.get(name, ""), adata, context))
    return fields


def _is_anndata_type(tp: Any) -> bool:
    try:
        import anndata
    except ImportError:  # pragma: no cover - anndata is a dependency
        return False
    return isinstance(tp, type) and issubclass(tp, anndata.AnnData)


def _field(func: Callable, name: str, tp: Any, default: Any, opts: dict, tooltip: str,
           adata: Any, context: dict[str, Any]) -> _Field:
    fname = getattr(func, "__name__", "func")
    empty = inspect.Parameter.empty
    if name in context:
        return _Field(name, None, lambda v: v, inject=name)
    # unwrap Annotated[...] metadata: option dicts and markers
    marker: ObsColumn | Layer | None = None
    if typing.get_origin(tp) is typing.Annotated:
        base, *meta = typing.get_args(tp)
        for m in meta:
            if isinstance(m, dict):
                opts = {**m, **opts}
            elif isinstance(m, (ObsColumn, Layer)):
                marker = m
        tp = base
    if tp is empty or tp is typing.Any:
        if default is empty or default is None:
            raise ConvNetVAEError(
                f"parameter {name!r} of {fname}() has neither an annotation nor a default: "
                "annotate it (int, float, bool, str, Path, Literal[...], an Enum, ObsColumn, "
                "Layer) so the panel knows which widget to show")
        tp = type(default)
    if _is_anndata_type(tp):
        return _Field(name, None, lambda v: v, inject="adata")
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) != 1:
            raise _unsupported(fname, name, tp)
        tp = args[0]
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:  # Optional[Annotated[...]]
            base, *meta = typing.get_args(tp)
            for m in meta:
                if isinstance(m, dict):
                    opts = {**m, **opts}
                elif isinstance(m, (ObsColumn, Layer)):
                    marker = m
            tp, origin = base, typing.get_origin(base)
    multi = False
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if len(args) != 1:
            raise _unsupported(fname, name, tp)
        multi, container = True, origin or tp
        tp = args[0]
        origin = typing.get_origin(tp)
    else:
        container = None
    if tp is ObsColumn or isinstance(tp, ObsColumn):
        marker = tp if isinstance(tp, ObsColumn) else ObsColumn()
        tp = str
    elif tp is Layer or isinstance(tp, Layer):
        marker, tp = Layer(), str
    label = opts.pop("label", _title_of(name))
    tooltip = opts.pop("tooltip", tooltip)
    common = dict(description=label, style=_LABEL_STYLE, layout=w.Layout(**_LAYOUT))
    has_default = default is not empty

    def done(widget: w.Widget, convert: Callable[[Any], Any], **kw: Any) -> _Field:
        if tooltip and hasattr(widget, "tooltip"):
            widget.tooltip = tooltip
        widget.add_class(f"convnetvae-param-{name}")
        return _Field(name, widget, convert, optional=optional, multi=multi,
                      extra={"default": default if has_default else None}, **kw)

    # ---- choices: markers, Literal, Enum, str with choices --------------------------------
    choices: list[tuple[str, Any]] | None = None
    if marker is not None:
        choices = [(c, c) for c in marker.choices(adata)]
    elif origin is typing.Literal:
        choices = [(str(v), v) for v in typing.get_args(tp)]
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        choices = [(m.name, m) for m in tp]
    elif tp is str and "choices" in opts:
        choices = [(str(c), c) for c in opts.pop("choices")]
    if choices is not None:
        if multi:
            values = [c[1] for c in choices]
            init = tuple(v for v in (default if has_default and default else ()) if v in values)
            widget = w.SelectMultiple(options=choices, value=init, rows=min(6, max(2, len(choices))),
                                      **common)

            def convert_multi(v: Any, _c: Any = container) -> Any:
                return list(v) if _c in (list, None) else _c(v)

            return done(widget, convert_multi, marker=marker)
        opts_list = ([(_NONE_LABEL, None)] if optional else []) + choices
        values = [c[1] for c in opts_list]
        if has_default and default in values:
            init = default
        elif optional:
            init = None
        else:
            init = values[0] if values else None
        widget = w.Dropdown(options=opts_list, value=init, **common)

        def convert_choice(v: Any) -> Any:
            if v is None and not optional:
                where = "adata.obs" if isinstance(marker, ObsColumn) else (
                    "adata.layers" if isinstance(marker, Layer) else "the choices")
                raise ConvNetVAEError(
                    f"parameter {name!r} of {fname}() has no value: pick one of {where}"
                    + (" (the panel has no AnnData: pass adata=)" if marker and adata is None
                       else ""))
            return v

        return done(widget, convert_choice, marker=marker)
    if multi:
        raise _unsupported(fname, name, tp)
    # ---- scalars ---------------------------------------------------------------------------
    if tp is bool:
        return done(w.Checkbox(value=bool(default) if has_default else False, indent=False,
                               description=label, layout=w.Layout(**_LAYOUT)), bool)
    if tp in (int, float) and optional:
        # a text box where empty means None
        init = "" if not has_default or default is None else str(default)
        widget = w.Text(value=init, placeholder=_NONE_LABEL, **common)

        def convert_opt_num(v: str, _tp: type = tp) -> Any:
            v = v.strip()
            if not v:
                return None
            try:
                return _tp(v)
            except ValueError:
                raise ConvNetVAEError(
                    f"parameter {name!r} of {fname}() needs {_tp.__name__} or empty, "
                    f"got {v!r}") from None

        return done(widget, convert_opt_num)
    if tp in (int, float):
        lo, hi = opts.pop("min", None), opts.pop("max", None)
        step = opts.pop("step", None)
        kind = opts.pop("widget", "slider")
        init = default if has_default and default is not None else (lo if lo is not None else 0)
        if lo is not None and hi is not None and lo > hi:
            raise ConvNetVAEError(f"parameter {name!r} of {fname}(): min {lo} > max {hi}")
        is_int = tp is int
        if lo is not None and hi is not None and kind == "slider":
            cls = w.IntSlider if is_int else w.FloatSlider
            kw = {"step": step} if step is not None else ({} if is_int else {"step": (hi - lo) / 100})
            if not is_int:
                kw["readout_format"] = ".3g"
            widget = cls(value=init, min=lo, max=hi, continuous_update=False, **kw, **common)
        elif lo is not None or hi is not None:
            cls = w.BoundedIntText if is_int else w.BoundedFloatText
            big = 2**53
            widget = cls(value=init, min=lo if lo is not None else -big,
                         max=hi if hi is not None else big,
                         **({"step": step} if step is not None else {}), **common)
        else:
            cls = w.IntText if is_int else w.FloatText
            widget = cls(value=init, **({"step": step} if step is not None else {}), **common)
        if widget.value != init:
            raise ConvNetVAEError(
                f"default {init!r} of parameter {name!r} of {fname}() lies outside [{lo}, {hi}]")
        return done(widget, int if is_int else float)
    if tp is str or (isinstance(tp, type) and issubclass(tp, Path)):
        is_path = tp is not str
        init = "" if not has_default or default is None else str(default)
        cls = w.Textarea if opts.pop("multiline", False) else w.Text
        widget = cls(value=init, placeholder=_NONE_LABEL if optional else "", **common)

        def convert_text(v: str, _path: bool = is_path) -> Any:
            if optional and not v.strip():
                return None
            if _path:
                if not v.strip():
                    raise ConvNetVAEError(f"parameter {name!r} of {fname}() needs a path")
                return Path(v).expanduser()
            return v

        return done(widget, convert_text)
    raise _unsupported(fname, name, tp)


def _unsupported(fname: str, name: str, tp: Any) -> ConvNetVAEError:
    return ConvNetVAEError(
        f"parameter {name!r} of {fname}() has annotation {tp!r}, which a panel cannot show: use "
        "int, float, bool, str, Path, Literal[...], an Enum, ObsColumn or Layer (optionally in "
        "Annotated[..., {'min': .., 'max': ..}], list[...] or X | None), or pass it with "
        "context={name: value}")
