"""Evaluation: clustering sweeps, scIB metrics, marginal likelihood, cross-validation, baselines.

>>> from convnetvae.evaluate import clustering_sweep, scib_metrics
>>> sweep = clustering_sweep(adata.obsm["X_convnetvae"], adata.obs["cell_type"])   # doctest: +SKIP
>>> scib_metrics(adata.obsm["X_convnetvae"], adata.obs["cell_type"], adata.obs["batch"]).to_dict()  # doctest: +SKIP

Heavy submodules (torch models, plotting) are imported only when used.
"""

from .baselines import LSIModel, lsi_embedding, mofa_available, mofa_embedding, tfidf
from .clustering import DEFAULT_RESOLUTIONS, ari, clustering_sweep, leiden, louvain, nmi
from .crossval import kfold_indices, shuffle_bins
from .neighbors import KNNResult, fuzzy_connectivities, knn
from .scib import ScibResult, scib_metrics


def marginal_log_likelihood(model, adata=None, n_samples: int = 100, batch_size: int = 64, seed: int = 0):
    """Per-cell importance-sampled log p(x | b); see :func:`convnetvae.evaluate.likelihood.marginal_log_likelihood`."""
    from .likelihood import marginal_log_likelihood as _mll

    return _mll(model, adata=adata, n_samples=n_samples, batch_size=batch_size, seed=seed)


def run_benchmark(adata, config, log=None):
    """Cross-validated benchmark; see :func:`convnetvae.evaluate.harness.run_benchmark`."""
    from .harness import run_benchmark as _run

    return _run(adata, config, log=log)


__all__ = [
    "DEFAULT_RESOLUTIONS", "KNNResult", "LSIModel", "ScibResult", "ari", "clustering_sweep", "fuzzy_connectivities",
    "kfold_indices", "knn", "leiden", "louvain", "lsi_embedding", "marginal_log_likelihood", "mofa_available",
    "mofa_embedding", "nmi", "run_benchmark", "scib_metrics", "shuffle_bins", "tfidf",
]
