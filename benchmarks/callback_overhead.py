"""Wall-time overhead of ``RTDCallback`` on a realistic training run.

A recipe (default ``mnist-cnn``: the CNN on the 5,000-image MNIST subset, 3,500 training and 750
validation images) is trained for ``--max-epochs`` epochs without the callback and with it in
several settings. The variants are interleaved within one process (``A B C ... C B A ...`` over
``--repeats``, the order reversed every other repeat to cancel slow drifts of the machine's
load), every run with the same seed, so every run of a variant does exactly the same work and
every comparison is a ratio measured side by side.

Measured per epoch:

* **epoch wall / CPU**: from ``on_train_epoch_start`` to ``on_validation_end`` (training,
  validation and the whole RTD work: capture, gather, RTD, logging, store write), by a timing
  callback listed after the RTD callback. CPU is ``time.process_time`` (all threads of the
  process): less sensitive than wall time to other programs competing for the cores, though on a
  loaded machine shared caches still make it vary by some 10 %. A symmetric RTD runs its two
  directions in two threads, so its CPU time can exceed its wall time;
* **in RTD hooks**: wall time spent inside ``RTDCallback.on_validation_epoch_start`` (probe
  plan), ``on_validation_epoch_end`` (gather + RTD + log) and ``on_validation_end`` (store
  write), by a subclass that times them.

Reported: the median of each over all timed epochs of a variant; the end-to-end overhead
``median(variant) / median(no RTD) - 1``; and the **paired** overhead, the median over the
variant's own epochs of ``hooks / (epoch - hooks)``. The paired figure compares work done seconds
apart in the same run, so it is far less sensitive to other programs' load than the end-to-end
ratio, which compares different runs. Target: at most 5 % at the default settings (references
noise+top+all, everything else at the callback's defaults); the verdict needs both figures within
it, and the script exits with status 1 when it fails.

The reference store is pre-filled, before any timed run, with the entries of ``--trials`` (20)
earlier trials for every epoch, written with ``ReferenceStore.put`` under the probe fingerprint
the callback will use (``choose_probe`` over the validation indices, checked against the
callback's own fingerprint after the first run). Their embeddings are plausible: a priming run
of the recipe (untimed; it also warms the data cache) records the real probe embeddings of every
epoch; trial ``k`` stores them in its own random basis with per-unit scales, blended with the
embeddings of a randomly initialised model of the recipe (weight ``a_k`` drawn from [0, 0.6],
so trials have more or less class structure), plus 5 % Gaussian noise, with
``val_acc = acc_epoch * (1 - a_k / 2)`` plus noise. Their width is the recipe's embedding width.

Afterwards (unless ``--no-breakdown``) one more run of the default variant is instrumented to
show where the time inside the hooks goes: gather, the noise projection (SVD), distances (cdist
and quantile), the cross matrix, the persistence backend, store listing / reads / writes.

Usage::

    python benchmarks/callback_overhead.py                       # 6-8 minutes on 2 busy cores
    python benchmarks/callback_overhead.py --output docs/guides/callback_overhead_results.md
    python benchmarks/callback_overhead.py --recipe digits-mlp --variants default noise-only
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback

import lightning_rtd.backends as lrtd_backends
import lightning_rtd.callback as lrtd_callback
import lightning_rtd.functional as lrtd_functional
from lightning_rtd import RTDCallback
from lightning_rtd.capture import choose_probe
from lightning_rtd.errors import RTDWarning
from lightning_rtd.recipes import get_recipe, list_recipes, resolve_config, train
from lightning_rtd.store import STORE_ENV_VAR, ProbeFingerprint, ReferenceStore, StoreEntry

TARGET_OVERHEAD = 0.05
TRIAL_ID = "bench"  # the timed trial; the same id in every variant, so it never sees itself


# --------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One benchmarked configuration: ``kwargs`` of RTDCallback, ``None`` for no callback."""

    key: str
    label: str
    kwargs: dict[str, Any] | None
    uses_store: bool = True


_FULL = {"references": ("noise", "top", "all"), "objective": "val_acc", "mode": "max"}

