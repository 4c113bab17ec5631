"""lightning-rtd: Representation Topology Divergence as Lightning monitor metrics for
hyperparameter search."""

from lightning_rtd.backends import Backend, get_backend, list_backends, register_backend
from lightning_rtd.barcode import CrossBarcode
from lightning_rtd.errors import BackendUnavailableError, ProbeMismatchError, RTDWarning
from lightning_rtd.functional import cross_matrix, linear_cka, rtd, rtd_barcode

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "CrossBarcode",
    "ProbeMismatchError",
    "RTDWarning",
    "__version__",
    "cross_matrix",
    "get_backend",
    "linear_cka",
    "list_backends",
    "register_backend",
    "rtd",
    "rtd_barcode",
]
