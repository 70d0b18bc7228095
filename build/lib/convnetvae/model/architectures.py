"""Readable architecture names.

* ``conv-k{K}s{S}``: ConvNet-VAE Group 1, one Conv1d layer of 32 channels, kernel K, stride S
  (the paper's K11S11, K31S31, K51S51).
* ``conv-k{K}s{S}x{L}``: L Conv1d layers with 32, 64, 128, ... channels (Group 2 is
  ``conv-k11s3x1`` .. ``conv-k11s3x3``).
* ``fc-l{L}``: the FC-VAE product-of-experts baseline with L hidden layers per expert.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from ..errors import ConvNetVAEError

_CONV = re.compile(r"^conv-k(\d+)s(\d+)(?:x(\d+))?$")
_FC = re.compile(r"^fc-l(\d+)$")

#: the architectures of the paper's Tables 1 and 2
PAPER_ARCHITECTURES = ("conv-k11s11", "conv-k31s31", "conv-k51s51", "conv-k11s3x1",
                       "conv-k11s3x2", "conv-k11s3x3", "fc-l1", "fc-l2", "fc-l3")


@dataclass(frozen=True)
class Architecture:
    """A parsed architecture."""

    name: str
    kind: str  # "conv" or "fc"
    kernel: int = 0
    stride: int = 0
    channels: tuple[int, ...] = field(default_factory=tuple)
    n_layers: int = 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


def parse_architecture(name: str) -> Architecture:
    """Parse an architecture name such as ``"conv-k31s31"``, ``"conv-k11s3x2"`` or ``"fc-l1"``."""
    if not isinstance(name, str):
        raise ConvNetVAEError(f"architecture must be a string like 'conv-k31s31', got {name!r}")
    key = name.strip().lower()
    m = _CONV.match(key)
    if m:
        k, s = int(m.group(1)), int(m.group(2))
        n = int(m.group(3) or 1)
        if k < 1 or s < 1 or n < 1 or n > 6:
            raise ConvNetVAEError(
                f"architecture {name!r}: kernel and stride must be >= 1 and layers 1-6")
        channels = tuple(32 * 2 ** i for i in range(n))
        return Architecture(name=key, kind="conv", kernel=k, stride=s, channels=channels,
                            n_layers=n)
    m = _FC.match(key)
    if m:
        n = int(m.group(1))
        if not 1 <= n <= 6:
            raise ConvNetVAEError(f"architecture {name!r}: FC-VAE layers must be 1-6")
        return Architecture(name=key, kind="fc", n_layers=n)
    raise ConvNetVAEError(
        f"unknown architecture {name!r}: use 'conv-k<K>s<S>' (e.g. conv-k31s31), "
        f"'conv-k<K>s<S>x<layers>' (e.g. conv-k11s3x2) or 'fc-l<layers>' (e.g. fc-l1); the "
        f"paper's are {', '.join(PAPER_ARCHITECTURES)}")
