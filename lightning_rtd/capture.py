"""Capture of a fixed probe set of validation embeddings.

A *probe set* is ``num_points`` validation samples chosen once, deterministically from a seed,
and identified by their dataset index. The same samples are then compared across epochs and
across the trials of a search. [`ProbeCapture`][lightning_rtd.capture.ProbeCapture] keeps only those
rows of a layer's output, in a preallocated ``(num_points, dim)`` buffer, so memory stays
O(num_points x dim) whatever the size of the validation set.

Which dataset index a row of a batch has is read from the validation loader's batch sampler
(``SequentialSampler`` or Lightning's ``DistributedSampler(shuffle=False)``), so the capture is
correct under DDP, with uneven last batches and with the padding a ``DistributedSampler`` adds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

FeatureReduction = str | Callable[[Tensor], Tensor]
OutputSelector = int | str | Callable[[Any], Tensor] | None


def resolve_layer(module: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (dotted path, e.g. ``"encoder.layers.3"``).

    Raises:
        ValueError: no such submodule; the message lists the available names.
    """
    modules = dict(module.named_modules())
    if name in modules and name != "":
        return modules[name]
    available = [n for n in modules if n]
    shown = ", ".join(available[:40]) + (", ..." if len(available) > 40 else "")
    raise ValueError(
        f"RTDCallback: {type(module).__name__} has no submodule named {name!r}. "
        f"Available submodules: {shown}"
    )


def select_output(output: Any, selector: OutputSelector) -> Tensor:
    """Pick the embedding tensor out of a layer output (tensor, tuple/list, dict or object).

    ``selector=None`` accepts a tensor as is and takes element 0 of a tuple or list (the usual
    ``(output, state)`` convention of recurrent layers); an int indexes a sequence; a str is a
    dict key or attribute name; a callable maps the output to the tensor.
    """
    if callable(selector):
        out = selector(output)
    elif selector is None:
        if isinstance(output, Tensor):
            out = output
        elif isinstance(output, (tuple, list)) and output:
            out = output[0]
        elif isinstance(output, Mapping):
            raise TypeError(
                f"RTDCallback: the layer returned a dict with keys {sorted(map(str, output))}; "
                "pass `output_selector=<key>` to say which entry is the embedding"
            )
        else:
            raise TypeError(
                f"RTDCallback: the layer returned {type(output).__name__}; pass "
                "`output_selector` (an index, key, attribute name or callable)"
            )
    elif isinstance(selector, int) or isinstance(output, Mapping):
        out = output[selector]
    else:
        out = getattr(output, selector)
    if not isinstance(out, Tensor):
        raise TypeError(
            f"RTDCallback: the selected layer output is {type(out).__name__}, not a tensor"
        )
    return out


def reduce_features(x: Tensor, reduction: FeatureReduction) -> Tensor:
    """Turn a ``(B, ...)`` output into ``(B, d)`` rows.

    ``"flatten"`` (default) keeps every activation: distances between flattened feature maps.
    ``"mean"`` averages over every dimension after the channel dimension 1 (global average
    pooling of ``(B, C, H, W)`` conv maps, giving ``(B, C)``). A callable is applied as is.
    """
    if callable(reduction):
        x = reduction(x)
    elif x.ndim > 2:
        if reduction == "flatten":
            x = x.flatten(1)
        elif reduction == "mean":
            x = x.flatten(2).mean(dim=2)
        else:
            raise ValueError(f"unknown feature_reduction {reduction!r}; use 'flatten' or 'mean'")
    if x.ndim == 1:
        x = x.unsqueeze(1)
    if x.ndim != 2:
        raise ValueError(f"RTDCallback: embeddings must reduce to (B, d), got {tuple(x.shape)}")
    return x


def batch_indices(dataloader: Any, num_batches: int | float) -> list[list[int]]:
    """Dataset indexes of the samples of each batch this process will see, in order.

    Raises:
        ValueError: the loader has no batch sampler over a map-style dataset (iterable
            datasets), or its order is random (two passes over the sampler differ).
    """
    batch_sampler = getattr(dataloader, "batch_sampler", None)
    if batch_sampler is None:
        raise ValueError(
            "RTDCallback needs a map-style validation dataset with a batch sampler, so that "
            "every row can be identified by its dataset index (iterable datasets are not "
            "supported)"
        )
    first = [list(map(int, b)) for b in batch_sampler]
    second = [list(map(int, b)) for b in batch_sampler]
    if first != second:
        raise ValueError(
            "RTDCallback: the validation loader's order is random (shuffle=True or a random "
            "sampler); use shuffle=False so that the probe samples can be located"
        )
    if num_batches != float("inf"):
        first = first[: int(num_batches)]
    return first


