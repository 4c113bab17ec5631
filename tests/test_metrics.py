"""torchmetrics semantics of RTDMetric / CKAMetric: batch-wise equals one-shot, DDP equals one
process, reset, declared attributes."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import lightning_rtd as L
from lightning_rtd.metrics import CKAMetric, RTDMetric

N = 91  # odd, so a 2-process DistributedSampler pads one sample


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 12, generator=g)
    ref = torch.tanh(x @ torch.randn(12, 5, generator=g)) + 0.1 * torch.randn(N, 5, generator=g)
    return x, ref


def test_declared_attributes():
    assert RTDMetric.higher_is_better is False
    assert CKAMetric.higher_is_better is True
    assert RTDMetric.is_differentiable is False and CKAMetric.is_differentiable is False
    assert RTDMetric.full_state_update is False


@pytest.mark.parametrize("symmetric", [False, True])
def test_batchwise_equals_functional_in_any_batch_order(symmetric):
    x, ref = _data()
    metric = RTDMetric(reference=ref, symmetric=symmetric)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(1))
    for chunk in perm.split(17):  # batches arrive shuffled; indexes restore the order
        metric.update(x[chunk], chunk)
    assert float(metric.compute()) == L.rtd(x, ref, symmetric=symmetric)


def test_without_indexes_keeps_arrival_order():
    x, ref = _data()
    metric = CKAMetric(reference=ref)
    for chunk in x.split(20):
        metric.update(chunk)
    assert float(metric.compute()) == pytest.approx(L.linear_cka(x, ref), rel=1e-12)


def test_reset_and_duplicates_and_feature_maps():
    x, ref = _data()
    metric = RTDMetric(reference=ref)
    metric.update(torch.full((4, 12), 7.0))
    metric.reset()
    metric.update(x[:50], torch.arange(50))
    metric.update(x[40:], torch.arange(40, N))  # 40..49 twice: duplicates dropped
    assert float(metric.compute()) == L.rtd(x, ref)
    maps = x.reshape(N, 3, 2, 2)
    m2 = RTDMetric(reference=ref)
    m2.update(maps, torch.arange(N))
    assert float(m2.compute()) == L.rtd(x, ref)


def test_errors():
    x, ref = _data()
    with pytest.raises(ValueError, match="before any update"):
        RTDMetric(reference=ref).compute()
    m = RTDMetric()
    m.update(x)
    with pytest.raises(ValueError, match="has no reference"):
        m.compute()
    with pytest.raises(ValueError, match="`indexes` has 3 entries but `embeddings` has 4 rows"):
        m.update(x[:4], torch.arange(3))
    m = RTDMetric(reference=ref[:10])
    m.update(x)
    with pytest.raises(ValueError, match="different numbers of rows"):
        m.compute()
    with pytest.raises(TypeError, match="integer dtype"):
        RTDMetric(reference=torch.ones(5, 2, dtype=torch.long))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: dict) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x, ref = _data()
        # DistributedSampler order: rank r gets r, r+world, ...; padded by repeating the first
        # samples so every rank has the same count (91 padded to 92).
        total = -(-N // world) * world
        padded = list(range(N)) + list(range(total - N))
        mine = torch.tensor(padded[rank::world])
        rtd_m, cka_m = RTDMetric(reference=ref, symmetric=True), CKAMetric(reference=ref)
        for chunk in mine.split(7):
            rtd_m.update(x[chunk], chunk)
            cka_m.update(x[chunk], chunk)
        out[rank] = (float(rtd_m.compute()), float(cka_m.compute()))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("world", [2])
def test_ddp_gloo_equals_single_process(world):
    x, ref = _data()
    with mp.Manager() as manager:
        out = manager.dict()
        mp.start_processes(
            _ddp_worker, args=(world, _free_port(), out), nprocs=world, start_method="spawn"
        )
        results = dict(out)
    expected = (L.rtd(x, ref, symmetric=True), L.linear_cka(x, ref))
    assert len(results) == world
    for rank in range(world):
        assert results[rank][0] == expected[0]
        assert results[rank][1] == pytest.approx(expected[1], rel=1e-12)
    assert np.isfinite(expected[0]) and expected[0] > 0
