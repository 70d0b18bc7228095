"""Query mapping (scArches-style): new samples onto a trained reference model.

:meth:`ConvNetVAE.load_query_data(adata, reference) <convnetvae.api.ConvNetVAE.load_query_data>`
returns a model over the query cells whose module is the reference's, extended by the query's
new batches:

* every parameter of the model takes one more batch per new batch: the columns of the batch
  one-hot in every layer that reads it (the encoder's and decoder's FC input, whatever the
  architecture) and the rows of the per-batch bin offsets (``batch_offset``, B x M x G);
* only those new columns and rows train (``.train()`` as usual); every reference weight is
  frozen, BatchNorm layers keep the reference's statistics (evaluation mode while training);
* a reference with tied loadings (``tie_loadings``) also gets the query's own encoder-side
  loadings ``Q``, started at zero and trained: the query's cells read their linear term as
  ``h (W + Q) g``, the reference's cells and the decoder keep ``W`` (a tied encoder cannot
  otherwise adapt to a new batch: the query mixed half as well with the reference);
* the model saves in the ordinary format (a plain model with all the batches), so
  :meth:`ConvNetVAE.load` and the R package's ``ProjectConvNetVAE`` read it like any other.

Reference cells keep exactly their embedding under the extended model: their one-hot columns and
offsets are the reference's, and the new ones are zero for them.

How the one-hot columns are found does not depend on the architecture: the layers whose input
grew are probed with two identical cells of batches 0 and 1, and the two input columns that
differ are the one-hot's first two.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import anndata as ad
import torch
from torch import nn

from .data import contract
from .errors import ConvNetVAEError
from .model.vae import VAE
from .train import resolve_device

#: batch label of the reference's cells when the reference was trained without batches
REFERENCE_BATCH = "reference"


# ---------------------------------------------------------------------------- extended modules
class _Extended:
    """Mixin: parameter ``_ext[0]`` is the frozen reference tensor whose slices ``query_index``
    along dimension ``_ext[1]`` come from the trainable ``query_<name>``.

    Attribute access gives the merged tensor (a property of the subclass); state dicts hold the
    merged tensor under the plain name, so saved weights are those of an ordinary module.
    """

    _ext: tuple[str, int] | None = None

    def _merged(self) -> torch.Tensor | None:
        name, dim = self._ext
        frozen = self._parameters.get(name)
        query = self._parameters.get("query_" + name)
        if frozen is None or query is None:
            return frozen
        return frozen.index_copy(dim, self._buffers["query_index"], query)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._ext is not None and ("query_" + self._ext[0]) in self._parameters:
            destination.pop(prefix + "query_" + self._ext[0], None)
            merged = self._merged()
            destination[prefix + self._ext[0]] = merged if keep_vars else merged.detach()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        if self._ext is not None and ("query_" + self._ext[0]) in self._parameters:
            name, dim = self._ext
            full = state_dict.get(prefix + name)
            if full is not None and prefix + "query_" + name not in state_dict:
                index = self._buffers["query_index"].to(full.device)
                state_dict[prefix + "query_" + name] = full.index_select(dim, index)
        super()._load_from_state_dict(state_dict, prefix, *args)


class QueryLinear(_Extended, nn.Linear):
    """A reference ``nn.Linear`` reading the batch one-hot, with trainable new-batch columns."""

    _ext = ("weight", 1)

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        return self._merged()


class QueryVAE(_Extended, VAE):
    """The reference VAE with new batches: trainable new offsets, frozen BatchNorm."""

    _ext = ("batch_offset", 0)

    @property
    def batch_offset(self) -> torch.Tensor | None:  # type: ignore[override]
        return self._merged()

    def train(self, mode: bool = True) -> QueryVAE:
        """Train mode (dropout on) but BatchNorm keeps the reference's statistics."""
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def _add_query_slices(module: nn.Module, name: str, dim: int, rows: list[int]) -> None:
    """Register ``query_<name>`` (the slices ``rows`` of ``name`` along ``dim``) as trainable."""
    full = module._parameters[name]
    index = torch.as_tensor(rows, dtype=torch.long)
    module.register_buffer("query_index", index, persistent=False)
    module.register_parameter("query_" + name,
                              nn.Parameter(full.detach().index_select(dim, index).clone()))


