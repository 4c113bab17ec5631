"""Pairwise distances and the quantile normalisation used by RTD, computed with torch on the
embeddings' own device (the GPU when they live there).

Two details decide whether the numbers match the reference implementation:

* the diagonal must be exactly zero. Matrix-multiplication distances (``torch.cdist``'s default
  for N > 25) leave a non-zero diagonal that keeps a sample apart from its own copy in the cross
  matrix and inflates RTD enormously, so it is set to zero explicitly;
* the normalising 0.9-quantile is taken over the whole N x N matrix, zero diagonal included,
  with linear interpolation (NumPy's default).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from lightning_rtd.errors import RTDWarning

QUANTILE = 0.9
ZERO_TOL = 1e-7  # distances below this, relative to the largest |coordinate|, are rounding


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distance matrix of the rows of ``x`` in float64, with an exactly zero diagonal.

    The cloud is centred and rescaled by its largest coordinate before the distances are taken
    and the scale is restored afterwards, so clouds far from the origin keep their precision and
    clouds of very large or very small scale neither overflow nor underflow. Distances below
    ``ZERO_TOL`` (1e-7) times the largest coordinate are rounding residue of the fast
    matrix-product formula and are set to exactly 0, so duplicate rows coincide. All of this
    happens on ``x.device``.
    """
    x = x.to(torch.float64)
    x = x - x.mean(dim=0, keepdim=True)
    scale = x.abs().max()
    if scale == 0:
        return torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64, device=x.device)
    d = torch.cdist(x / scale, x / scale)
    # The matrix-product path leaves ~1e-8 (in units of the largest coordinate) between identical
    # rows; snap such rounding residue to exact zeros so duplicates coincide as they should.
    d[d < ZERO_TOL] = 0.0
    d.fill_diagonal_(0.0)
    d = 0.5 * (d + d.T)  # exact symmetry; mm-based cdist can differ in the last bit
    return d * scale


def quantile(d: torch.Tensor, q: float = QUANTILE) -> float:
    """The ``q``-quantile of all entries of ``d`` with linear interpolation (``numpy.quantile``).

    Uses two order statistics instead of ``torch.quantile``, which refuses inputs of more than
    2**24 elements (N > 4096).
    """
    flat = d.reshape(-1)
    pos = q * (flat.numel() - 1)
    lo = int(pos)
    frac = pos - lo
    if flat.device.type == "cpu":  # numpy's selection is several times faster on the CPU
        part = np.partition(flat.numpy(), [lo, min(lo + 1, flat.numel() - 1)])
        return float(part[lo] + frac * (part[min(lo + 1, flat.numel() - 1)] - part[lo]))
    v_lo = torch.kthvalue(flat, lo + 1).values
    if frac == 0.0:
        return float(v_lo)
    v_hi = torch.kthvalue(flat, lo + 2).values
    return float(v_lo + frac * (v_hi - v_lo))


def normalized_distances(x: torch.Tensor, name: str = "x") -> tuple[torch.Tensor, float]:
    """Distances of ``x`` divided by their 0.9-quantile (the RTD normalisation).

    Returns:
        The normalised matrix and the divisor that was used.

    Degenerate clouds get a defined result instead of 0/0: when the quantile is 0 (more than
    90 % of all pairs coincide) the matrix is divided by its largest entry instead and an
    [`RTDWarning`][lightning_rtd.errors.RTDWarning] is issued; a constant cloud (all distances 0)
    gives the all-zero matrix.
    """
    d = pairwise_distances(x)
    q = quantile(d)
    if q > 0.0:
        return d / q, q
    dmax = float(d.max())
    if dmax == 0.0:
        warnings.warn(
            f"`{name}` is constant (all {d.shape[0]} rows coincide): its distance matrix is all "
            "zeros and is used unnormalised",
            RTDWarning,
            stacklevel=3,
        )
        return d, 1.0
    warnings.warn(
        f"the 0.9-quantile of `{name}`'s distances is 0 (more than 90% of pairs coincide); "
        "normalising by the largest distance instead",
        RTDWarning,
        stacklevel=3,
    )
    return d / dmax, dmax
