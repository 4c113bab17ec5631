"""torchmetrics ``Metric`` wrappers: accumulate embeddings over batches (and DDP ranks) and score
them against a fixed reference at ``compute()``.

Both metrics keep two list states reduced by concatenation across processes: the embeddings and
the dataset indexes of their samples. At ``compute()`` the rows are put back in index order and
duplicate indexes (the padding a ``DistributedSampler`` adds so that every rank gets the same
number of samples) are dropped, so a 2-process run gives exactly the single-process value. Row
``i`` of the reference must be the sample with the ``i``-th smallest index.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_rtd._validation import ArrayLike, as_embedding
from lightning_rtd.functional import BackendLike, linear_cka, rtd


class _EmbeddingScore(Metric):
    """Shared accumulation logic; subclasses define `_score`."""

    is_differentiable = False
    full_state_update = False

    embeddings: list[Tensor]
    indexes: list[Tensor]

    def __init__(self, reference: ArrayLike | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("indexes", default=[], dist_reduce_fx="cat")
        self._reference: Tensor | None = None
        self._seen = 0
        if reference is not None:
            self.set_reference(reference)

    def set_reference(self, reference: ArrayLike) -> None:
        """Set the ``(N, d')`` embedding the accumulated samples are compared with."""
        self._reference = as_embedding(reference, "reference")

    def update(self, embeddings: Tensor, indexes: Tensor | None = None) -> None:
        """Add a batch of embeddings.

        Args:
            embeddings: ``(B, d)`` floating-point tensor; ``(B, ...)`` feature maps are flattened.
            indexes: ``(B,)`` dataset indexes of the samples. Required for a correct row order
                under DDP; without them rows are kept in arrival order (this process's batches,
                then the next process's after a sync).
        """
        emb = embeddings.detach()
        if emb.ndim > 2:
            emb = emb.flatten(1)
        if emb.ndim != 2:
            raise ValueError(f"`embeddings` must have shape (B, d), got {tuple(embeddings.shape)}")
        if indexes is None:
            indexes = torch.arange(self._seen, self._seen + emb.shape[0], device=emb.device)
        else:
            indexes = torch.as_tensor(indexes, device=emb.device).reshape(-1).long()
            if indexes.numel() != emb.shape[0]:
                raise ValueError(
                    f"`indexes` has {indexes.numel()} entries but `embeddings` has "
                    f"{emb.shape[0]} rows"
                )
        self._seen += emb.shape[0]
        self.embeddings.append(emb)
        self.indexes.append(indexes)

    def ordered_embeddings(self) -> Tensor:
        """The accumulated embeddings in index order, duplicate indexes dropped."""
        emb = self.embeddings
        idx = self.indexes
        if isinstance(emb, list):
            if not emb:
                raise ValueError(f"{type(self).__name__}.compute() called before any update()")
            emb, idx = torch.cat(emb), torch.cat(idx)
        idx, order = torch.sort(idx, stable=True)
        keep = torch.ones_like(idx, dtype=torch.bool)
        keep[1:] = idx[1:] != idx[:-1]
        return emb[order[keep]]

    def compute(self) -> Tensor:
        """Score the accumulated embeddings against the reference (a float64 scalar tensor)."""
        if self._reference is None:
            raise ValueError(
                f"{type(self).__name__} has no reference: pass `reference=` or call set_reference()"
            )
        x = self.ordered_embeddings()
        value = self._score(x, self._reference.to(x.device))
        return torch.tensor(value, dtype=torch.float64, device=x.device)

    def reset(self) -> None:
        """Forget the accumulated embeddings (the reference is kept)."""
        super().reset()
        self._seen = 0

    def _score(self, x: Tensor, reference: Tensor) -> float:
        raise NotImplementedError


class RTDMetric(_EmbeddingScore):
    """RTD between the accumulated embeddings and a fixed reference embedding.

    Args:
        reference: ``(N, d')`` embedding of the same N samples (row i = i-th smallest index).
        symmetric: mean of both directions instead of RTD(embeddings -> reference).
        backend: persistence backend, see [`lightning_rtd.rtd`][lightning_rtd.functional.rtd].
        **kwargs: forwarded to `torchmetrics.Metric` (``sync_on_compute``,
            ``process_group``, ...).

    Example:
        >>> import torch
        >>> from lightning_rtd.metrics import RTDMetric
        >>> ref = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
        >>> metric = RTDMetric(reference=2 * ref)
        >>> for start in range(0, 64, 16):
        ...     metric.update(ref[start:start + 16], torch.arange(start, start + 16))
        >>> float(metric.compute())
        0.0
    """

    higher_is_better = False  # a divergence: 0 means topologically identical

    def __init__(
        self,
        reference: ArrayLike | None = None,
        *,
        symmetric: bool = False,
        backend: BackendLike = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(reference, **kwargs)
        self.symmetric = symmetric
        self.backend = backend

    def _score(self, x: Tensor, reference: Tensor) -> float:
        return rtd(x, reference, symmetric=self.symmetric, backend=self.backend)


class CKAMetric(_EmbeddingScore):
    """Linear CKA between the accumulated embeddings and a fixed reference (1 = identical up
    to rotation and isotropic scaling).

    Args:
        reference: ``(N, d')`` embedding of the same N samples (row i = i-th smallest index).
        **kwargs: forwarded to `torchmetrics.Metric`.
    """

    higher_is_better = True
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def _score(self, x: Tensor, reference: Tensor) -> float:
        return linear_cka(x, reference)
