"""Benchmark model names: the registered architectures plus the non-neural baselines.

Architectures come from :mod:`convnetvae.model.registry`, so a newly registered family is a
benchmark model without further edits. ``<name>+shuffle`` is the bin-shuffle control of a model
whose family sees bins in genome order.
"""

from __future__ import annotations

from ..errors import ConvNetVAEError
from ..model.registry import family_of, parse_architecture, syntax_help

SHUFFLE_SUFFIX = "+shuffle"
#: baselines that are not registered architectures
NON_NEURAL = ("lsi", "lsi-unscaled", "mofa")
#: the models ``convnetvae benchmark`` compares by default
DEFAULT_MODELS = ("conv-k51s51", "conv-k11s3x2", "fc-l1", "lsi")


def parse_model_name(name: str) -> tuple[str, bool]:
    """Split ``"conv-k11s11+shuffle"`` into (``"conv-k11s11"``, True) and validate the base name."""
    raw = str(name).strip().lower()
    shuffled = raw.endswith(SHUFFLE_SUFFIX)
    base = raw[: -len(SHUFFLE_SUFFIX)] if shuffled else raw
    if base not in NON_NEURAL:
        try:
            parse_architecture(base)
        except ConvNetVAEError as err:
            raise ConvNetVAEError(
                f"unknown model {name!r}: use an architecture ({syntax_help()}), "
                f"{', '.join(repr(b) for b in NON_NEURAL)}, optionally with "
                f"'{SHUFFLE_SUFFIX}' ({err})") from None
    return base, shuffled


def is_neural(name: str) -> bool:
    """True for a registered architecture (with or without the shuffle suffix)."""
    return parse_model_name(name)[0] not in NON_NEURAL


def bin_order_matters(name: str) -> bool:
    """True when the model sees bins in genome order (the bin-shuffle control applies)."""
    base, _ = parse_model_name(name)
    return base not in NON_NEURAL and family_of(base).bin_order_matters
