"""Tabulate a benchmark: train every configuration of its pool once, for all epochs, and record
per epoch what a search needs to be replayed later without training.

For configuration ``i`` (trial id ``cfg<i>``), `lightning_rtd.recipes.train` runs with the
benchmark's training seed and two callbacks:

* an `lightning_rtd.RTDCallback` with ``references=("noise",)`` writing the probe embeddings of
  every epoch to the benchmark's `lightning_rtd.store.ReferenceStore` (``<bench>/store``), so
  that ``rtd/top`` and ``rtd/all`` can be computed later by `simulate` from any search history;
* a recorder that stores, per epoch: the validation metric and loss, the test metric and loss of
  the same weights, ``rtd/noise``, the epoch's wall time without RTD and without the test pass,
  and the RTD time (compute + store write).

Each configuration's record is written atomically to ``<bench>/tabulation/cfg<i>.json``; a
rerun skips the configurations that already have one (resumable), so the command can be
interrupted and started again.

Usage (from the repository root):

    nice -n 10 python -m benchmarks.hpo.tabulate --benchmark digits-mlp
    python -m benchmarks.hpo.tabulate --benchmark all --status
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback

from benchmarks.hpo.benchmarks import (
    Benchmark,
    benchmark_dir,
    get_benchmark,
    list_benchmarks,
    pool_configs,
)
from lightning_rtd import RTDCallback
from lightning_rtd.recipes import train

__all__ = [
    "EpochRecorder",
    "Tabulation",
    "TimedRTDCallback",
    "atomic_write_json",
    "load_tabulation",
    "store_dir",
    "tabulate",
    "tabulation_status",
    "trial_name",
]

FIELDS = (
    "val_metric",
    "val_loss",
    "test_metric",
    "test_loss",
    "train_loss",
    "rtd_noise",
    "epoch_time_s",
    "rtd_time_s",
    "epoch_cpu_s",
    "rtd_cpu_s",
)


def trial_name(index: int) -> str:
    """Store trial id of pool configuration ``index``."""
    return f"cfg{index}"


def store_dir(bench: Benchmark, root: str | os.PathLike[str] | None = None) -> Path:
    """The benchmark's tabulation store (probe embeddings of every configuration and epoch)."""
    return benchmark_dir(bench, root) / "store"


