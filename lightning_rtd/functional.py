"""Functional API: Representation Topology Divergence (RTD) and linear CKA between two
embeddings of the same samples.

RTD follows the reference implementation of Barannikov et al. (arXiv:2201.00058) exactly:

1. ``r1``, ``r2``: Euclidean distance matrices of ``x`` and ``y`` (zero diagonal), each divided
   by its own 0.9-quantile taken over all N x N entries, zeros included;
2. the 2N x 2N cross matrix with a block of zeros (copy A of the samples), ``r1`` between the
   copies and ``min(r1, r2)`` inside copy A';
3. every entry below ``1e-6 * mean(r1)`` set to zero;
4. Vietoris-Rips persistent homology in dimension 1; RTD(x -> y) is the sum of the H1 bar
   lengths (the *cross-barcode*).

Two exact speed-ups change the work, never the bars: the zero block is listed last (a pure
reordering of the vertices) and, with ``fast=True`` (the reference's ``fast`` option), the cross
edges A'_i - A_j with i > j are left out, since the edge A'_j - A_i of the same length carries the
same information. The filtration is cut at its enclosing radius, beyond which nothing changes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from lightning_rtd._validation import ArrayLike, as_embedding, as_pair, match_rows
from lightning_rtd.backends import Backend, get_backend
from lightning_rtd.barcode import CrossBarcode
from lightning_rtd.distances import normalized_distances

BackendLike = str | Callable[..., np.ndarray] | Backend

ZERO_CUT = 1e-6  # entries below ZERO_CUT * mean(r1) are set to 0, as in the reference


@functools.lru_cache(maxsize=4)
def _strict_upper(n: int) -> np.ndarray:
    """Boolean mask of the strict upper triangle of an n x n matrix (cached: built per epoch)."""
    mask = np.triu(np.ones((n, n), dtype=bool), 1)
    mask.setflags(write=False)
    return mask


def _build_cross(
    r1: torch.Tensor, r2: torch.Tensor, *, fast: bool, zero_block_last: bool
) -> tuple[np.ndarray, float]:
    """The cross matrix of normalised distance matrices and its enclosing radius.

    Built block by block, in place, in one float64 array on the CPU (the zero block is never
    scanned).
    """
    n = r1.shape[0]
    a_np, b_np = r1.cpu().numpy(), r2.cpu().numpy()
    cut = ZERO_CUT * float(a_np.mean())
    d = np.empty((2 * n, 2 * n), dtype=np.float64)
    a, ap = (slice(n, 2 * n), slice(0, n)) if zero_block_last else (slice(0, n), slice(n, 2 * n))
    d[a, a] = 0.0
    inner = d[ap, ap]  # views into d: the A' block and the cross block A_j - A'_i
    cross = d[a, ap]
    np.minimum(a_np, b_np, out=inner)
    np.copyto(cross, a_np)
    np.putmask(inner, inner < cut, 0.0)
    np.putmask(cross, cross < cut, 0.0)
    if fast:
        # keep A_j - A'_i only for i <= j; A'_j - A_i has the same length (exact, see above)
        np.putmask(cross, _strict_upper(n), 2.0 * float(cross.max()) + 1.0)
    # Enclosing radius over the edges that remain: past it one vertex is joined to all others
    # and no H1 class survives.
    row_max_a = cross.max(axis=1)  # rows of copy A: only cross edges (the A block is 0)
    row_max_ap = np.maximum(inner.max(axis=1), cross.max(axis=0))
    threshold = float(min(row_max_a.min(), row_max_ap.min()))
    d[ap, a] = cross.T
    return d, threshold


def cross_matrix(x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """The 2N x 2N RTD cross matrix of ``x -> y`` in the reference layout.

    Rows and columns ``0..N-1`` are copy A of the samples (all at distance 0), ``N..2N-1`` copy
    A'; the block between the copies holds the normalised distances of ``x``, the block inside
    A' the entrywise minimum of both clouds' normalised distances. Useful to feed other
    topology tools; [`rtd`][lightning_rtd.functional.rtd] does not need it.
    """
    tx, ty = as_pair(x, y)
    r1, _ = normalized_distances(tx, "x")
    r2, _ = normalized_distances(ty, "y")
    d, _ = _build_cross(r1, r2, fast=False, zero_block_last=False)
    return d


def _barcode(
    r1: torch.Tensor, r2: torch.Tensor, backend: Backend, fast: bool, scales: tuple[float, float]
) -> CrossBarcode:
    d, threshold = _build_cross(r1, r2, fast=fast, zero_block_last=True)
    bars = np.asarray(backend.fn(d, threshold), dtype=np.float64).reshape(-1, 2)
    bars = bars[np.isfinite(bars[:, 1]) & (bars[:, 1] > bars[:, 0])]
    bars = bars[np.lexsort((bars[:, 1], bars[:, 0]))]
    return CrossBarcode(
        bars=bars,
        n_samples=r1.shape[0],
        backend=backend.name,
        scale_x=scales[0],
        scale_y=scales[1],
    )


def rtd_barcode(
    x: ArrayLike, y: ArrayLike, *, backend: BackendLike = "auto", fast: bool = True
) -> CrossBarcode:
    """The H1 cross-barcode of ``x -> y``: the bars whose lengths sum to RTD(x -> y).

    Args:
        x: ``(N, d)`` tensor or array, row i the embedding of sample i.
        y: ``(N, d')`` tensor or array of the same N samples in the same order.
        backend: persistence backend name (see `lightning_rtd.backends`), ``"auto"``, or a
            callable ``fn(distances, threshold) -> (k, 2) bars``.
        fast: leave out the redundant half of the cross edges (exact; see module docs).

    Returns:
        A [`CrossBarcode`][lightning_rtd.barcode.CrossBarcode] with bars of positive length sorted
        by birth, then death.
    """
    tx, ty = as_pair(x, y)
    b = get_backend(backend)
    r1, q1 = normalized_distances(tx, "x")
    r2, q2 = normalized_distances(ty, "y")
    return _barcode(r1, r2, b, fast, (q1, q2))


def _total_persistence(
    jobs: list[tuple[torch.Tensor, torch.Tensor]], b: Backend, fast: bool
) -> list[float]:
    """RTD of each (r1, r2) pair of normalised distance matrices, in parallel threads when the
    backend releases the GIL (one per core, at most one per job)."""
    scales = (0.0, 0.0)
    workers = min(len(jobs), os.cpu_count() or 1)
    if b.releases_gil and workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_barcode, r1, r2, b, fast, scales) for r1, r2 in jobs]
            return [f.result().total_persistence for f in futures]
    return [_barcode(r1, r2, b, fast, scales).total_persistence for r1, r2 in jobs]


def _rtd_jobs(
    pairs: list[tuple[torch.Tensor, torch.Tensor]], symmetric: bool, b: Backend, fast: bool
) -> list[float]:
    """RTD of each validated (x, y) pair; every distinct cloud's distances are computed once and
    all persistence computations of all pairs share one thread pool."""
    normalised: dict[int, torch.Tensor] = {}

    def dist(t: torch.Tensor, name: str) -> torch.Tensor:
        if id(t) not in normalised:
            normalised[id(t)] = normalized_distances(t, name)[0]
        return normalised[id(t)]

    jobs = []
    for tx, ty in pairs:
        r1, r2 = dist(tx, "x"), dist(ty, "y")
        jobs.append((r1, r2))
        if symmetric:
            jobs.append((r2, r1))
    values = _total_persistence(jobs, b, fast)
    if symmetric:
        return [0.5 * (values[2 * i] + values[2 * i + 1]) for i in range(len(pairs))]
    return values


def rtd_pairs(
    pairs: Sequence[tuple[ArrayLike, ArrayLike]],
    *,
    symmetric: bool = False,
    backend: BackendLike = "auto",
    fast: bool = True,
) -> list[float]:
    """RTD of several (x, y) pairs at once: ``[rtd(x, y) for x, y in pairs]``.

    The general form of [`rtd_many`][lightning_rtd.functional.rtd_many]: the distance matrix of
    every distinct cloud (the same object passed in several pairs) is computed once, and the
    persistence computations of all pairs (both directions of each when ``symmetric``) share one
    pool of threads, one per core, when the backend releases the GIL. The callback scores one epoch
    (noise, top and all references) with one call. Values are identical to
    [`rtd`][lightning_rtd.functional.rtd]'s.

    Args:
        pairs: ``(x, y)`` tuples; in each, ``y`` has the same N rows as ``x`` (N may differ
            between pairs).
        symmetric: see [`rtd`][lightning_rtd.functional.rtd].
        backend: see [`rtd`][lightning_rtd.functional.rtd].
        fast: see [`rtd`][lightning_rtd.functional.rtd].

    Returns:
        One float per pair, in order.
    """
    b = get_backend(backend)
    seen: dict[int, torch.Tensor] = {}  # each distinct input object validated once

    def valid(obj: ArrayLike, name: str) -> torch.Tensor:
        if id(obj) not in seen:
            seen[id(obj)] = as_embedding(obj, name)
        return seen[id(obj)]

    validated = [match_rows(valid(x, "x"), valid(y, "y")) for x, y in pairs]
    if not validated:
        return []
    return _rtd_jobs(validated, symmetric, b, fast)


def rtd_many(
    x: ArrayLike,
    references: Sequence[ArrayLike],
    *,
    symmetric: bool = False,
    backend: BackendLike = "auto",
    fast: bool = True,
) -> list[float]:
    """RTD from one embedding to several references: ``[rtd(x, r) for r in references]``.

    Computes ``x``'s distance matrix once and runs the persistence computations of all
    references (and both directions when ``symmetric``) in parallel threads when the backend
    releases the GIL (``redzed``), so scoring one model against k references costs far less than
    k calls of [`rtd`][lightning_rtd.functional.rtd]. Values are identical to
    [`rtd`][lightning_rtd.functional.rtd]'s. A special case of
    [`rtd_pairs`][lightning_rtd.functional.rtd_pairs].

    Args:
        x: ``(N, d)`` tensor or array.
        references: ``(N, d_k)`` tensors or arrays of the same N samples.
        symmetric: see [`rtd`][lightning_rtd.functional.rtd].
        backend: see [`rtd`][lightning_rtd.functional.rtd].
        fast: see [`rtd`][lightning_rtd.functional.rtd].

    Returns:
        One float per reference, in order.
    """
    return rtd_pairs([(x, r) for r in references], symmetric=symmetric, backend=backend, fast=fast)


def rtd(
    x: ArrayLike,
    y: ArrayLike,
    *,
    symmetric: bool = False,
    backend: BackendLike = "auto",
    batch: int | None = None,
    trials: int = 10,
    seed: int = 0,
    fast: bool = True,
) -> float:
    """Representation Topology Divergence RTD(x -> y).

    A large value means that the two embeddings disagree about which samples are close at
    some scale: clusters, loops or other multi-scale structure present in one are absent in the
    other. Identical clouds, and clouds that differ by a rotation, translation or isotropic
    scaling, give exactly 0. RTD is **not symmetric** (RTD(x -> y) != RTD(y -> x) in general) and
    grows with N (it sums about N bar lengths): compare values only at equal N.

    Args:
        x: ``(N, d)`` tensor or array, row i the embedding of sample i. Distances are computed
            with torch on ``x``'s device (``y`` is moved there).
        y: ``(N, d')`` tensor or array of the same N samples in the same row order; ``d'`` may
            differ from ``d``.
        symmetric: return ``(RTD(x -> y) + RTD(y -> x)) / 2``, the reference's ``rtd1``.
        backend: persistence backend name, ``"auto"`` (fastest installed exact backend) or a
            callable ``fn(distances, threshold) -> (k, 2) bars``.
        batch: if given and smaller than N, average over ``trials`` random subsets of ``batch``
            rows (the same rows of both clouds), like the reference's public ``rtd``; each subset
            is normalised on its own. ``None`` uses all N rows once (exact, no randomness).
        trials: number of random subsets when ``batch`` is given.
        seed: seed of the subset sampler (``numpy.random.default_rng(seed)``).
        fast: leave out the redundant half of the cross edges (exact; see module docs).

    Returns:
        The RTD value as a Python float (0.0 when there are no H1 bars).

    Raises:
        TypeError: an input is not a float tensor/array.
        ValueError: shapes differ in N, an input is not 2-D, is empty, has fewer than 3 rows or
            holds NaN/Inf; ``batch``/``trials`` out of range.
        BackendUnavailableError: unknown or uninstalled ``backend``.

    Example:
        >>> import torch
        >>> from lightning_rtd import rtd
        >>> x = torch.randn(100, 16, generator=torch.Generator().manual_seed(0))
        >>> rtd(x, 3.0 * x)  # isotropic scaling leaves the topology unchanged
        0.0
    """
    tx, ty = as_pair(x, y)
    b = get_backend(backend)
    n = tx.shape[0]
    if batch is None or batch >= n:
        return _rtd_jobs([(tx, ty)], symmetric, b, fast)[0]
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 3:
        raise ValueError(f"`batch` must be an integer >= 3 (or None), got {batch!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"`trials` must be a positive integer, got {trials!r}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(trials):
        idx = torch.as_tensor(np.sort(rng.choice(n, batch, replace=False)), device=tx.device)
        values.append(_rtd_jobs([(tx[idx], ty[idx])], symmetric, b, fast)[0])
    return float(np.mean(values))


def linear_cka(x: ArrayLike, y: ArrayLike) -> float:
    """Linear Centered Kernel Alignment (Kornblith et al., 2019) between two embeddings.

    ``CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc``, ``Yc``,
    computed in float64 on ``x``'s device. 1 means identical up to rotation and isotropic
    scaling, 0 means no linear relation. Symmetric, in [0, 1], and, unlike RTD, higher means
    *more* similar. A constant embedding has no defined CKA: 0.0 is returned with an
    [`RTDWarning`][lightning_rtd.errors.RTDWarning].

    Args:
        x: ``(N, d)`` tensor or array.
        y: ``(N, d')`` tensor or array of the same N samples.
    """
    import warnings

    from lightning_rtd.errors import RTDWarning

    tx, ty = as_pair(x, y)
    xs = _centred_unit(tx)
    ys = _centred_unit(ty)
    if xs is None or ys is None:
        warnings.warn(
            "linear CKA of a constant embedding is undefined; returning 0.0",
            RTDWarning,
            stacklevel=2,
        )
        return 0.0
    if xs.shape[1] + ys.shape[1] <= 2 * xs.shape[0]:
        num = (ys.T @ xs).pow(2).sum()
        den = torch.linalg.matrix_norm(xs.T @ xs) * torch.linalg.matrix_norm(ys.T @ ys)
    else:  # wide embeddings: work with the N x N Gram matrices instead
        kx, ky = xs @ xs.T, ys @ ys.T
        num = (kx * ky).sum()
        den = torch.linalg.matrix_norm(kx) * torch.linalg.matrix_norm(ky)
    return float((num / den).clamp(0.0, 1.0))


def _centred_unit(t: torch.Tensor) -> torch.Tensor | None:
    t = t.to(torch.float64)
    t = t - t.mean(dim=0, keepdim=True)
    scale = t.abs().max()
    if scale == 0:
        return None
    return t / scale


SCORES: dict[str, Callable[..., float]] = {"rtd": rtd, "cka": linear_cka}
"""Similarity scores by name, all with the signature ``score(x, y) -> float``."""
