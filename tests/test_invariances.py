"""Each score declares its invariances; these tests check them (in the spirit of repsim).

RTD(x -> y) is 0 whenever y is a similarity transform of x (rotation, translation, isotropic
scaling), because the normalised distance matrices are then identical. It is *not* symmetric.
Linear CKA is invariant to the same transforms (value 1) and is symmetric.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lightning_rtd as L

RNG = np.random.default_rng(1234)


def _cloud(n=120, d=6):
    return RNG.normal(size=(n, d))


def _rotation(d):
    q, _ = np.linalg.qr(RNG.normal(size=(d, d)))
    return q


TRANSFORMS = {
    "rotation": lambda x: x @ _rotation(x.shape[1]),
    "translation": lambda x: x + 1e3 * RNG.normal(size=(1, x.shape[1])),
    "isotropic_scaling_up": lambda x: 1e6 * x,
    "isotropic_scaling_down": lambda x: 1e-6 * x,
    "rotation_translation_scaling": lambda x: 0.37 * x @ _rotation(x.shape[1]) - 5.0,
    "embedding_in_higher_dim": lambda x: (
        np.hstack([x, np.zeros((x.shape[0], 3))]) @ _rotation(x.shape[1] + 3)
    ),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@pytest.mark.parametrize("as_tensor", [False, True])
def test_rtd_invariant_to_similarity_transforms(name, as_tensor):
    x = _cloud()
    y = TRANSFORMS[name](x)
    if as_tensor:
        x, y = torch.from_numpy(x), torch.from_numpy(y)
    assert L.rtd(x, y) == 0.0
    assert L.rtd(y, x) == 0.0
    assert L.rtd(x, y, symmetric=True) == 0.0
    assert len(L.rtd_barcode(x, y)) == 0


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_cka_invariant_to_similarity_transforms(name):
    x = _cloud()
    assert L.linear_cka(x, TRANSFORMS[name](x)) == pytest.approx(1.0, abs=1e-9)


def test_rtd_is_not_symmetric():
    """A circle vs. a line: the circle's loop has no counterpart in the line (large RTD one way)."""
    t = np.linspace(0, 2 * np.pi, 80, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], axis=1)
    line = np.stack([t, np.zeros_like(t)], axis=1)
    fwd, bwd = L.rtd(circle, line), L.rtd(line, circle)
    assert fwd > 0 and bwd >= 0
    assert abs(fwd - bwd) > 0.1 * max(fwd, bwd), (fwd, bwd)
    assert L.rtd(circle, line, symmetric=True) == pytest.approx(0.5 * (fwd + bwd), rel=1e-12)


def test_cka_is_symmetric_rtd_is_not():
    x, y = _cloud(), _cloud()
    assert L.linear_cka(x, y) == pytest.approx(L.linear_cka(y, x), rel=1e-12)
    assert L.rtd(x, y) != L.rtd(y, x)


def test_rtd_not_invariant_to_anisotropic_scaling():
    x = _cloud(d=2)
    y = x * np.array([[1.0, 20.0]])
    assert L.rtd(x, y) > 0.1


def test_row_permutation_of_both_clouds_is_invariant():
    """Permuting the samples (rows) of both clouds together relabels vertices only."""
    x, y = _cloud(), _cloud(d=3)
    perm = RNG.permutation(len(x))
    assert L.rtd(x[perm], y[perm]) == pytest.approx(L.rtd(x, y), rel=1e-9)


def test_rtd_grows_with_n():
    """RTD sums about N bar lengths: values are comparable only at equal N."""
    small = L.rtd(_cloud(n=60, d=8), _cloud(n=60, d=2))
    large = L.rtd(_cloud(n=240, d=8), _cloud(n=240, d=2))
    assert large > 2 * small


def test_subsampling_is_seeded_and_averages():
    x, y = _cloud(n=150, d=8), _cloud(n=150, d=8)
    a = L.rtd(x, y, batch=60, trials=4, seed=3)
    assert a == L.rtd(x, y, batch=60, trials=4, seed=3)
    assert a != L.rtd(x, y, batch=60, trials=4, seed=4)
    rng = np.random.default_rng(3)
    manual = []
    for _ in range(4):
        idx = np.sort(rng.choice(150, 60, replace=False))
        manual.append(L.rtd(x[idx], y[idx]))
    assert a == pytest.approx(np.mean(manual), rel=1e-12)
    assert L.rtd(x, y, batch=500) == L.rtd(x, y)  # batch >= N uses the whole cloud


def test_cka_known_values():
    x = _cloud()
    assert L.linear_cka(x, RNG.normal(size=(120, 6))) < 0.3
    # wide embeddings take the Gram-matrix path; both paths agree
    wide = RNG.normal(size=(20, 300))
    proj = wide @ RNG.normal(size=(300, 5))
    feat = L.linear_cka(np.hstack([wide[:, :5]]), proj)
    gram = L.linear_cka(wide, proj)
    assert 0.0 <= feat <= 1.0 and 0.0 <= gram <= 1.0
    xc = wide - wide.mean(0)
    pc = proj - proj.mean(0)
    num = np.linalg.norm(pc.T @ xc) ** 2
    expected = num / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(pc.T @ pc))
    assert gram == pytest.approx(expected, rel=1e-9)
