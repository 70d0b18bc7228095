"""k-fold splits of cells and the bin-shuffle control.

Cross-validation trains on k - 1 folds and scores train and validation cells separately (paper
section 2.7: five-fold). The bin-shuffle control (section 3.5) permutes the order of the bins, the
same permutation for every cell and modality, so a convolutional model loses the genomic
neighbourhoods it exploits while a fully connected model sees the same data.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ..errors import ConvNetVAEError


def kfold_indices(
    n_cells: int, n_folds: int = 5, seed: int = 0, min_validation: int = 1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled k-fold split of cells.

    Parameters
    ----------
    n_cells
        Number of cells.
    n_folds
        Number of folds ``k``; ``1`` means no cross-validation (all cells train, no validation).
    seed
        Seed of the shuffle.
    min_validation
        Smallest acceptable validation fold (e.g. ``k + 1`` cells for a kNN graph with ``k``
        neighbours); a clear error otherwise.

    Returns
    -------
    list of (train_indices, validation_indices)
        Sorted integer arrays; the validation folds partition the cells.
    """
    n_folds = int(n_folds)
    if n_folds < 1:
        raise ConvNetVAEError(f"folds must be at least 1, got {n_folds}")
    if n_folds == 1:
        return [(np.arange(n_cells), np.zeros(0, dtype=np.int64))]
    smallest = n_cells // n_folds
    if smallest < min_validation:
        raise ConvNetVAEError(
            f"{n_cells} cells in {n_folds} folds leaves {smallest} cells per validation fold, but at "
            f"least {min_validation} are needed (kNN graph); use fewer folds (--folds) or more cells")
    perm = np.random.default_rng(seed).permutation(n_cells)
    folds = np.array_split(perm, n_folds)
    out = []
    for i in range(n_folds):
        val = np.sort(folds[i])
        train = np.sort(np.concatenate([folds[j] for j in range(n_folds) if j != i]))
        out.append((train, val))
    return out


def bin_permutation(n_bins: int, seed: int = 0) -> np.ndarray:
    """The random permutation of bins used by :func:`shuffle_bins` (``new[:, j] = old[:, perm[j]]``)."""
    return np.random.default_rng(seed).permutation(n_bins)


def shuffle_bins(adata: ad.AnnData, modalities: Sequence[str] | None = None, seed: int = 0) -> ad.AnnData:
    """A copy of ``adata`` whose count layers have their bins (columns) randomly permuted.

    ``var`` (coordinates) is kept, so the copy still follows the data contract; only the signal
    moves: every cell and modality gets the same permutation.

    Parameters
    ----------
    adata
        Cells x bins with count layers.
    modalities
        Layers to permute (default: every layer).
    seed
        Seed of the permutation.

    Returns
    -------
    anndata.AnnData
        The shuffled copy (``uns["bin_shuffle_seed"]`` records the seed).
    """
    mods = list(adata.layers.keys()) if modalities is None else list(modalities)
    missing = [m for m in mods if m not in adata.layers]
    if missing:
        raise ConvNetVAEError(f"layers {missing} not found in adata.layers (available: {list(adata.layers)})")
    perm = bin_permutation(adata.n_vars, seed)
    out = adata.copy()
    for m in mods:
        layer = out.layers[m]
        out.layers[m] = (sp.csr_matrix(layer[:, perm]).sorted_indices() if sp.issparse(layer)
                         else np.asarray(layer)[:, perm])
    if out.X is not None and out.X.shape == (out.n_obs, out.n_vars):
        out.X = out.X[:, perm]
    out.uns["bin_shuffle_seed"] = int(seed)
    return out
