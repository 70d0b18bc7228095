"""Silently wrong results and foreign tracebacks from bad inputs (issue 16, items 3, 5, 6, 7 and
the list of foreign tracebacks): each now gives the right result, a warning naming what was
seen, or a :class:`ConvNetVAEError` naming the file and what to do."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import convnetvae as cv
from convnetvae.data.fragments import read_fragments
from convnetvae.data.genome import read_blacklist, read_chrom_sizes
from convnetvae.data.loader import InMemorySource, densify
from convnetvae.errors import ConvNetVAEError
from helpers_fragments import CHROM_SIZES, random_fragments

MODS = ["ATAC", "H3K27ac", "H3K27me3"]


@pytest.fixture
def frag_files(tmp_path):
    df = random_fragments(3000, n_cells=6)
    frag = tmp_path / "frag.tsv"
    df.to_csv(frag, sep="\t", header=False, index=False)
    sizes = tmp_path / "genome.sizes"
    sizes.write_text("".join(f"{c}\t{n}\n" for c, n in CHROM_SIZES.items()))
    return frag, sizes, sorted(df["barcode"].unique())


def _small(seed: int = 1, n_cells: int = 60):
    return cv.simulate(n_cells=n_cells, n_bins=200, n_chromosomes=2, n_types=2, seed=seed)


# ---------------------------------------------------------------------- item 3: duplicates
def _split_into_duplicates(x: sp.csr_matrix) -> sp.csr_matrix:
    """The same counts with every entry split in two (a non-canonical CSR matrix)."""
    coo = x.tocoo()
    half = coo.data // 2
    row = np.concatenate([coo.row, coo.row])
    order = np.argsort(row, kind="stable")
    data = np.concatenate([coo.data - half, half])[order]
    cols = np.concatenate([coo.col, coo.col])[order]
    indptr = np.r_[0, np.cumsum(np.bincount(row, minlength=x.shape[0]))]
    dup = sp.csr_matrix((data, cols, indptr), shape=x.shape)
    # (scipy's own .sum() would sum the duplicates in place: look at the arrays only)
    assert dup.nnz == 2 * x.nnz and dup.data.sum() == x.data.sum()
    return dup


def test_duplicate_csr_entries_are_summed_in_memory_and_on_disk(tmp_path):
    adata = _small()
    ref = {m: adata.layers[m].toarray() for m in MODS}
    dup = adata.copy()
    for m in MODS:
        dup.layers[m] = _split_into_duplicates(adata.layers[m])
    assert dup.layers["ATAC"].nnz == 2 * adata.layers["ATAC"].nnz
    # the loader alone (any count source), including sum_g log(x_g!)
    lf_ref, lf_dup = np.zeros((60, 1)), np.zeros((60, 1))
    rows = np.arange(60)
    d_ref = densify(InMemorySource([adata.layers["ATAC"]]), rows, log_factorials=lf_ref)
    d_dup = densify(InMemorySource([_split_into_duplicates(adata.layers["ATAC"])]), rows,
                    log_factorials=lf_dup)
    np.testing.assert_array_equal(d_ref, d_dup)
    np.testing.assert_allclose(lf_ref, lf_dup)
    # the training loader's per-row log-factorials (computed once for in-memory sources)
    from convnetvae.data.loader import MinibatchLoader

    loader = MinibatchLoader(InMemorySource([_split_into_duplicates(adata.layers["ATAC"])]),
                             np.zeros(60, int), None, indices=np.arange(5, 60), batch_size=16,
                             shuffle=True, generator=np.random.default_rng(1))
    for mb in loader:
        np.testing.assert_array_equal(mb.x.numpy(), d_ref[mb.index])
        np.testing.assert_allclose(mb.log_factorials.numpy(), lf_ref[mb.index], rtol=1e-6)
    # a file with duplicate entries, trained from disk and from memory
    path = tmp_path / "dup.h5ad"
    adata.write_h5ad(path)
    with h5py.File(path, "r+") as f:  # anndata writes canonical matrices: put duplicates in
        for m in MODS:
            g = f[f"layers/{m}"]
            for k in ("data", "indices", "indptr"):
                del g[k]
                g.create_dataset(k, data=getattr(dup.layers[m], k))
    for backed in (False, True):
        a = cv.data.backed.read_h5ad(path, backed=backed)
        cv.ConvNetVAE.setup_anndata(a, modalities=MODS)
        model = cv.ConvNetVAE(a, architecture="conv-k11s11", n_hidden=8, n_latent=2)
        model.train(max_epochs=1, progress=False, batch_size=16)
        x = densify(cv.data.backed.source_from_anndata(a, MODS), rows)
        for j, m in enumerate(MODS):
            np.testing.assert_array_equal(x[:, j, :], ref[m])
    cv.ConvNetVAE.setup_anndata(dup, modalities=MODS)
    assert all(dup.layers[m].has_canonical_format for m in MODS)


# ---------------------------------------------------------------------- item 5: names that match nothing
def test_blacklist_with_other_chromosome_names(frag_files, tmp_path):
    frag, sizes, _ = frag_files
    bl = tmp_path / "bl.bed"
    bl.write_text("1\t0\t500000\n2\t0\t400000\n")
    with pytest.raises(ConvNetVAEError, match=r"blacklist's chromosome names \(1, 2\) match none "
                                               r"of the genome's \(chr1, chr2, chr10, chrX"):
        read_fragments({"A": frag}, chrom_sizes=sizes, blacklist=bl, min_counts=1)
    bl.write_text("chr22\t0\t500000\n")  # another build's chromosomes: a warning
    with pytest.warns(UserWarning, match=r"\(chr22\) match none of the genome's"):
        read_fragments({"A": frag}, chrom_sizes=sizes, blacklist=bl, min_counts=1)


def test_barcode_list_matching_no_cell_names_both_sides(frag_files, tmp_path):
    frag, sizes, barcodes = frag_files
    lst = tmp_path / "bc.txt"
    lst.write_text("\n".join(b.replace("-1", "") for b in barcodes) + "\n")
    with pytest.raises(ConvNetVAEError, match=r"the file has e\.g\. 'CELL0000\d-1'.*the barcodes "
                                               r"list has e\.g\. 'CELL00000'"):
        read_fragments({"A": frag}, chrom_sizes=sizes, barcodes=lst)
    lst.write_text("\n".join(barcodes[:3] + ["NOT_A_CELL-1"]) + "\n")
    with pytest.warns(UserWarning, match=r"1 of the 4 barcodes .* 'NOT_A_CELL-1'"):
        a = read_fragments({"A": frag}, chrom_sizes=sizes, barcodes=lst)
    assert a.n_obs == 3


# ---------------------------------------------------------------------- item 6
def test_barcode_file_and_map_with_utf8_bom_keep_the_first_cell(frag_files, tmp_path):
    frag, sizes, barcodes = frag_files
    lst = tmp_path / "bc.txt"
    lst.write_bytes(b"\xef\xbb\xbf" + "\n".join(barcodes).encode() + b"\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no barcode is lost, so nothing to warn about
        a = read_fragments({"A": frag}, chrom_sizes=sizes, barcodes=lst)
    assert sorted(a.obs_names) == barcodes
    bmap = tmp_path / "map.txt"
    bmap.write_bytes(b"\xef\xbb\xbf" + "".join(f"{b}\tcell{i}\n" for i, b in
                                               enumerate(barcodes)).encode())
    a = read_fragments({"A": frag}, chrom_sizes=sizes, barcode_maps={"A": bmap}, min_counts=1)
    assert sorted(a.obs_names) == sorted(f"cell{i}" for i in range(len(barcodes)))


def test_chromosome_listed_twice_in_sizes_is_an_error(tmp_path):
    p = tmp_path / "g.sizes"
    p.write_text("chr1\t1000\nchr2\t500\nchr1\t2000\n")
    with pytest.raises(ConvNetVAEError, match=r"'chr1' is listed twice \(lines 1 and 3\)"):
        read_chrom_sizes(p)
    with pytest.raises(ConvNetVAEError, match="twice"):
        read_chrom_sizes(pd.Series([1000, 2000], index=["chr1", "chr1"]))


# ---------------------------------------------------------------------- item 7
def test_cell_with_every_modality_masked_warns_when_embedded():
    adata = _small()
    mask = np.ones((60, 3), bool)
    mask[[4, 9]] = False
    adata.obsm["modality_mask"] = mask
    cv.ConvNetVAE.setup_anndata(adata, modalities=MODS)
    m = cv.ConvNetVAE(adata, architecture="conv-k11s11", n_hidden=8, n_latent=2)
    with pytest.warns(UserWarning, match=r"2 cell\(s\) have no observed modality .*'cell000004', "
                                         r"'cell000009'"):
        m.get_latent_representation()
    ok = _small()
    cv.ConvNetVAE.setup_anndata(ok, modalities=MODS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        m.get_latent_representation(ok)


# ---------------------------------------------------------------------- foreign tracebacks
def _utf16(path, text: str) -> None:
    path.write_bytes(text.encode("utf-16"))


@pytest.mark.parametrize("bad", ["directory", "utf16", "utf16_no_bom", "not_gzip", "truncated_gz",
                                 "latin1"])
@pytest.mark.parametrize("role", ["fragments", "chrom_sizes", "blacklist", "barcodes"])
def test_unreadable_text_inputs_are_clear_errors(frag_files, tmp_path, bad, role):
    frag, sizes, barcodes = frag_files
    src = {"fragments": frag.read_text(), "chrom_sizes": sizes.read_text(),
           "blacklist": "chr1\t0\t1000\n", "barcodes": "\n".join(barcodes)}[role]
    p = tmp_path / f"bad.{role}"
    if bad == "directory":
        p.mkdir()
    elif bad == "utf16":
        _utf16(p, src)
    elif bad == "utf16_no_bom":
        p.write_bytes(src.encode("utf-16-le"))
    elif bad == "not_gzip":
        p.write_bytes(b"\x1f\x8b" + os.urandom(300))
    elif bad == "truncated_gz":
        full = gzip.compress(src.encode())
        p.write_bytes(full[: len(full) // 2])
    else:
        p.write_bytes(src.encode() + b"caf\xe9\t10\t20\tx\t1\n")  # Latin-1, not UTF-8
    kw = {"fragments": {"A": frag}, "chrom_sizes": sizes, "min_counts": 1}
    if role == "fragments":
        kw["fragments"] = {"A": p}
    else:
        kw[role] = p
    with pytest.raises(ConvNetVAEError, match=r"(?i)directory|utf-16|utf-8|gzip|nul"):
        read_fragments(**kw)


@pytest.mark.parametrize("reader", [read_chrom_sizes, read_blacklist])
def test_genome_readers_on_directories_and_utf16(tmp_path, reader):
    with pytest.raises(ConvNetVAEError, match="is a directory"):
        reader(tmp_path)
    p = tmp_path / "x.txt"
    _utf16(p, "chr1\t1000\t2000\n")
    with pytest.raises(ConvNetVAEError, match="UTF-16"):
        reader(p)


def test_float16_layers_are_converted(tmp_path):
    adata = _small()
    ref = adata.layers["ATAC"].toarray()
    dense16 = adata.copy()
    dense16.layers["ATAC"] = ref.astype(np.float16)
    cv.ConvNetVAE.setup_anndata(dense16, modalities=MODS)
    np.testing.assert_array_equal(dense16.layers["ATAC"].toarray(), ref)
    # a file whose sparse layer stores float16 (anndata itself cannot read it)
    path = tmp_path / "f16.h5ad"
    adata.write_h5ad(path)
    with h5py.File(path, "r+") as f:
        data = f["layers/ATAC/data"][:]
        del f["layers/ATAC/data"]
        f["layers/ATAC"].create_dataset("data", data=data.astype(np.float16))
    for backed in (False, True):
        a = cv.data.backed.read_h5ad(path, backed=backed)
        cv.ConvNetVAE.setup_anndata(a, modalities=MODS)
        m = cv.ConvNetVAE(a, architecture="conv-k11s11", n_hidden=8, n_latent=2)
        m.train(max_epochs=1, progress=False, batch_size=16)
        assert np.isfinite(m.get_latent_representation()).all()


@pytest.mark.parametrize("n_bins", [1, 2, 5, 10, 30])
def test_simulate_tiny_genomes(n_bins):
    a = cv.simulate(n_cells=5, n_bins=n_bins)
    assert a.shape == (5, n_bins)
    assert cv.simulate(n_cells=50, n_bins=600, seed=3).layers["ATAC"].sum() > 0


def test_model_loaded_without_data_says_to_pass_it(tmp_path):
    adata = _small()
    cv.ConvNetVAE.setup_anndata(adata, modalities=MODS)
    cv.ConvNetVAE(adata, architecture="conv-k11s11", n_hidden=8, n_latent=2).save(tmp_path / "m")
    m = cv.ConvNetVAE.load(tmp_path / "m")
    for call in (m.get_latent_representation, m.get_normalized_signal,
                 lambda: m.train(max_epochs=1, progress=False)):
        with pytest.raises(ConvNetVAEError, match="loaded without data"):
            call()
    assert m.get_latent_representation(adata).shape == (60, 2)


# ---------------------------------------------------------------------- bounded memory
@pytest.mark.parametrize("kind", ["no_newline", "gzip_bomb"])
def test_endless_fragment_line_is_an_error_with_bounded_memory(tmp_path, kind):
    """100 MB without a line break: an error after a few kB, not 100+ MB of memory."""
    sizes = tmp_path / "g.sizes"
    sizes.write_text("chr1\t1000000\n")
    head = b"chr1\t100\t200\tAAAC-1\t1\n"
    if kind == "no_newline":
        p = tmp_path / "frag.tsv"
        with open(p, "wb") as fh:
            fh.write(head)
            for _ in range(100):
                fh.write(b"x" * (1 << 20))
    else:
        p = tmp_path / "frag.tsv.gz"
        with gzip.open(p, "wb", compresslevel=1) as fh:
            fh.write(head)
            for _ in range(100):
                fh.write(b"\0" * (1 << 20))
    code = ("import resource, sys; from convnetvae.data.fragments import read_fragments\n"
            "from convnetvae.errors import ConvNetVAEError\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    read_fragments({'A': sys.argv[1]}, chrom_sizes=sys.argv[2], min_counts=1)\n"
            "except ConvNetVAEError as e:\n    print('ERR', e)\n"
            "print('MB', (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n")
    r = subprocess.run([sys.executable, "-c", code, str(p), str(sizes)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = dict(line.split(" ", 1) for line in r.stdout.strip().splitlines())
    assert "longer than 4096 bytes" in out["ERR"]
    assert float(out["MB"]) < 40, r.stdout