VARIANTS: dict[str, Variant] = {
    v.key: v
    for v in [
        Variant("baseline", "no RTD", None, uses_store=False),
        Variant("default", "default: noise+top+all (x -> ref, max_references=2)", dict(_FULL)),
        Variant("noise-only", "noise only (no store)", {"references": ("noise",)}, False),
        Variant(
            "all-unbounded", "noise+top+all, max_references=None", {**_FULL, "max_references": None}
        ),
        Variant("symmetric", "noise+top+all, symmetric=True", {**_FULL, "symmetric": True}),
        Variant("refs4", "noise+top+all, max_references=4", {**_FULL, "max_references": 4}),
        Variant("n250", "noise+top+all, num_points=250", {**_FULL, "num_points": 250}),
        Variant("n1000", "noise+top+all, num_points=1000", {**_FULL, "num_points": 1000}),
    ]
}
DEFAULT_VARIANTS = ("default", "noise-only", "all-unbounded", "symmetric", "n250", "n1000")


def callback_settings(variant: Variant) -> dict[str, Any]:
    """Every RTDCallback setting that matters here: the defaults updated by the variant's."""
    params = inspect.signature(RTDCallback).parameters
    keys = ("num_points", "references", "symmetric", "max_references", "every_n_epochs")
    defaults = {k: params[k].default for k in keys}  # the library's own defaults
    return {**defaults, **(variant.kwargs or {})}


def rtds_per_epoch(variant: Variant, trials: int) -> str:
    """Directed RTD computations per computing epoch, as ``pairs x directions``."""
    if variant.kwargs is None:
        return "-"
    s = callback_settings(variant)
    refs = s["references"]
    pairs = ("noise" in refs) + ("top" in refs)
    if "all" in refs:
        k = s["max_references"]
        pairs += trials if k is None else min(k, trials)
    return f"{pairs} x {2 if s['symmetric'] else 1}"


# --------------------------------------------------------------------------------------------
# Timing callbacks
# --------------------------------------------------------------------------------------------


class EpochTimer(Callback):
    """Wall and CPU time from ``on_train_epoch_start`` to ``on_validation_end`` of each epoch.

    List it after the RTD callback so that its ``on_validation_end`` runs after the store write.
    """

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._start: tuple[float, float] | None = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = (time.perf_counter(), time.process_time())

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or self._start is None:
            return
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])
        self._start = None


class TimedRTDCallback(RTDCallback):
    """RTDCallback that adds up the wall time spent in its validation hooks, per epoch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hook_seconds: dict[int, float] = defaultdict(float)

    @contextlib.contextmanager
    def _timed(self, trainer: Trainer) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if not trainer.sanity_checking:
                self.hook_seconds[trainer.current_epoch] += time.perf_counter() - start

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        with self._timed(trainer):
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        with self._timed(trainer):
            super().on_validation_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        with self._timed(trainer):
            super().on_validation_end(trainer, pl_module)


# --------------------------------------------------------------------------------------------
# The pre-filled reference store
# --------------------------------------------------------------------------------------------


def validation_inputs(recipe: str) -> torch.Tensor:
    """The validation inputs of a recipe's data module, in loader order (= dataset index)."""
    rec = get_recipe(recipe)
    dm = rec.make_datamodule(resolve_config(recipe))
    dm.prepare_data()
    dm.setup("fit")
    return torch.cat([x for x, _ in dm.val_dataloader()])


def random_init_embeddings(recipe: str, x: torch.Tensor, seed: int) -> np.ndarray:
    """Embeddings of ``x`` by a randomly initialised model of the recipe (eval mode)."""
    rec = get_recipe(recipe)
    cfg = resolve_config(recipe)
    dm = rec.make_datamodule(cfg)
    torch.manual_seed(seed)
    model = rec.make_model(cfg, dm).eval()
    with torch.no_grad():
        return model.embed(x).float().numpy()


def prime(recipe: str, args: argparse.Namespace, root: str, val_size: int) -> dict[int, Any]:
    """Train once with the callback on the whole validation set; return its entries by epoch."""
    store = ReferenceStore(os.path.join(root, "prime-store"))
    cb = RTDCallback(
        layer="embedding",
        num_points=val_size,
        references=("noise",),
        store=store,
        trial_id="prime",
        objective="val_acc",
        store_metrics=["val_loss"],
    )
    run_recipe(recipe, args, [cb], os.path.join(root, "prime-run"))
    if cb.probe is None or not np.array_equal(cb.probe, np.arange(val_size)):
        raise RuntimeError("the priming run's probe is not the whole validation set")
    entries = {e: store.get("prime", e) for e in range(1, args.max_epochs + 1)}
    missing = [e for e, entry in entries.items() if entry is None]
    if missing:
        raise RuntimeError(f"the priming run wrote no store entry for epochs {missing}")
    return entries


