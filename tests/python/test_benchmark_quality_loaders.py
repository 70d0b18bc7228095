"""benchmarks/quality.py reads the two small labelled sets outside the issue's five (skipped
when ../shared/data is absent, as in a user's fresh clone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import load_benchmark, shared_data
from convnetvae.data.contract import natural_chrom_key

quality = load_benchmark("quality")


@pytest.mark.parametrize("name,folder,n_cells,modality,labels", [
    ("chromscape", "chromscape_scchip_h3k4me3_jurkat_ramos", 106, "H3K4me3",
     {"scChIP_Jurkat_K4me3", "scChIP_Ramos_K4me3"}),
    ("chromvar_example", "chromvar_example_counts_gm12878_h1_scatac", 50, "ATAC", {"GM", "H1"}),
])
def test_small_labelled_sets_load_in_genome_order(name, folder, n_cells, modality, labels):
    shared_data("real", folder)
    a, labels_key, batch_key = quality.load_dataset(name, shared_data(), 25_000, 0)
    assert a.n_obs == n_cells and batch_key is None
    assert a.uns["modalities"] == [modality]
    assert set(a.obs[labels_key].astype(str)) == labels
    x = a.layers[modality]
    assert sp.issparse(x) and x.shape == (n_cells, a.n_vars) and x.sum() > 0
    assert np.issubdtype(x.dtype, np.integer)
    keys = [(natural_chrom_key(c), s) for c, s in zip(a.var["chrom"], a.var["start"])]
    assert keys == sorted(keys)
    counts = np.asarray(x.sum(axis=1)).ravel()
    assert (counts > 0).all() and a.obs_names.is_unique
    # each cell's label is its own (the cell names carry the line), and the matrix's cells are
    # the metadata's rows in order: their counts match the metadata's own depth column
    line = {"scChIP_Jurkat_K4me3": "Jurkat", "scChIP_Ramos_K4me3": "Ramos", "GM": "GM12878",
            "H1": "H1"}
    assert all(line[lab] in cell for cell, lab in zip(a.obs_names, a.obs[labels_key].astype(str)))
    if name == "chromscape":  # all 5,499 bins kept: the totals are the metadata's exactly
        np.testing.assert_array_equal(counts, a.obs["total_counts"].astype(float).to_numpy())
    else:  # reads in peaks against all fragments
        assert np.corrcoef(counts, a.obs["depth"].astype(float).to_numpy())[0, 1] > 0.9


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(SystemExit, match="chromvar_example"):
        quality.load_dataset("no_such_set", Path("."), None, 0)
