"""What the encoder sees: a transform of each cell's counts, per modality.

* ``log1p``: ``log(1 + x)`` (the paper). Sequencing depth then dominates the input: a cell with
  twice the reads looks like a different cell.
* ``depth``: ``log(1 + x * s / l)``, the counts scaled to a common depth first (``l`` = the
  cell's total in that modality, ``s`` = the median total of the cells the model was built on),
  so a typical cell's input is on the ``log1p`` scale.
* ``tfidf``: ``log(1 + x * s / l * idf)``, depth-scaled counts weighted by each bin's inverse
  frequency as in Signac's TF-IDF (``idf`` = the mean bin total over the bin's total, 1 for an
  average bin; 0 for a bin with no counts).

The statistics (``s`` per modality, ``idf`` per modality and bin) are computed once from the data
the model is built on and saved with the weights. The decoder always models raw counts, so the
likelihood and the marginal likelihood are the same whatever the encoder sees.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .registry import INPUT_TRANSFORMS

__all__ = ["INPUT_TRANSFORMS", "forward", "forward_csr", "inverse", "inverse_frequency",
           "library_scale"]


def library_scale(library_sizes: np.ndarray) -> float:
    """``s`` of one modality: the median of the non-zero library sizes (1 when there are none)."""
    lib = np.asarray(library_sizes, dtype=np.float64)
    lib = lib[lib > 0]
    return float(np.median(lib)) if lib.size else 1.0


def inverse_frequency(bin_totals: np.ndarray) -> np.ndarray:
    """``idf`` of one modality: mean bin total / bin total (0 for empty bins)."""
    tot = np.asarray(bin_totals, dtype=np.float64)
    nz = tot > 0
    out = np.zeros_like(tot)
    if nz.any():
        out[nz] = tot[nz].mean() / tot[nz]
    return out


def forward(x: torch.Tensor, kind: str, scale: torch.Tensor | None = None,
            idf: torch.Tensor | None = None, library_sizes: torch.Tensor | None = None
            ) -> torch.Tensor:
    """Encoder input of counts ``x`` (B, M, G); ``scale`` (M,), ``idf`` (M, G);
    ``library_sizes`` (B, M), ``x.sum(-1)``, when the caller has it already (a pass saved)."""
    if kind == "log1p":
        return torch.log1p(x)
    lib = (x.sum(-1) if library_sizes is None else library_sizes).unsqueeze(-1).clamp_min(1.0)
    w = scale.view(1, -1, 1) / lib
    if kind == "tfidf":
        w = w * idf.unsqueeze(0)
    return (x * w).log1p_()  # in place on the product: one full-size tensor, not two


def forward_csr(x: sp.spmatrix, kind: str, scale: float | None = None,
                idf: np.ndarray | None = None) -> sp.csr_matrix:
    """:func:`forward` of one modality's counts held as a sparse cells x bins matrix.

    The same values as :func:`forward` (float64), zeros kept sparse: every transform maps 0 to 0.
    ``scale`` is the modality's ``s``, ``idf`` its bins' weights (None where ``kind`` has none).
    """
    x = sp.csr_matrix(x, dtype=np.float64, copy=True)
    x.sum_duplicates()
    if kind != "log1p":
        lib = np.maximum(np.asarray(x.sum(axis=1)).ravel(), 1.0)
        x = sp.diags(scale / lib) @ x
        if kind == "tfidf":
            x = x @ sp.diags(idf)
        x = sp.csr_matrix(x)
    x.data = np.log1p(x.data)
    return x


def inverse(h: torch.Tensor, kind: str, library_sizes: torch.Tensor,
            scale: torch.Tensor | None = None, idf: torch.Tensor | None = None) -> torch.Tensor:
    """Counts from an encoder input ``h`` (B, M, G) and the cells' library sizes (B, M).

    Exact where the transform is invertible (bins with ``idf > 0`` for ``tfidf``; 0 elsewhere).
    """
    x = torch.expm1(h)
    if kind == "log1p":
        return x
    w = library_sizes.clamp_min(1.0).unsqueeze(-1) / scale.view(1, -1, 1)
    if kind == "tfidf":
        safe = torch.where(idf > 0, idf, torch.ones_like(idf)).unsqueeze(0)
        return torch.where(idf.unsqueeze(0) > 0, x * w / safe, torch.zeros_like(x))
    return x * w
