"""The result type shared by every persistence backend."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class CrossBarcode:
    """The H1 cross-barcode of a pair of embeddings (x -> y).

    Attributes:
        bars: ``(k, 2)`` float64 array of (birth, death) pairs of positive length, sorted by birth
            then death. Values are in units of the normalised distances (multiples of each
            cloud's 0.9-quantile distance).
        n_samples: number of rows N of the two clouds.
        backend: name of the persistence backend that computed the bars.
        scale_x: the 0.9-quantile distance used to normalise ``x``.
        scale_y: the 0.9-quantile distance used to normalise ``y``.
    """

    bars: np.ndarray = field(repr=False)
    n_samples: int
    backend: str
    scale_x: float
    scale_y: float

    @property
    def births(self) -> np.ndarray:
        """Birth times of the bars."""
        return self.bars[:, 0]

    @property
    def deaths(self) -> np.ndarray:
        """Death times of the bars."""
        return self.bars[:, 1]

    @property
    def lengths(self) -> np.ndarray:
        """Bar lengths ``death - birth``."""
        return self.bars[:, 1] - self.bars[:, 0]

    @property
    def total_persistence(self) -> float:
        """Sum of the bar lengths: the RTD value of this direction."""
        return float(self.lengths.sum())

    def __len__(self) -> int:
        return int(self.bars.shape[0])
