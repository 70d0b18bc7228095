"""Turning Python objects into widgets: figures -> PNG images, tables -> HTML, errors -> a box.

Views draw with matplotlib's object API (``Figure`` + Agg canvas, never pyplot), so drawing is
safe from the training thread and does not depend on the notebook's matplotlib backend; the PNG
goes into a standard ``ipywidgets.Image``, which every front end (JupyterLab, Notebook 7,
VS Code, Voila) shows without extra JavaScript.
"""

from __future__ import annotations

import html
import io
import traceback
from typing import Any

import ipywidgets as w
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(width: float = 6.0, height: float = 4.5, dpi: int = 100) -> Figure:
    """A matplotlib figure attached to an Agg canvas (no pyplot, no global state)."""
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def figure_to_png(fig: Figure) -> bytes:
    """Render ``fig`` to PNG bytes."""
    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def html_box(text: str, kind: str = "info") -> w.HTML:
    """An HTML widget with a coloured left border (``kind``: info, error, warning, success)."""
    colours = {"info": "#3b82f6", "error": "#dc2626", "warning": "#d97706", "success": "#16a34a"}
    box = w.HTML(
        f'<div style="border-left:4px solid {colours.get(kind, "#6b7280")};padding:4px 8px;'
        f'margin:2px 0">{text}</div>'
    )
    box.add_class(f"convnetvae-{kind}")
    return box


def error_widget(exc: BaseException) -> w.HTML:
    """Show an exception inside a panel: its type and message, and the traceback folded."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    msg = html.escape(f"{type(exc).__name__}: {exc}")
    return html_box(
        f"<b>{msg}</b><details><summary>traceback</summary>"
        f"<pre style='font-size:11px'>{html.escape(tb)}</pre></details>",
        "error",
    )


def to_widgets(obj: Any) -> list[w.Widget]:
    """Widgets that display a function's return value (``[]`` for ``None``).

    Widgets pass through; matplotlib figures become PNG images; pandas objects and anything
    with ``_repr_html_`` become HTML; everything else is shown as its ``repr``.
    """
    if obj is None:
        return []
    if isinstance(obj, w.Widget):
        return [obj]
    if isinstance(obj, Figure):
        return [w.Image(value=figure_to_png(obj), format="png")]
    if hasattr(obj, "to_html") and hasattr(obj, "shape"):  # pandas DataFrame / Series
        frame = obj.to_frame() if getattr(obj, "ndim", 2) == 1 else obj
        return [w.HTML(frame.to_html(max_rows=50, float_format=lambda v: f"{v:.4g}"))]
    if hasattr(obj, "_repr_html_"):
        out = obj._repr_html_()
        if out:
            return [w.HTML(out)]
    return [w.HTML(f"<pre>{html.escape(repr(obj))}</pre>")]
