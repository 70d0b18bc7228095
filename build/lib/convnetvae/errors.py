"""The package's own error type."""

from __future__ import annotations


class ConvNetVAEError(ValueError):
    """Bad input or state, with a message saying what is wrong and how to fix it.

    Subclasses :class:`ValueError`, so ``except ValueError`` catches it too.
    """