def choose_probe(candidates: np.ndarray, num_points: int, seed: int) -> np.ndarray:
    """Sorted dataset indexes of the probe set: ``num_points`` of ``candidates``, seeded.

    The result depends only on the candidate set, ``num_points`` and ``seed`` (not on batch
    size, number of processes or trial), so every trial of a search draws the same probe.
    """
    candidates = np.unique(np.asarray(candidates, dtype=np.int64))
    if num_points >= len(candidates):
        return candidates
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=num_points, replace=False))


class ProbeCapture:
    """Collects the probe rows of one validation epoch in a fixed-size buffer.

    Args:
        probe: sorted dataset indexes of the probe samples.
        batches: dataset indexes of every batch this process sees (from
            [`batch_indices`][lightning_rtd.capture.batch_indices]).
        selector: see [`select_output`][lightning_rtd.capture.select_output].
        reduction: see [`reduce_features`][lightning_rtd.capture.reduce_features].
    """

    def __init__(
        self,
        probe: np.ndarray,
        batches: Sequence[Sequence[int]],
        selector: OutputSelector = None,
        reduction: FeatureReduction = "flatten",
    ) -> None:
        self.probe = np.asarray(probe, dtype=np.int64)
        row_of = {int(i): r for r, i in enumerate(self.probe)}
        # per batch: (positions within the batch, rows of the probe buffer)
        self._plan: list[tuple[Tensor, Tensor] | None] = []
        for batch in batches:
            pos = [p for p, i in enumerate(batch) if int(i) in row_of]
            if pos:
                rows = [row_of[int(batch[p])] for p in pos]
                self._plan.append((torch.tensor(pos), torch.tensor(rows)))
            else:
                self._plan.append(None)
        self._batch_sizes = [len(b) for b in batches]
        self.selector = selector
        self.reduction = reduction
        self.buffer: Tensor | None = None
        self.filled = torch.zeros(len(self.probe), dtype=torch.bool)
        self._batch_idx: int | None = None
        self._done_batch = False

    def wants(self, batch_idx: int) -> bool:
        """Whether batch ``batch_idx`` holds probe samples."""
        return batch_idx < len(self._plan) and self._plan[batch_idx] is not None

    def start_batch(self, batch_idx: int) -> None:
        """Arm the capture for one batch (the hook ignores calls outside armed batches)."""
        self._batch_idx = batch_idx if self.wants(batch_idx) else None
        self._done_batch = False

    def end_batch(self) -> None:
        """Disarm the capture."""
        self._batch_idx = None

    def hook(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        """Forward hook: keep the probe rows of the armed batch (first call per batch only)."""
        if self._batch_idx is None or self._done_batch:
            return
        self.add(output)

    def add(self, output: Any) -> None:
        """Store the probe rows of the armed batch from a layer output."""
        assert self._batch_idx is not None
        plan = self._plan[self._batch_idx]
        assert plan is not None
        emb = reduce_features(select_output(output, self.selector).detach(), self.reduction)
        expected = self._batch_sizes[self._batch_idx]
        if emb.shape[0] != expected:
            raise ValueError(
                f"RTDCallback: the embedding of validation batch {self._batch_idx} has "
                f"{emb.shape[0]} rows but the batch has {expected} samples; the layer must keep "
                "the batch dimension first"
            )
        pos, rows = plan
        if self.buffer is None:
            self.buffer = torch.zeros(
                len(self.probe), emb.shape[1], dtype=torch.float32, device=emb.device
            )
        elif emb.shape[1] != self.buffer.shape[1]:
            raise ValueError(
                f"RTDCallback: embedding width changed within an epoch "
                f"({self.buffer.shape[1]} -> {emb.shape[1]})"
            )
        self.buffer[rows.to(emb.device)] = emb[pos.to(emb.device)].float()
        self.filled[rows] = True
        self._done_batch = True
