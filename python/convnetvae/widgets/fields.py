"""From a function's signature to widgets: one editable field per annotated parameter.

Used by :mod:`convnetvae.widgets.panel`; see its docstring for the annotation -> widget table.
"""

from __future__ import annotations

import enum
import inspect
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ipywidgets as w
from traitlets import observe

from ..errors import ConvNetVAEError
from .annotations import Layer, ObsColumn

NONE_LABEL = "(none)"


class Dropdown(w.Dropdown):
    """An ipywidgets Dropdown whose ``None`` choice shows its label.

    A plain Dropdown maps the value ``None`` to "no selection" (index ``None``), so a choice
    ``("(none)", None)`` shows as an empty box; here ``None`` selects that choice. Same
    front-end model: nothing new to install.
    """

    @observe("value")
    def _propagate_value(self, change: Any) -> None:
        if change.new is None and None in self._options_values:
            index = self._options_values.index(None)
            if self.index != index:
                self.index = index
            return
        super()._propagate_value(change)

    @observe("options")
    def _propagate_options(self, change: Any) -> None:
        super()._propagate_options(change)
        if self.index is None and self.value is None and None in self._options_values:
            self.index = self._options_values.index(None)
_LABEL_STYLE = {"description_width": "130px"}
_LAYOUT = {"width": "98%"}


@dataclass
class Field:
    """One parameter of the function and the widget that edits it."""

    name: str
    widget: w.Widget | None
    convert: Callable[[Any], Any]
    marker: ObsColumn | Layer | None = None
    multi: bool = False
    optional: bool = False
    inject: str | None = None  # "adata" or a context key: not a widget
    extra: dict = field(default_factory=dict)


def title_of(name: str) -> str:
    """``"embed_and_cluster"`` -> ``"Embed and cluster"``."""
    return name.replace("_", " ").strip().capitalize()


def param_docs(doc: str) -> dict[str, str]:
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


def fields_of(func: Callable, adata: Any, options: dict[str, dict], tooltips: dict[str, str],
               context: dict[str, Any]) -> list[Field]:
    """One :class:`Field` per parameter of ``func`` (``*args``/``**kwargs`` skipped).

    Raises :class:`ConvNetVAEError` naming the function and parameter when an annotation
    cannot be shown or an option does not fit.
    """
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


@dataclass
class _Param:
    """One parameter while its widget is chosen: the unwrapped annotation and the options."""

    fname: str
    name: str
    tp: Any
    default: Any
    has_default: bool
    opts: dict
    tooltip: str
    marker: ObsColumn | Layer | None = None
    optional: bool = False
    multi: bool = False
    container: Any = None

    @property
    def common(self) -> dict:
        label = self.opts.pop("label", title_of(self.name))
        self.tooltip = self.opts.pop("tooltip", self.tooltip)
        return dict(description=label, style=_LABEL_STYLE, layout=w.Layout(**_LAYOUT))

    def done(self, widget: w.Widget, convert: Callable[[Any], Any], **kw: Any) -> Field:
        if self.tooltip and hasattr(widget, "tooltip"):
            widget.tooltip = self.tooltip
        widget.add_class(f"convnetvae-param-{self.name}")
        return Field(self.name, widget, convert, optional=self.optional, multi=self.multi,
                     extra={"default": self.default if self.has_default else None}, **kw)


def _field(func: Callable, name: str, tp: Any, default: Any, opts: dict, tooltip: str,
           adata: Any, context: dict[str, Any]) -> Field:
    fname = getattr(func, "__name__", "func")
    empty = inspect.Parameter.empty
    if name in context:
        return Field(name, None, lambda v: v, inject=name)
    p = _Param(fname, name, tp, default, default is not empty, opts, tooltip)
    _unwrap_annotated(p)
    if p.tp is empty or p.tp is typing.Any:
        if default is empty or default is None:
            raise ConvNetVAEError(
                f"parameter {name!r} of {fname}() has neither an annotation nor a default: "
                "annotate it (int, float, bool, str, Path, Literal[...], an Enum, ObsColumn, "
                "Layer) so the panel knows which widget to show")
        p.tp = type(default)
    if _is_anndata_type(p.tp):
        return Field(name, None, lambda v: v, inject="adata")
    _unwrap_optional_and_list(p)
    choices = _choices(p, adata)
    if choices is not None:
        return _choice_field(p, choices, adata)
    if p.multi:
        raise _unsupported(fname, name, p.tp)
    if p.tp is bool:
        common = p.common
        return p.done(w.Checkbox(value=bool(default) if p.has_default else False, indent=False,
                                 description=common["description"], layout=w.Layout(**_LAYOUT)),
                      bool)
    if p.tp in (int, float):
        return _optional_number_field(p) if p.optional else _number_field(p)
    if p.tp is str or (isinstance(p.tp, type) and issubclass(p.tp, Path)):
        return _text_field(p)
    raise _unsupported(fname, name, p.tp)


def _unwrap_annotated(p: _Param) -> None:
    """``Annotated[T, {options}, marker]`` -> T, merging option dicts and taking markers."""
    if typing.get_origin(p.tp) is typing.Annotated:
        base, *meta = typing.get_args(p.tp)
        for m in meta:
            if isinstance(m, dict):
                p.opts = {**m, **p.opts}
            elif isinstance(m, (ObsColumn, Layer)):
                p.marker = m
        p.tp = base