def _tab_dir(bench: Benchmark, root: str | os.PathLike[str] | None) -> Path:
    return benchmark_dir(bench, root) / "tabulation"


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, allow_nan=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class TimedRTDCallback(RTDCallback):
    """`RTDCallback` that also measures its own wall time per validation epoch (RTD compute in
    ``on_validation_epoch_end``, store write in ``on_validation_end``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epoch_seconds = 0.0
        self.epoch_cpu_seconds = 0.0

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        start, cpu = time.perf_counter(), time.process_time()
        super().on_validation_epoch_end(trainer, pl_module)
        if not trainer.sanity_checking:
            self.epoch_seconds += time.perf_counter() - start
            self.epoch_cpu_seconds += time.process_time() - cpu

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        start, cpu = time.perf_counter(), time.process_time()
        super().on_validation_end(trainer, pl_module)
        if not trainer.sanity_checking:
            self.epoch_seconds += time.perf_counter() - start
            self.epoch_cpu_seconds += time.process_time() - cpu


class EpochRecorder(Callback):
    """Records one row per training epoch (see the module docs); list it after the RTD callback.

    The test pass runs at the end of each epoch under ``torch.random.fork_rng`` so that it does
    not change the random stream of training (the data loader draws a seed from it), and its
    time is not part of ``epoch_time_s``.
    """

    def __init__(self, metric: str, rtd_callback: TimedRTDCallback) -> None:
        self.metric = metric
        self.test_metric = metric.replace("val_", "test_", 1)
        self.rtd_callback = rtd_callback
        self.rows: list[dict[str, float]] = []
        self.created = time.perf_counter()
        self.created_cpu = time.process_time()
        self.first_epoch_start: float | None = None
        self.first_epoch_cpu: float | None = None
        self._start = self._start_cpu = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start, self._start_cpu = time.perf_counter(), time.process_time()
        if self.first_epoch_start is None:
            self.first_epoch_start, self.first_epoch_cpu = self._start, self._start_cpu
        self.rtd_callback.epoch_seconds = 0.0
        self.rtd_callback.epoch_cpu_seconds = 0.0

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        end, end_cpu = time.perf_counter(), time.process_time()
        rtd_time = self.rtd_callback.epoch_seconds
        rtd_cpu = self.rtd_callback.epoch_cpu_seconds
        metrics = trainer.callback_metrics
        test = self._test(trainer, pl_module)

        def get(key: str) -> float:
            v = metrics.get(key)
            return float(v) if v is not None else float("nan")

        self.rows.append(
            {
                "epoch": trainer.current_epoch + 1,
                "val_metric": get(self.metric),
                "val_loss": get("val_loss"),
                "test_metric": test["metric"],
                "test_loss": test["loss"],
                "train_loss": get("train_loss"),
                "rtd_noise": get("rtd/noise"),
                "epoch_time_s": end - self._start - rtd_time,
                "rtd_time_s": rtd_time,
                "epoch_cpu_s": end_cpu - self._start_cpu - rtd_cpu,
                "rtd_cpu_s": rtd_cpu,
            }
        )

    @torch.no_grad()
    def _test(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        loader = trainer.datamodule.test_dataloader()  # type: ignore[union-attr]
        was_training = pl_module.training
        pl_module.eval()
        correct, total, loss = 0, 0, 0.0
        with torch.random.fork_rng(devices=[]):
            for x, y in loader:
                x, y = x.to(pl_module.device), y.to(pl_module.device)
                logits = pl_module(x)
                loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(dim=1) == y).sum())
                total += len(y)
        pl_module.train(was_training)
        if self.test_metric != "test_acc":
            raise NotImplementedError(f"test metric {self.test_metric!r} (only accuracy)")
        return {"metric": correct / max(total, 1), "loss": loss / max(total, 1)}


def _run_config(bench: Benchmark, index: int, config: dict[str, Any], store: Path) -> dict:
    settings = bench.rtd_settings
    rtd_cb = TimedRTDCallback(
        references=("noise",),
        store=str(store),
        trial_id=trial_name(index),
        num_points=bench.num_points,
        objective=bench.metric,
        mode=bench.mode,  # type: ignore[arg-type]
        store_metrics=["val_loss"],
        symmetric=settings["symmetric"],
        noise=settings["noise"],
        noise_dim=settings["noise_dim"],
        noise_seed=settings["noise_seed"],
    )
    recorder = EpochRecorder(bench.metric, rtd_cb)
    with tempfile.TemporaryDirectory(prefix="lrtd-tab-") as tmp:
        final = train(
            bench.recipe,
            config,
            max_epochs=bench.max_epochs,
            callbacks=[rtd_cb, recorder],
            seed=bench.train_seed,
            default_root_dir=tmp,
        )
    startup = (recorder.first_epoch_start or recorder.created) - recorder.created
    startup_cpu = (recorder.first_epoch_cpu or recorder.created_cpu) - recorder.created_cpu
    return {
        "index": index,
        "trial_id": trial_name(index),
        "config": config,
        "startup_s": startup,
        "startup_cpu_s": startup_cpu,
        "rtd_settings": settings,
        "epochs": recorder.rows,
        "final": final,
    }


def tabulation_status(bench: Benchmark, root: str | os.PathLike[str] | None = None) -> list[int]:
    """Indices of the pool configurations already tabulated."""
    folder = _tab_dir(bench, root)
    return [i for i in range(bench.num_configs) if (folder / f"{trial_name(i)}.json").exists()]


def _check_spec(bench: Benchmark, root: str | os.PathLike[str] | None, force: bool) -> None:
    path = _tab_dir(bench, root) / "spec.json"
    spec = bench.spec()
    if path.exists():
        old = json.loads(path.read_text())
        if old != spec and not force:
            raise SystemExit(
                f"{path} was made with different settings:\n  {old}\nnow:\n  {spec}\n"
                "use another --root, delete the folder, or pass --force"
            )
    atomic_write_json(path, spec)


def tabulate(
    bench: Benchmark,
    root: str | os.PathLike[str] | None = None,
    *,
    indices: Sequence[int] | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> int:
    """Tabulate the pool configurations of ``bench`` that have no record yet.

    Args:
        bench: the benchmark.
        root: results root (see `benchmarks.results_root`).
        indices: only these pool indices (default: all).
        force: continue a tabulation made with different settings.
        log: receives one progress line per configuration.

    Returns:
        The number of configurations trained by this call.
    """
    _check_spec(bench, root, force)
    configs = pool_configs(bench)
    folder = _tab_dir(bench, root)
    store = store_dir(bench, root)
    todo = [i for i in (indices if indices is not None else range(bench.num_configs))]
    done = set(tabulation_status(bench, root))
    pending = [i for i in todo if i not in done]
    log(
        f"[{bench.name}] {len(done)}/{bench.num_configs} configurations tabulated, "
        f"{len(pending)} to go ({bench.max_epochs} epochs, N={bench.num_points})"
    )
    started = time.perf_counter()
    trained = 0
    for k, i in enumerate(pending, start=1):
        if (folder / f"{trial_name(i)}.json").exists() or not _claim(folder, i):
            continue  # done or being trained by another tabulation process
        try:
            t0 = time.perf_counter()
            record = _run_config(bench, i, configs[i], store)
            atomic_write_json(folder / f"{trial_name(i)}.json", record)
        finally:
            (folder / f"{trial_name(i)}.lock").unlink(missing_ok=True)
        trained += 1
        took = time.perf_counter() - t0
        rate = (time.perf_counter() - started) / k
        last = record["epochs"][-1] if record["epochs"] else {}
        log(
            f"[{bench.name}] cfg{i} done in {took:.1f}s ({k}/{len(pending)}, "
            f"{len(done) + k}/{bench.num_configs} total) val={last.get('val_metric', math.nan):.4f}"
            f" rtd/noise={last.get('rtd_noise', math.nan):.3f}; "
            f"ETA {rate * (len(pending) - k) / 60:.1f} min"
        )
    return trained


def _claim(folder: Path, index: int) -> bool:
    """Take the lock of configuration ``index`` so that parallel tabulation processes (same
    machine) never train the same configuration; a lock whose process is gone is taken over."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / f"{trial_name(index)}.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                return False
            lock.unlink(missing_ok=True)  # stale
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Tabulation:
    """A benchmark's tabulated data as arrays of shape ``(num_configs, max_epochs)``; epoch e
    (1-based) is column e - 1. Missing values (diverged runs) are NaN.

    Attributes:
        bench: the benchmark.
        configs: the pool configurations.
        values: field name (see ``FIELDS``) -> array.
        startup_s: per configuration, seconds from the start of `train` to the first epoch.
        startup_cpu_s: the same in process CPU seconds.
        available: indices of tabulated configurations (a partial tabulation can be replayed
            on this subset, with a warning).
    """

    bench: Benchmark
    configs: list[dict[str, Any]]
    values: dict[str, np.ndarray]
    startup_s: np.ndarray
    available: list[int]
    startup_cpu_s: np.ndarray | None = None

    def __getitem__(self, key: str) -> np.ndarray:
        return self.values[key]

    def times(self, clock: str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(epoch, rtd, startup)`` seconds by the chosen clock: ``"cpu"`` (process CPU time;
        with one torch thread it is close to the wall time on an idle machine and barely
        affected by other jobs) or ``"wall"`` (measured wall time, inflated by machine load)."""
        if clock == "cpu":
            assert self.startup_cpu_s is not None
            return self["epoch_cpu_s"], self["rtd_cpu_s"], self.startup_cpu_s
        if clock == "wall":
            return self["epoch_time_s"], self["rtd_time_s"], self.startup_s
        raise ValueError(f"clock must be 'cpu' or 'wall', got {clock!r}")

    @property
    def complete(self) -> bool:
        """Whether every pool configuration is tabulated."""
        return len(self.available) == self.bench.num_configs


def load_tabulation(
    bench: Benchmark, root: str | os.PathLike[str] | None = None, *, allow_partial: bool = False
) -> Tabulation:
    """Read the records written by `tabulate`.

    Raises:
        FileNotFoundError: a configuration is missing and ``allow_partial`` is false.
    """
    folder = _tab_dir(bench, root)
    n, e = bench.num_configs, bench.max_epochs
    values = {f: np.full((n, e), np.nan) for f in FIELDS}
    startup = np.full(n, np.nan)
    startup_cpu = np.full(n, np.nan)
    available = tabulation_status(bench, root)
    if not available or (len(available) < n and not allow_partial):
        raise FileNotFoundError(
            f"{bench.name}: {len(available)}/{n} configurations tabulated in {folder}; run "
            f"`python -m benchmarks.hpo.tabulate --benchmark {bench.name}`"
        )
    settings = bench.rtd_settings
    for i in available:
        record = json.loads((folder / f"{trial_name(i)}.json").read_text())
        if record.get("rtd_settings") != settings:
            raise ValueError(
                f"{bench.name} cfg{i} was tabulated with RTD settings "
                f"{record.get('rtd_settings')}, the benchmark now uses {settings} (did the "
                "callback's defaults change?); run `python -m benchmarks.hpo.tabulate "
                f"--benchmark {bench.name} --rescore-noise`"
            )
        startup[i] = record["startup_s"]
        startup_cpu[i] = record.get("startup_cpu_s", math.nan)
        for row in record["epochs"]:
            for f in FIELDS:
                values[f][i, row["epoch"] - 1] = row.get(f, math.nan)
    return Tabulation(bench, pool_configs(bench), values, startup, available, startup_cpu)


def rescore_noise(
    bench: Benchmark,
    root: str | os.PathLike[str] | None = None,
    *,
    log: Callable[[str], None] = print,
) -> int:
    """Recompute ``rtd/noise`` (value and compute time) of every tabulated epoch from the stored
    probe embeddings with the benchmark's current RTD settings, e.g. after the callback's
    defaults changed; returns the number of configurations updated. The embeddings do not
    depend on the settings, so no training is repeated. Previous values are kept under
    ``rtd_noise_previous`` / ``rtd_cpu_s_previous``.
    """
    import warnings

    from lightning_rtd import rtd
    from lightning_rtd.errors import RTDWarning
    from lightning_rtd.references import noise_pair
    from lightning_rtd.store import ReferenceStore

    settings = bench.rtd_settings
    folder = _tab_dir(bench, root)
    store = ReferenceStore(store_dir(bench, root))
    updated = 0
    for i in tabulation_status(bench, root):
        path = folder / f"{trial_name(i)}.json"
        record = json.loads(path.read_text())
        if record.get("rtd_settings", {}) == settings:
            continue
        for row in record["epochs"]:
            entry = store.get(trial_name(i), row["epoch"])
            row.setdefault("rtd_noise_previous", row["rtd_noise"])
            row.setdefault("rtd_cpu_s_previous", row["rtd_cpu_s"])
            row.setdefault("rtd_time_s_previous", row["rtd_time_s"])
            if entry is None:
                row["rtd_noise"] = math.nan
                continue
            start, cpu = time.perf_counter(), time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RTDWarning)
                x, z = noise_pair(
                    torch.from_numpy(entry.embeddings),
                    settings["noise"],
                    seed=settings["noise_seed"],
                    noise_dim=settings["noise_dim"],
                )
                row["rtd_noise"] = rtd(x, z, symmetric=settings["symmetric"])
            row["rtd_time_s"] = time.perf_counter() - start
            row["rtd_cpu_s"] = time.process_time() - cpu
        record["rtd_settings"] = settings
        record["rtd_rescored"] = True
        atomic_write_json(path, record)
        updated += 1
        log(f"[{bench.name}] cfg{i}: rtd/noise rescored with {settings}")
    atomic_write_json(folder / "spec.json", bench.spec())
    return updated


def _parse_names(names: Sequence[str], known: Sequence[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        for part in name.split(","):
            if part == "all":
                out += [k for k in known if k not in out]
            elif part and part not in out:
                out.append(part)
    return out


def stamped_logger(path: str | None) -> Callable[[str], None]:
    """A progress printer: each line is printed with an ``HH:MM:SS`` stamp and, when ``path``
    is given, also appended to that file."""

    def log(line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {line}", flush=True)
        if path:
            with open(path, "a") as fh:
                fh.write(f"{stamp} {line}\n")

    return log


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", nargs="+", default=["all"], help="names or 'all'")
    parser.add_argument("--root", default=None, help="results root (default benchmarks/hpo/runs)")
    parser.add_argument("--configs", default=None, help="pool indices, e.g. 0-9 or 3,5")
    parser.add_argument("--status", action="store_true", help="only print the progress")
    parser.add_argument("--force", action="store_true", help="ignore a settings mismatch")
    parser.add_argument("--log", default=None, help="also append progress lines to this file")
    parser.add_argument(
        "--rescore-noise",
        action="store_true",
        help="recompute rtd/noise from the stored embeddings with the current RTD settings",
    )
    args = parser.parse_args(argv)
    names = _parse_names(args.benchmark, list_benchmarks())
    indices = None
    if args.configs:
        indices = []
        for part in args.configs.split(","):
            lo, _, hi = part.partition("-")
            indices += list(range(int(lo), int(hi or lo) + 1))

    log = stamped_logger(args.log)

    for name in names:
        bench = get_benchmark(name)
        if args.status:
            done = len(tabulation_status(bench, args.root))
            print(f"{name}: {done}/{bench.num_configs} configurations tabulated")
            continue
        if args.rescore_noise:
            torch.set_num_threads(1)
            rescore_noise(bench, args.root, log=log)
            continue
        tabulate(bench, args.root, indices=indices, force=args.force, log=log)


if __name__ == "__main__":
    sys.exit(main())
