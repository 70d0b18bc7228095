"""Count likelihoods for the softmax x library-size decoder.

Both take the decoder's log-softmax over bins (``log_w``, shape B x M x G) and the observed
library size per modality (``lib``, B x M) and return log p(x | z) per cell and modality (B x M).
Rates ``lib * w`` are never materialised for the Poisson: because the weights sum to one over the
bins and the library size is the observed total,

    sum_g log Poisson(x_g | l w_g) = sum_g x_g log w_g + l log l - l - sum_g log x_g!
"""

from __future__ import annotations

import torch

from .registry import LIKELIHOODS  # noqa: F401  (the likelihoods implemented here)


def log_factorial_sum(x: torch.Tensor) -> torch.Tensor:
    """sum over bins of log(x!) (B x M)."""
    return torch.lgamma(x + 1.0).sum(-1)


def poisson_log_prob(x: torch.Tensor, log_w: torch.Tensor, lib: torch.Tensor,
                     lgamma_x: torch.Tensor | None = None) -> torch.Tensor:
    """Poisson log-probability per cell and modality.

    Parameters
    ----------
    x
        Counts, B x M x G (float).
    log_w
        Log softmax over bins, B x M x G.
    lib
        Library sizes, B x M (the observed totals of ``x``).
    lgamma_x
        Precomputed ``sum_g log x_g!`` (B x M), if available.
    """
    dot = (x * log_w).sum(-1)
    safe = lib.clamp_min(1e-12)
    l_log_l = torch.where(lib > 0, lib * torch.log(safe), torch.zeros_like(lib))
    if lgamma_x is None:
        lgamma_x = log_factorial_sum(x)
    return dot + l_log_l - lib - lgamma_x


def nb_log_prob(x: torch.Tensor, log_w: torch.Tensor, lib: torch.Tensor,
                log_theta: torch.Tensor, lgamma_x: torch.Tensor | None = None) -> torch.Tensor:
    """Negative binomial log-probability per cell and modality, mean ``lib * w``, one inverse
    dispersion ``theta`` per bin and modality shared by all cells (``log_theta``: M x G)."""
    log_mu = torch.log(lib.clamp_min(1e-12)).unsqueeze(-1) + log_w
    theta = torch.exp(log_theta).unsqueeze(0)
    log_theta_b = log_theta.unsqueeze(0)
    log_theta_mu = torch.logaddexp(log_theta_b, log_mu)
    if lgamma_x is None:
        lgamma_x = log_factorial_sum(x)
    res = (torch.lgamma(x + theta) - torch.lgamma(theta)
           + theta * (log_theta_b - log_theta_mu) + x * (log_mu - log_theta_mu)).sum(-1)
    return res - lgamma_x
