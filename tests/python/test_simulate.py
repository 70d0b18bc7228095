import numpy as np
import pytest
import scipy.sparse as sp

import convnetvae as cv
from convnetvae.errors import ConvNetVAEError


def test_simulate_follows_contract():
    a = cv.simulate(n_cells=400, n_bins=2000, n_types=5, n_batches=2, n_chromosomes=4, seed=1)
    assert a.shape == (400, 2000)
    assert list(a.var.columns[:3]) == ["chrom", "start", "end"]
    assert a.var.chrom.nunique() == 4
    # genome order: positions increase within each chromosome, chromosomes contiguous
    for _, grp in a.var.groupby("chrom", observed=True):
        assert np.all(np.diff(grp.start.to_numpy()) > 0)
    assert (a.var.end - a.var.start == 10_000).all()
    for m in ("ATAC", "H3K27ac", "H3K27me3"):
        x = a.layers[m]
        assert sp.isspmatrix_csr(x) and np.issubdtype(x.dtype, np.integer)
        assert (a.obs[f"n_counts_{m}"].to_numpy() == np.asarray(x.sum(1)).ravel()).all()
    assert set(a.obs.cell_type.unique()) <= {f"type{i}" for i in range(5)}
    assert a.obs.batch.nunique() == 2


def test_simulate_realistic_sparsity_and_library():
    a = cv.simulate(n_cells=2000, n_bins=10_000, seed=2)
    for m in a.layers:
        density = a.layers[m].nnz / (a.n_obs * a.n_vars)
        assert 0.01 <= density <= 0.05, (m, density)
        lib = a.obs[f"n_counts_{m}"].to_numpy()
        # log-normal: log library roughly symmetric, sd near 0.5
        assert 0.3 < np.log(lib).std() < 0.8


def test_simulate_marks_shapes_and_correlation():
    a = cv.simulate(n_cells=1500, n_bins=4000, n_chromosomes=1, seed=4, batch_strength=0.0)
    prof = {m: np.asarray(a.layers[m].sum(0)).ravel().astype(float) for m in a.layers}

    def autocorr(v, lag):
        v = (v - v.mean()) / v.std()
        return float(np.mean(v[:-lag] * v[lag:]))

    # broad H3K27me3 domains stay correlated over 10 bins; punctate ATAC does not
    assert autocorr(prof["H3K27me3"], 10) > 0.5
    assert autocorr(prof["ATAC"], 10) < autocorr(prof["H3K27me3"], 10) - 0.3
    # the two active marks share loci
    assert np.corrcoef(prof["ATAC"], prof["H3K27ac"])[0, 1] > 0.5


def test_simulate_seeded_and_missing():
    a = cv.simulate(n_cells=200, n_bins=500, seed=7, missing={"ATAC": 0.5})
    b = cv.simulate(n_cells=200, n_bins=500, seed=7, missing={"ATAC": 0.5})
    assert (a.layers["ATAC"] != b.layers["ATAC"]).nnz == 0
    mask = a.obsm["modality_mask"]
    assert mask.shape == (200, 3) and 0.3 < mask[:, 0].mean() < 0.7 and mask[:, 1:].all()
    assert a.obs["n_counts_ATAC"].to_numpy()[~mask[:, 0]].sum() == 0


@pytest.mark.parametrize("kw", [dict(n_cells=0), dict(modalities=[]),
                                dict(missing={"RNA": 0.5}), dict(missing={"ATAC": 1.0})])
def test_simulate_bad_arguments(kw):
    with pytest.raises(ConvNetVAEError):
        cv.simulate(**kw)