def fill_store(
    store: ReferenceStore,
    num_points: int,
    val_size: int,
    primed: dict[int, Any],
    randoms: list[np.ndarray],
    probe_seed: int = 0,
) -> ProbeFingerprint:
    """Write ``len(randoms)`` earlier trials' entries for every primed epoch; see module docs."""
    probe = choose_probe(np.arange(val_size), num_points, probe_seed)
    fingerprint = ProbeFingerprint.from_indices(probe, val_size)
    created = time.time() - 3600.0
    for k, rand in enumerate(randoms):
        rng = np.random.default_rng([1234, k])
        a = rng.uniform(0.0, 0.6)
        d = rand.shape[1]
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        basis = q * rng.uniform(0.5, 1.5, size=d)
        for epoch, entry in primed.items():
            real = entry.embeddings
            mixed = (1.0 - a) * (real @ basis) / (real.std() + 1e-12) + a * rand / (
                rand.std() + 1e-12
            )
            mixed += 0.05 * rng.standard_normal(mixed.shape)
            acc = entry.objectives["val_acc"] * (1.0 - 0.5 * a) + rng.normal(0.0, 0.01)
            loss = entry.objectives.get("val_loss", 1.0) * (1.0 + a) + abs(rng.normal(0.0, 0.02))
            store.put(
                StoreEntry(
                    trial_id=f"earlier-{k:02d}",
                    epoch=epoch,
                    embeddings=mixed[probe].astype(np.float32),
                    objectives={"val_acc": float(np.clip(acc, 0.0, 1.0)), "val_loss": float(loss)},
                    fingerprint=fingerprint,
                    created=created + k,
                )
            )
    return fingerprint


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def run_recipe(
    recipe: str, args: argparse.Namespace, callbacks: list[Callback], root: str
) -> dict[str, float]:
    trainer_kwargs: dict[str, Any] = {}
    if args.limit_train_batches is not None:
        trainer_kwargs["limit_train_batches"] = args.limit_train_batches
    return train(
        recipe,
        None,
        max_epochs=args.max_epochs,
        callbacks=callbacks,
        default_root_dir=root,
        seed=args.seed,
        num_threads=args.num_threads,
        trainer_kwargs=trainer_kwargs,
    )


@dataclass
class Samples:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    hooks: list[float] = field(default_factory=list)
    run_wall: list[float] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def make_callback(variant: Variant, stores: dict[int, ReferenceStore]) -> TimedRTDCallback:
    settings = callback_settings(variant)
    kwargs = dict(variant.kwargs or {})
    kwargs.setdefault("num_points", settings["num_points"])
    store = stores[settings["num_points"]] if variant.uses_store else None
    return TimedRTDCallback(layer="embedding", store=store, trial_id=TRIAL_ID, **kwargs)


def timed_run(
    variant: Variant,
    args: argparse.Namespace,
    stores: dict[int, ReferenceStore],
    fingerprints: dict[int, ProbeFingerprint],
    root: str,
    samples: Samples,
) -> None:
    timer = EpochTimer()
    callbacks: list[Callback] = []
    rtd_cb = None
    if variant.kwargs is not None:
        rtd_cb = make_callback(variant, stores)
        callbacks.append(rtd_cb)
    callbacks.append(timer)  # after the RTD callback: its on_validation_end runs last
    start = time.perf_counter()
    metrics = run_recipe(args.recipe, args, callbacks, os.path.join(root, "runs", variant.key))
    samples.run_wall.append(time.perf_counter() - start)
    if len(timer.wall) != args.max_epochs:
        raise RuntimeError(f"{variant.key}: timed {len(timer.wall)} epochs, not {args.max_epochs}")
    samples.wall += timer.wall
    samples.cpu += timer.cpu
    if rtd_cb is not None:
        samples.hooks += [rtd_cb.hook_seconds[e] for e in range(args.max_epochs)]
        expected = fingerprints.get(rtd_cb.num_points)
        if variant.uses_store and expected is not None and rtd_cb.fingerprint != expected:
            raise RuntimeError(f"{variant.key}: the callback's probe differs from the store's")
        for key, value in metrics.items():
            if key.startswith("rtd/"):
                samples.values[key].append(value)


# --------------------------------------------------------------------------------------------
# Breakdown of the time inside the hooks
# --------------------------------------------------------------------------------------------


