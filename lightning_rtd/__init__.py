"""lightning-rtd: Representation Topology Divergence as Lightning monitor metrics for
hyperparameter search.

The functional API (``rtd``, ``rtd_barcode``, ``linear_cka``) and the store are imported
eagerly; the Lightning and torchmetrics classes (``RTDCallback``, ``RTDMetric``, ``CKAMetric``)
on first use, so processes that only need the engine or the store start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from lightning_rtd.backends import Backend, get_backend, list_backends, register_backend
from lightning_rtd.barcode import CrossBarcode
from lightning_rtd.errors import BackendUnavailableError, ProbeMismatchError, RTDWarning
from lightning_rtd.functional import (
    cross_matrix,
    linear_cka,
    rtd,
    rtd_barcode,
    rtd_many,
    rtd_pairs,
)
from lightning_rtd.store import (
    ProbeFingerprint,
    ReferenceStore,
    StoreEntry,
    StoreUnavailableError,
    open_store,
)

__version__ = "0.1.0"

_LAZY = {
    "RTDCallback": "lightning_rtd.callback",
    "RTDMetric": "lightning_rtd.metrics",
    "CKAMetric": "lightning_rtd.metrics",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightning_rtd' has no attribute {name!r}")


__all__ = [
    "Backend",
    "BackendUnavailableError",
    "CKAMetric",
    "CrossBarcode",
    "ProbeFingerprint",
    "ProbeMismatchError",
    "RTDCallback",
    "RTDMetric",
    "RTDWarning",
    "ReferenceStore",
    "StoreEntry",
    "StoreUnavailableError",
    "__version__",
    "cross_matrix",
    "get_backend",
    "linear_cka",
    "list_backends",
    "open_store",
    "register_backend",
    "rtd",
    "rtd_barcode",
    "rtd_many",
    "rtd_pairs",
]
