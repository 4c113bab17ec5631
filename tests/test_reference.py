"""Every case of the authors' reference vectors, for every installed exact backend."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_reference, reference_case_names

import lightning_rtd as L

RTOL = ATOL = 1e-6  # the reference README's advice for float64 pipelines
BACKENDS = [b for b in L.list_backends(available_only=True) if L.get_backend(b).exact]


def _params():
    out = []
    for name, slow in reference_case_names():
        for backend in BACKENDS:
            # The one slow case needs ~1 min per direction with ripser.py / giotto-ph.
            marks = [pytest.mark.slow] if slow and backend != "redzed" else []
            out.append(pytest.param(name, backend, id=f"{name}-{backend}", marks=marks))
    return out


@pytest.fixture(scope="module")
def reference():
    cases, arrays = load_reference()
    return {c["name"]: c for c in cases}, arrays


@pytest.mark.parametrize(("name", "backend"), _params())
def test_reference_case(reference, name, backend):
    cases, arrays = reference
    case = cases[name]
    exp = case["expected"]
    p, pt = arrays[f"{name}__P"], arrays[f"{name}__Pt"]

    fwd = L.rtd_barcode(p, pt, backend=backend)
    bwd = L.rtd_barcode(pt, p, backend=backend)
    for got, key, bars_key in ((fwd, "P_Pt", "bars_P_Pt"), (bwd, "Pt_P", "bars_Pt_P")):
        ref_bars = arrays[f"{name}__{bars_key}"]
        assert len(got) == exp[f"n_h1_bars_{key}"] == len(ref_bars)
        np.testing.assert_allclose(got.bars, ref_bars, atol=ATOL, rtol=0)
        np.testing.assert_allclose(got.total_persistence, exp[f"rtd_{key}"], rtol=RTOL, atol=ATOL)
        assert got.backend == backend
    np.testing.assert_allclose(fwd.scale_x, exp["q90_P"], rtol=1e-12)
    np.testing.assert_allclose(fwd.scale_y, exp["q90_Pt"], rtol=1e-12)

    if backend != "redzed":
        return  # the paths below do not depend on the backend; ripser.py and giotto-ph are slow
    sym = L.rtd(p, pt, symmetric=True, backend=backend)
    np.testing.assert_allclose(sym, exp["rtd_sym"], rtol=RTOL, atol=ATOL)
    if exp["rtd_sym"] == 0.0:
        assert sym == 0.0  # zero cases must be exactly zero
    # a batch of all N rows is just a reordering: the reference's public rtd(trials=1, batch=N)
    np.testing.assert_allclose(
        L.rtd(p, pt, symmetric=True, backend=backend, batch=len(p), trials=1),
        exp["rtd_public_trials1"],
        rtol=RTOL,
        atol=ATOL,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_symmetric_path_of_every_backend(reference, backend):
    """Backends that hold the GIL run the two directions one after the other."""
    cases, arrays = reference
    name = "circle_vs_line_N100_d2"
    p, pt = arrays[f"{name}__P"], arrays[f"{name}__Pt"]
    sym = L.rtd(p, pt, symmetric=True, backend=backend)
    np.testing.assert_allclose(sym, cases[name]["expected"]["rtd_sym"], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("fast", [True, False])
def test_fast_masking_gives_identical_bars(reference, fast):
    """The exact speed-ups (zero block last, masked cross edges) never change a bar."""
    cases, arrays = reference
    for name, case in cases.items():
        if case.get("slow"):
            continue
        p, pt = arrays[f"{name}__P"], arrays[f"{name}__Pt"]
        bars = L.rtd_barcode(p, pt, fast=fast).bars
        np.testing.assert_array_equal(bars, arrays[f"{name}__bars_P_Pt"])


def test_published_example_full_cloud():
    """The reference README's example: 1000 uniform points, legacy np.random.seed(7)."""
    load_reference()  # skips when the reference folder is absent
    np.random.seed(7)
    p = np.random.rand(1000, 2)
    q = np.random.rand(1000, 2)
    np.testing.assert_allclose(L.rtd(p, q), 61.64660081989132, rtol=RTOL)
    np.testing.assert_allclose(L.rtd(q, p), 61.77497872279491, rtol=RTOL)
    assert len(L.rtd_barcode(p, q)) == 1219
    assert len(L.rtd_barcode(q, p)) == 1234


def test_float32_input_within_reference_tolerance(reference):
    cases, arrays = reference
    for name in ("mlp_embeddings_N200_d64", "circle_vs_line_N100_d2", "rotated_N100_d3"):
        p = arrays[f"{name}__P"].astype(np.float32)
        pt = arrays[f"{name}__Pt"].astype(np.float32)
        np.testing.assert_allclose(
            L.rtd(p, pt), cases[name]["expected"]["rtd_P_Pt"], rtol=1e-4, atol=1e-4
        )


def test_batched_calls_match_reference(reference):
    """``rtd_pairs`` (the callback's one-call-per-epoch path) and ``rtd_many`` reproduce the
    authors' values for many cases at once, in both directions, with mixed N."""
    cases, arrays = reference
    names = [n for n, slow in reference_case_names() if not slow][:8]
    pairs, expected = [], []
    for name in names:
        p, pt = arrays[f"{name}__P"], arrays[f"{name}__Pt"]
        pairs += [(p, pt), (pt, p)]
        expected += [cases[name]["expected"]["rtd_P_Pt"], cases[name]["expected"]["rtd_Pt_P"]]
    assert len({len(p) for p, _ in pairs}) > 1  # several N in one call
    np.testing.assert_allclose(L.rtd_pairs(pairs), expected, rtol=RTOL, atol=ATOL)
    sym = L.rtd_pairs(pairs[::2], symmetric=True)
    np.testing.assert_allclose(sym, [cases[n]["expected"]["rtd_sym"] for n in names], rtol=RTOL)
    p = arrays[f"{names[0]}__P"]
    refs = [arrays[f"{names[0]}__Pt"], 2.0 * p, p]
    many = L.rtd_many(p, refs)
    np.testing.assert_allclose(many, [expected[0], 0.0, 0.0], rtol=RTOL, atol=ATOL)
    assert L.rtd_pairs([]) == []
    with pytest.raises(ValueError, match="different numbers of rows"):
        L.rtd_pairs([(p, p), (p, p[:-1])])
