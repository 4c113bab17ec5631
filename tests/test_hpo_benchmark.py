"""Smoke test of the HPO benchmark harness (``benchmarks/hpo``): tabulate a tiny benchmark,
replay two methods x two seeds with Syne Tune's simulator backend, analyse, plus unit checks of
the helpers."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

pytest.importorskip("syne_tune")
pytest.importorskip("matplotlib")
pytest.importorskip("scipy")

from benchmarks.hpo import analyze as an  # noqa: E402
from benchmarks.hpo.benchmarks import get_benchmark, pool_configs  # noqa: E402
from benchmarks.hpo.methods import get_method, list_methods  # noqa: E402
from benchmarks.hpo.simulate import (  # noqa: E402
    PairCache,
    RecordedPairs,
    RTDOracle,
    pair_cache_path,
    pair_export_path,
    parse_seeds,
    pool_permutation,
    result_path,
    run_search,
    simulate,
)
from benchmarks.hpo.tabulate import load_tabulation, store_dir, tabulate  # noqa: E402
from lightning_rtd import rtd  # noqa: E402
from lightning_rtd.references import noise_pair  # noqa: E402
from lightning_rtd.store import ReferenceStore  # noqa: E402

TINY = "digits-tiny"
METHODS = ["asha", "moasha-top-max"]
SEEDS = [0, 1]


# --------------------------------------------------------------------------------- helpers


def test_registry_covers_the_issue():
    names = set(list_methods())
    assert {"random", "asha", "hyperband", "bohb", "moasha-loss"} <= names
    for mode in ("max", "min"):
        assert f"rtd-noise-only-{mode}" in names
        for part in ("noise", "top", "all"):
            assert f"moasha-{part}-{mode}" in names
    assert get_method("bohb").model_based and not get_method("asha").model_based
    for name in ("digits-mlp", "mnist1d-mlp", "mnist-cnn"):
        bench = get_benchmark(name)
        configs = pool_configs(bench)
        assert len(configs) == bench.num_configs and len(configs[0]) >= 5
        assert len({c["embedding_dim"] for c in configs}) > 1  # embedding size is searched
        assert configs == pool_configs(bench)  # the pool is fixed by its seed


def test_parse_seeds_and_permutation():
    assert parse_seeds(["0-2", "5,7"]) == [0, 1, 2, 5, 7]
    a, b = pool_permutation(range(10), 3), pool_permutation(range(10), 3)
    assert a == b and sorted(a) == list(range(10)) and a != pool_permutation(range(10), 4)


def test_pair_cache_is_symmetric_and_persistent(tmp_path):
    directed = PairCache(tmp_path / "d.sqlite")
    assert directed.key(5, 2, 1, 3) == (5, 2, 1, 3)  # RTD(a -> b) is not symmetric
    directed.close()
    cache = PairCache(tmp_path / "p.sqlite", symmetric=True)
    key = cache.key(5, 2, 1, 3)
    assert key == cache.key(1, 3, 5, 2) == (1, 3, 5, 2)
    cache.put(key, 1.5, 0.1, 0.2)
    cache.close()
    again = PairCache(tmp_path / "p.sqlite", symmetric=True)
    assert again.get(key) == 1.5 and again.stats()["pairs"] == 1
    again.close()


def test_anytime_measures():
    record = {
        "mode": "max",
        "reports": [
            {"time": 1.0, "trial": 0, "epoch": 1, "val": 0.5, "test": 0.4},
            {"time": 2.0, "trial": 1, "epoch": 1, "val": 0.7, "test": 0.6},
            {"time": 3.0, "trial": 0, "epoch": 2, "val": 0.6, "test": 0.9},
        ],
    }
    t = an.trajectory(record)
    assert list(t.best_val) == [0.5, 0.7, 0.7]
    assert list(t.chosen_test) == [0.4, 0.6, 0.6]  # the chosen configuration's test value
    assert an.time_to_target(t, 0.69, "max") == 2.0
    assert math.isinf(an.time_to_target(t, 0.8, "max"))
    grid = np.array([0.5, 1.0, 2.5])
    out = an.step_at(t.times, t.best_val, grid)
    assert np.isnan(out[0]) and out[1] == 0.5 and out[2] == 0.7
    p, w, ties, losses = an.wilcoxon([1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6, 7])
    assert (w, ties, losses) == (6, 0, 0) and p < 0.05


def test_pool_usage_counts_retrained_configurations():
    record = {
        "budget_s": 10.0,
        "pool_available": 2,
        "pool_exhausted_at": 4.0,
        "trials": {"0": {"cfg": 1}, "1": {"cfg": 0}, "2": {"cfg": 1}},
        "reports": [
            {"time": 1.0, "trial": 0, "cfg": 1, "epoch": 1},
            {"time": 2.0, "trial": 1, "cfg": 0, "epoch": 1},
            {"time": 3.0, "trial": 0, "cfg": 1, "epoch": 2},
            {"time": 5.0, "trial": 2, "cfg": 1, "epoch": 1},  # re-trained: nothing new
            {"time": 6.0, "trial": 2, "cfg": 1, "epoch": 2},
            {"time": 9.0, "trial": 2, "cfg": 1, "epoch": 3},  # past the first run's epoch 2
        ],
    }
    u = an.pool_usage(record)
    assert (u["started"], u["evaluated"], u["pool"]) == (3, 2, 2)
    assert u["exhausted"] and u["exhausted_share"] == 0.4 and u["last_share"] == 0.9
    assert (u["reports"], u["repeated"], u["new_epochs"]) == (6, 3, 1)


# --------------------------------------------------------------------------------- end to end


def test_tabulate_simulate_analyze(tmp_path):
    root = tmp_path / "runs"
    bench = get_benchmark(TINY)

    assert tabulate(bench, root, log=lambda _: None) == bench.num_configs
    assert tabulate(bench, root, log=lambda _: None) == 0  # resumable: nothing left to do
    tab = load_tabulation(bench, root)
    assert tab.complete
    for key in ("val_metric", "val_loss", "test_metric", "rtd_noise", "epoch_cpu_s"):
        assert np.isfinite(tab[key]).all(), key
    assert (tab["rtd_cpu_s"] > 0).all()
    # the tabulated rtd/noise is the callback's value for the stored probe embeddings
    st = bench.rtd_settings
    emb = ReferenceStore(store_dir(bench, root)).get("cfg0", 2).embeddings
    x, z = noise_pair(
        torch.from_numpy(emb), st["noise"], seed=st["noise_seed"], noise_dim=st["noise_dim"]
    )
    assert tab["rtd_noise"][0, 1] == pytest.approx(rtd(x, z, symmetric=st["symmetric"]), rel=1e-6)

    lines: list[str] = []
    assert simulate([TINY], METHODS, SEEDS, root=root, log=lines.append) == 4
    assert simulate([TINY], METHODS, SEEDS, root=root, log=lines.append) == 0  # resumes
    for m in METHODS:
        for s in SEEDS:
            record = json.loads(result_path(bench, m, s, root).read_text())
            assert record["reports"] and record["method"] == m
            assert all(r["time"] <= record["budget_s"] for r in record["reports"])
            for r in record["reports"]:  # reports are the tabulated values
                assert r["val"] == pytest.approx(tab["val_metric"][r["cfg"], r["epoch"] - 1])

    # rtd/top is computed on the fly from the search's own history, with the callback's rules
    record = json.loads(result_path(bench, "moasha-top-max", 0, root).read_text())
    reports = sorted(record["reports"], key=lambda r: r["time"])
    assert reports[0]["rtd/top"] == 0.0  # nobody else has reported yet: empty value
    oracle = RTDOracle(bench, root)
    checked = 0
    for k, r in enumerate(reports):
        same = [q for q in reports[:k] if q["trial"] != r["trial"] and q["epoch"] == r["epoch"]]
        if not same:
            continue
        leader = max(same, key=lambda q: (q["val"], -q["time"]))
        x = oracle.embeddings(r["cfg"], r["epoch"])
        y = oracle.embeddings(leader["cfg"], leader["epoch"])
        expected = rtd(x, y, symmetric=bench.rtd_settings["symmetric"])
        assert r["rtd/top"] == pytest.approx(expected, rel=1e-6)
        checked += 1
    oracle.cache.close()
    assert checked >= 1

    # a replay is deterministic given its seed
    oracle = RTDOracle(bench, root)
    again = run_search(tab, get_method("moasha-top-max"), 0, oracle=oracle)
    oracle.cache.close()
    assert again["reports"] == record["reports"]

    out = tmp_path / "docs" / "benchmarks.md"
    text = an.analyze(
        [TINY],
        METHODS,
        SEEDS,
        root=root,
        output=out,
        figures=tmp_path / "docs" / "figs",
        export=True,
        log=lines.append,
    )
    assert out.read_text() == text
    assert "## digits-tiny" in text and "Paired comparison with ASHA" in text
    assert "| rtd/top | 1 |" in text and "| rtd/all | 3 |" in text and "Spearman" in text
    for name in (f"{TINY}-time.png", f"{TINY}-epochs.png", f"{TINY}-rtd-noise.png"):
        assert (tmp_path / "docs" / "figs" / name).stat().st_size > 1000

    # the exported pair file holds the whole cache, values exact, sorted by key
    exported = pair_export_path(bench, root)
    body = [ln for ln in exported.read_text().splitlines() if not ln.startswith("#")]
    assert body[0] == "a,ea,b,eb,value,seconds,cpu"
    keys = [tuple(int(x) for x in ln.split(",")[:4]) for ln in body[1:]]
    assert keys == sorted(keys)
    cache = PairCache(pair_cache_path(bench, root))
    assert cache.stats()["pairs"] == len(keys)
    recorded = RecordedPairs(tab, root)
    assert all(recorded.pair(*k) == cache.get(k) for k in keys)
    cache.close()
    # the correlations from the exported file equal those computed from the store
    oracle = RTDOracle(bench, root)
    from_store = an.correlations(tab, [1, 3], oracle)
    oracle.cache.close()
    from_file = an.correlations(tab, [1, 3], recorded)
    assert from_file == from_store
    assert any(r["signal"] == "top" and np.isfinite(r["test"][0]) for r in from_file)

    # without the embedding store and the SQLite cache (a fresh clone) the page is the same
    pair_cache_path(bench, root).rename(tmp_path / "cache.sqlite")
    store_dir(bench, root).rename(tmp_path / "store")
    clone = tmp_path / "clone"
    again = an.analyze(
        [TINY], METHODS, SEEDS, root=root, output=clone / "benchmarks.md", figures=clone / "figs"
    )

    def body_of(page: str) -> list[str]:
        return [ln for ln in page.splitlines() if not ln.startswith("Generated ")]

    assert body_of(again) == body_of(text)
    for png in (tmp_path / "docs" / "figs").glob("*.png"):
        assert (clone / "figs" / png.name).read_bytes() == png.read_bytes(), png.name
    assert not pair_cache_path(bench, root).exists()  # nothing recreated it
    # with no exported pairs either, the page says what is missing instead of failing
    exported.unlink()
    bare = an.analyze(
        [TINY], METHODS, SEEDS, root=root, output=tmp_path / "bare.md", figures=tmp_path / "f3"
    )
    assert "no exported RTD pairs" in bare and "| rtd/top |" not in bare