class Breakdown:
    """Wall time per stage, summed over calls (calls in worker threads counted separately)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, name: str, stage: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*a: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                elapsed = time.perf_counter() - start
                with self._lock:
                    self.seconds[stage] += elapsed
                    self.calls[stage] += 1

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def wrap_backend(self) -> str:
        """Time the persistence engine behind ``backend="auto"``; return its name."""
        backend = lrtd_backends.get_backend("auto")
        stage = f"persistence backend ({backend.name})"
        fn = backend.fn

        def timed_fn(distances: np.ndarray, threshold: float) -> np.ndarray:
            start = time.perf_counter()
            try:
                return fn(distances, threshold)
            finally:
                elapsed = time.perf_counter() - start
                with self._lock:
                    self.seconds[stage] += elapsed
                    self.calls[stage] += 1

        def register(fn: Callable[..., np.ndarray]) -> None:
            lrtd_backends.register_backend(
                backend.name,
                fn,
                module=backend.module,
                releases_gil=backend.releases_gil,
                exact=backend.exact,
                overwrite=True,
            )

        register(timed_fn)
        self._undo.append(lambda: register(fn))
        return backend.name

    def undo(self) -> None:
        for fn in reversed(self._undo):
            fn()
        self._undo.clear()


def run_breakdown(
    args: argparse.Namespace,
    stores: dict[int, ReferenceStore],
    root: str,
) -> tuple[Breakdown, float, int]:
    """One instrumented run of the default variant: (stage times, hook seconds, epochs)."""
    bd = Breakdown()
    bd.wrap(RTDCallback, "_compute", "compute")
    bd.wrap(RTDCallback, "_store_references", "store references")
    bd.wrap(RTDCallback, "_score", "score")
    bd.wrap(RTDCallback, "_gather", "gather (probe rows -> rank 0)")
    bd.wrap(lrtd_callback, "noise_pair", "noise reference (PCA projection + draw)")
    bd.wrap(lrtd_functional, "_rtd_jobs", "rtd() calls")
    bd.wrap(lrtd_functional, "normalized_distances", "distances (cdist + 0.9-quantile)")
    bd.wrap(lrtd_functional, "_build_cross", "cross matrix (2N x 2N)")
    bd.wrap_backend()
    bd.wrap(ReferenceStore, "epochs", "store: list epochs")
    bd.wrap(ReferenceStore, "entries", "store: list + read metadata")
    bd.wrap(ReferenceStore, "get", "store: load embeddings")
    bd.wrap(ReferenceStore, "put", "store: write entry")
    try:
        timer = EpochTimer()
        cb = make_callback(VARIANTS["default"], stores)
        run_recipe(args.recipe, args, [cb, timer], os.path.join(root, "runs", "breakdown"))
    finally:
        bd.undo()
    return bd, sum(cb.hook_seconds.values()), len(timer.wall)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _pct(x: float) -> str:
    return f"{100.0 * x:+.1f} %"


INDENTED = ("distances (cdist + 0.9-quantile)", "cross matrix (2N x 2N)")
TOP_LEVEL = (
    "gather (probe rows -> rank 0)",
    "noise reference (PCA projection + draw)",
    "rtd() calls",
    "store: list epochs",
    "store: list + read metadata",
    "store: load embeddings",
    "store: write entry",
)


def breakdown_lines(bd: Breakdown, hook_total: float, epochs: int) -> list[str]:
    """Markdown of the instrumented run: by reference, then by stage."""

    def row(name: str, calls: str, sec: float) -> str:
        return f"| {name} | {calls} | {sec / epochs:.3f} | {100.0 * sec / hook_total:.0f} % |"

    sec, calls = bd.seconds, bd.calls
    rest = hook_total - sec["compute"]
    lines = [
        "",
        f"## Where the time goes (default settings, one instrumented run, {epochs} epochs)",
        "",
        f"Total inside the RTD hooks: {hook_total:.2f} s ({hook_total / epochs:.3f} s per epoch).",
        "",
        "By part:",
        "",
        "| part | calls | s per epoch | share of hook time |",
        "|---|---|---|---|",
        row(
            "noise reference: PCA projection + draw",
            str(calls["noise reference (PCA projection + draw)"]),
            sec["noise reference (PCA projection + draw)"],
        ),
        row(
            "stored references: list, choose top / all, load",
            str(calls["store references"]),
            sec["store references"],
        ),
        row(
            "RTD to every reference (one call, one thread pool)", str(calls["score"]), sec["score"]
        ),
        row("gather, store write, capture set-up, logging", "-", rest),
        "",
        "By stage:",
        "",
        "| stage | calls | s per epoch | share of hook time |",
        "|---|---|---|---|",
    ]
    backend_rows = [k for k in sec if k.startswith("persistence backend")]
    for stage in [*TOP_LEVEL[:3], *INDENTED, *backend_rows, *TOP_LEVEL[3:]]:
        if stage not in calls:
            continue
        shown = "**rtd() calls, total**" if stage == "rtd() calls" else stage
        if stage in INDENTED or stage in backend_rows:
            shown = "&nbsp;&nbsp;" + shown
        lines.append(row(shown, str(calls[stage]), sec[stage]))
    accounted = sum(sec[k] for k in TOP_LEVEL if k in sec)
    lines.append(row("other (callback logic, logging, copies)", "-", hook_total - accounted))
    lines += [
        "",
        "Indented stages are parts of the `rtd()` calls. The cross matrices and persistence "
        "computations of all references of an epoch run in parallel threads (one per core), so "
        "their summed times can exceed their share of the wall time (the shares of the "
        "indented rows need not add up to the total).",
    ]
    return lines


def report(
    args: argparse.Namespace,
    results: dict[str, Samples],
    variants: list[Variant],
    val_size: int,
    breakdown: tuple[Breakdown, float, int] | None,
    context: dict[str, str],
) -> tuple[str, bool]:
    base = results["baseline"]
    base_wall, base_cpu = _median(base.wall), _median(base.cpu)
    lines = [
        f"# RTDCallback overhead: `{args.recipe}`",
        "",
        f"- date: {context['date']}; machine: {context['machine']}",
        f"- {context['versions']}",
        f"- load average (1 min) before / after: {context['load']}",
        f"- {args.max_epochs} epochs x {args.repeats} repeats per variant, interleaved, seed "
        f"{args.seed}, torch threads {args.num_threads}"
        + (
            f", limit_train_batches={args.limit_train_batches}"
            if args.limit_train_batches is not None
            else ""
        )
        + f"; validation set {val_size} samples; store pre-filled with {args.trials} earlier "
        "trials at every epoch; total benchmark time "
        f"{context['elapsed']}",
        "",
        "| variant | N | RTDs per epoch | epoch wall (s) (min-max) | overhead (wall) | "
        "epoch CPU (s) | overhead (CPU) | in RTD hooks (s/epoch) | overhead (paired) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    passed = False
    for v in variants:
        s = results[v.key]
        wall, cpu = _median(s.wall), _median(s.cpu)
        n = "-"
        if v.kwargs is not None:
            asked = callback_settings(v)["num_points"]
            n = str(asked) if asked <= val_size else f"{val_size} (asked {asked})"
        hooks = _median(s.hooks)
        paired = _median(
            [h / (w - h) for h, w in zip(s.hooks, s.wall, strict=True)] if s.hooks else []
        )
        row = [
            v.label,
            n,
            rtds_per_epoch(v, args.trials),
            f"{wall:.2f} ({min(s.wall):.2f}-{max(s.wall):.2f})",
            "-" if v.kwargs is None else _pct(wall / base_wall - 1.0),
            f"{cpu:.2f}",
            "-" if v.kwargs is None else _pct(cpu / base_cpu - 1.0),
            "-" if v.kwargs is None else f"{hooks:.3f}",
            "-" if v.kwargs is None else _pct(paired),
        ]
        lines.append("| " + " | ".join(row) + " |")
        if v.key == "default":
            overhead = wall / base_wall - 1.0
            passed = max(overhead, paired) <= TARGET_OVERHEAD
            verdict = (
                f"**Target (default settings, wall-time overhead <= "
                f"{100 * TARGET_OVERHEAD:.0f} %): {'PASS' if passed else 'FAIL'}** "
                f"({_pct(overhead)} end to end, {_pct(paired)} paired; PASS needs both)."
            )
    lines += [
        "",
        "Medians over all timed epochs of a variant. *epoch*: `on_train_epoch_start` -> "
        "`on_validation_end` (training + validation + RTD + store write). *overhead*: "
        "median(variant) / median(no RTD) - 1, measured in the same process, interleaved. "
        "*in RTD hooks*: wall time inside `on_validation_epoch_start` + "
        "`on_validation_epoch_end` + `on_validation_end` of the callback. *overhead (paired)*: "
        "median over the variant's own epochs of hooks / (epoch - hooks), i.e. the RTD work "
        "against the rest of the same epoch, measured seconds apart; much less sensitive to "
        "other programs' load than the end-to-end ratio, which compares different runs (it "
        "leaves out the capture's forward hook, which is tiny). *RTDs per epoch*: reference "
        "clouds x directions (2 when symmetric).",
        "",
        verdict,
    ]
    values = {
        v.key: results[v.key].values for v in variants if v.kwargs is not None
    }  # last-epoch RTD values, to show that the variants did real work
    lines += ["", "Last-epoch RTD values (median over repeats):", ""]
    lines += ["| variant | " + " | ".join(("rtd/noise", "rtd/top", "rtd/all")) + " |"]
    lines += ["|---|---|---|---|"]
    for v in variants:
        if v.kwargs is None:
            continue
        cells = []
        for key in ("rtd/noise", "rtd/top", "rtd/all"):
            xs = values[v.key].get(key)
            cells.append(f"{_median(xs):.2f}" if xs else "-")
        lines.append(f"| {v.label} | " + " | ".join(cells) + " |")

    if breakdown is not None:
        lines += breakdown_lines(*breakdown)
    return "\n".join(lines) + "\n", passed


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="mnist-cnn", choices=list_recipes())
    p.add_argument("--max-epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--trials", type=int, default=20, help="earlier trials in the store")
    p.add_argument(
        "--variants",
        nargs="+",
        default=list(DEFAULT_VARIANTS),
        choices=[k for k in VARIANTS if k != "baseline"],
        help="variants besides 'no RTD' (always run); 'default' is always added",
    )
    p.add_argument("--limit-train-batches", type=float, default=None)
    p.add_argument("--num-threads", type=int, default=1, help="torch threads (recipe default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-breakdown", action="store_true", help="skip the instrumented run")
    p.add_argument("--workdir", default=None, help="keep stores and logs here (default: temp)")
    p.add_argument("--output", default=None, help="also write the Markdown report here")
    args = p.parse_args(argv)
    if args.limit_train_batches is not None and args.limit_train_batches.is_integer():
        args.limit_train_batches = int(args.limit_train_batches)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    os.environ.pop(STORE_ENV_VAR, None)  # every store here is explicit
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=RTDWarning, message=r".*num_points=.*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    keys = ["baseline", "default", *[k for k in args.variants if k != "default"]]
    variants = [VARIANTS[k] for k in dict.fromkeys(keys)]
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    root = args.workdir or tempfile.mkdtemp(prefix="lrtd-overhead-")
    os.makedirs(root, exist_ok=True)
    try:
        print(f"[setup] validation inputs of {args.recipe}", flush=True)
        x_val = validation_inputs(args.recipe)
        val_size = len(x_val)
        print(f"[setup] priming run ({args.max_epochs} epochs, also warms caches)", flush=True)
        primed = prime(args.recipe, args, root, val_size)
        randoms = [random_init_embeddings(args.recipe, x_val, 1000 + k) for k in range(args.trials)]
        stores: dict[int, ReferenceStore] = {}
        fingerprints: dict[int, ProbeFingerprint] = {}
        for v in variants:
            n = callback_settings(v)["num_points"]
            if v.kwargs is None or not v.uses_store or n in stores:
                continue
            stores[n] = ReferenceStore(os.path.join(root, f"store-n{n}"))
            fingerprints[n] = fill_store(stores[n], min(n, val_size), val_size, primed, randoms)
            print(f"[setup] store for N={n}: {args.trials} trials x {len(primed)} epochs")

        results = {v.key: Samples() for v in variants}
        for r in range(args.repeats):
            order = variants if r % 2 == 0 else variants[::-1]
            for v in order:
                timed_run(v, args, stores, fingerprints, root, results[v.key])
                s = results[v.key]
                print(
                    f"[repeat {r + 1}/{args.repeats}] {v.label:<55} epochs "
                    + " ".join(f"{w:.2f}" for w in s.wall[-args.max_epochs :])
                    + (
                        "  hooks " + " ".join(f"{h:.3f}" for h in s.hooks[-args.max_epochs :])
                        if s.hooks
                        else ""
                    ),
                    flush=True,
                )
        breakdown = None
        if not args.no_breakdown:
            print("[breakdown] instrumented run of the default variant", flush=True)
            breakdown = run_breakdown(args, stores, root)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)

    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    import lightning

    context = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}",
        "versions": f"torch {torch.__version__}, lightning {lightning.__version__}, "
        f"numpy {np.__version__}, persistence backend "
        f"`{lrtd_backends.get_backend('auto').name}`",
        "load": f"{load_before:.2f} / {load_after:.2f}",
        "elapsed": f"{(time.perf_counter() - began) / 60:.1f} min",
    }
    text, passed = report(args, results, variants, val_size, breakdown, context)
    print()
    print(text)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
