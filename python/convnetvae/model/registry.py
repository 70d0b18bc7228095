"""The architecture registry: every face (API, CLI, widget, R bridge, benchmark) lists and checks
architectures here.

An architecture *family* is a name syntax plus a builder of the encoder and decoder:

* ``conv-k{K}s{S}``: ConvNet-VAE Group 1, one Conv1d layer of 32 channels, kernel K, stride S
  (the paper's K11S11, K31S31, K51S51);
* ``conv-k{K}s{S}x{L}``: L Conv1d layers with 32, 64, 128, ... channels (Group 2 is
  ``conv-k11s3x1`` .. ``conv-k11s3x3``);
* a trailing ``c{C}`` sets the first layer's channels (default 32, the paper's; later layers
  double): ``conv-k51s51c8`` is the paper's K51S51 with 8 channels;
* ``fc-l{L}``: the FC-VAE product-of-experts baseline with L hidden layers per expert.

Adding an architecture is one module and one registration: write a module with a function
``build(arch, config, n_extra) -> (encoder, decoder)`` (see :mod:`convnetvae.model.architectures`
for the contract) and add one :func:`register` call below naming it. The CLI choices, the
workbench's dropdown, the benchmark's model names and the validation of every face then list and
accept the new names. This module does not import torch: the command line lists architectures
without loading it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConvNetVAEError

#: the architecture every face uses when none is given: picked from the data's number of bins
#: (:func:`auto_architecture`)
DEFAULT_ARCHITECTURE = "auto"

#: what the encoder may see (implemented in :mod:`.transforms`)
INPUT_TRANSFORMS = ("log1p", "depth", "tfidf")

#: the count likelihoods (implemented in :mod:`.likelihoods`)
LIKELIHOODS = ("poisson", "nb")

#: the architectures of the paper's Tables 1 and 2
PAPER_ARCHITECTURES = ("conv-k11s11", "conv-k31s31", "conv-k51s51", "conv-k11s3x1",
                       "conv-k11s3x2", "conv-k11s3x3", "fc-l1", "fc-l2", "fc-l3")


@dataclass(frozen=True)
class Architecture:
    """A parsed architecture name."""

    name: str
    kind: str  # the family's prefix: "conv", "fc", ...
    kernel: int = 0
    stride: int = 0
    channels: tuple[int, ...] = field(default_factory=tuple)
    n_layers: int = 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


@dataclass(frozen=True)
class Family:
    """One registered family of architectures.

    Attributes
    ----------
    prefix
        Names of the family start with ``prefix + "-"``.
    syntax
        The name syntax shown in messages and help, e.g. ``"conv-k<K>s<S>[x<L>]"``.
    parse
        ``parse(name) -> Architecture`` for a lower-cased name with the family's prefix; raises
        :class:`ConvNetVAEError` for a malformed name.
    build
        ``"module:function"`` of the builder (imported on first use, so listing names never
        imports torch): ``function(arch, config, n_extra) -> (encoder, decoder)``.
    presets
        Names every face lists (CLI help, widget dropdown, benchmark help).
    summary
        One line describing the family.
    bin_order_matters
        True for models that see bins in genome order (the bin-shuffle control applies).
    mask_always
        The encoder always takes the modality mask (a product of experts drops a missing
        modality's expert), so cells lacking modalities are handled even when training saw none.
    """

    prefix: str
    syntax: str
    parse: Callable[[str], Architecture]
    build: str
    presets: tuple[str, ...]
    summary: str
    bin_order_matters: bool = True
    mask_always: bool = False

    def builder(self) -> Callable[..., Any]:
        """The imported build function."""
        module, _, func = self.build.partition(":")
        return getattr(importlib.import_module(module), func)


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Register an architecture family (its prefix must be new); returns it."""
    if family.prefix in _FAMILIES:
        raise ConvNetVAEError(f"an architecture family with prefix {family.prefix!r} is already "
                              "registered")
    if not re.fullmatch(r"[a-z][a-z0-9]*", family.prefix):
        raise ConvNetVAEError(f"architecture prefix {family.prefix!r} must be lower-case letters "
                              "and digits")
    _FAMILIES[family.prefix] = family
    for name in family.presets:
        parse_architecture(name)  # presets must parse
    return family


def unregister(prefix: str) -> None:
    """Remove a registered family (for tests and plug-ins)."""
    _FAMILIES.pop(prefix, None)


def families() -> list[Family]:
    """The registered families, in registration order."""
    return list(_FAMILIES.values())


def preset_names() -> list[str]:
    """Every family's preset names, the default first: what the faces list."""
    names = [AUTO] + [n for f in _FAMILIES.values() for n in f.presets]
    if DEFAULT_ARCHITECTURE in names:
        names.remove(DEFAULT_ARCHITECTURE)
        names.insert(0, DEFAULT_ARCHITECTURE)
    return names


def syntax_help() -> str:
    """``"conv-k<K>s<S>[x<L>] (ConvNet-VAE ...), fc-l<L> (...)"`` for messages and help."""
    return "; ".join(f"{f.syntax} ({f.summary})" for f in _FAMILIES.values())


def family_of(name: str) -> Family:
    """The family of an architecture name (checked)."""
    return _FAMILIES[parse_architecture(name).kind]


def parse_architecture(name: str) -> Architecture:
    """Parse an architecture name such as ``"conv-k31s31"``, ``"conv-k11s3x2"`` or ``"fc-l1"``."""
    if not isinstance(name, str):
        raise ConvNetVAEError(f"architecture must be a string like {DEFAULT_ARCHITECTURE!r}, "
                              f"got {name!r}")
    key = name.strip().lower()
    prefix = key.split("-", 1)[0]
    fam = _FAMILIES.get(prefix)
    if fam is None or "-" not in key:
        raise ConvNetVAEError(
            f"unknown architecture {name!r}: use {syntax_help()}; e.g. "
            f"{', '.join(preset_names())}")
    return fam.parse(key)


def check_architecture(name: str) -> str:
    """The normalised name (lower case) if it parses (or is ``"auto"``), else a
    :class:`ConvNetVAEError`."""
    if isinstance(name, str) and name.strip().lower() == AUTO:
        return AUTO
    return parse_architecture(name).name


#: the name that picks an architecture from the data (:func:`auto_architecture`)
AUTO = "auto"
#: Group 1 strides the automatic choice picks from (the paper's), and the number of conv windows
#: per modality it aims for at least
AUTO_STRIDES = (11, 31, 51)
AUTO_MIN_WINDOWS = 250
#: channels of the automatic choice's conv layer when the loadings are tied (``tie_loadings``):
#: the tied loadings carry the linear signal, a narrower convolution costs less per step, so the
#: time budget gives it more steps (docs/benchmarks.md, "Eight channels with tied loadings")
AUTO_TIED_CHANNELS = 8


def auto_architecture(n_bins: int, tied: bool = False) -> str:
    """The architecture ``"auto"`` stands for on data with ``n_bins`` bins.

    A single conv layer with kernel = stride (the paper's Group 1), the largest of
    :data:`AUTO_STRIDES` that still leaves :data:`AUTO_MIN_WINDOWS` windows: conv-k51s51 on
    25,000 bins (490 windows), conv-k11s11 on a few thousand. The fully connected layer after
    the convolution then has about the same size whatever the number of bins. The layer has the
    paper's 32 channels, or :data:`AUTO_TIED_CHANNELS` when ``tied`` (the model's loadings are
    tied, ``tie_loadings``): conv-k51s51c8. See docs/benchmarks.md for the measurements behind
    this choice ("Fewer channels" for untied models, where 8 channels were measured and not
    taken; "Eight channels with tied loadings").
    """
    stride = AUTO_STRIDES[0]
    for s in AUTO_STRIDES:
        if n_bins / s >= AUTO_MIN_WINDOWS:
            stride = s
    return f"conv-k{stride}s{stride}" + (f"c{AUTO_TIED_CHANNELS}" if tied else "")


#: free bin and encoder loadings (``bin_loadings=None``, ``encoder_loadings=None``) are on up to
#: this many bins x modalities: the default 25,000 top bins of three modalities; beyond, they are
#: off (with Adam each takes 16 bytes per bin, modality and latent dimension: 350 MB each in the
#: paper's all-bins setting, 735,660 bins x modalities, more than the margin of its memory goal;
#: 48 MB each at this size; docs/benchmarks.md, "Free loadings per bin")
AUTO_BIN_LOADINGS_MAX = 100_000


def auto_bin_loadings(n_bins: int, n_modalities: int) -> bool:
    """What ``bin_loadings=None`` and ``encoder_loadings=None`` stand for on data with ``n_bins``
    bins and ``n_modalities`` modalities: on up to :data:`AUTO_BIN_LOADINGS_MAX` bins x
    modalities."""
    return int(n_bins) * int(n_modalities) <= AUTO_BIN_LOADINGS_MAX


def resolve_architecture(name: str, n_bins: int, tied: bool = False) -> str:
    """A concrete architecture name: ``name`` itself, or what ``"auto"`` picks for ``n_bins``
    (and tied loadings, ``tied``)."""
    name = check_architecture(name)
    return auto_architecture(n_bins, tied) if name == AUTO else name


# ---------------------------------------------------------------------------- built-in families
_CONV = re.compile(r"^conv-k(\d+)s(\d+)(?:x(\d+))?(?:c(\d+))?$")
#: channels of the first conv layer when the name has no ``c<C>`` (the paper's)
PAPER_CHANNELS = 32
_FC = re.compile(r"^fc-l(\d+)$")


def fitting_architecture(n_bins: int) -> str:
    """What to say when a convolution's kernel is wider than the data's ``n_bins`` bins: the
    listed conv architecture with the widest kernel that fits (else ``conv-k<n>s<n>`` or
    ``fc-l1``), and how to get more bins."""
    fits = []
    for name in preset_names():
        if name == AUTO:
            continue
        arch = parse_architecture(name)
        if arch.kind == "conv" and arch.kernel <= n_bins:
            fits.append((arch.kernel, -arch.n_layers, arch.stride, name))
    if fits:
        best = max(fits)[3]
    elif n_bins >= 2:
        best = f"conv-k{n_bins}s{n_bins}"
    else:
        best = "fc-l1"
    return (f"use an architecture that fits {n_bins} bins, e.g. architecture={best!r}, or give "
            "more bins (a smaller bin_size, more features, or n_bins=None to keep every bin)")


def _parse_conv(key: str) -> Architecture:
    m = _CONV.match(key)
    if not m:
        raise ConvNetVAEError(f"architecture {key!r}: use conv-k<K>s<S> (e.g. conv-k31s31), "
                              "conv-k<K>s<S>x<layers> (e.g. conv-k11s3x2), optionally ending in "
                              "c<channels> (e.g. conv-k51s51c8)")
    k, s, n = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
    c = int(m.group(4) or PAPER_CHANNELS)
    if k < 1 or s < 1 or n < 1 or n > 6:
        raise ConvNetVAEError(f"architecture {key!r}: kernel and stride must be >= 1 and layers 1-6")
    if not 1 <= c <= 1024:
        raise ConvNetVAEError(f"architecture {key!r}: channels (c<C>) must be 1-1024")
    return Architecture(name=key, kind="conv", kernel=k, stride=s,
                        channels=tuple(c * 2 ** i for i in range(n)), n_layers=n)


def _parse_fc(key: str) -> Architecture:
    m = _FC.match(key)
    if not m:
        raise ConvNetVAEError(f"architecture {key!r}: use fc-l<layers> (e.g. fc-l1)")
    n = int(m.group(1))
    if not 1 <= n <= 6:
        raise ConvNetVAEError(f"architecture {key!r}: FC-VAE layers must be 1-6")
    return Architecture(name=key, kind="fc", n_layers=n)


register(Family(
    prefix="conv", syntax="conv-k<K>s<S>[x<L>][c<C>]", parse=_parse_conv,
    build="convnetvae.model.architectures:build_conv",
    presets=("conv-k31s31", "conv-k51s51", "conv-k11s11", "conv-k11s3x1", "conv-k11s3x2",
             "conv-k11s3x3"),
    summary="ConvNet-VAE: L conv layers of kernel K, stride S, C channels in the first (32)"))
register(Family(
    prefix="fc", syntax="fc-l<L>", parse=_parse_fc,
    build="convnetvae.model.architectures:build_fc",
    presets=("fc-l1", "fc-l2", "fc-l3"),
    summary="FC-VAE product-of-experts baseline with L hidden layers",
    bin_order_matters=False, mask_always=True))
