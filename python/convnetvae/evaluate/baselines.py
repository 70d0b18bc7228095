"""Non-neural baselines on the same data and metrics.

``lsi_embedding`` is the pipeline a Signac user runs on each modality: TF-IDF (Signac's default
``RunTFIDF(method = 1)``: ``log1p(TF * IDF * 1e4)``), truncated SVD (``RunSVD``, components scaled
to mean 0 / sd 1), the first component dropped when it tracks sequencing depth
(``|corr(component, log depth)| > 0.75``, Signac's ``DepthCor`` convention), and the modalities'
components concatenated. ``mofa_embedding`` runs MOFA+ when ``mofapy2`` is installed.
The FC-VAE product-of-experts baseline is a :class:`~convnetvae.api.ConvNetVAE` with
``architecture="fc-l1"`` (``fc-l2``, ``fc-l3``) and needs no code here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..errors import ConvNetVAEError
from ..model.lsi_start import DEPTH_CORRELATION_CUTOFF, depth_correlation  # shared with the model


def tfidf(counts: sp.spmatrix, scale_factor: float = 1e4) -> sp.csr_matrix:
    """Signac's log TF-IDF: ``log1p(x_ij / n_i * N / sum_i x_ij * scale_factor)``.

    Parameters
    ----------
    counts
        Cells x features sparse counts.
    scale_factor
        Multiplier before the log (Signac's default 1e4).

    Returns
    -------
    scipy.sparse.csr_matrix
        Same sparsity as ``counts``; all-zero cells and features stay zero.
    """
    x = sp.csr_matrix(counts, dtype=np.float64)
    feat = np.asarray(x.sum(axis=0)).ravel()
    idf = np.divide(x.shape[0], feat, out=np.zeros_like(feat), where=feat > 0)
    return _tfidf_with(x, idf, scale_factor)


@dataclass
class LSIResult:
    """An LSI embedding and what was done to build it."""

    embedding: np.ndarray
    depth_correlation: dict[str, list[float]] = field(default_factory=dict)
    dropped_first: dict[str, bool] = field(default_factory=dict)


class LSIModel:
    """Multimodal LSI fitted on training cells and applied to new cells.

    The IDF, SVD components, component scaling and the depth-component decision are learned by
    :meth:`fit` and reused by :meth:`transform`, so validation cells are projected, not refitted.

    Parameters
    ----------
    modalities
        Count layers to use.
    n_components
        Components per modality.
    seed
        SVD random seed.
    scale
        ``True`` (Signac's ``RunSVD(scale.embeddings = TRUE)`` default): every component scaled to
        SD 1. ``False``: components keep their singular-value weights (``U S``), each modality's
        block divided by the SD of its first kept component so modalities weigh alike; noise
        components then weigh less (a stronger baseline on small data, see docs/benchmarks.md).
    """

    def __init__(self, modalities: Sequence[str], n_components: int = 30, seed: int = 0, scale: bool = True) -> None:
        if not modalities:
            raise ConvNetVAEError("modalities= is required for the LSI baseline (names of count layers)")
        self.modalities = list(modalities)
        self.n_components = int(n_components)
        self.seed = int(seed)
        self.scale = bool(scale)
        self.parts_: dict[str, dict] = {}

    @property
    def n_parameters(self) -> int:
        """Number of fitted values (IDF weights + SVD loadings), for the parameter-count figure."""
        return int(sum(p["idf"].size + p["svd"].components_.size for p in self.parts_.values()))

    def fit(self, adata) -> LSIModel:
        """Learn IDF, SVD and scaling per modality from ``adata``'s cells."""
        from sklearn.decomposition import TruncatedSVD

        for m in self.modalities:
            x = _layer(adata, m)
            n_cells, n_feat = x.shape
            feat = np.asarray(x.sum(axis=0)).ravel()
            idf = np.divide(n_cells, feat, out=np.zeros_like(feat, dtype=np.float64), where=feat > 0)
            t = _tfidf_with(x, idf)
            n_comp = min(self.n_components + 1, n_feat - 1, n_cells - 1)
            if n_comp < 2:
                raise ConvNetVAEError(
                    f"LSI of layer {m!r} needs at least 3 cells and 3 features, got {n_cells} x {n_feat}")
            svd = TruncatedSVD(n_components=n_comp, algorithm="randomized", n_iter=7, random_state=self.seed)
            u = svd.fit_transform(t)
            mean, sd = u.mean(axis=0), u.std(axis=0)
            sd = np.where(sd > 0, sd, 1.0)
            depth = np.log1p(np.asarray(x.sum(axis=1)).ravel())
            corr = [depth_correlation((u[:, j] - mean[j]) / sd[j], depth) for j in range(u.shape[1])]
            self.parts_[m] = {"idf": idf, "svd": svd, "mean": mean, "sd": sd, "depth_correlation": corr,
                              "dropped_first": bool(abs(corr[0]) > DEPTH_CORRELATION_CUTOFF)}
        return self

    def transform(self, adata) -> np.ndarray:
        """Embed ``adata``'s cells (same bins) with the fitted LSI: cells x (components x modalities)."""
        if not self.parts_:
            raise ConvNetVAEError("LSIModel.transform called before fit")
        out = []
        for m in self.modalities:
            p = self.parts_[m]
            x = _layer(adata, m)
            if x.shape[1] != p["idf"].size:
                raise ConvNetVAEError(
                    f"layer {m!r} has {x.shape[1]} bins but the LSI was fitted on {p['idf'].size}")
            u = (p["svd"].transform(_tfidf_with(x, p["idf"])) - p["mean"]) / p["sd"]
            first = 1 if p["dropped_first"] else 0
            if not self.scale:  # back to U S, block scaled by its first kept component's SD
                u = u * (p["sd"] / p["sd"][first])
            out.append(u[:, first:][:, : self.n_components])
        return np.concatenate(out, axis=1)


def _layer(adata, m: str) -> sp.csr_matrix:
    if m not in adata.layers:
        raise ConvNetVAEError(f"layer {m!r} not found in adata.layers (available: {list(adata.layers)})")
    return sp.csr_matrix(adata.layers[m], dtype=np.float64)


def _tfidf_with(x: sp.csr_matrix, idf: np.ndarray, scale_factor: float = 1e4) -> sp.csr_matrix:
    depth = np.asarray(x.sum(axis=1)).ravel()
    inv_depth = np.divide(1.0, depth, out=np.zeros_like(depth), where=depth > 0)
    t = sp.csr_matrix(sp.diags(inv_depth) @ x @ sp.diags(idf * scale_factor))
    t.data = np.log1p(t.data)
    return t


def lsi_embedding(
    adata, modalities: Sequence[str] | None = None, n_components: int = 30, seed: int = 0
) -> LSIResult:
    """Signac-style multimodal LSI of all cells: per-modality LSI, concatenated.

    Parameters
    ----------
    adata
        AnnData following the data contract (one count layer per modality).
    modalities
        Layers to use; defaults to the registered modalities (``adata.uns["convnetvae"]``) or
        ``adata.uns["modalities"]``.
    n_components
        Components per modality.
    seed
        Random seed.

    Returns
    -------
    LSIResult
        ``embedding`` is cells x (``n_components`` x modalities), with each modality's
        component/depth correlations and whether its first component was dropped.
    """
    if modalities is None:
        reg = adata.uns.get("convnetvae", {})
        modalities = list(reg.get("modalities", adata.uns.get("modalities", [])))
    model = LSIModel(modalities, n_components=n_components, seed=seed).fit(adata)
    return LSIResult(
        model.transform(adata),
        {m: [float(c) for c in p["depth_correlation"]] for m, p in model.parts_.items()},
        {m: p["dropped_first"] for m, p in model.parts_.items()},
    )


def mofa_available() -> bool:
    """Whether the optional MOFA+ baseline (``mofapy2``) is importable."""
    try:
        import mofapy2  # noqa: F401
    except Exception:
        return False
    return True


def mofa_embedding(
    adata, modalities: Sequence[str] | None = None, n_factors: int = 15, n_features: int = 5000, seed: int = 0
) -> np.ndarray:
    """MOFA+ factors on per-modality log TF-IDF of the most variable bins (optional baseline).

    Raises
    ------
    ConvNetVAEError
        When ``mofapy2`` is not installed.
    """
    if not mofa_available():
        raise ConvNetVAEError("the MOFA+ baseline needs mofapy2: pip install mofapy2 (optional)")
    from mofapy2.run.entry_point import entry_point

    if modalities is None:
        modalities = list(adata.uns.get("convnetvae", {}).get("modalities", adata.uns.get("modalities", [])))
    views = []
    for m in modalities:
        x = tfidf(sp.csr_matrix(adata.layers[m]))
        mean = np.asarray(x.mean(axis=0)).ravel()
        var = np.asarray(x.multiply(x).mean(axis=0)).ravel() - mean**2
        top = np.sort(np.argsort(var)[::-1][: min(n_features, x.shape[1])])
        views.append([x[:, top].toarray()])
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # mofapy2 prints a banner and progress
        ent = entry_point()
        ent.set_data_options(scale_views=True)
        ent.set_data_matrix(views, views_names=list(modalities))
        ent.set_model_options(factors=n_factors)
        ent.set_train_options(iter=200, seed=seed, verbose=False, quiet=True)
        ent.build()
        ent.run()
    return np.asarray(ent.model.nodes["Z"].getExpectation())
