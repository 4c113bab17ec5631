"""The references a trial's probe embeddings are compared with: noise, the top trial, all trials.

Noise (one-to-noise)
--------------------
Noise is standard normal, drawn from ``torch.Generator().manual_seed(noise_seed)`` on the CPU in
float32, one row per probe sample, so the draw is identical for every epoch and every trial of a
search that uses the same seed. Two variants, chosen with ``noise=``:

* ``"matched"`` (default, dimension-fair): the embeddings are projected onto their top
  ``noise_dim`` principal components (all of them when the width is smaller), and compared with
  ``noise_dim``-dimensional Gaussian noise scaled by those components' singular values, i.e. a
  Gaussian cloud with the same dimension and variance profile. Only structure that a Gaussian of
  the same spectrum does not have (clusters, loops, curved manifolds) raises the value, and the
  comparison happens in the same dimension for every trial, whatever its width. On random
  untrained MLPs of widths 32-512 (N=200, test ``test_matched_noise_is_dimension_fair``) the
  Spearman correlation of RTD(x -> noise) with the width was 0.33, against -0.95 for
  ``"same-shape"`` (whose values collapse towards 0 for wide layers); symmetric RTD gave -0.3
  against +0.98.
* ``"same-shape"``: ``N(0, I)`` of the embeddings' own shape ``(num_points, d)``, the
  TopoHyperDrive paper's definition. Gaussian noise in d dimensions has more concentrated
  distances as d grows, so when widths differ between trials this value mostly tracks the width
  (a pilot study measured Spearman 0.71-0.89 with the embedding size, and no relation to final
  accuracy).

Top and all (one-to-top, one-to-all)
------------------------------------
Chosen from the reference store among the *other* trials' entries of the same epoch (the
fidelity multi-fidelity schedulers compare at). When no other trial has reached this epoch yet,
the latest earlier epoch that has entries is used instead (the fallback is recorded in the
callback's ``last_reference_epochs``). "all" uses at most ``max_references`` entries: a seeded
sample (seed, trial and epoch fixed) when there are more.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from lightning_rtd.store import StoreEntry

NOISE_KINDS = ("matched", "same-shape")


def noise_pair(
    embeddings: Tensor, kind: str = "matched", *, seed: int = 0, noise_dim: int = 16
) -> tuple[Tensor, Tensor]:
    """The two clouds compared by one-to-noise RTD (see the module docs for the variants).

    Args:
        embeddings: ``(N, d)`` probe embeddings.
        kind: ``"matched"`` or ``"same-shape"``.
        seed: seed of the Gaussian draw.
        noise_dim: number of principal components kept by ``"matched"``.

    Returns:
        ``(x, noise)``: the embeddings as compared (projected for ``"matched"``) and the noise,
        both with N rows on ``embeddings.device``.
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; choose one of {NOISE_KINDS}")
    n, d = embeddings.shape
    g = torch.Generator().manual_seed(int(seed))
    if kind == "same-shape":
        z = torch.randn(n, d, generator=g, dtype=torch.float32)
        return embeddings, z.to(embeddings.device)
    x = embeddings.detach().double()
    x = x - x.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    k = max(1, min(noise_dim, int((s > s[0] * 1e-7).sum()) if s[0] > 0 else 1))
    z = torch.randn(n, noise_dim, generator=g, dtype=torch.float64)[:, :k].to(x.device)
    return x @ vh[:k].T, z * s[:k]


def _value(entry: StoreEntry, objective: str) -> float:
    v = entry.objectives.get(objective)
    return float(v) if v is not None and np.isfinite(v) else float("nan")


def best_entry(entries: Sequence[StoreEntry], objective: str, mode: str) -> StoreEntry | None:
    """The entry with the best finite ``objective`` (``mode`` "min"/"max"); ties: earliest."""
    scored = [(e, _value(e, objective)) for e in entries]
    scored = [(e, v) for e, v in scored if np.isfinite(v)]
    if not scored:
        return None
    sign = 1.0 if mode == "min" else -1.0
    return min(scored, key=lambda ev: (sign * ev[1], ev[0].created, ev[0].trial_id))[0]


def sample_entries(
    entries: Sequence[StoreEntry], k: int | None, *, seed: int, trial_id: str, epoch: int
) -> list[StoreEntry]:
    """At most ``k`` of ``entries``, a sample fixed by (seed, trial, epoch); all if k is None."""
    entries = sorted(entries, key=lambda e: e.trial_id)
    if k is None or len(entries) <= k:
        return list(entries)
    salt = zlib.crc32(f"{trial_id}/{epoch}".encode())
    rng = np.random.default_rng([int(seed), salt])
    keep = np.sort(rng.choice(len(entries), size=k, replace=False))
    return [entries[i] for i in keep]
