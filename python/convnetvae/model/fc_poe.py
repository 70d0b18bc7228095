"""FC-VAE product-of-experts baseline (paper section 2.2.3, Table 2).

One expert per modality: an FC encoder (``n_layers`` hidden layers of ``n_hidden`` with
BN/ReLU/Dropout) from (log(1 + x_m), b) to a Gaussian, and an FC decoder (``n_layers`` hidden
layers, then a linear layer to the modality's bins). The experts' Gaussians are combined with a
standard-normal prior expert: precision = 1 + sum_m exp(-logvar_m), mean = sum_m mu_m
exp(-logvar_m) / precision. Missing modalities simply contribute no expert. (The reference
implementation's third modality reuses the second encoder; here every modality has its own.)
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(n_in: int, n_hidden: int, n_layers: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers += [nn.Linear(n_in if i == 0 else n_hidden, n_hidden), nn.BatchNorm1d(n_hidden),
                   nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


def product_of_experts(mus: torch.Tensor, logvars: torch.Tensor, mask: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine experts (B, M, D) with a N(0, I) prior expert; masked experts are left out."""
    prec = torch.exp(-logvars)
    if mask is not None:
        prec = prec * mask.unsqueeze(-1)
    total = 1.0 + prec.sum(1)
    mu = (mus * prec).sum(1) / total
    return mu, -torch.log(total)


class FCPoEEncoder(nn.Module):
    """Product-of-experts encoder."""

    def __init__(self, n_modalities: int, n_bins: int, n_batches: int, n_hidden: int = 128,
                 n_latent: int = 30, n_layers: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        self.n_batch_input = n_batches if n_batches > 1 else 0
        self.experts = nn.ModuleList(
            [_mlp(n_bins + self.n_batch_input, n_hidden, n_layers, dropout)
             for _ in range(n_modalities)])
        self.means = nn.ModuleList([nn.Linear(n_hidden, n_latent) for _ in range(n_modalities)])
        self.logvars = nn.ModuleList([nn.Linear(n_hidden, n_latent) for _ in range(n_modalities)])

    def forward(self, h: torch.Tensor, batch_onehot: torch.Tensor | None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mus, lvs = [], []
        for m, (net, mh, lh) in enumerate(zip(self.experts, self.means, self.logvars)):
            inp = h[:, m, :]
            if self.n_batch_input and batch_onehot is not None:
                inp = torch.cat([inp, batch_onehot], dim=1)
            q = net(inp)
            mus.append(mh(q))
            lvs.append(lh(q).clamp(-15.0, 10.0))
        return product_of_experts(torch.stack(mus, 1), torch.stack(lvs, 1), mask)


class FCPoEDecoder(nn.Module):
    """One FC decoder per modality, logits over that modality's bins."""

    def __init__(self, n_modalities: int, n_bins: int, n_batches: int, n_hidden: int = 128,
                 n_latent: int = 30, n_layers: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        self.n_batch_input = n_batches if n_batches > 1 else 0
        self.nets = nn.ModuleList(
            [nn.Sequential(_mlp(n_latent + self.n_batch_input, n_hidden, n_layers, dropout),
                           nn.Linear(n_hidden, n_bins)) for _ in range(n_modalities)])

    def forward(self, z: torch.Tensor, batch_onehot: torch.Tensor | None) -> torch.Tensor:
        inp = torch.cat([z, batch_onehot], dim=1) if self.n_batch_input and \
            batch_onehot is not None else z
        return torch.stack([net(inp) for net in self.nets], dim=1)
