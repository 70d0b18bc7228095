"""The architecture registry: a new architecture is one module plus one registration, and every
face (validation, CLI, workbench dropdown, benchmark names, saved models) then lists it."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

import convnetvae as cv
from convnetvae.errors import ConvNetVAEError
from convnetvae.model import registry

MODS = ["ATAC", "H3K27ac", "H3K27me3"]


@pytest.fixture
def toy_family():
    import _toy_architecture

    registry.register(_toy_architecture.FAMILY)  # the one registration
    yield _toy_architecture.FAMILY
    registry.unregister("lin")


def test_builtin_families_and_names():
    assert [f.prefix for f in registry.families()][:2] == ["conv", "fc"]
    names = registry.preset_names()
    assert names[0] == registry.DEFAULT_ARCHITECTURE
    assert set(registry.PAPER_ARCHITECTURES) <= set(names)
    arch = registry.parse_architecture(" Conv-K11S3x2 ")
    assert (arch.kind, arch.kernel, arch.stride, arch.channels) == ("conv", 11, 3, (32, 64))
    assert registry.family_of("fc-l2").mask_always
    for bad in ("transformer", "conv-k0s1", "fc-l9", "conv-11", "conv"):
        with pytest.raises(ConvNetVAEError, match="architecture"):
            registry.parse_architecture(bad)
    with pytest.raises(ConvNetVAEError, match="already registered"):
        registry.register(registry.families()[0])


def test_a_registered_architecture_reaches_every_face(toy_family, small_adata, tmp_path):
    from convnetvae import settings
    from convnetvae.cli import build_parser
    from convnetvae.evaluate.models import bin_order_matters, parse_model_name
    from convnetvae.settings import ModelSettings

    # validation (Python API, R bridge, CLI type) and listing
    assert settings.get(ModelSettings, "architecture").check("LIN-D16") == "lin-d16"
    assert "lin-d16" in registry.preset_names() and "lin-d<D>" in registry.syntax_help()
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "lin-d16" in sub.choices["train"].format_help()
    assert "lin-d<D>" in sub.choices["benchmark"].format_help()
    args = sub.choices["train"].parse_args(["--data", "x", "--modalities", "A", "--out", "o",
                                            "--architecture", "lin-d8"])
    assert args.architecture == "lin-d8"
    # benchmark model names (no shuffle control: the family ignores bin order)
    assert parse_model_name("lin-d8+shuffle") == ("lin-d8", True)
    assert not bin_order_matters("lin-d8") and bin_order_matters("conv-k11s11")
    # the workbench dropdown
    from convnetvae.widgets import Workbench

    wb = Workbench(small_adata.copy())
    assert "lin-d16" in [v for _, v in wb.trainer.panel.widgets["architecture"].options]
    # the model trains, embeds, saves and loads
    model = cv.ConvNetVAE(small_adata, architecture="lin-d16", n_latent=4)
    model.train(max_epochs=2, batch_size=64, progress=False)
    z = model.get_latent_representation()
    assert z.shape == (small_adata.n_obs, 4) and np.isfinite(z).all()
    model.save(tmp_path / "m")
    again = cv.ConvNetVAE.load(tmp_path / "m", small_adata)
    np.testing.assert_allclose(again.get_latent_representation(), z, atol=1e-5)
