"""Held-out marginal log-likelihood by importance sampling (paper section 2.5, eq. 8).

    log p(x | b) ~= logsumexp_s [ log p(x | z_s, b) + log p(z_s) - log q(z_s | x, b) ] - log N_s,
    z_s ~ q(z | x, b),  s = 1..N_s

Vectorised over cells and samples on the model's device: one minibatch of cells is encoded once,
its ``N_s`` samples are decoded together in chunks sized to a memory budget (the reference code
loops over cells one at a time). ``sum_g log x_g!`` and the library sizes are computed once per
cell, not once per sample.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import ConvNetVAEError
from ..model.likelihoods import log_factorial_sum

_LOG_2PI = math.log(2.0 * math.pi)


def _log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Diagonal Gaussian log density summed over the last axis."""
    return -0.5 * (_LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar)).sum(-1)


@torch.no_grad()
def importance_log_weights(
    module, x: torch.Tensor, batch: torch.Tensor, mask: torch.Tensor | None, n_samples: int,
    generator: torch.Generator | None = None, max_elements: int = 2**25,
) -> torch.Tensor:
    """Log importance weights ``log p(x|z_s) + log p(z_s) - log q(z_s|x)`` for one minibatch.

    Parameters
    ----------
    module
        The VAE module (``encode``, ``log_px_z``), in eval mode.
    x, batch, mask
        A minibatch: counts (B, M, G), batch codes (B,), observed mask (B, M) or ``None``.
    n_samples
        Importance samples per cell.
    generator
        Torch random generator on the module's device (reproducible draws).
    max_elements
        Upper bound on ``samples x B x M x G`` decoded at once (memory budget).

    Returns
    -------
    torch.Tensor
        ``(n_samples, B)`` log weights.
    """
    mu, logvar = module.encode(x, batch, mask)
    b, d = mu.shape
    std = torch.exp(0.5 * logvar)
    eps = torch.randn((n_samples, b, d), generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu.unsqueeze(0) + std.unsqueeze(0) * eps  # (S, B, D)
    log_q = _log_normal(z, mu.unsqueeze(0), logvar.unsqueeze(0))
    log_prior = -0.5 * (_LOG_2PI + z**2).sum(-1)
    lib = x.sum(-1)
    lgx = log_factorial_sum(x)
    per_sample = max(1, int(x[0].numel()) * b)
    chunk = max(1, min(n_samples, max_elements // per_sample))
    log_px = torch.empty((n_samples, b), device=mu.device, dtype=mu.dtype)
    for s0 in range(0, n_samples, chunk):
        s1 = min(n_samples, s0 + chunk)
        c = s1 - s0
        zc = z[s0:s1].reshape(c * b, d)
        xc = x.unsqueeze(0).expand(c, *x.shape).reshape(c * b, *x.shape[1:])
        bc = batch.repeat(c)
        mc = None if mask is None else mask.repeat(c, 1)
        lp = module.log_px_z(xc, zc, bc, mc, lib.repeat(c, 1), lgx.repeat(c, 1))
        log_px[s0:s1] = lp.reshape(c, b)
    return log_px + log_prior - log_q


@torch.no_grad()
def marginal_log_likelihood(
    model, adata=None, n_samples: int = 100, batch_size: int = 64, seed: int = 0, max_elements: int = 2**25
) -> np.ndarray:
    """Per-cell marginal log-likelihood ``log p(x | b)`` by importance sampling.

    Parameters
    ----------
    model
        A :class:`~convnetvae.api.ConvNetVAE` (trained).
    adata
        Cells to score (same bins, modalities and known batches); default the training data.
        Score held-out cells to compare models, as the paper does.
    n_samples
        Importance samples ``N_s`` per cell (paper: 100).
    batch_size
        Cells encoded per minibatch.
    seed
        Seed of the importance samples (same seed, same estimate).
    max_elements
        Memory budget: at most this many ``samples x cells x modalities x bins`` values are decoded
        at once.

    Returns
    -------
    numpy.ndarray
        ``(n_cells,)`` float64 log-likelihoods (nats). Their mean is the paper's score; the paper
        plots its negative.
    """
    if int(n_samples) < 1:
        raise ConvNetVAEError(f"n_samples must be at least 1, got {n_samples}")
    if int(batch_size) < 1:
        raise ConvNetVAEError(f"batch_size must be at least 1, got {batch_size}")
    loader, adata = model._loader(adata, int(batch_size))
    module = model.module
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    out = np.zeros(adata.n_obs, dtype=np.float64)
    log_s = math.log(int(n_samples))
    try:
        for mb in loader:
            lw = importance_log_weights(module, mb.x, mb.batch, mb.mask, int(n_samples), gen, max_elements)
            ll = torch.logsumexp(lw.double(), dim=0) - log_s
            out[mb.index] = ll.cpu().numpy()
    finally:
        module.train(was_training)
    return out
