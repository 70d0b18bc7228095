"""The VAE module: encoder + decoder + likelihood, and the ELBO.

Generative model (paper eq. 1): x_mg ~ Poisson(l_m softmax_g(f_dec(z, b))_mg), z ~ N(0, I),
with the observed library size l_m; negative binomial optional with one dispersion per bin and
modality. Beyond the paper, f_dec's log-rates may add bin offsets (the data's mean profile), batch
offsets (per batch and bin) and free bin loadings ``W z`` (one loading per modality, bin and
latent dimension); the encoder's mean may add free encoder loadings ``h V / sqrt(M G)`` of its
input ``h``, or, tied, ``h W g`` (the bin loadings times a gain per latent dimension); each is a
:class:`ModuleConfig` switch. Modalities a cell lacks (mask
False) are zeroed in the encoder input, passed as a mask to the encoder, and left out of the
reconstruction term, so they cannot change the loss or the embedding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConvNetVAEError
from . import transforms
from .likelihoods import LIKELIHOODS, log_factorial_sum, nb_log_prob, poisson_log_prob
from .registry import family_of, parse_architecture

LOGVAR_MIN, LOGVAR_MAX = -15.0, 10.0


@dataclass
class ModuleConfig:
    """Everything needed to rebuild a VAE module (saved as JSON with the weights)."""

    n_modalities: int
    chrom_lengths: list[int]
    n_batches: int
    architecture: str = "conv-k31s31"
    likelihood: str = "poisson"
    n_latent: int = 30
    n_hidden: int = 128
    dropout: float = 0.2
    chrom_aware: bool = True
    use_mask: bool = False
    batch_offsets: bool = True
    # defaults of fields added later are the behaviour of models saved before them
    input_transform: str = "log1p"
    bin_offsets: bool = False
    bin_loadings: bool = False
    encoder_loadings: bool = False
    tie_loadings: bool = False
    # a query model of a tied reference: batches from this index on (the query's) read their
    # encoder term through their own trained loadings, h (W + Q) g; 0: none
    query_batches_from: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class VAE(nn.Module):
    """ConvNet-VAE (or FC-VAE) module.

    Use :meth:`forward` for training (returns per-cell reconstruction log-likelihood and KL),
    :meth:`encode` for embeddings, :meth:`log_px_z` for importance sampling.
    """

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__()
        self.config = config
        arch = parse_architecture(config.architecture)
        if config.likelihood not in LIKELIHOODS:
            raise ConvNetVAEError(
                f"likelihood must be one of {LIKELIHOODS}, got {config.likelihood!r}")
        if config.n_latent < 1 or config.n_hidden < 1:
            raise ConvNetVAEError("n_latent and n_hidden must be positive")
        if not 0.0 <= config.dropout < 1.0:
            raise ConvNetVAEError(f"dropout must be in [0, 1), got {config.dropout}")
        if config.input_transform not in transforms.INPUT_TRANSFORMS:
            raise ConvNetVAEError(f"input_transform must be one of {transforms.INPUT_TRANSFORMS}, "
                                  f"got {config.input_transform!r}")
        self.arch = arch
        self.family = family_of(arch.name)
        m = config.n_modalities
        g = int(sum(config.chrom_lengths))
        self.n_bins = g
        # the encoder receives the modality mask when its family always takes it, or when
        # modalities can be missing
        self.mask_input = self.family.mask_always or config.use_mask
        n_extra = m if config.use_mask else 0
        self.encoder, self.decoder = self.family.builder()(arch, config, n_extra)
        if config.batch_offsets and config.n_batches > 1:
            # a learned log-rate offset per batch, modality and bin: batch-specific biases of
            # whole bins (mappability, GC, sample artefacts) get a direct path in the decoder,
            # so the latent space need not carry them
            self.batch_offset = nn.Parameter(torch.zeros(config.n_batches, m, g))
        else:
            self.register_parameter("batch_offset", None)
        if config.bin_offsets:
            # a log-rate offset per modality and bin shared by all cells, started at the data's
            # mean profile (init_from_data): the decoder begins at the average cell, and the
            # latent space only has to explain how cells differ from it
            self.bin_offset = nn.Parameter(torch.zeros(m, g))
        else:
            self.register_parameter("bin_offset", None)
        self._add_loadings(config, m, g)
        if config.input_transform != "log1p":
            self.register_buffer("input_scale", torch.ones(m))
        else:
            self.input_scale = None
        if config.input_transform == "tfidf":
            self.register_buffer("input_idf", torch.ones(m, g))
        else:
            self.input_idf = None
        if config.likelihood == "nb":
            self.log_theta = nn.Parameter(torch.zeros(m, g))
        else:
            self.register_parameter("log_theta", None)

    def _add_loadings(self, config: ModuleConfig, m: int, g: int) -> None:
        """The free bin loadings, the encoder's free weights (a matrix, or tied: a gain) and a
        query model's own encoder-side loadings, as ``config`` says."""
        if config.bin_loadings:
            # a free loading per modality, bin and latent dimension added to the decoder's
            # log-rates (a linear decoder as in LDVAE or a topic model, beside the convolutional
            # one): a conv decoder with kernel = stride gives every bin of a window the same few
            # kernel columns, so one bin's loading cannot be set on its own; started at 0, so
            # the decoder starts as the convolutional one
            self.bin_loading = nn.Parameter(torch.zeros(m * g, config.n_latent))
        else:
            self.register_parameter("bin_loading", None)
        if config.tie_loadings and not (config.encoder_loadings and config.bin_loadings):
            raise ConvNetVAEError("tie_loadings needs both encoder_loadings and bin_loadings: "
                                  "the encoder's weights are the decoder's bin loadings")
        if config.tie_loadings:  # with both kinds of loadings (checked above)
            # tied: the encoder's linear term is h W g, the decoder's bin loadings W times a
            # learnt gain g per latent dimension (as PCA's encoder is its decoder transposed);
            # a free matrix of its own is a second weight per bin and dimension that can fit
            # the training cells' own noise on sparse data (docs/benchmarks.md, "Tied
            # loadings"). The gain starts at the free weights' scale 1 / sqrt(M G)
            self.register_parameter("encoder_loading", None)
            self.encoder_loading_scale = float(1.0 / np.sqrt(m * g))
            self.loading_gain = nn.Parameter(
                torch.full((config.n_latent,), self.encoder_loading_scale))
        elif config.encoder_loadings:
            # the encoder's counterpart: a free weight per modality, bin and latent dimension
            # from the encoder input straight to the latent mean (a linear encoder beside the
            # convolutional one; the convolution shares its kernel columns across the windows).
            # Scaled by 1 / sqrt(M G): an Adam step moves every weight by about the learning
            # rate, and so the mean by about lr x sum(h); the scale keeps that from growing in
            # proportion to the number of bins. Started at 0, so the encoder starts as the
            # convolutional one
            self.encoder_loading = nn.Parameter(torch.zeros(m * g, config.n_latent))
            self.encoder_loading_scale = float(1.0 / np.sqrt(m * g))
            self.register_parameter("loading_gain", None)
        else:
            self.register_parameter("encoder_loading", None)
            self.register_parameter("loading_gain", None)
        if config.query_batches_from > 0:
            if self.loading_gain is None:
                raise ConvNetVAEError("query_batches_from is for query models of a tied "
                                      "reference (tie_loadings)")
            # the query's own encoder-side loadings, added to the shared bin loadings for the
            # query's cells only (query mapping trains them; the reference's cells and the
            # decoder keep W): a tied encoder cannot otherwise adapt to a new batch's input
            self.query_loading = nn.Parameter(torch.zeros(m * g, config.n_latent))
        else:
            self.register_parameter("query_loading", None)

    @torch.no_grad()
    def init_from_data(self, bin_totals: np.ndarray, library_scale: np.ndarray) -> None:
        """Set the data-derived parts: the encoder input's statistics and the bin offsets.

        Parameters
        ----------
        bin_totals
            Counts per modality and bin over the cells the model is built on (M x G).
        library_scale
            Median library size per modality (M,).
        """
        tot = np.asarray(bin_totals, dtype=np.float64)
        if self.input_scale is not None:
            self.input_scale.copy_(torch.as_tensor(np.asarray(library_scale, np.float64)))
        if self.input_idf is not None:
            idf = np.stack([transforms.inverse_frequency(t) for t in tot])
            self.input_idf.copy_(torch.as_tensor(idf))
        if self.bin_offset is not None:
            prof = np.log((tot + 0.5) / (tot + 0.5).sum(axis=1, keepdims=True))
            self.bin_offset.copy_(torch.as_tensor(prof - prof.mean(axis=1, keepdims=True)))

    @torch.no_grad()
    def start_loadings(self, directions: np.ndarray, scale: float, shrink: float = 1.0) -> None:
        """Start the free loadings at an LSI of the encoder's input
        (:func:`~convnetvae.model.lsi_start.lsi_directions`).

        Parameters
        ----------
        directions
            (modalities x bins) x latent, orthonormal columns ``V``.
        scale
            Typical spread ``s`` of the cells' projections ``h V``.
        shrink
            ``c``: the encoder loadings' term of the latent mean becomes ``h V / (c s)`` (the
            LSI embedding at 1 / c of unit scale), the bin loadings ``V c s`` (so that decoding
            that mean adds back the input's projection ``h V V^T``); either part is skipped
            when the module has none. Tied (``tie_loadings``), the gain becomes ``1 / (c s)^2``,
            so that ``h (V c s) g`` is the same ``h V / (c s)``.
        """
        v = torch.as_tensor(np.asarray(directions), dtype=torch.float32)
        want = (self.config.n_modalities * self.n_bins, self.config.n_latent)
        if tuple(v.shape) != want:
            raise ConvNetVAEError(f"directions must be {want[0]} x {want[1]} (modalities x "
                                  f"bins, latent), got {tuple(v.shape)}")
        for name, value in (("scale", scale), ("shrink", shrink)):
            if not np.isfinite(value) or value <= 0:
                raise ConvNetVAEError(f"{name} must be a positive number, got {value}")
        if self.encoder_loading is not None:
            self.encoder_loading.copy_(v / (shrink * scale * self.encoder_loading_scale))
        if self.bin_loading is not None:
            self.bin_loading.copy_(v * (shrink * scale))
        if self.loading_gain is not None:  # tied: h (V c s) g = h V / (c s)
            self.loading_gain.fill_(1.0 / (shrink * scale) ** 2)

    # ----------------------------------------------------------------------- helpers
    def batch_onehot(self, batch: torch.Tensor) -> torch.Tensor | None:
        if self.config.n_batches <= 1:
            return None
        return F.one_hot(batch.long(), self.config.n_batches).to(torch.float32)

    @staticmethod
    def _mask_float(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            return torch.ones(x.shape[0], x.shape[1], device=x.device, dtype=x.dtype)
        return mask.to(x.dtype)

    # ----------------------------------------------------------------------- parts
    def encode(self, x: torch.Tensor, batch: torch.Tensor, mask: torch.Tensor | None = None,
               lib: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z | x, b) from raw counts ``x`` (B, M, G); ``lib`` (B, M)
        is ``x.sum(-1)`` when the caller has computed it."""
        h = transforms.forward(x, self.config.input_transform, self.input_scale, self.input_idf,
                               lib)
        if mask is not None:  # unobserved modalities read as zeros (without a mask: a pass saved)
            h = h * mask.to(h.dtype).unsqueeze(-1)
        mf = self._mask_float(x, mask) if self.mask_input else None
        mu, logvar = self.encoder(h, self.batch_onehot(batch), mf)
        if self.encoder_loading is not None:
            mu = torch.addmm(mu, h.flatten(1), self.encoder_loading,
                             alpha=self.encoder_loading_scale)
        elif self.loading_gain is not None:
            hf = h.flatten(1)
            lin = hf @ self.bin_loading
            if self.query_loading is not None:
                rows = batch >= self.config.query_batches_from
                lin = lin + (hf @ self.query_loading) * rows.unsqueeze(1).to(lin.dtype)
            mu = torch.addcmul(mu, lin, self.loading_gain)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Log softmax over bins per modality (B, M, G)."""
        logits = self.decoder(z, self.batch_onehot(batch))
        if self.bin_loading is not None:
            logits = logits + (z @ self.bin_loading.t()).view_as(logits)
        if self.bin_offset is not None:
            logits = logits + self.bin_offset
        if self.batch_offset is not None:
            logits = logits + self.batch_offset.index_select(0, batch.long())
        return F.log_softmax(logits, dim=-1)

    def log_px_z(self, x: torch.Tensor, z: torch.Tensor, batch: torch.Tensor,
                 mask: torch.Tensor | None = None, lib: torch.Tensor | None = None,
                 lgamma_x: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x | z, b) per cell, summed over bins and observed modalities."""
        log_w = self.decode(z, batch)
        if lib is None:
            lib = x.sum(-1)
        if self.config.likelihood == "poisson":
            lp = poisson_log_prob(x, log_w, lib, lgamma_x)
        else:
            lp = nb_log_prob(x, log_w, lib, self.log_theta.clamp(-10.0, 12.0), lgamma_x)
        return (lp * self._mask_float(x, mask)).sum(-1)

    def forward(self, x: torch.Tensor, batch: torch.Tensor, mask: torch.Tensor | None = None,
                sample: bool = True, log_factorials: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """Per-cell terms of the ELBO.

        ``log_factorials`` (B x M), ``sum_g log(x_g!)`` as the loader computes it from the sparse
        non-zeros, saves one ``lgamma`` per dense entry; without it it is computed from ``x``.

        Returns
        -------
        dict with ``reconstruction`` (log p(x|z), B), ``kl`` (B), ``mu``, ``logvar``.
        """
        lib = x.sum(-1)
        mu, logvar = self.encode(x, batch, mask, lib)
        if sample:
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        else:
            z = mu
        if log_factorials is None:
            log_factorials = log_factorial_sum(x)
        recon = self.log_px_z(x, z, batch, mask, lib, log_factorials)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(-1)
        return {"reconstruction": recon, "kl": kl, "mu": mu, "logvar": logvar}


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def module_config_from_dict(d: dict) -> ModuleConfig:
    """Rebuild a :class:`ModuleConfig` from a JSON dict, rejecting unknown fields clearly."""
    allowed = set(ModuleConfig.__dataclass_fields__)
    d = dict(d)
    if not d.get("extra"):  # older saved models carry an always-empty "extra" field
        d.pop("extra", None)
    unknown = set(d) - allowed
    if unknown:
        raise ConvNetVAEError(f"model config has unknown fields {sorted(unknown)}")
    try:
        return ModuleConfig(**d)
    except TypeError as err:
        raise ConvNetVAEError(f"model config is incomplete: {err}") from None
