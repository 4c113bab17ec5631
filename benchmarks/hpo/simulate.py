"""Replay HPO searches on a tabulated benchmark with Syne Tune's simulator backend.

A search is a real Syne Tune 0.16 ``Tuner`` (the scheduler preset of the method, ``n_workers``
parallel trials, a simulated wall-clock budget) driven by `ReplayBackend`, a subclass of
``syne_tune.backend.simulator_backend.SimulatorBackend`` that, instead of running a training
script, looks the trial's learning curve up in the tabulation (`tabulate`):

* **time**: a trial's report for epoch e is placed at ``start + startup + sum of the recorded
  epoch times up to e`` (plus the RTD compute time of the references the method reads: the
  recorded ``rtd/noise`` time per reference, ``max_references`` of them for ``rtd/all``).
  The scheduler's own computing time is *not* added (unlike Syne Tune's default), so a replay
  is deterministic given its seed;
* **rtd/top and rtd/all** cannot be tabulated: they depend on which trials of *this* search had
  reported which epoch at that moment. They are computed when the report event is processed
  (in simulated-time order), from the probe embeddings stored by the tabulation, with the
  callback's own reference rules (`lightning_rtd.references.best_entry` and
  ``sample_entries``: the other trials' entries of the same epoch, else of the latest earlier
  epoch that has any; ``max_references`` sampled for "all"; ``empty_value`` 0.0 when there is
  none). Pair values ``(cfg_i, epoch_i, cfg_j, epoch_j)`` are cached on disk (`PairCache`), so
  seeds and methods share them; `export_pairs` writes the cache to a small committed text file
  (``rtd_pairs-<kind>.csv``) that `analyze` reads (`RecordedPairs`), so the results page does
  not need the embedding store;
* **reports** are built with the library's `lightning_rtd.integrations.synetune.ReportBuilder`,
  as the trial reporter does (maximised objectives negated for MOASHA, invalid values replaced
  by the worst seen);
* **configurations** come from the benchmark's pool (`PoolMapper`): trial t of a random-sampling
  method gets pool configuration ``perm[t]`` of a permutation seeded by the search seed (random
  sampling without replacement; the pool is cycled once exhausted, which is recorded); BOHB's
  suggestion is mapped to the nearest pool configuration not used yet. The trial's config, as
  the scheduler sees it, is the pool configuration.

Each search writes ``<root>/<benchmark>/results/<method>/seed<k>.json`` atomically; existing
files are skipped, so an interrupted run resumes where it stopped.

Usage (from the repository root):

    python -m benchmarks.hpo.simulate --benchmark digits-mlp --method all --seed 0-9
    python -m benchmarks.hpo.simulate --benchmark all --method asha moasha-top-max --seed 0,1
    python -m benchmarks.hpo.simulate --benchmark all --method all --seed 0-9 --status
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sqlite3
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.hpo.benchmarks import (
    Benchmark,
    benchmark_dir,
    get_benchmark,
    list_benchmarks,
)
from benchmarks.hpo.methods import Method, get_method, list_methods, make_preset
from benchmarks.hpo.tabulate import (
    Tabulation,
    atomic_write_json,
    load_tabulation,
    stamped_logger,
    store_dir,
    trial_name,
)
from lightning_rtd import rtd
from lightning_rtd.errors import RTDWarning
from lightning_rtd.recipes import get_recipe
from lightning_rtd.references import best_entry, sample_entries
from lightning_rtd.store import ReferenceStore, StoreEntry

__all__ = [
    "PairCache",
    "PoolMapper",
    "RTDOracle",
    "RecordedPairs",
    "export_pairs",
    "pair_cache_path",
    "pair_export_path",
    "parse_seeds",
    "pool_permutation",
    "read_exported_pairs",
    "result_path",
    "run_search",
    "search_budget",
]

ELAPSED = "elapsed_s"
"""Report key of the time since the trial started (the simulator places events with it)."""

RESULT_VERSION = 1


def result_path(bench: Benchmark, method: str, seed: int, root: Any = None) -> Path:
    """Where the search (benchmark, method, seed) writes its result."""
    return benchmark_dir(bench, root) / "results" / method / f"seed{seed}.json"


# --------------------------------------------------------------------------------- RTD pairs


class PairCache:
    """On-disk cache (SQLite) of RTD values between two tabulated embeddings.

    Keys are ``(cfg_a, epoch_a, cfg_b, epoch_b)`` for RTD(a -> b); with ``symmetric`` the key is
    ordered so that ``(cfg_a, epoch_a) <= (cfg_b, epoch_b)`` (the value does not depend on the
    order). Safe for several processes at once.
    """

    def __init__(self, path: Path, symmetric: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.symmetric = symmetric
        self._db = sqlite3.connect(path, timeout=60)
        with contextlib.suppress(sqlite3.OperationalError):
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pairs (a INTEGER, ea INTEGER, b INTEGER, eb INTEGER, "
            "value REAL, seconds REAL, cpu REAL, PRIMARY KEY (a, ea, b, eb))"
        )
        self._db.commit()
        self._mem: dict[tuple[int, int, int, int], float] = {}
        self._pending: list[tuple[int, int, int, int, float, float, float]] = []
        for a, ea, b, eb, v in self._db.execute("SELECT a, ea, b, eb, value FROM pairs"):
            self._mem[(a, ea, b, eb)] = v

    def key(self, a: int, ea: int, b: int, eb: int) -> tuple[int, int, int, int]:
        """The canonical key of RTD(a -> b)."""
        if not self.symmetric or (a, ea) <= (b, eb):
            return (a, ea, b, eb)
        return (b, eb, a, ea)

    def get(self, key: tuple[int, int, int, int]) -> float | None:
        return self._mem.get(key)

    def put(self, key: tuple[int, int, int, int], value: float, seconds: float, cpu: float) -> None:
        self._mem[key] = value
        self._pending.append((*key, value, seconds, cpu))
        if len(self._pending) >= 200:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        self._db.executemany(
            "INSERT OR REPLACE INTO pairs VALUES (?, ?, ?, ?, ?, ?, ?)", self._pending
        )
        self._db.commit()
        self._pending = []

    def stats(self) -> dict[str, float]:
        """Number of cached pairs and the median wall / CPU seconds of one."""
        self.flush()
        rows = list(self._db.execute("SELECT seconds, cpu FROM pairs"))
        return {
            "pairs": len(rows),
            "median_s": float(np.median([r[0] for r in rows])) if rows else math.nan,
            "median_cpu_s": float(np.median([r[1] for r in rows])) if rows else math.nan,
        }

    def close(self) -> None:
        self.flush()
        self._db.close()


def pair_cache_path(bench: Benchmark, root: Any = None) -> Path:
    """The pair cache of a benchmark for its RTD direction setting."""
    kind = "symmetric" if bench.rtd_settings["symmetric"] else "directed"
    return benchmark_dir(bench, root) / f"rtd_pairs-{kind}.sqlite"


PAIR_COLUMNS = ("a", "ea", "b", "eb", "value", "seconds", "cpu")


def pair_export_path(bench: Benchmark, root: Any = None) -> Path:
    """The committed text copy of the pair cache (`export_pairs`): ``rtd_pairs-<kind>.csv``."""
    return pair_cache_path(bench, root).with_suffix(".csv")


def export_pairs(bench: Benchmark, root: Any = None) -> Path:
    """Write the benchmark's pair cache to `pair_export_path`, one pair per line, sorted by key.

    Columns: ``a,ea,b,eb`` (RTD(cfg a at epoch ea -> cfg b at epoch eb), the cache key),
    ``value`` (exact: Python's shortest round-trip repr), ``seconds`` and ``cpu`` (wall and CPU
    seconds the computation took, rounded to microseconds). The file is what `analyze` reads,
    so the results page can be regenerated without the embedding store and the SQLite cache.

    Raises:
        FileNotFoundError: the benchmark has no pair cache.
    """
    db = pair_cache_path(bench, root)
    if not db.exists():
        raise FileNotFoundError(f"no RTD pair cache {db}")
    con = sqlite3.connect(db, timeout=60)
    try:
        rows = sorted(con.execute(f"SELECT {', '.join(PAIR_COLUMNS)} FROM pairs"))
    finally:
        con.close()
    direction = "symmetric RTD" if bench.rtd_settings["symmetric"] else "RTD(a -> b)"
    lines = [
        f"# {direction} between tabulated probe embeddings of {bench.name}, exported from "
        f"{db.name} by `python -m benchmarks.hpo.analyze --export-pairs`",
        ",".join(PAIR_COLUMNS),
    ]
    lines += [
        f"{a},{ea},{b},{eb},{float(v)!r},{sec:.6f},{cpu:.6f}" for a, ea, b, eb, v, sec, cpu in rows
    ]
    out = pair_export_path(bench, root)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out)
    return out


def read_exported_pairs(path: Path) -> dict[tuple[int, int, int, int], tuple[float, float, float]]:
    """The pairs of an `export_pairs` file: key -> (value, seconds, cpu)."""
    out: dict[tuple[int, int, int, int], tuple[float, float, float]] = {}
    with open(path) as fh:
        header = None
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if header is None:
                header = tuple(line.split(","))
                if header != PAIR_COLUMNS:
                    raise ValueError(f"{path}: unexpected columns {header}")
                continue
            a, ea, b, eb, v, sec, cpu = line.split(",")
            out[(int(a), int(ea), int(b), int(eb))] = (float(v), float(sec), float(cpu))
    return out


class RecordedPairs:
    """Read-only RTD pair oracle over an `export_pairs` file, with `RTDOracle`'s ``has`` /
    ``pair`` interface (what `analyze` uses, so that no embedding store is needed).

    ``has(cfg, epoch)`` is true for every tabulated epoch (the tabulation writes the probe
    embeddings of every epoch it records); a pair missing from the file raises `KeyError`.
    """

    def __init__(self, tab: Tabulation, root: Any = None, path: Path | None = None) -> None:
        self.path = pair_export_path(tab.bench, root) if path is None else Path(path)
        self.symmetric = bool(tab.bench.rtd_settings["symmetric"])
        self.rows = read_exported_pairs(self.path)
        recorded = np.zeros_like(tab["val_metric"], dtype=bool)
        for values in tab.values.values():
            recorded |= np.isfinite(values)
        self._recorded = recorded

    def has(self, cfg: int, epoch: int) -> bool:
        return 1 <= epoch <= self._recorded.shape[1] and bool(self._recorded[cfg, epoch - 1])

    def pair(self, a: int, ea: int, b: int, eb: int) -> float:
        key = (a, ea, b, eb)
        if self.symmetric and (b, eb) < (a, ea):
            key = (b, eb, a, ea)
        if key not in self.rows:
            raise KeyError(
                f"RTD pair {key} is not in {self.path}; recompute it where the embedding store "
                "exists: python -m benchmarks.hpo.analyze --export-pairs"
            )
        return self.rows[key][0]

    def stats(self) -> dict[str, float]:
        """Number of pairs and the median wall / CPU seconds of one (as `PairCache.stats`)."""
        rows = list(self.rows.values())
        return {
            "pairs": len(rows),
            "median_s": float(np.median([r[1] for r in rows])) if rows else math.nan,
            "median_cpu_s": float(np.median([r[2] for r in rows])) if rows else math.nan,
        }

    def close(self) -> None:
        """Nothing to release (`RTDOracle` interface)."""


class RTDOracle:
    """RTD from one tabulated probe embedding to another, exactly as `RTDCallback` computes it
    for ``top`` / ``all`` (``rtd(x, ref, symmetric=<setting>)``, x the reporting trial's
    embeddings), cached."""

    def __init__(self, bench: Benchmark, root: Any = None) -> None:
        self.store = ReferenceStore(store_dir(bench, root))
        self.symmetric = bool(bench.rtd_settings["symmetric"])
        self.cache = PairCache(pair_cache_path(bench, root), symmetric=self.symmetric)
        self._emb: dict[tuple[int, int], np.ndarray | None] = {}
        self.computed = 0
        self.cached = 0
        self.compute_s = 0.0

    def embeddings(self, cfg: int, epoch: int) -> np.ndarray | None:
        key = (cfg, epoch)
        if key not in self._emb:
            entry = self.store.get(trial_name(cfg), epoch)
            self._emb[key] = None if entry is None else entry.embeddings
        return self._emb[key]

    def has(self, cfg: int, epoch: int) -> bool:
        return self.embeddings(cfg, epoch) is not None

    def pair(self, a: int, ea: int, b: int, eb: int) -> float:
        """RTD(embeddings of cfg a at epoch ea -> those of cfg b at epoch eb)."""
        key = self.cache.key(a, ea, b, eb)
        value = self.cache.get(key)
        if value is not None:
            self.cached += 1
            return value
        x, y = self.embeddings(key[0], key[1]), self.embeddings(key[2], key[3])
        if x is None or y is None:
            raise KeyError(f"no tabulated embeddings for pair {key}")
        start, cpu = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():  # e.g. a dead network's constant embedding
            warnings.simplefilter("ignore", RTDWarning)
            value = rtd(torch.from_numpy(x), y, symmetric=self.symmetric)
        seconds = time.perf_counter() - start
        self.cache.put(key, value, seconds, time.process_time() - cpu)
        self.computed += 1
        self.compute_s += seconds
        return value


# --------------------------------------------------------------------------------- pool


def _encode(config: dict[str, Any], space: dict[str, tuple[Any, ...]]) -> np.ndarray:
    out: list[float] = []
    for key, spec in space.items():
        kind, v = spec[0], config[key]
        if kind == "choice":
            values = list(spec[1])
            if all(isinstance(c, int | float) for c in values):
                ranks = sorted(values)
                out.append(ranks.index(v) / max(len(ranks) - 1, 1))
            else:
                out += [1.0 if v == c else 0.0 for c in values]
        elif kind in ("loguniform", "lograndint"):
            lo, hi = math.log(spec[1]), math.log(spec[2])
            out.append((math.log(v) - lo) / (hi - lo) if hi > lo else 0.0)
        else:
            out.append((v - spec[1]) / (spec[2] - spec[1]) if spec[2] > spec[1] else 0.0)
    return np.asarray(out)


def pool_permutation(available: Sequence[int], seed: int) -> list[int]:
    """The order in which a random-sampling search of seed ``seed`` draws pool configurations
    (trial t trains ``perm[t % len(perm)]``)."""
    rng = np.random.default_rng([int(seed), 20261201])
    return [int(i) for i in rng.permutation(list(available))]


class PoolMapper:
    """Chooses the pool configuration a new trial trains (see the module docs)."""

    def __init__(self, tab: Tabulation, method: Method, seed: int) -> None:
        self.tab = tab
        self.model_based = method.model_based
        self.perm = pool_permutation(tab.available, seed)
        space = dict(get_recipe(tab.bench.recipe).search_space)
        self.space = {k: v for k, v in space.items() if k not in tab.bench.fixed}
        self.codes = {i: _encode(tab.configs[i], self.space) for i in tab.available}
        self.used: list[int] = []
        self.exhausted_at: float | None = None

    def choose(self, trial_id: int, config: dict[str, Any], now: float) -> int:
        unused = [i for i in self.tab.available if i not in set(self.used)]
        if not unused and self.exhausted_at is None:
            self.exhausted_at = now
        if self.model_based:
            code = _encode({**self.tab.configs[0], **config}, self.space)
            candidates = unused or list(self.tab.available)
            index = min(candidates, key=lambda i: (float(np.sum((self.codes[i] - code) ** 2)), i))
        else:
            index = self.perm[len(self.used) % len(self.perm)]
        self.used.append(index)
        return index


# --------------------------------------------------------------------------------- backend


def _simulator_classes() -> tuple[type, type]:
    from syne_tune.backend.simulator_backend.simulator_backend import SimulatorBackend
    from syne_tune.backend.trial_status import Status, Trial

    class ReplayBackend(SimulatorBackend):
        """``SimulatorBackend`` that replays tabulated learning curves (module docs)."""

        def __init__(
            self,
            tab: Tabulation,
            method: Method,
            preset: Any,
            seed: int,
            oracle: RTDOracle | None,
            tuner_sleep_time: float,
            clock: str = "cpu",
        ) -> None:
            super().__init__(
                entry_point=__file__,
                elapsed_time_attr=ELAPSED,
                tuner_sleep_time=tuner_sleep_time,
            )
            self.tab = tab
            self.bench = tab.bench
            self.method = method
            self.preset = preset
            self.oracle = oracle
            self.clock = clock
            self.epoch_s, self.rtd_s, _ = tab.times(clock)
            self.startup_s = trial_startup(tab, clock)
            self.mapper = PoolMapper(tab, method, seed)
            self.cfg_of: dict[int, int] = {}
            self.started_at: dict[int, float] = {}
            self.builders: dict[int, Any] = {}
            # "store" of this search: epoch -> entries of trials that reported it (no arrays)
            self.history: dict[int, list[StoreEntry]] = {}
            self.reports: list[dict[str, Any]] = []
            self.substitutions = 0
            self._fingerprint: Any = None

        # -- time: the scheduler's compute time is not simulated (deterministic replays)
        def _advance_by_outside_time(self) -> None:
            return None

        # -- trials
        def start_trial(self, config: dict, checkpoint_trial_id: int | None = None) -> Trial:
            trial_id = self.new_trial_id()
            self._advance_by_outside_time()
            now = self._time_keeper.time()
            index = self.mapper.choose(trial_id, config, now)
            pool_config = {**config, **self.tab.configs[index]}
            self.cfg_of[trial_id] = index
            self.started_at[trial_id] = now
            self.trial_ids.append(trial_id)
            self._schedule(trial_id=trial_id, config=pool_config)
            trial = Trial(
                trial_id=trial_id,
                config=pool_config,
                creation_time=self._time_keeper.time_stamp(),
            )
            self._trial_dict[trial_id] = trial
            return trial

        def _charge_per_epoch(self, cfg: int) -> np.ndarray:
            rtd_time = np.nan_to_num(self.rtd_s[cfg], nan=0.0)
            charge = np.zeros_like(rtd_time)
            for ref in self.method.rtd:
                charge += rtd_time * (self.bench.max_references if ref == "all" else 1)
            return charge

        def _run_job_and_collect_results(
            self, trial_id: int, config: dict | None = None
        ) -> tuple[str, list[dict]]:
            cfg = self.cfg_of[trial_id]
            epoch_time = self.epoch_s[cfg]
            steps = np.nan_to_num(epoch_time, nan=0.0) + self._charge_per_epoch(cfg)
            elapsed = self.startup_s + np.cumsum(steps)
            results = []
            for e in range(1, self.bench.max_epochs + 1):
                if not math.isfinite(epoch_time[e - 1]):
                    break  # the tabulated run ended early
                results.append({"epoch": e, ELAPSED: float(elapsed[e - 1])})
            return Status.completed, results

        def _process_on_trial_result_event(self, time_event: float, event: Any) -> None:
            event.result = self._report(event.trial_id, event.result, time_event)
            super()._process_on_trial_result_event(time_event=time_event, event=event)

        # -- one report, built at its simulated time
        def _builder(self, trial_id: int) -> Any:
            if trial_id not in self.builders:
                from lightning_rtd.integrations.synetune import ReportBuilder
                from lightning_rtd.recipes.runner import REPORTED_EXTRAS

                keys = {o.key for o in self.preset.objectives}
                self.builders[trial_id] = ReportBuilder(
                    self.preset.objectives,
                    resource_attr=self.preset.resource_attr,
                    minimize_all=self.preset.minimize_all,
                    extra_metrics=[k for k in REPORTED_EXTRAS if k not in keys],
                )
            return self.builders[trial_id]

        def _report(self, trial_id: int, raw: dict[str, Any], now: float) -> dict[str, Any]:
            cfg, epoch = self.cfg_of[trial_id], int(raw["epoch"])
            col = epoch - 1
            metric = self.bench.metric
            metrics: dict[str, float] = {
                metric: float(self.tab["val_metric"][cfg, col]),
                "val_loss": float(self.tab["val_loss"][cfg, col]),
                "train_loss": float(self.tab["train_loss"][cfg, col]),
                "rtd/noise": float(self.tab["rtd_noise"][cfg, col]),
            }
            tid = str(trial_id)
            if {"top", "all"} & set(self.method.rtd):
                metrics.update(self._store_refs(tid, cfg, epoch))
            report = self._builder(trial_id).build(epoch, metrics)
            self.substitutions += len(self._builder(trial_id).last_substituted)
            report[ELAPSED] = raw[ELAPSED]
            report["pool_cfg"] = cfg
            report["test_metric"] = float(self.tab["test_metric"][cfg, col])
            if self.oracle is None or self.oracle.has(cfg, epoch):
                # the callback writes the entry after computing; other trials see it from now
                self.history.setdefault(epoch, []).append(
                    StoreEntry(
                        trial_id=tid,
                        epoch=epoch,
                        embeddings=None,
                        objectives={metric: metrics[metric], "val_loss": metrics["val_loss"]},
                        fingerprint=self._fp(),
                        created=now,
                    )
                )
            self.reports.append(
                {
                    "time": now,
                    "trial": trial_id,
                    "cfg": cfg,
                    "epoch": epoch,
                    "val": metrics[metric],
                    "test": report["test_metric"],
                    **{k: metrics[k] for k in ("rtd/top", "rtd/all") if k in metrics},
                }
            )
            return report

        def _fp(self) -> Any:
            if self._fingerprint is None:
                from lightning_rtd.store import ProbeFingerprint

                self._fingerprint = ProbeFingerprint.from_indices(
                    np.arange(self.bench.num_points), self.bench.num_points
                )
            return self._fingerprint

        def _references(self, tid: str, epoch: int) -> list[StoreEntry]:
            same = [e for e in self.history.get(epoch, []) if e.trial_id != tid]
            if same:
                return same
            for earlier in sorted((e for e in self.history if e < epoch), reverse=True):
                entries = [e for e in self.history[earlier] if e.trial_id != tid]
                if entries:
                    return entries
            return []

        def _store_refs(self, tid: str, cfg: int, epoch: int) -> dict[str, float]:
            assert self.oracle is not None
            out: dict[str, float] = {}
            if not self.oracle.has(cfg, epoch):
                return {f"rtd/{r}": math.nan for r in self.method.rtd if r != "noise"}
            entries = self._references(tid, epoch)
            empty = float(self.bench.rtd_settings["empty_value"])
            trial_cfg = {str(t): c for t, c in self.cfg_of.items()}

            def value(entry: StoreEntry) -> float:
                return self.oracle.pair(cfg, epoch, trial_cfg[entry.trial_id], entry.epoch)

            if "top" in self.method.rtd:
                best = best_entry(entries, self.bench.metric, self.bench.mode)
                out["rtd/top"] = empty if best is None else value(best)
            if "all" in self.method.rtd:
                chosen = sample_entries(
                    entries,
                    self.bench.max_references,
                    seed=self.bench.rtd_settings["noise_seed"],
                    trial_id=tid,
                    epoch=epoch,
                )
                scores = [value(e) for e in chosen]
                out["rtd/all"] = float(np.mean(scores)) if scores else empty
            return out

    return ReplayBackend, Status


def __getattr__(name: str) -> Any:  # ReplayBackend is built lazily (imports Syne Tune)
    if name == "ReplayBackend":
        return _simulator_classes()[0]
    raise AttributeError(name)


# --------------------------------------------------------------------------------- searches


def trial_startup(tab: Tabulation, clock: str = "cpu") -> float:
    """Simulated start-up time of every trial: the median over the pool of the recorded time from
    the start of `train` to the first epoch (the first configuration of a tabulation process
    also pays one-off costs such as data caching, so the median is used for all)."""
    return float(np.nanmedian(tab.times(clock)[2][tab.available]))


def search_budget(tab: Tabulation, clock: str = "cpu") -> float:
    """Simulated wall-clock budget of one search: ``budget_full_trainings`` times the mean time
    to train one pool configuration for all epochs (without RTD)."""
    epoch_s = tab.times(clock)[0]
    full = np.nansum(epoch_s[tab.available], axis=1) + trial_startup(tab, clock)
    return float(tab.bench.budget_full_trainings * np.mean(full))


@contextlib.contextmanager
def _quiet_syne_tune(folder: str) -> Iterator[None]:
    old_env = os.environ.get("SYNETUNE_FOLDER")
    os.environ["SYNETUNE_FOLDER"] = folder
    loggers = [logging.getLogger(n) for n in ("syne_tune", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if old_env is None:
            os.environ.pop("SYNETUNE_FOLDER", None)
        else:
            os.environ["SYNETUNE_FOLDER"] = old_env


def run_search(
    tab: Tabulation,
    method: Method,
    seed: int,
    *,
    oracle: RTDOracle | None = None,
    budget_s: float | None = None,
    sleep_fraction: float = 0.1,
    n_workers: int | None = None,
    max_num_trials_finished: int | None = None,
    clock: str = "cpu",
) -> dict[str, Any]:
    """Replay one search and return its result record (see `result_path` for where the command
    line writes it).

    Args:
        tab: the tabulated benchmark.
        method: the HPO method.
        seed: seed of the scheduler, NumPy's global generator and the pool permutation.
        oracle: RTD pair oracle (needed by methods reading ``rtd/top`` / ``rtd/all``).
        budget_s: simulated wall-clock budget; `search_budget` when ``None``.
        sleep_fraction: the tuner's simulated polling interval as a fraction of the median
            tabulated epoch time.
        n_workers: parallel trials; the benchmark's ``n_workers`` when ``None``.
        max_num_trials_finished: also stop once this many trials have finished (the
            validation against real searches uses it instead of a time budget).
        clock: tabulated times used as simulated time, ``"cpu"`` (default: process CPU
            seconds, robust to other jobs on the machine) or ``"wall"``; see
            `tabulate.Tabulation.times`.
    """
    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend.simulator_backend.simulator_callback import SimulatorCallback

    bench = tab.bench
    if {"top", "all"} & set(method.rtd) and oracle is None:
        raise ValueError(f"method {method.name} needs an RTDOracle")
    budget = search_budget(tab, clock) if budget_s is None else float(budget_s)
    epoch_median = float(np.nanmedian(tab.times(clock)[0][tab.available]))
    sleep = max(sleep_fraction * epoch_median, 1e-3)
    workers = bench.n_workers if n_workers is None else int(n_workers)
    ReplayBackend, _ = _simulator_classes()
    before = (oracle.computed, oracle.cached, oracle.compute_s) if oracle else (0, 0, 0.0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lrtd-sim-") as tmp, _quiet_syne_tune(tmp):
        preset = make_preset(method, bench, seed=seed)
        backend = ReplayBackend(
            tab, method, preset, seed, oracle, tuner_sleep_time=sleep, clock=clock
        )
        tuner = Tuner(
            trial_backend=backend,
            scheduler=preset.scheduler,
            stop_criterion=StoppingCriterion(
                max_wallclock_time=budget, max_num_trials_finished=max_num_trials_finished
            ),
            n_workers=workers,
            sleep_time=0,
            callbacks=[SimulatorCallback()],
            save_tuner=False,
            tuner_name=f"{bench.name}-{method.name}-{seed}",
            print_update_interval=1e9,
            results_update_interval=1e9,
        )
        tuner.run()
    wall = time.perf_counter() - start
    if oracle is not None:
        oracle.cache.flush()
    reports = [r for r in backend.reports if r["time"] <= budget]
    last_epoch: dict[int, int] = {}
    for r in reports:
        last_epoch[r["trial"]] = max(last_epoch.get(r["trial"], 0), r["epoch"])
    return {
        "version": RESULT_VERSION,
        "benchmark": bench.name,
        "method": method.name,
        "seed": seed,
        "spec": bench.spec(),
        "rtd_settings": bench.rtd_settings,
        "budget_s": budget,
        "n_workers": workers,
        "tuner_sleep_s": sleep,
        "trial_startup_s": trial_startup(tab, clock),
        "clock": clock,
        "metric": bench.metric,
        "mode": bench.mode,
        "objectives": [[o.key, o.mode] for o in preset.objectives],
        "pool_available": len(tab.available),
        "pool_exhausted_at": backend.mapper.exhausted_at,
        "trials": {
            str(t): {
                "cfg": backend.cfg_of[t],
                "start": backend.started_at[t],
                "last_epoch": last_epoch.get(t, 0),
            }
            for t in backend.cfg_of
        },
        "reports": reports,
        "substituted_values": backend.substitutions,
        "rtd_pairs": {
            "computed": (oracle.computed - before[0]) if oracle else 0,
            "cached": (oracle.cached - before[1]) if oracle else 0,
            "compute_s": (oracle.compute_s - before[2]) if oracle else 0.0,
        },
        "replay_wall_s": wall,
    }


# --------------------------------------------------------------------------------- CLI


def parse_seeds(items: Sequence[str]) -> list[int]:
    """``["0-9"]``, ``["0,3", "5"]`` -> sorted unique seeds."""
    seeds: set[int] = set()
    for item in items:
        for part in str(item).split(","):
            if not part:
                continue
            lo, _, hi = part.partition("-")
            seeds.update(range(int(lo), int(hi or lo) + 1))
    return sorted(seeds)


def _names(items: Sequence[str], known: Sequence[str], what: str) -> list[str]:
    out: list[str] = []
    for item in items:
        for part in item.split(","):
            if part == "all":
                out += [k for k in known if k not in out]
            elif part:
                if part not in known:
                    raise SystemExit(f"unknown {what} {part!r}; known: {', '.join(known)}")
                if part not in out:
                    out.append(part)
    return out


def _grid(
    benches: Sequence[str], methods: Sequence[str], seeds: Sequence[int], root: Any
) -> list[str]:
    lines = []
    for b in benches:
        bench = get_benchmark(b)
        width = max(len(m) for m in methods)
        lines.append(f"{b}: (# = done, . = pending; seeds {seeds[0]}..{seeds[-1]})")
        for m in methods:
            marks = "".join("#" if result_path(bench, m, s, root).exists() else "." for s in seeds)
            lines.append(f"  {m:<{width}} {marks} {marks.count('#')}/{len(seeds)}")
    return lines


def simulate(
    benches: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    *,
    root: Any = None,
    allow_partial: bool = False,
    clock: str = "cpu",
    log: Callable[[str], None] = print,
) -> int:
    """Run every missing (benchmark, method, seed) search; returns how many were run."""
    done_now = 0
    total = len(benches) * len(methods) * len(seeds)
    k = 0
    for b in benches:
        bench = get_benchmark(b)
        todo = [
            (m, s) for m in methods for s in seeds if not result_path(bench, m, s, root).exists()
        ]
        k += len(methods) * len(seeds) - len(todo)
        if not todo:
            log(f"[{b}] all {len(methods) * len(seeds)} searches done")
            continue
        try:
            tab = load_tabulation(bench, root, allow_partial=allow_partial)
        except FileNotFoundError as exc:
            log(f"[{b}] skipped: {exc}")
            k += len(todo)
            continue
        if not tab.complete:
            log(f"[{b}] WARNING: partial tabulation ({len(tab.available)} configurations)")
        oracle = RTDOracle(bench, root)
        try:
            for m, s in todo:
                k += 1
                method = get_method(m)
                record = run_search(tab, method, s, oracle=oracle, clock=clock)
                record["partial_tabulation"] = not tab.complete
                atomic_write_json(result_path(bench, m, s, root), record)
                done_now += 1
                best = max((r["val"] for r in record["reports"]), default=math.nan)
                if bench.mode == "min":
                    best = min((r["val"] for r in record["reports"]), default=math.nan)
                pairs = record["rtd_pairs"]
                log(
                    f"[{k}/{total}] {b} {m} seed {s}: {len(record['trials'])} trials, "
                    f"{len(record['reports'])} epochs, best {bench.metric} {best:.4f}; "
                    f"{record['replay_wall_s']:.1f}s ({pairs['computed']} new RTD pairs)"
                )
        finally:
            oracle.cache.close()
    return done_now


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", nargs="+", default=["all"], help="names or 'all'")
    parser.add_argument("--method", nargs="+", default=["all"], help="names or 'all'")
    parser.add_argument("--seed", nargs="+", default=["0-9"], help="e.g. 0-9 or 0,1,2")
    parser.add_argument("--root", default=None, help="results root (default benchmarks/hpo/runs)")
    parser.add_argument("--status", action="store_true", help="only show the progress grid")
    parser.add_argument(
        "--allow-partial", action="store_true", help="replay on a partial tabulation"
    )
    parser.add_argument("--log", default=None, help="also append progress lines to this file")
    parser.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu", help="tabulated time used (cpu)"
    )
    args = parser.parse_args(argv)
    benches = _names(args.benchmark, list_benchmarks(include_tests=True), "benchmark")
    if args.benchmark == ["all"]:
        benches = list_benchmarks()
    methods = _names(args.method, list_methods(), "method")
    seeds = parse_seeds(args.seed)

    log = stamped_logger(args.log)

    if not args.status:
        torch.set_num_threads(1)
        simulate(
            benches,
            methods,
            seeds,
            root=args.root,
            allow_partial=args.allow_partial,
            clock=args.clock,
            log=log,
        )
    print("\n".join(_grid(benches, methods, seeds, args.root)))


if __name__ == "__main__":
    sys.exit(main())
