"""Warning and error types raised by lightning-rtd."""

from __future__ import annotations


class RTDWarning(UserWarning):
    """A score was computed on degenerate input, or a metric was logged as NaN instead of failing
    the training run (non-finite embeddings, an unreachable reference store, ...)."""


class BackendUnavailableError(ValueError):
    """The requested persistence backend is unknown or its package is not installed."""


class ProbeMismatchError(ValueError):
    """Two embeddings come from different probe sets and cannot be compared row by row."""
