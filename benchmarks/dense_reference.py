"""A dense-tensor float32 implementation of the ConvNet-VAE, as the paper's reference code does it.

For speed and memory comparisons only (benchmarks/scale.py). It holds the whole data set as one
dense ``cells x modalities x bins`` float32 tensor, indexes minibatches out of it, decodes with
nearest upsampling by S followed by a stride-1 convolution of width K (the reference decoder), and
computes the Poisson likelihood from materialised rates ``l * softmax``. Kernels run across
chromosome boundaries (the paper's behaviour), so it computes the same function as
``ModuleConfig(chrom_aware=False)``; its parameters have the same names and shapes as
:class:`convnetvae.model.vae.VAE`, so ``load_state_dict(vae.state_dict())`` gives the same
weights, and :func:`train_dense` draws the same shuffles and noise as
:class:`convnetvae.train.Trainer`, so both produce the same loss curve.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convnetvae.model.architectures import parse_architecture
from convnetvae.model.convnet import dropout_keep
from convnetvae.train import parameter_groups


class _Block(nn.Sequential):
    """BatchNorm, ReLU, Dropout; the dropout masks come from convnetvae's mask generator, so
    both implementations draw the same masks (and the reference gets the faster masks too)."""

    def __init__(self, n: int, dropout: float) -> None:
        super().__init__(nn.BatchNorm1d(n), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self[1](self[0](h))
        p = float(self[2].p) if self.training else 0.0
        keep = dropout_keep(h.shape, p, h.device, h.dtype)
        return h if keep is None else h * keep / (1.0 - p)


def _lengths(n_bins: int, stride: int, n_layers: int) -> list[int]:
    out = [n_bins]
    for _ in range(n_layers):
        out.append(int(math.ceil(out[-1] / stride)))
    return out


class DenseEncoder(nn.Module):
    def __init__(self, m: int, n_bins: int, kernel: int, stride: int, channels: Sequence[int],
                 n_batches: int, n_hidden: int, n_latent: int, dropout: float) -> None:
        super().__init__()
        self.k, self.s = kernel, stride
        self.lengths = _lengths(n_bins, stride, len(channels))
        self.convs = nn.ModuleList()
        self.post = nn.ModuleList()
        c_in = m
        for c in channels:
            self.convs.append(nn.Conv1d(c_in, c, kernel_size=kernel, stride=stride))
            self.post.append(_Block(c, dropout))
            c_in = c
        self.n_batch_input = n_batches if n_batches > 1 else 0
        self.fc = nn.Sequential(nn.Linear(channels[-1] * self.lengths[-1] + self.n_batch_input,
                                          n_hidden), nn.BatchNorm1d(n_hidden), nn.ReLU(),
                                nn.Dropout(dropout))
        self.mean = nn.Linear(n_hidden, n_latent)
        self.logvar = nn.Linear(n_hidden, n_latent)

    def forward(self, h: torch.Tensor, b: torch.Tensor | None):
        pad = max(0, (self.k - self.s) // 2)
        for i, (conv, post) in enumerate(zip(self.convs, self.post)):
            n, m = self.lengths[i], self.lengths[i + 1]
            right = max(0, (m - 1) * self.s + self.k - pad - n)
            h = post(conv(F.pad(h, (pad, right)))[:, :, :m])
        h = h.flatten(1)
        if self.n_batch_input:
            h = torch.cat([h, b], dim=1)
        q = self.fc(h)
        return self.mean(q), self.logvar(q)


class DenseDecoder(nn.Module):
    def __init__(self, m: int, n_bins: int, kernel: int, stride: int, channels: Sequence[int],
                 n_batches: int, n_latent: int, dropout: float) -> None:
        super().__init__()
        self.k, self.s = kernel, stride
        self.channels = list(channels)
        self.lengths = _lengths(n_bins, stride, len(channels))
        self.n_batch_input = n_batches if n_batches > 1 else 0
        self.fc = nn.Linear(n_latent + self.n_batch_input, channels[-1] * self.lengths[-1])
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.post = nn.ModuleList()
        L = len(channels)
        for j in range(L):
            c_in = channels[L - 1 - j]
            c_out = channels[L - 2 - j] if j < L - 1 else m
            conv = nn.Conv1d(c_in, c_out, kernel_size=kernel)
            self.weights.append(nn.Parameter(conv.weight.detach().clone()))
            self.biases.append(nn.Parameter(conv.bias.detach().clone()))
            self.post.append(_Block(c_out, dropout) if j < L - 1 else nn.Identity())

    def forward(self, z: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        inp = torch.cat([z, b], dim=1) if self.n_batch_input else z
        h = self.fc(inp).view(z.shape[0], self.channels[-1], self.lengths[-1])
        L = len(self.channels)
        p = (self.k - 1) // 2
        for j, post in enumerate(self.post):
            n_out = self.lengths[L - 1 - j]
            up = F.interpolate(h, scale_factor=self.s, mode="nearest")  # the reference's upsampling
            up = F.pad(up, (p, self.k - 1 - p))
            h = F.conv1d(up, self.weights[j], self.biases[j])[:, :, :n_out]
            h = post(h)
        return h


class DenseConvVAE(nn.Module):
    """The ConvNet-VAE of the paper's reference code (dense input, upsample + conv decoder)."""

    def __init__(self, n_modalities: int, n_bins: int, n_batches: int,
                 architecture: str = "conv-k31s31", n_hidden: int = 128, n_latent: int = 30,
                 dropout: float = 0.2, batch_offsets: bool = True) -> None:
        super().__init__()
        a = parse_architecture(architecture)
        self.n_batches = n_batches
        self.encoder = DenseEncoder(n_modalities, n_bins, a.kernel, a.stride, a.channels,
                                    n_batches, n_hidden, n_latent, dropout)
        self.decoder = DenseDecoder(n_modalities, n_bins, a.kernel, a.stride, a.channels,
                                    n_batches, n_latent, dropout)
        # the per-batch log-rate offset of ModuleConfig(batch_offsets=True)
        self.batch_offset = nn.Parameter(torch.zeros(n_batches, n_modalities, n_bins)) \
            if batch_offsets and n_batches > 1 else None

    def forward(self, x: torch.Tensor, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        b = F.one_hot(batch, self.n_batches).float() if self.n_batches > 1 else None
        mu, logvar = self.encoder(torch.log1p(x), b)
        logvar = logvar.clamp(-15.0, 10.0)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        logits = self.decoder(z, b)
        if self.batch_offset is not None:
            logits = logits + self.batch_offset[batch]
        w = torch.softmax(logits, dim=-1)
        lib = x.sum(-1, keepdim=True)
        rate = lib * w  # materialised rates, as the reference
        recon = (x * torch.log(rate + 1e-10) - rate - torch.lgamma(x + 1.0)).sum((-1, -2))
        kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(-1)
        return {"reconstruction": recon, "kl": kl}


def dense_from_sparse(mats: Sequence, rows: np.ndarray | None = None) -> torch.Tensor:
    """The whole (or ``rows`` of the) data as one dense float32 tensor (cells x M x G)."""
    n = mats[0].shape[0] if rows is None else len(rows)
    out = torch.zeros(n, len(mats), mats[0].shape[1], dtype=torch.float32)
    for j, m in enumerate(mats):
        sub = m if rows is None else m[rows]
        out[:, j, :] = torch.from_numpy(sub.toarray().astype(np.float32))
    return out


def train_dense(model: DenseConvVAE, data: torch.Tensor, batch_codes: np.ndarray,
                train_idx: np.ndarray, epochs: int, batch_size: int = 128, lr: float = 1e-3,
                seed: int = 0, grad_clip: float = 100.0, max_batches: int | None = None
                ) -> list[dict]:
    """Train like :class:`convnetvae.train.Trainer` (same shuffles and noise); returns per-epoch
    ``train_loss`` (negative ELBO per cell), ``seconds`` (wall) and ``cpu_seconds`` (this
    process's CPU time)."""
    rng = np.random.default_rng(seed + 1)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(parameter_groups(model, lr), lr=lr)  # as the Trainer
    codes = torch.from_numpy(np.asarray(batch_codes, dtype=np.int64))
    hist = []
    for _ in range(epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        model.train()
        order = rng.permutation(train_idx)
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if batches and len(batches[-1]) < 2:
            batches = batches[:-1]
        if max_batches is not None:
            batches = batches[:max_batches]
        total, n = 0.0, 0
        for rows in batches:
            rows = torch.from_numpy(np.sort(rows))
            x = data[rows]
            out = model(x, codes[rows])
            loss = (out["kl"] - out["reconstruction"]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            total += float((out["reconstruction"] - out["kl"]).sum().detach())
            n += len(rows)
        hist.append({"train_loss": -total / max(n, 1), "seconds": time.perf_counter() - t0,
                     "cpu_seconds": time.process_time() - c0, "n_batches": len(batches)})
    return hist


@torch.no_grad()
def embed_dense(model: DenseConvVAE, data: torch.Tensor, batch_codes: np.ndarray,
                rows: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Posterior means of ``rows`` of the dense tensor (the encoder only, eval mode, no
    gradient): the dense implementation's ``get_latent_representation``."""
    model.eval()
    codes = torch.from_numpy(np.asarray(batch_codes, dtype=np.int64))
    out = []
    for i in range(0, len(rows), batch_size):
        r = torch.from_numpy(np.asarray(rows[i:i + batch_size]))
        x = data[r]
        b = F.one_hot(codes[r], model.n_batches).float() if model.n_batches > 1 else None
        mu, _ = model.encoder(torch.log1p(x), b)
        out.append(mu.numpy())
    return np.concatenate(out)