# ---------------------------------------------------------------------------- building
def _onehot_columns(module: VAE, names: list[str]) -> dict[str, int]:
    """First input column fed by the batch one-hot, for each named ``nn.Linear`` of ``module``."""
    cfg = module.config
    seen: dict[str, torch.Tensor] = {}
    hooks = [module.get_submodule(n).register_forward_pre_hook(
        lambda _m, args, n=n: seen.__setitem__(n, args[0].detach())) for n in names]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            x = torch.ones(2, cfg.n_modalities, module.n_bins)
            b = torch.tensor([0, 1])
            mask = torch.ones(2, cfg.n_modalities, dtype=torch.bool) if cfg.use_mask else None
            module.encode(x, b, mask)
            module.decode(torch.zeros(2, cfg.n_latent), b)
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    out = {}
    for n in names:
        inp = seen.get(n)
        # the two probe cells differ only in their batch; the other inputs agree up to rounding
        # (not always bit for bit: inside R the products use R's BLAS, whose kernels may round
        # two identical rows of one product differently)
        cols = [] if inp is None else torch.nonzero(
            (inp[0] - inp[1]).abs() > 1e-3 * (1.0 + torch.maximum(inp[0].abs(), inp[1].abs()))
        ).flatten().tolist()
        if len(cols) != 2 or cols[1] != cols[0] + 1:
            raise ConvNetVAEError(
                f"architecture {cfg.architecture!r}: cannot tell which inputs of layer {n!r} are "
                "the batch one-hot, so this architecture does not support query mapping")
        out[n] = cols[0]
    return out


def extend_module(reference: VAE, n_batches: int) -> tuple[VAE, int]:
    """A module with ``n_batches`` batches whose first ones are ``reference``'s, frozen.

    Returns the module (a :class:`QueryVAE`) and its number of trainable parameters.
    """
    old = reference.config
    k_old = max(1, old.n_batches)  # batches the reference's cells use
    if n_batches <= k_old:
        raise ConvNetVAEError("no new batches to add")
    if old.query_batches_from:
        raise ConvNetVAEError(
            "this model is itself a query model of a tied reference (tie_loadings), and its "
            "query loadings belong to that query: map the new query onto the reference instead")
    new = VAE(dataclasses.replace(old, n_batches=n_batches,
                                  query_batches_from=k_old if old.tie_loadings else 0))
    ref_state = reference.state_dict()
    grown = [k for k, v in new.state_dict().items()
             if k != "query_loading" and (k not in ref_state or ref_state[k].shape != v.shape)]
    linears = [k[: -len(".weight")] for k in grown if k.endswith(".weight")
               and isinstance(new.get_submodule(k[: -len(".weight")]), nn.Linear)]
    other = [k for k in grown if k != "batch_offset" and k[: -len(".weight")] not in linears]
    if other:
        raise ConvNetVAEError(f"architecture {old.architecture!r} has batch-dependent parameters "
                              f"{other} that query mapping cannot extend")
    columns = _onehot_columns(new, linears)
    state = new.state_dict()
    for k, v in ref_state.items():
        if k in state and state[k].shape == v.shape:
            state[k] = v.clone()
    b_old = old.n_batches if old.n_batches > 1 else 0  # one-hot width of the reference
    for name in linears:
        w_old, w = ref_state[name + ".weight"], torch.zeros_like(state[name + ".weight"])
        p = columns[name]
        w[:, : p + b_old] = w_old[:, : p + b_old]
        w[:, p + n_batches:] = w_old[:, p + b_old:]
        state[name + ".weight"] = w
    if "batch_offset" in state:
        off = torch.zeros_like(state["batch_offset"])
        if "batch_offset" in ref_state:
            off[: old.n_batches] = ref_state["batch_offset"]
        state["batch_offset"] = off
    new.load_state_dict(state)
    for p in new.parameters():
        p.requires_grad_(False)
    for name in linears:
        lin = new.get_submodule(name)
        lin.__class__ = QueryLinear
        _add_query_slices(lin, "weight", 1, list(range(columns[name] + k_old,
                                                       columns[name] + n_batches)))
    if new.query_loading is not None:
        new.query_loading.requires_grad_(True)  # the query's own encoder-side loadings
    new.__class__ = QueryVAE
    if new._parameters.get("batch_offset") is not None:
        _add_query_slices(new, "batch_offset", 0, list(range(k_old, n_batches)))
    return new, int(sum(p.numel() for p in new.parameters() if p.requires_grad))


