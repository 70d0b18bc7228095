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

from ..errors import ConvNetVAEError
from .annotations import Layer, ObsColumn

NONE_LABEL = "(none)"
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


def _field(func: Callable, name: str, tp: Any, default: Any, opts: dict, tooltip: str,
           adata: Any, context: dict[str, Any]) -> Field:
    fname = getattr(func, "__name__", "func")
    empty = inspect.Parameter.empty
    if name in context:
        return Field(name, None, lambda v: v, inject=name)
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
        return Field(name, None, lambda v: v, inject="adata")
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
    label = opts.pop("label", title_of(name))
    tooltip = opts.pop("tooltip", tooltip)
    common = dict(description=label, style=_LABEL_STYLE, layout=w.Layout(**_LAYOUT))
    has_default = default is not empty

    def done(widget: w.Widget, convert: Callable[[Any], Any], **kw: Any) -> Field:
        if tooltip and hasattr(widget, "tooltip"):
            widget.tooltip = tooltip
        widget.add_class(f"convnetvae-param-{name}")
        return Field(name, widget, convert, optional=optional, multi=multi,
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
        opts_list = ([(NONE_LABEL, None)] if optional else []) + choices
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
        widget = w.Text(value=init, placeholder=NONE_LABEL, **common)

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
        widget = cls(value=init, placeholder=NONE_LABEL if optional else "", **common)

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
