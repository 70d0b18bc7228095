"""The LSI start of the free loadings (``ConvNetVAE(loadings_start="lsi")`` or ``"auto"``;
the default ``"zero"`` starts them at zero).

The free encoder loadings are a linear map from the encoder's input (TF-IDF by default) to the
latent mean, and the free bin loadings a linear map from the latent space to the decoder's
log-rates: the two halves of an LSI. Started at zero, a run of a few hundred optimiser steps
(what the time budget gives small data) spends many of them finding directions that a
truncated SVD of the same input gives in a second. :func:`lsi_directions` computes them: the
top right singular vectors ``V`` of the encoder's input (cells x (modalities x bins), the
modalities side by side; with several batches, less each batch's mean), the first dropped when
it tracks sequencing depth (Signac's convention), and the typical scale ``s`` of the
projections. :meth:`VAE.start_loadings <convnetvae.model.vae.VAE.start_loadings>` sets the
encoder loadings so that the linear part of the latent mean starts at ``h V / (c s)`` (the LSI
embedding at 1 / c of unit scale, c = :data:`SHRINK`) and the bin loadings to ``c V s``.
Training then moves both, as before; nothing else changes (docs/benchmarks.md, "An LSI start
for the loadings").
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from . import transforms

__all__ = ["AUTO_MAX_NONZERO", "DEPTH_CORRELATION_CUTOFF", "MAX_CELLS", "SHRINK", "depth_correlation",
           "encoder_input", "lsi_directions", "nonzero_fraction"]

#: |correlation with log depth| above which the first SVD component is dropped (Signac's
#: ``DepthCor`` convention; the LSI baseline uses the same cutoff)
DEPTH_CORRELATION_CUTOFF = 0.75

#: at most this many cells (a random subset, fixed by the seed) go into the SVD
MAX_CELLS = 20_000

#: ``loadings_start="auto"`` starts at the LSI when at most this fraction of the encoder's
#: input is non-zero (peak and fine-bin data; not dense tiles such as 1-Mb bins)
AUTO_MAX_NONZERO = 0.5

#: the LSI part of the latent mean starts at 1 / SHRINK of unit scale and the bin loadings at
#: SHRINK times the projections' scale (docs/benchmarks.md, "An LSI start for the loadings")
SHRINK = 3.0


def depth_correlation(component: np.ndarray, depth: np.ndarray) -> float:
    """Pearson correlation of a component with (log) depth; 0 when either is constant."""
    if component.std() == 0 or depth.std() == 0:
        return 0.0
    return float(np.corrcoef(component, depth)[0, 1])


def encoder_input(source, kind: str, scale: np.ndarray | None, idf: np.ndarray | None,
                  seed: int, mask: np.ndarray | None = None, max_cells: int = MAX_CELLS
                  ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """The encoder's input of the cells (a random subset beyond ``max_cells``), sparse.

    Parameters
    ----------
    source
        Row access to the counts (:class:`~convnetvae.data.loader.CountSource`).
    kind, scale, idf
        The encoder's input transform and its statistics (``scale`` per modality, ``idf``
        modalities x bins; None where the transform has none), as in
        :func:`~convnetvae.model.transforms.forward`.
    seed
        Seed of the cell subset.
    mask
        Cells x modalities, True where observed (None: all); unobserved modalities read as
        zeros, as the encoder sees them.
    max_cells
        Cells used at most.

    Returns
    -------
    input : scipy.sparse.csr_matrix
        Cells x (modalities x bins), the modalities side by side.
    depth : numpy.ndarray
        The cells' total counts over their observed modalities.
    rows : numpy.ndarray
        Which cells (positions in ``source``), in order.
    """
    n_obs, n_bins = source.n_obs, source.n_bins
    rng = np.random.default_rng(seed)
    rows = np.arange(n_obs) if n_obs <= max_cells else \
        np.sort(rng.choice(n_obs, size=max_cells, replace=False))
    blocks, depth = [], np.zeros(len(rows))
    for j in range(source.n_modalities):
        indptr, indices, data = source.csr_rows(j, rows)
        x = sp.csr_matrix((np.asarray(data, dtype=np.float64), indices, indptr),
                          shape=(len(rows), n_bins))
        if mask is not None:
            x = sp.csr_matrix(sp.diags(mask[rows, j].astype(np.float64)) @ x)
        depth += np.asarray(x.sum(axis=1)).ravel()
        blocks.append(transforms.forward_csr(
            x, kind, None if scale is None else float(scale[j]),
            None if idf is None else np.asarray(idf[j], dtype=np.float64)))
    return sp.hstack(blocks, format="csr"), depth, rows


def nonzero_fraction(h: sp.spmatrix) -> float:
    """Fraction of the entries of ``h`` that are not zero (0 for an empty matrix)."""
    size = h.shape[0] * h.shape[1]
    return float(h.count_nonzero()) / size if size else 0.0


def _batch_centred(h: sp.csr_matrix, batch: np.ndarray):
    """``h`` minus each batch's mean row, as a linear operator (``h`` stays sparse)."""
    from scipy.sparse.linalg import LinearOperator

    codes, inv = np.unique(np.asarray(batch), return_inverse=True)
    onehot = sp.csr_matrix((np.ones(len(inv)), (np.arange(len(inv)), inv)),
                           shape=(len(inv), len(codes)))
    means = sp.diags(1.0 / np.asarray(onehot.sum(axis=0)).ravel()) @ (onehot.T @ h)
    means = np.asarray(means.todense())  # batches x features
    ht = h.T.tocsr()

    def forward(v: np.ndarray) -> np.ndarray:  # vectors and blocks of vectors alike
        return h @ v - onehot @ (means @ v)

    def adjoint(u: np.ndarray) -> np.ndarray:
        return ht @ u - means.T @ (onehot.T @ u)

    return LinearOperator(h.shape, dtype=np.float64, matvec=forward, rmatvec=adjoint,
                          matmat=forward, rmatmat=adjoint)


