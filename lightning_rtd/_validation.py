"""Input checks shared by every score: one place that turns user input into a clean tensor."""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray

MIN_ROWS = 3


def as_embedding(x: ArrayLike, name: str) -> torch.Tensor:
    """Return ``x`` as a detached floating-point 2-D tensor on its own device.

    Raises:
        TypeError: ``x`` is neither a tensor nor an array, or has an integer, bool or complex dtype.
        ValueError: ``x`` is not 2-D, is empty, has fewer than 3 rows or holds NaN / Inf.
    """
    if isinstance(x, np.ndarray):
        _check_dtype_name(str(x.dtype), x.dtype.kind, name)
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        kind = "f" if x.is_floating_point() else ("c" if x.is_complex() else "i")
        if x.dtype == torch.bool:
            kind = "b"
        _check_dtype_name(str(x.dtype), kind, name)
        t = x.detach()
    else:
        raise TypeError(
            f"`{name}` must be a torch.Tensor or numpy.ndarray of shape (N, d), "
            f"got {type(x).__name__}"
        )
    if t.ndim != 2:
        raise ValueError(
            f"`{name}` must be 2-D (N samples x d features), got shape {tuple(t.shape)}; "
            "flatten or pool feature maps first"
        )
    if t.numel() == 0:
        raise ValueError(f"`{name}` is empty (shape {tuple(t.shape)})")
    if t.shape[0] < MIN_ROWS:
        raise ValueError(
            f"`{name}` has {t.shape[0]} rows, shape {tuple(t.shape)}; "
            f"RTD needs at least {MIN_ROWS} samples"
        )
    if not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"`{name}` (shape {tuple(t.shape)}) contains {n_bad} NaN or Inf values")
    return t


def _check_dtype_name(dtype: str, kind: str, name: str) -> None:
    if kind == "b":
        raise TypeError(f"`{name}` has bool dtype {dtype}; expected a floating-point dtype")
    if kind in ("i", "u"):
        raise TypeError(
            f"`{name}` has integer dtype {dtype}; expected a floating-point dtype "
            "(cast with .float() / .astype(float) if the integers are real coordinates)"
        )
    if kind == "c":
        raise TypeError(f"`{name}` has complex dtype {dtype}; expected a real floating-point dtype")
    if kind != "f":
        raise TypeError(f"`{name}` has unsupported dtype {dtype}; expected a floating-point dtype")


def as_pair(x: ArrayLike, y: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two embeddings of the same samples; ``y`` is moved to ``x``'s device."""
    return match_rows(as_embedding(x, "x"), as_embedding(y, "y"))


def match_rows(tx: torch.Tensor, ty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check that two validated embeddings hold the same number of samples; ``ty`` is moved to
    ``tx``'s device."""
    if tx.shape[0] != ty.shape[0]:
        raise ValueError(
            "`x` and `y` must hold the same samples in the same row order, but x has shape "
            f"{tuple(tx.shape)} and y has shape {tuple(ty.shape)} (different numbers of rows)"
        )
    if ty.device != tx.device:
        ty = ty.to(tx.device)
    return tx, ty
