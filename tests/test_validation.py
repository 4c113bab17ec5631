"""Bad input gets a specific error; degenerate input gets a defined, documented value."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lightning_rtd as L
from lightning_rtd.errors import BackendUnavailableError, RTDWarning

SCORES = [L.rtd, L.rtd_barcode, L.linear_cka, L.cross_matrix]

ok = np.random.default_rng(0).normal(size=(10, 3))


@pytest.mark.parametrize("fn", SCORES)
@pytest.mark.parametrize(
    ("bad", "exc", "match"),
    [
        (np.zeros((10, 3), dtype=np.int64), TypeError, "integer dtype int64"),
        (np.zeros((10, 3), dtype=bool), TypeError, "bool dtype"),
        (np.zeros((10, 3), dtype=np.complex128), TypeError, "complex dtype"),
        (np.array([["a"] * 3] * 10), TypeError, "unsupported dtype"),
        (torch.zeros(10, 3, dtype=torch.int32), TypeError, "integer dtype torch.int32"),
        ([[0.0, 1.0]] * 10, TypeError, "torch.Tensor or numpy.ndarray"),
        (np.zeros(10), ValueError, r"must be 2-D .* shape \(10,\)"),
        (np.zeros((10, 3, 2)), ValueError, r"must be 2-D .* shape \(10, 3, 2\)"),
        (np.zeros((0, 3)), ValueError, r"is empty \(shape \(0, 3\)\)"),
        (np.zeros((10, 0)), ValueError, "is empty"),
        (np.zeros((2, 3)), ValueError, r"has 2 rows.*at least 3"),
        (np.full((10, 3), np.nan), ValueError, "contains 30 NaN or Inf"),
        (np.where(np.eye(10, 3) > 0, np.inf, 0.0), ValueError, "contains 3 NaN or Inf"),
    ],
)
@pytest.mark.parametrize("position", ["x", "y"])
def test_bad_input_errors(fn, bad, exc, match, position):
    args = (bad, ok) if position == "x" else (ok, bad)
    with pytest.raises(exc, match=match) as info:
        fn(*args)
    assert f"`{position}`" in str(info.value)


@pytest.mark.parametrize("fn", SCORES)
def test_different_row_counts(fn):
    with pytest.raises(ValueError, match=r"x has shape \(10, 3\) and y has shape \(11, 3\)"):
        fn(ok, np.zeros((11, 3)))


def test_unknown_and_unavailable_backend():
    installed = L.list_backends(available_only=True)
    with pytest.raises(BackendUnavailableError, match="unknown backend 'nope'") as info:
        L.rtd(ok, ok, backend="nope")
    assert str(installed) in str(info.value)
    L.register_backend("needs-missing", lambda d, t: np.zeros((0, 2)), module="no_such_mod_xyz")
    try:
        with pytest.raises(BackendUnavailableError, match=r"no_such_mod_xyz.*installed backends"):
            L.rtd(ok, ok, backend="needs-missing")
        assert "needs-missing" not in L.list_backends(available_only=True)
    finally:
        from lightning_rtd.backends import _REGISTRY

        _REGISTRY.pop("needs-missing")
    with pytest.raises(TypeError, match="`backend` must be a name or a callable"):
        L.rtd(ok, ok, backend=3)


def test_custom_callable_backend_is_used():
    calls = []

    def fake(distances, threshold):
        calls.append((distances.shape, threshold))
        return np.array([[0.1, 0.4], [0.2, 0.2], [0.3, np.inf]])

    assert L.rtd(ok, ok[::-1].copy(), backend=fake) == pytest.approx(0.3)
    assert calls[0][0] == (20, 20) and np.isfinite(calls[0][1])


@pytest.mark.parametrize("batch", [0, 2, 2.5, True])
def test_bad_batch(batch):
    x = np.random.default_rng(1).normal(size=(30, 2))
    with pytest.raises(ValueError, match="`batch` must be an integer >= 3"):
        L.rtd(x, x, batch=batch)


def test_bad_trials():
    x = np.random.default_rng(1).normal(size=(30, 2))
    with pytest.raises(ValueError, match="`trials` must be a positive integer"):
        L.rtd(x, x, batch=10, trials=0)


# --- degenerate but valid input: defined values, never NaN -------------------------------------


def test_constant_embeddings_are_defined():
    c = np.ones((20, 4))
    x = np.random.default_rng(2).normal(size=(20, 4))
    with pytest.warns(RTDWarning, match="is constant"):
        assert L.rtd(c, x) == 0.0  # x -> y with constant x: every cross edge is at 0
    with pytest.warns(RTDWarning, match="is constant"):
        v = L.rtd(x, c)
    assert np.isfinite(v) and v > 0
    with pytest.warns(RTDWarning):
        assert L.rtd(c, c, symmetric=True) == 0.0
    with pytest.warns(RTDWarning, match="CKA of a constant embedding"):
        assert L.linear_cka(c, x) == 0.0


def test_quantile_zero_falls_back_to_max():
    x = np.zeros((40, 2))
    x[-2:] = [[1.0, 0.0], [0.0, 1.0]]  # > 90% of pairs coincide -> quantile is 0
    y = np.random.default_rng(3).normal(size=(40, 2))
    with pytest.warns(RTDWarning, match="normalising by the largest distance"):
        v = L.rtd(x, y, symmetric=True)
    assert np.isfinite(v)


def test_mostly_duplicate_rows_away_from_origin_use_the_fallback():
    """Rounding of the matrix-product distances must not turn coinciding rows into tiny
    positive distances (a 1e-9 quantile would blow RTD up to ~1e10)."""
    g = np.random.default_rng(0)
    y = g.standard_normal((100, 8))
    x = np.zeros((100, 8)) + 3.0
    x[:5] = g.standard_normal((5, 8))
    with pytest.warns(RTDWarning, match="normalising by the largest distance"):
        v = L.rtd(x, y)
    assert np.isfinite(v) and v < 100
    assert L.rtd_barcode(x[:50], y[:50]).scale_x > 0.1


def test_duplicate_rows_are_fine():
    x = np.random.default_rng(4).normal(size=(25, 3))
    x = np.vstack([x, x[:5]])
    y = np.random.default_rng(5).normal(size=(30, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = L.rtd(x, y, symmetric=True)
    assert np.isfinite(v) and v > 0


@pytest.mark.parametrize("scale", [1e-150, 1e-8, 1e8, 1e150])
def test_extreme_scales(scale):
    x = np.random.default_rng(6).normal(size=(40, 5))
    y = np.random.default_rng(7).normal(size=(40, 3))
    ref = L.rtd(x, y)
    assert L.rtd(scale * x, y) == pytest.approx(ref, rel=1e-6)
    assert L.rtd(x, scale * y) == pytest.approx(ref, rel=1e-6)


def test_float16_and_bfloat16_inputs():
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    y = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
    ref = L.rtd(x, y)
    assert L.rtd(x.half(), y.half()) == pytest.approx(ref, rel=0.05)
    assert np.isfinite(L.rtd(x.bfloat16(), y))


def test_requires_grad_tensor_is_detached():
    x = torch.randn(30, 4, requires_grad=True)
    assert np.isfinite(L.rtd(x, x.detach() * 2))


# --- property-based -----------------------------------------------------------------------------

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(3, 25), st.integers(1, 6)), elements=finite))
def test_any_finite_input_gives_finite_nonnegative_rtd(x):
    y = np.random.default_rng(0).normal(size=(x.shape[0], 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RTDWarning)
        for v in (L.rtd(x, y), L.rtd(y, x), L.rtd(x, y, symmetric=True), L.linear_cka(x, y)):
            assert np.isfinite(v) and v >= 0.0


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(3, 12), st.integers(1, 4)),
        elements=st.one_of(finite, st.sampled_from([np.nan, np.inf, -np.inf])),
    ).filter(lambda a: not np.isfinite(a).all())
)
def test_any_nonfinite_input_is_rejected(x):
    y = np.ones_like(x)
    with pytest.raises(ValueError, match="NaN or Inf"):
        L.rtd(x, y)
    with pytest.raises(ValueError, match="NaN or Inf"):
        L.rtd(y, x)


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 30),
    st.integers(0, 30),
    st.integers(1, 4),
)
def test_row_count_mismatch_always_named(n1, n2, d):
    x, y = np.ones((n1, d)), np.ones((n2, d))
    if n1 == n2 and n1 >= 3:
        return
    with pytest.raises(ValueError, match=r"shape|rows|empty"):
        L.rtd(x, y)


@settings(max_examples=30, deadline=None)
@given(hnp.array_shapes(min_dims=0, max_dims=4).filter(lambda s: len(s) != 2))
def test_non_2d_always_rejected(shape):
    with pytest.raises(ValueError, match="must be 2-D"):
        L.rtd(np.ones(shape), np.ones(shape))


@settings(max_examples=20, deadline=None)
@given(hnp.integer_dtypes() | hnp.unsigned_integer_dtypes() | hnp.complex_number_dtypes())
def test_non_float_dtypes_always_rejected(dtype):
    with pytest.raises(TypeError, match="dtype"):
        L.rtd(np.ones((5, 2), dtype=dtype), np.ones((5, 2)))
