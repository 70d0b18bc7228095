"""Annotation markers that a panel resolves against an AnnData: obs columns and layers.

A panel is an ordinary function; these markers only say "this string names a column of
``adata.obs``" (or a layer), so the form can offer a dropdown of what the data really has::

    def colour_by(column: ObsColumn, layer: Layer = "ATAC") -> None: ...
    def pick(columns: list[ObsColumn]) -> None: ...
    def labels(column: Annotated[str, ObsColumn(kind="categorical")]) -> None: ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd


@dataclass(frozen=True)
class ObsColumn:
    """Marks a parameter whose value is the name of a column of ``adata.obs``.

    Use the class itself as the annotation (``column: ObsColumn``) for any column, or an
    instance inside :class:`typing.Annotated` to restrict the choices
    (``Annotated[str, ObsColumn(kind="categorical")]``).

    Parameters
    ----------
    kind
        ``"any"``, ``"categorical"`` (category, string, bool or integer with few values) or
        ``"numeric"`` (float or integer columns).
    """

    kind: Literal["any", "categorical", "numeric"] = "any"

    def choices(self, adata: Any) -> list[str]:
        """Column names of ``adata.obs`` that fit this marker (empty without an AnnData)."""
        if adata is None:
            return []
        return [str(c) for c in adata.obs.columns if _fits(adata.obs[c], self.kind)]


@dataclass(frozen=True)
class Layer:
    """Marks a parameter whose value is the name of a layer (a modality) of the AnnData."""

    def choices(self, adata: Any) -> list[str]:
        """Layer names of ``adata`` (empty without an AnnData)."""
        if adata is None:
            return []
        return [str(k) for k in adata.layers.keys()]


def _fits(col: pd.Series, kind: str) -> bool:
    if kind == "any":
        return True
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    if kind == "numeric":
        return numeric
    if isinstance(col.dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(col):
        return True
    if pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col):
        return True
    if pd.api.types.is_integer_dtype(col):
        return col.nunique() <= max(50, int(0.01 * len(col)))
    return False


def categorical_columns(adata: Any) -> list[str]:
    """Names of ``adata.obs`` columns that can colour or group cells by category."""
    return ObsColumn("categorical").choices(adata)
