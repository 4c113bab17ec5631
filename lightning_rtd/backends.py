"""Persistence backends: a registry of name -> callable that compute the H1 bars of a
Vietoris-Rips filtration given by a dense distance matrix.

Every backend has the same small signature (see
[`PersistenceFn`][lightning_rtd.backends.PersistenceFn]): it receives a square float64 matrix whose
lower triangle defines the filtration and a finite radius cap, and returns an array of shape
``(k, 2)`` of (birth, death) pairs in dimension 1. Filtering of zero-length bars, sorting and
summing happen in one place, [`rtd_barcode`][lightning_rtd.functional.rtd_barcode],
so a backend is only the call into its package.

Built-in backends, fastest first (``"auto"`` picks the first one that is installed):

* ``redzed`` (``redzed-tda``, MIT): the default; releases the GIL, so both directions of a
  symmetric RTD run in two threads.
* ``giotto`` (``giotto-ph``, AGPL-3.0): optional extra ``lightning-rtd[giotto]``.
* ``ripser`` (ripser.py, MIT): the reference's CPU engine; slow on large or unstructured clouds.
* ``ripser++`` (``ripserplusplus``, the authors' GPU engine; needs CUDA): available only when the
  package is installed. Not yet verified: its PyPI source release did not build against CUDA 13,
  and no GPU was available when this adapter was written. When it is installed, the reference
  tests run it against every case automatically.

A callable with the same signature can be passed anywhere a backend name is accepted, or
registered under a name with [`register_backend`][lightning_rtd.backends.register_backend].
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from lightning_rtd.errors import BackendUnavailableError


class PersistenceFn(Protocol):
    """Signature of a persistence backend."""

    def __call__(self, distances: np.ndarray, threshold: float) -> np.ndarray:
        """Return the H1 (birth, death) pairs of the Rips filtration of ``distances``.

        Args:
            distances: square ``(n, n)`` float64 matrix; only its lower triangle is meaningful.
            threshold: finite radius cap; edges longer than it never enter the filtration.
        """
        ...


@dataclass(frozen=True)
class Backend:
    """A registered persistence backend.

    Attributes:
        name: registry key.
        fn: the callable computing H1 bars.
        module: the Python module that must be importable for the backend to be available
            (``None`` for user callables).
        releases_gil: whether two calls can run in parallel threads.
        exact: whether the backend reproduces the reference bars exactly (``"auto"`` only
            considers exact backends).
    """

    name: str
    fn: PersistenceFn
    module: str | None = None
    releases_gil: bool = False
    exact: bool = True

    @property
    def available(self) -> bool:
        """Whether the backend's package can be imported."""
        return self.module is None or importlib.util.find_spec(self.module) is not None


def _redzed(distances: np.ndarray, threshold: float) -> np.ndarray:
    import redzed_tda

    return np.asarray(redzed_tda.rips(distances, maxdim=1, threshold=threshold)[1])


def _ripser(distances: np.ndarray, threshold: float) -> np.ndarray:
    from ripser import ripser

    out = ripser(distances, maxdim=1, thresh=threshold, distance_matrix=True)
    return np.asarray(out["dgms"][1])


def _ripser_plus_plus(distances: np.ndarray, threshold: float) -> np.ndarray:
    import ripserplusplus

    out = ripserplusplus.run(f"--format distance --dim 1 --threshold {threshold!r}", distances)
    return np.asarray([(float(b[0]), float(b[1])) for b in out.get(1, [])], dtype=np.float64)


def _giotto(distances: np.ndarray, threshold: float) -> np.ndarray:
    from gph import ripser_parallel

    n_threads = max(1, min(4, os.cpu_count() or 1))
    out = ripser_parallel(
        distances, maxdim=1, thresh=threshold, metric="precomputed", n_threads=n_threads
    )
    return np.asarray(out["dgms"][1])


_REGISTRY: dict[str, Backend] = {}
# Preference order of "auto": measured speed on the RTD cross matrix (docs/performance.md).
_AUTO_ORDER: list[str] = ["redzed", "ripser++", "giotto", "ripser"]


def register_backend(
    name: str,
    fn: PersistenceFn,
    *,
    module: str | None = None,
    releases_gil: bool = False,
    exact: bool = True,
    overwrite: bool = False,
) -> Backend:
    """Register a persistence backend under ``name``.

    Args:
        name: key used with ``backend=name``.
        fn: callable with the [`PersistenceFn`][lightning_rtd.backends.PersistenceFn] signature.
        module: importable module the backend needs; the backend counts as unavailable without it.
        releases_gil: set when ``fn`` releases the GIL, so a symmetric RTD runs both directions
            in two threads.
        exact: whether ``fn`` reproduces the reference bars; only exact backends are used by
            ``"auto"``.
        overwrite: replace an existing registration instead of raising.

    Returns:
        The registered [`Backend`][lightning_rtd.backends.Backend].
    """
    if name == "auto":
        raise ValueError("'auto' is reserved for automatic backend selection")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"a backend named {name!r} is already registered (pass overwrite=True)")
    backend = Backend(name=name, fn=fn, module=module, releases_gil=releases_gil, exact=exact)
    _REGISTRY[name] = backend
    return backend


register_backend("redzed", _redzed, module="redzed_tda", releases_gil=True)
register_backend("giotto", _giotto, module="gph", releases_gil=False)
register_backend("ripser", _ripser, module="ripser", releases_gil=False)
register_backend("ripser++", _ripser_plus_plus, module="ripserplusplus", releases_gil=False)


def list_backends(available_only: bool = False) -> list[str]:
    """Names of the registered backends (only the installed ones with ``available_only``)."""
    return [n for n, b in _REGISTRY.items() if b.available or not available_only]


def get_backend(backend: str | Callable[..., np.ndarray] | Backend = "auto") -> Backend:
    """Resolve a backend name, callable or [`Backend`][lightning_rtd.backends.Backend] to a
    [`Backend`][lightning_rtd.backends.Backend].

    ``"auto"`` returns the fastest installed exact backend.

    Raises:
        BackendUnavailableError: the name is unknown, or its package is not installed; the
            message lists the installed backends.
    """
    if isinstance(backend, Backend):
        return backend
    if callable(backend):
        name = getattr(backend, "__name__", type(backend).__name__)
        return Backend(name=f"custom:{name}", fn=backend)
    if not isinstance(backend, str):
        raise TypeError(f"`backend` must be a name or a callable, got {type(backend).__name__}")
    installed = list_backends(available_only=True)
    if backend == "auto":
        for name in _AUTO_ORDER + [n for n in _REGISTRY if n not in _AUTO_ORDER]:
            b = _REGISTRY.get(name)
            if b is not None and b.exact and b.available:
                return b
        raise BackendUnavailableError(
            "no persistence backend is installed; install `redzed-tda` (recommended) or `ripser`"
        )
    if backend not in _REGISTRY:
        raise BackendUnavailableError(
            f"unknown backend {backend!r}; registered: {sorted(_REGISTRY)}, installed: {installed}"
        )
    b = _REGISTRY[backend]
    if not b.available:
        raise BackendUnavailableError(
            f"backend {backend!r} needs the Python module {b.module!r}, which is not installed; "
            f"installed backends: {installed}"
        )
    return b
