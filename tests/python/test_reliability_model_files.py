"""Safe model files (issue 9, part 2): damaged, foreign or mismatched saved models.

A saved model is a directory with ``config.json`` (versioned) and ``model.safetensors``. Every
damaged, foreign or newer file, and every mismatch between a model and the data, must raise a
:class:`ConvNetVAEError` with a clear message, and nothing may ever be unpickled.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import convnetvae as cv
from convnetvae.errors import ConvNetVAEError

MODS = ["ATAC", "H3K27ac", "H3K27me3"]


def _data(seed: int = 0, **kw):
    adata = cv.simulate(n_cells=60, n_bins=200, n_chromosomes=2, n_types=2, seed=seed, **kw)
    cv.ConvNetVAE.setup_anndata(adata, modalities=list(adata.uns["modalities"]),
                                batch_key="batch")
    return adata


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    adata = _data()
    m = cv.ConvNetVAE(adata, architecture="conv-k11s11", n_hidden=16, n_latent=4)
    m.train(max_epochs=1, batch_size=16, progress=False, n_threads=1)
    d = tmp_path_factory.mktemp("model") / "m"
    m.save(d)
    return d, adata, m.get_latent_representation()


@pytest.fixture
def copy(saved, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(saved[0], d)
    return d


def test_saved_directory_layout_and_roundtrip(saved):
    d, adata, z = saved
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["format"] == 1 and cfg["package"] == "convnetvae"
    with open(d / "model.safetensors", "rb") as fh:  # safetensors: 8-byte length + JSON header
        n = int.from_bytes(fh.read(8), "little")
        assert json.loads(fh.read(n))["__metadata__"]["format"] == "1"
    m = cv.ConvNetVAE.load(d, adata)
    np.testing.assert_array_equal(m.get_latent_representation(), z)


# ---------------------------------------------------------------------- damaged weights
@pytest.mark.parametrize("damage", ["truncate_half", "truncate_header", "empty", "garbage",
                                    "header_lies"])
def test_damaged_weights(copy, saved, damage):
    w = copy / "model.safetensors"
    raw = w.read_bytes()
    if damage == "truncate_half":
        w.write_bytes(raw[: len(raw) // 2])
    elif damage == "truncate_header":
        w.write_bytes(raw[:20])
    elif damage == "empty":
        w.write_bytes(b"")
    elif damage == "garbage":
        w.write_bytes(np.random.default_rng(0).bytes(len(raw)))
    else:  # a header length far beyond the file
        w.write_bytes((10 ** 12).to_bytes(8, "little") + raw[8:])
    with pytest.raises(ConvNetVAEError, match="model.safetensors"):
        cv.ConvNetVAE.load(copy, saved[1])


class _Exploit:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


@pytest.mark.parametrize("writer", ["pickle", "torch_save"])
def test_pickle_disguised_as_weights_is_never_unpickled(copy, saved, tmp_path, writer):
    sentinel = tmp_path / "code_ran"
    w = copy / "model.safetensors"
    if writer == "pickle":
        w.write_bytes(pickle.dumps(_Exploit(str(sentinel))))
    else:
        torch.save({"state": _Exploit(str(sentinel))}, w)
    with pytest.raises(ConvNetVAEError, match="corrupted or truncated"):
        cv.ConvNetVAE.load(copy, saved[1])
    assert not sentinel.exists(), "a pickle inside the model directory was executed"
    # the same pickle as config.json is not JSON either
    (copy / "config.json").write_bytes(pickle.dumps(_Exploit(str(sentinel))))
    with pytest.raises(ConvNetVAEError, match="config.json"):
        cv.ConvNetVAE.load(copy, saved[1])
    assert not sentinel.exists()


def test_weights_of_another_model(copy, saved, tmp_path):
    from safetensors.torch import save_file

    # right format, wrong tensors: a foreign safetensors file, then one with a shape changed
    save_file({"bert.embeddings.weight": torch.zeros(3, 4)}, str(copy / "model.safetensors"))
    with pytest.raises(ConvNetVAEError, match="does not match its config"):
        cv.ConvNetVAE.load(copy, saved[1])
    from safetensors.torch import load_file

    state = load_file(str(saved[0] / "model.safetensors"))
    k = next(k for k, v in state.items() if v.ndim >= 1)
    state[k] = torch.zeros([s + 1 for s in state[k].shape])
    save_file(state, str(copy / "model.safetensors"))
    with pytest.raises(ConvNetVAEError, match="does not match its config"):
        cv.ConvNetVAE.load(copy, saved[1])


# ---------------------------------------------------------------------- damaged config
def _edit_config(d: Path, fn) -> None:
    p = d / "config.json"
    cfg = json.loads(p.read_text())
    out = fn(cfg)
    p.write_text(json.dumps(cfg if out is None else out))


@pytest.mark.parametrize("edit,match", [
    (lambda c: c.update(format=99), "newer convnetvae"),
    (lambda c: c.update(format="1"), "newer convnetvae|format"),
    (lambda c: (c.pop("format"), None)[1], "format"),
    (lambda c: {"architectures": ["BertModel"], "model_type": "bert"}, "not a convnetvae"),
    (lambda c: c.update(package="scvi-tools"), "not a convnetvae"),
    (lambda c: [1, 2, 3], "not a convnetvae"),
    (lambda c: (c.pop("module"), None)[1], "damaged: .module."),
    (lambda c: (c.pop("bins"), None)[1], "damaged: .bins."),
    (lambda c: (c["module"].pop("n_modalities"), None)[1], "incomplete|n_modalities"),
    (lambda c: (c["module"].pop("n_latent"), None)[1], "does not match"),
    (lambda c: c["module"].update(secret_field=1), "unknown fields"),
    (lambda c: c["module"].update(n_latent=-3), "n_latent"),
    (lambda c: c["module"].update(architecture="resnet50"), "architecture|resnet50"),
    (lambda c: c["module"].update(likelihood="gaussian"), "likelihood"),
    (lambda c: c["module"].update(chrom_lengths="abc"), "config"),
    (lambda c: c["module"].update(n_latent=5), "does not match"),
    (lambda c: c["bins"].update(start=c["bins"]["start"][:-1]), "config"),
    (lambda c: c.update(registry=None), "config"),
])
def test_damaged_or_foreign_config(copy, saved, edit, match):
    _edit_config(copy, edit)
    with pytest.raises(ConvNetVAEError, match=match):
        cv.ConvNetVAE.load(copy, saved[1])


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe\x00garbage", b"null", b"42"])
def test_config_not_json_or_not_an_object(copy, saved, content):
    (copy / "config.json").write_bytes(content)
    with pytest.raises(ConvNetVAEError, match="config.json"):
        cv.ConvNetVAE.load(copy, saved[1])


def test_missing_files_or_not_a_directory(copy, saved, tmp_path):
    with pytest.raises(ConvNetVAEError, match="not a saved ConvNetVAE model"):
        cv.ConvNetVAE.load(tmp_path / "nowhere", saved[1])
    with pytest.raises(ConvNetVAEError, match="not a saved ConvNetVAE model"):
        cv.ConvNetVAE.load(copy / "model.safetensors", saved[1])
    (copy / "config.json").unlink()
    with pytest.raises(ConvNetVAEError, match="not a saved ConvNetVAE model"):
        cv.ConvNetVAE.load(copy, saved[1])


def test_save_refuses_to_overwrite_and_leaves_no_temp_files(saved, tmp_path):
    d, adata, _ = saved
    m = cv.ConvNetVAE.load(d, adata)
    with pytest.raises(ConvNetVAEError, match="overwrite=True"):
        m.save(d)
    m.save(tmp_path / "again")
    m.save(tmp_path / "again", overwrite=True)
    assert sorted(os.listdir(tmp_path / "again")) == ["config.json", "model.safetensors"]


# ---------------------------------------------------------------------- model vs data
def test_model_and_data_mismatch(saved):
    d, adata, _ = saved
    # other bins
    other = cv.simulate(n_cells=40, n_bins=180, n_chromosomes=2, n_types=2, seed=0)
    with pytest.raises(ConvNetVAEError, match="bins"):
        cv.ConvNetVAE.load(d, other)
    shifted = adata.copy()
    shifted.var["start"] = shifted.var["start"] + 1
    with pytest.raises(ConvNetVAEError, match="bin 0 differs"):
        cv.ConvNetVAE.load(d, shifted)
    # a missing modality
    fewer = adata.copy()
    del fewer.layers["H3K27me3"]
    with pytest.raises(ConvNetVAEError, match="H3K27me3"):
        cv.ConvNetVAE.load(d, fewer)
    # a batch the model never saw, and no batch column at all
    newbatch = adata.copy()
    newbatch.obs["batch"] = "lab_C"
    with pytest.raises(ConvNetVAEError, match="not seen when the model was trained"):
        cv.ConvNetVAE.load(d, newbatch)
    nobatch = adata.copy()
    del nobatch.obs["batch"]
    with pytest.raises(ConvNetVAEError, match="batch"):
        cv.ConvNetVAE.load(d, nobatch)
    # embedding other data with a loaded model checks the same things
    m = cv.ConvNetVAE.load(d, adata)
    with pytest.raises(ConvNetVAEError, match="not seen"):
        m.get_latent_representation(newbatch)
    with pytest.raises(ConvNetVAEError, match="bins"):
        m.get_latent_representation(other)