def _unwrap_optional_and_list(p: _Param) -> None:
    """``X | None`` -> optional X; ``list[X]`` -> multi X; ``ObsColumn``/``Layer`` -> str."""
    if typing.get_origin(p.tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(p.tp) if a is not type(None)]
        p.optional = len(args) < len(typing.get_args(p.tp))
        if len(args) != 1:
            raise _unsupported(p.fname, p.name, p.tp)
        p.tp = args[0]
        _unwrap_annotated(p)  # Optional[Annotated[...]]
    origin = typing.get_origin(p.tp)
    if origin in (list, tuple, set, frozenset) or p.tp in (list, tuple):
        args = [a for a in typing.get_args(p.tp) if a is not Ellipsis]
        if len(args) != 1:
            raise _unsupported(p.fname, p.name, p.tp)
        p.multi, p.container, p.tp = True, origin or p.tp, args[0]
    if p.tp is ObsColumn or isinstance(p.tp, ObsColumn):
        p.marker = p.tp if isinstance(p.tp, ObsColumn) else ObsColumn()
        p.tp = str
    elif p.tp is Layer or isinstance(p.tp, Layer):
        p.marker, p.tp = Layer(), str


def _choices(p: _Param, adata: Any) -> list[tuple[str, Any]] | None:
    """Dropdown choices from a marker, a Literal, an Enum or ``choices=`` (for str)."""
    if p.marker is not None:
        return [(c, c) for c in p.marker.choices(adata)]
    if typing.get_origin(p.tp) is typing.Literal:
        return [(str(v), v) for v in typing.get_args(p.tp)]
    if isinstance(p.tp, type) and issubclass(p.tp, enum.Enum):
        return [(m.name, m) for m in p.tp]
    if p.tp is str and "choices" in p.opts:
        return [(str(c), c) for c in p.opts.pop("choices")]
    return None


def _choice_field(p: _Param, choices: list[tuple[str, Any]], adata: Any) -> Field:
    """A Dropdown (or a SelectMultiple for ``list[...]``)."""
    common = p.common
    if p.multi:
        values = [c[1] for c in choices]
        init = tuple(v for v in (p.default if p.has_default and p.default else ())
                     if v in values)
        widget = w.SelectMultiple(options=choices, value=init,
                                  rows=min(6, max(2, len(choices))), **common)

        def convert_multi(v: Any, _c: Any = p.container) -> Any:
            return list(v) if _c in (list, None) else _c(v)

        return p.done(widget, convert_multi, marker=p.marker)
    opts_list = ([(NONE_LABEL, None)] if p.optional else []) + choices
    values = [c[1] for c in opts_list]
    if p.has_default and p.default in values:
        init = p.default
    elif p.optional:
        init = None
    else:
        init = values[0] if values else None
    widget = Dropdown(options=opts_list, value=init, **common)
    marker, name, fname, optional = p.marker, p.name, p.fname, p.optional

    def convert_choice(v: Any) -> Any:
        if v is None and not optional:
            where = "adata.obs" if isinstance(marker, ObsColumn) else (
                "adata.layers" if isinstance(marker, Layer) else "the choices")
            raise ConvNetVAEError(
                f"parameter {name!r} of {fname}() has no value: pick one of {where}"
                + (" (the panel has no AnnData: pass adata=)" if marker and adata is None
                   else ""))
        return v

    return p.done(widget, convert_choice, marker=p.marker)


def _optional_number_field(p: _Param) -> Field:
    """A text box where empty means None."""
    init = "" if not p.has_default or p.default is None else str(p.default)
    placeholder = p.opts.pop("placeholder", NONE_LABEL)  # e.g. "(auto)": chosen from the data
    widget = w.Text(value=init, placeholder=placeholder, **p.common)
    name, fname = p.name, p.fname

    def convert_opt_num(v: str, _tp: type = p.tp) -> Any:
        v = v.strip()
        if not v:
            return None
        try:
            return _tp(v)
        except ValueError:
            raise ConvNetVAEError(
                f"parameter {name!r} of {fname}() needs {_tp.__name__} or empty, "
                f"got {v!r}") from None

    return p.done(widget, convert_opt_num)


def _number_field(p: _Param) -> Field:
    """A slider when both bounds are given (and no ``widget="box"``), else a (bounded) box."""
    common = p.common
    lo, hi = p.opts.pop("min", None), p.opts.pop("max", None)
    step = p.opts.pop("step", None)
    kind = p.opts.pop("widget", "slider")
    init = p.default if p.has_default and p.default is not None else (lo if lo is not None else 0)
    if lo is not None and hi is not None and lo > hi:
        raise ConvNetVAEError(f"parameter {p.name!r} of {p.fname}(): min {lo} > max {hi}")
    is_int = p.tp is int
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
            f"default {init!r} of parameter {p.name!r} of {p.fname}() lies outside [{lo}, {hi}]")
    return p.done(widget, int if is_int else float)


def _text_field(p: _Param) -> Field:
    """A Text (or Textarea with ``multiline``); ``Path`` values are converted."""
    is_path = p.tp is not str
    init = "" if not p.has_default or p.default is None else str(p.default)
    cls = w.Textarea if p.opts.pop("multiline", False) else w.Text
    widget = cls(value=init, placeholder=NONE_LABEL if p.optional else "", **p.common)
    name, fname, optional = p.name, p.fname, p.optional

    def convert_text(v: str, _path: bool = is_path) -> Any:
        if optional and not v.strip():
            return None
        if _path:
            if not v.strip():
                raise ConvNetVAEError(f"parameter {name!r} of {fname}() needs a path")
            return Path(v).expanduser()
        return v

    return p.done(widget, convert_text)


def _unsupported(fname: str, name: str, tp: Any) -> ConvNetVAEError:
    return ConvNetVAEError(
        f"parameter {name!r} of {fname}() has annotation {tp!r}, which a panel cannot show: use "
        "int, float, bool, str, Path, Literal[...], an Enum, ObsColumn or Layer (optionally in "
        "Annotated[..., {'min': .., 'max': ..}], list[...] or X | None), or pass it with "
        "context={name: value}")
