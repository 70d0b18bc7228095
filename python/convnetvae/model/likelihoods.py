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
    return _poisson_from_dot((x * log_w).sum(-1), x, lib, lgamma_x)


def _poisson_from_dot(dot: torch.Tensor, x: torch.Tensor, lib: torch.Tensor,
                      lgamma_x: torch.Tensor | None) -> torch.Tensor:
    """The Poisson log-probability from ``dot = sum_g x_g log w_g`` (the module docstring)."""
    safe = lib.clamp_min(1e-12)
    l_log_l = torch.where(lib > 0, lib * torch.log(safe), torch.zeros_like(lib))
    if lgamma_x is None:
        lgamma_x = log_factorial_sum(x)
    return dot + l_log_l - lib - lgamma_x


class _XDotLogSoftmax(torch.autograd.Function):
    """``sum_g x_g log softmax(logits)_g`` (B x M) from the logits, with a backward pass that
    keeps only the logits: ``d/dlogits = x - (sum_g x_g) softmax(logits)``.

    Autograd through ``log_softmax`` keeps the B x M x G log-softmax for the backward pass and
    builds two more full-size tensors there (the gradient ``x * g`` and the log-softmax's own);
    this keeps the logits (which the decoder made anyway) and builds one. With all 245,220 bins
    of three modalities a full-size tensor of a minibatch of 128 is 377 MB.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        lse = torch.logsumexp(logits, dim=-1)
        total = x.sum(-1)
        flat = logits.shape[-1]
        dot = torch.bmm(x.reshape(-1, 1, flat), logits.reshape(-1, flat, 1)).reshape(total.shape)
        ctx.save_for_backward(logits, x, lse, total)
        return dot - total * lse

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # noqa: D102
        logits, x, lse, total = ctx.saved_tensors
        grad = torch.sub(logits, lse.unsqueeze(-1)).exp_()  # softmax
        grad.mul_((-g * total).unsqueeze(-1)).addcmul_(x, g.unsqueeze(-1))
        return grad, None


def poisson_log_prob_from_logits(x: torch.Tensor, logits: torch.Tensor, lib: torch.Tensor,
                                 lgamma_x: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`poisson_log_prob` of ``log_w = log_softmax(logits)``, computed from the logits
    (B x M x G) without building ``log_w`` (see :class:`_XDotLogSoftmax`). ``x`` takes no gradient."""
    # in float32 (or float64) as log_softmax under autocast; the cast is a no-op otherwise
    dtype = torch.promote_types(logits.dtype, torch.float32)
    dot = _XDotLogSoftmax.apply(logits.to(dtype), x.detach().to(dtype))
    return _poisson_from_dot(dot, x, lib, lgamma_x)


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