def lsi_directions(h: sp.spmatrix, depth: np.ndarray, n_latent: int, seed: int,
                   batch: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Directions and scale of an LSI of the encoder's input ``h`` (:func:`encoder_input`).

    Parameters
    ----------
    h
        Cells x (modalities x bins).
    depth
        The cells' total counts (the first component is dropped when it tracks their log).
    n_latent
        Number of directions wanted (the latent dimension).
    seed
        Seed of the SVD's starting vector.
    batch
        Batch of each row of ``h`` (None: one batch). With several batches the SVD is of ``h``
        less each batch's mean row, so that no direction starts out as a batch difference
        (the decoder's batch offsets model those; started with them, the latent mean carried
        the batches and a mapped query mixed less with the reference).

    Returns
    -------
    directions : numpy.ndarray
        (modalities x bins) x ``n_latent``, orthonormal columns; columns beyond the rank of the
        data are zero.
    scale : float
        Root mean variance of the cells' projections on the directions (1 when they are 0).
    """
    out = np.zeros((h.shape[1], n_latent))
    k = min(n_latent + 1, min(h.shape) - 1)
    if k < 1 or h.nnz == 0:
        return out, 1.0
    from scipy.sparse.linalg import svds

    # ARPACK: exact, and on these shapes faster than scikit-learn's randomized SVD, which would
    # also cost its import (side by side on a loaded machine, Buenrostro and Paired-Tag:
    # 1.5-1.9 s against 2.7-3.7 s + 1.3 s)
    h = sp.csr_matrix(h, dtype=np.float64)
    several = batch is not None and len(np.unique(batch)) > 1
    u, s, vt = svds(_batch_centred(h, batch) if several else h, k=k, random_state=seed)
    order = np.argsort(s)[::-1]
    u, s, vt = u[:, order], s[order], vt[order]
    us = u * s
    first = 1 if k > 1 and abs(depth_correlation(us[:, 0], np.log1p(depth))) > \
        DEPTH_CORRELATION_CUTOFF else 0
    kept = vt[first:first + n_latent].T
    out[:, :kept.shape[1]] = kept
    spread = float(np.sqrt(us[:, first:first + n_latent].var(axis=0).mean()))
    return out, (spread if spread > 0 else 1.0)