# ---------------------------------------------------------------------------- the model
def _query_registry(adata: ad.AnnData, ref: Any, batch_key: str | None) -> tuple[dict, list]:
    """Set up ``adata`` against the reference: its modalities and bins, old + new batches."""
    reg = ref.registry
    mods = list(reg["modalities"])
    key = batch_key if batch_key is not None else reg.get("batch_key")
    if key is None:
        raise ConvNetVAEError(
            "the reference was trained without batches: give the query's batch column "
            "(batch_key=...) so its cells get their own batch parameters")
    for m in mods:
        if m not in adata.layers:
            raise ConvNetVAEError(f"layer {m!r} not found in the query's adata.layers (available: "
                                  f"{list(adata.layers.keys())}); the reference was trained on "
                                  f"{mods}")
    contract.check_var_coordinates(adata.var)
    contract.check_same_bins(adata, ref.bins, mods, mods)
    mask_key = reg.get("mask_key") if reg.get("mask_key") in adata.obsm else None
    labels_key = reg.get("labels_key") if reg.get("labels_key") in adata.obs.columns else None
    new_reg = contract.setup_anndata(adata, mods, key, labels_key, mask_key)
    old_cats = list(reg["batch_categories"]) if reg.get("batch_key") else [REFERENCE_BATCH]
    query_cats = [c for c in new_reg["batch_categories"] if c not in old_cats]
    if not query_cats:
        raise ConvNetVAEError(
            f"every batch of the query ({new_reg['batch_categories']}) is already one of the "
            "reference's: embed these cells with the reference model directly "
            "(get_latent_representation, or ProjectConvNetVAE without adapt)")
    new_reg["batch_categories"] = old_cats + query_cats
    new_reg["has_missing"] = bool(ref.module.config.use_mask)
    adata.uns[contract.REGISTRY_KEY] = new_reg
    return new_reg, query_cats


def load_query_data(cls: type, adata: ad.AnnData, reference: Any, batch_key: str | None = None,
                    device: str = "auto") -> Any:
    """See :meth:`convnetvae.api.ConvNetVAE.load_query_data`."""
    if isinstance(reference, (str, os.PathLike)):
        reference = cls.load(reference)
    elif not isinstance(reference, cls):
        raise ConvNetVAEError("reference must be a ConvNetVAE model or the directory of a saved "
                              f"one, got {type(reference).__name__}")
    registry, query_cats = _query_registry(adata, reference, batch_key)
    module, n_trainable = extend_module(reference.module,
                                        len(registry["batch_categories"]))
    model = cls.__new__(cls)
    model.module = module.to(resolve_device(device))
    model.registry = registry
    model.adata = adata
    model.bins = reference.bins.copy()
    model.seed = reference.seed
    model.is_trained = False
    model.train_config = {}
    model.history_ = []
    model.query_ = {"reference_batches": registry["batch_categories"][: -len(query_cats)],
                    "query_batches": query_cats, "trainable_parameters": n_trainable}
    return model


__all__ = ["QueryLinear", "QueryVAE", "extend_module", "load_query_data", "REFERENCE_BATCH"]
