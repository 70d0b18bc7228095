"""contract.build: the one writer of the data contract (readers, the R bridge and the simulator
all end in it)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from convnetvae.data.contract import MASK_KEY, build
from convnetvae.errors import ConvNetVAEError

PKG = Path(__file__).resolve().parents[2] / "python" / "convnetvae"


def _var(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame({"chrom": ["chr1"] * n, "start": np.arange(n) * 100,
                         "end": np.arange(1, n + 1) * 100},
                        index=[f"chr1:{i * 100}-{(i + 1) * 100}" for i in range(n)])


def test_build_writes_the_contract():
    obs = pd.DataFrame({"sample": ["a", "b", "c"]}, index=["c1", "c2", "c3"])
    dense = np.array([[0, 2, 0, 1], [3, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float64)
    x = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 5, 0], [0, 7, 0, 0]]))
    mask = np.array([[True, True], [True, True], [False, True]])
    a = build({"ATAC": dense, "H3K27ac": x}, _var(), obs, mask, uns={"reader": {"k": 1}})
    assert a.uns["modalities"] == ["ATAC", "H3K27ac"] and a.uns["reader"] == {"k": 1}
    for m in ("ATAC", "H3K27ac"):
        layer = a.layers[m]
        assert sp.isspmatrix_csr(layer) and layer.dtype == np.int32 and layer.has_sorted_indices
    assert a.obs["n_counts_ATAC"].tolist() == [3, 3, 0]
    assert a.obs["n_counts_H3K27ac"].tolist() == [1, 5, 7]
    assert a.obs["sample"].tolist() == ["a", "b", "c"] and a.obs["n_counts_ATAC"].dtype == np.int64
    assert (a.obsm[MASK_KEY] == mask).all()
    assert MASK_KEY not in build({"ATAC": dense}, _var(), obs).obsm
    big = sp.csr_matrix(np.array([[2**31, 0, 0, 0]], dtype=np.int64))
    assert build({"A": big}, _var(), pd.DataFrame(index=["c"])).layers["A"].dtype == np.int64


@pytest.mark.parametrize("kwargs, match", [
    (dict(layers={"A": np.ones((3, 5))}), "expected \\(3, 4\\)"),
    (dict(layers={"A": np.full((3, 4), 0.5)}), "non-integer"),
    (dict(layers={"A": -np.ones((3, 4))}), "negative"),
    (dict(layers={}), "no modalities"),
    (dict(mask=np.ones((3, 2), dtype=bool)), "mask has shape"),
    (dict(var=_var().iloc[::-1]), "not sorted"),
])
def test_build_rejects_what_breaks_the_contract(kwargs, match):
    args = dict(layers={"A": np.ones((3, 4))}, var=_var(), obs=pd.DataFrame(index=list("abc")))
    args.update(kwargs)
    with pytest.raises(ConvNetVAEError, match=match):
        build(**args)


@pytest.mark.parametrize("module", ["data/readers.py", "data/fragments.py", "data/simulate.py",
                                    "r/align.py"])
def test_every_reader_and_the_simulator_write_through_build(module):
    tree = ast.parse((PKG / module).read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert any(isinstance(c.func, ast.Name) and c.func.id == "build" for c in calls), module
    # nobody else constructs the AnnData of the contract
    assert not any(isinstance(c.func, ast.Attribute) and c.func.attr == "AnnData"
                   and any(k.arg == "layers" for k in c.keywords) for c in calls), module


def test_only_model_format_reads_and_writes_saved_models():
    for module in ("api.py", "r/bridge.py"):
        tree = ast.parse((PKG / module).read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr)}
        strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                   and isinstance(n.value, str) and id(n) not in docstrings]
        assert not [v for v in strings if "config.json" in v or "safetensors" in v], module
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(m and m.startswith("safetensors") for m in imported), module
