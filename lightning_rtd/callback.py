"""``RTDCallback``: topology of validation embeddings as ordinary Lightning monitor metrics.

Data flow, once per validation epoch (the sanity check is skipped):

1. **capture** (every rank): a forward hook on ``layer`` keeps the rows of a fixed probe set of
   ``num_points`` validation samples (see `lightning_rtd.capture`); the hook exists only
   during validation, so training steps are untouched;
2. **gather** (all ranks -> rank 0): the probe rows of every process are put back in index
   order, sampler padding dropped;
3. **RTD** (global rank 0): against noise, the best other trial and all other trials
   (see `lightning_rtd.references`);
4. **log** (every rank): the values are broadcast and logged with ``pl_module.log`` in
   ``on_validation_epoch_end``, so ``EarlyStopping`` / ``ModelCheckpoint`` / loggers /
   schedulers see them in the same epoch;
5. **store** (global rank 0, ``on_validation_end``): the probe embeddings and the objective
   values of this epoch are written to the reference store for the other trials.
"""

from __future__ import annotations

import math
import os
import socket
import uuid
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lightning_rtd.capture import (
    FeatureReduction,
    OutputSelector,
    ProbeCapture,
    batch_indices,
    choose_probe,
    resolve_layer,
)
from lightning_rtd.errors import RTDWarning
from lightning_rtd.functional import BackendLike, rtd_barcode, rtd_pairs
from lightning_rtd.references import NOISE_KINDS, best_entry, noise_pair, sample_entries
from lightning_rtd.store import (
    STORE_ENV_VAR,
    ProbeFingerprint,
    ReferenceStore,
    StoreEntry,
    StoreUnavailableError,
    open_store,
)

REFERENCES = ("noise", "top", "all")
Mode = Literal["min", "max"]
LayerFn = Callable[[LightningModule, Any], Any]


class RTDCallback(Callback):
    """Log Representation Topology Divergence of validation embeddings every validation epoch.

    Logged keys (``prefix`` + reference name): ``rtd/noise`` (RTD to a fixed noise cloud),
    ``rtd/top`` (to the best other trial of the search at this epoch), ``rtd/all`` (mean RTD to
    the other trials at this epoch, at most ``max_references`` of them). They are ordinary
    monitor metrics: ``EarlyStopping(monitor="rtd/noise")`` and
    ``ModelCheckpoint(monitor="rtd/top")`` work as with any logged value.

    Args:
        layer: dotted name of the submodule whose output is the embedding (e.g.
            ``"embedding"``, ``"encoder.layer.3"``), or a callable ``fn(pl_module, batch)``
            returning the embeddings of a batch (called under ``torch.no_grad`` only for the
            batches that contain probe samples).
        num_points: size N of the probe set. RTD grows with N and costs about O(N^2) memory and
            a little more than O(N^2) time: 200-1000 is typical. Clamped (with a warning) to the
            validation set size.
        references: any of ``"noise"``, ``"top"``, ``"all"``.
        store: where trials share their probe embeddings: a local folder, an fsspec URL
            (``s3://bucket/search-1``) or a [`ReferenceStore`][lightning_rtd.store.ReferenceStore].
            ``None``: the ``LIGHTNING_RTD_STORE`` environment variable if set, else
            ``<default_root_dir>/rtd-store`` when "top" or "all" is requested; with only
            "noise" and no store nothing is written.
        trial_id: id of this trial in the store; generated (host, pid, random) when ``None``.
        objective: monitored key that ranks trials for "top" (e.g. ``"val_acc"``); it is
            also written to the store. Required for "top".
        mode: ``"max"`` if a larger ``objective`` is better, ``"min"`` otherwise.
        directions: how a search should use each RTD value: ``"max"`` (the TopoHyperDrive
            paper's reading: be different from noise / the leader / the others) or ``"min"``
            (be similar to the leader); one string for all or a dict per reference. The
            callback only *declares* it (`monitor_modes`, the logger's hyperparameters
            and store metadata); presets and reporters read it from there.
        symmetric: log ``(RTD(x -> ref) + RTD(ref -> x)) / 2`` (the reference implementation's
            ``rtd1``) instead of the default ``RTD(x -> ref)``, from this trial's embeddings to
            the reference. Symmetric values cost twice as much; the default keeps the callback
            within a few percent of an epoch (see the callback overhead benchmark).
        every_n_epochs: compute at the first validation epoch and then every n-th epoch
            (1-based epoch % n == 0); on the other validation epochs the last values are logged
            again so monitors always find their key.
        noise: noise variant, ``"matched"`` (default, dimension-fair: top ``noise_dim``
            principal components vs. Gaussian noise of the same spectrum) or ``"same-shape"``
            (the paper's: N(0, I) of the embeddings' shape, which tracks the width); see
            `lightning_rtd.references`.
        noise_dim: number of principal components compared by ``"matched"``.
        noise_seed: seed of the noise (the same for every trial of a search).
        probe_seed: seed that chooses the probe samples (the same for every trial).
        max_references: at most this many other trials for "all" (a sample fixed by seed,
            trial and epoch), so the work per validation epoch stays bounded as the search grows
            (default 2); ``None`` uses all, whose cost grows linearly with the search.
        backend: persistence backend (see [`lightning_rtd.rtd`][lightning_rtd.functional.rtd]).
        dataloader_idx: which validation dataloader holds the probe samples.
        output_selector: which part of a tuple / dict / object layer output is the embedding
            (see [`lightning_rtd.capture.select_output`][lightning_rtd.capture.select_output]).
        feature_reduction: ``"flatten"`` (default) or ``"mean"`` (global average pooling over
            the dimensions after the channel dimension) for outputs with more than 2 dims, or a
            callable.
        store_dtype: ``"float32"`` or ``"float16"`` (half the size) for stored embeddings.
        store_retention: keep at most this many entries per epoch in a store opened from a
            path or URL: the best by ``objective`` plus the newest (see
            [`ReferenceStore`][lightning_rtd.store.ReferenceStore]); ``None`` keeps everything.
            Configure a [`ReferenceStore`][lightning_rtd.store.ReferenceStore] object directly for
            other policies.
        store_metrics: extra monitored keys written with each entry (e.g. ``["val_loss"]``).
        empty_value: value logged for "top" / "all" while no other trial has any entry (the
            first trial of a search), so schedulers always find the key. 0.0 means "no
            divergence measurable yet".
        prefix: prefix of the logged keys.
        prog_bar: show the values in the progress bar.
        log_barcode_every_n_epochs: if > 0, log a figure of the cross-barcode (to noise, or to
            the top trial without noise) to every logger that has ``log_image`` (W&B) every n
            epochs. Off by default.

    Example:
        >>> from lightning.pytorch import Trainer
        >>> from lightning_rtd import RTDCallback
        >>> trainer = Trainer(callbacks=[RTDCallback(layer="embedding", num_points=200)])
    """

    def __init__(
        self,
        layer: str | LayerFn = "embedding",
        num_points: int = 500,
        references: Sequence[str] | str = ("noise",),
        store: ReferenceStore | str | os.PathLike[str] | None = None,
        trial_id: str | None = None,
        objective: str | None = None,
        mode: Mode = "max",
        *,
        directions: Mode | dict[str, Mode] = "max",
        symmetric: bool = False,
        every_n_epochs: int = 1,
        noise: str = "matched",
        noise_dim: int = 16,
        noise_seed: int = 0,
        probe_seed: int = 0,
        max_references: int | None = 2,
        backend: BackendLike = "auto",
        dataloader_idx: int = 0,
        output_selector: OutputSelector = None,
        feature_reduction: FeatureReduction = "flatten",
        store_dtype: Literal["float32", "float16"] = "float32",
        store_retention: int | None = None,
        store_metrics: Sequence[str] = (),
        empty_value: float = 0.0,
        prefix: str = "rtd/",
        prog_bar: bool = False,
        log_barcode_every_n_epochs: int = 0,
    ) -> None:
        super().__init__()
        refs = (references,) if isinstance(references, str) else tuple(references)
        unknown = [r for r in refs if r not in REFERENCES]
        if unknown or not refs:
            raise ValueError(f"`references` must be a non-empty subset of {REFERENCES}, got {refs}")
        if not isinstance(layer, str) and not callable(layer):
            raise TypeError("`layer` must be a submodule name or a callable (module, batch)")
        if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 3:
            raise ValueError(f"`num_points` must be an integer >= 3, got {num_points!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"`mode` must be 'min' or 'max', got {mode!r}")
        if "top" in refs and not objective:
            raise ValueError(
                "the 'top' reference needs `objective=` (the monitored key that ranks trials, "
                "e.g. objective='val_acc', mode='max')"
            )
        if noise not in NOISE_KINDS:
            raise ValueError(f"`noise` must be one of {NOISE_KINDS}, got {noise!r}")
        if every_n_epochs < 1:
            raise ValueError(f"`every_n_epochs` must be >= 1, got {every_n_epochs}")
        if max_references is not None and max_references < 1:
            raise ValueError(f"`max_references` must be >= 1 or None, got {max_references}")
        dirs = {r: directions for r in refs} if isinstance(directions, str) else dict(directions)
        for r in refs:
            if dirs.get(r) not in ("min", "max"):
                raise ValueError(f"`directions` must give 'min' or 'max' for {r!r}, got {dirs}")

        self.layer = layer
        self.num_points = num_points
        self.references = refs
        self.trial_id = trial_id
        self.objective = objective
        self.mode: Mode = mode
        self.directions = {r: dirs[r] for r in refs}
        self.symmetric = symmetric
        self.every_n_epochs = every_n_epochs
        self.noise = noise
        self.noise_dim = noise_dim
        self.noise_seed = noise_seed
        self.probe_seed = probe_seed
        self.max_references = max_references
        self.backend = backend
        self.dataloader_idx = dataloader_idx
        self.output_selector = output_selector
        self.feature_reduction = feature_reduction
        self.store_dtype = store_dtype
        self.store_retention = store_retention
        self.store_metrics = tuple(store_metrics)
        self.empty_value = float(empty_value)
        self.prefix = prefix
        self.prog_bar = prog_bar
        self.log_barcode_every_n_epochs = log_barcode_every_n_epochs

        self._store_arg = store
        self.store: ReferenceStore | None = None
        self.probe: np.ndarray | None = None
        self.dataset_size: int | None = None
        self.written_epochs: set[int] = set()
        self.last_values: dict[str, float] = {}
        self.last_reference_epochs: dict[str, int | None] = {}
        self._capture: ProbeCapture | None = None
        self._hook: Any = None
        self._pending: tuple[int, np.ndarray] | None = None
        self._barcode: Any = None

    # ---- identity ----------------------------------------------------------------------------

    @property
    def state_key(self) -> str:
        layer = self.layer if isinstance(self.layer, str) else getattr(self.layer, "__name__", "fn")
        return self._generate_state_key(
            layer=layer, references=self.references, num_points=self.num_points, prefix=self.prefix
        )

    @property
    def monitor_modes(self) -> dict[str, Mode]:
        """Logged key -> declared direction (``"max"`` / ``"min"``) of each RTD objective."""
        return {self.key(r): self.directions[r] for r in self.references}

    def key(self, reference: str) -> str:
        """The logged key of a reference, e.g. ``key("noise") == "rtd/noise"``."""
        return f"{self.prefix}{reference}"

    @property
    def fingerprint(self) -> ProbeFingerprint | None:
        """Identity of the probe set (``None`` before the first validation epoch)."""
        if self.probe is None or self.dataset_size is None:
            return None
        return ProbeFingerprint.from_indices(self.probe, self.dataset_size)

    # ---- set-up ------------------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if isinstance(self.layer, str):
            resolve_layer(pl_module, self.layer)  # fail early with the list of submodules
        if self.trial_id is None:
            generated = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self.trial_id = trainer.strategy.broadcast(generated, src=0)
        if self.store is None:
            self.store = self._open_store(trainer)

    def _open_store(self, trainer: Trainer) -> ReferenceStore | None:
        arg = self._store_arg
        if arg is None and os.environ.get(STORE_ENV_VAR):
            arg = os.environ[STORE_ENV_VAR]
        if arg is None:
            if not ({"top", "all"} & set(self.references)):
                return None
            arg = os.path.join(trainer.default_root_dir, "rtd-store")
        if isinstance(arg, ReferenceStore):
            return arg
        return open_store(
            arg,
            dtype=self.store_dtype,
            max_entries_per_epoch=self.store_retention,
            retention_objective=self.objective,
            retention_mode=self.mode,
        )

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for logger in trainer.loggers:
            logger.log_hyperparams({"rtd_directions": self.monitor_modes})

    # ---- capture -----------------------------------------------------------------------------

    def _computes(self, trainer: Trainer) -> bool:
        first = not self.last_values
        return first or (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not self._computes(trainer):
            return
        loaders = trainer.val_dataloaders
        if isinstance(loaders, (list, tuple)):
            if self.dataloader_idx >= len(loaders):
                raise ValueError(
                    f"RTDCallback: dataloader_idx={self.dataloader_idx} but there are only "
                    f"{len(loaders)} validation dataloaders"
                )
            loader = loaders[self.dataloader_idx]
        else:
            loader = loaders
        num_batches = trainer.num_val_batches
        limit = num_batches[self.dataloader_idx] if isinstance(num_batches, list) else num_batches
        batches = batch_indices(loader, limit)
        dataset_size = len(loader.dataset)
        if self.probe is None:
            self._choose_probe(trainer, pl_module, batches, dataset_size)
        elif self.dataset_size != dataset_size:
            raise ValueError(
                f"RTDCallback: the validation set has {dataset_size} samples, but the probe was "
                f"drawn from {self.dataset_size}; the probe set must stay fixed"
            )
        self._capture = ProbeCapture(
            self.probe, batches, self.output_selector, self.feature_reduction
        )
        if isinstance(self.layer, str):
            module = resolve_layer(pl_module, self.layer)
            self._hook = module.register_forward_hook(self._capture.hook)

    def _choose_probe(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batches: list[list[int]],
        dataset_size: int,
    ) -> None:
        seen = torch.zeros(dataset_size, dtype=torch.bool, device=pl_module.device)
        for batch in batches:
            seen[torch.tensor(batch, dtype=torch.long, device=seen.device)] = True
        if trainer.world_size > 1:
            seen = trainer.strategy.all_gather(seen.to(torch.uint8)).reshape(-1, dataset_size)
            seen = seen.bool().any(dim=0)
        candidates = torch.nonzero(seen).flatten().cpu().numpy()
        if len(candidates) < self.num_points and trainer.is_global_zero:
            warnings.warn(
                f"RTDCallback: num_points={self.num_points} but validation sees only "
                f"{len(candidates)} samples; using all {len(candidates)} as the probe set",
                RTDWarning,
                stacklevel=2,
            )
        if len(candidates) < 3:
            raise ValueError(
                f"RTDCallback: validation sees only {len(candidates)} samples; RTD needs >= 3"
            )
        self.probe = choose_probe(candidates, self.num_points, self.probe_seed)
        self.dataset_size = dataset_size

    def on_validation_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._capture is not None and dataloader_idx == self.dataloader_idx:
            self._capture.start_batch(batch_idx)

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        cap = self._capture
        if cap is None or dataloader_idx != self.dataloader_idx:
            return
        if not isinstance(self.layer, str) and cap.wants(batch_idx):
            with torch.no_grad():
                cap.add(self.layer(pl_module, batch))
        cap.end_batch()

    # ---- gather, compute, log ----------------------------------------------------------------

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self._capture is None:  # not a computing epoch: repeat the last values
            self._log(pl_module, self.last_values)
            return
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        embeddings = self._gather(trainer, pl_module, self._capture)
        self._capture = None
        epoch = trainer.current_epoch + 1
        values: dict[str, float] | None = None
        if trainer.is_global_zero:
            values = self._compute(embeddings, epoch)
            finite = bool(torch.isfinite(embeddings).all())
            self._pending = (epoch, embeddings.cpu().numpy()) if finite else None
        values = trainer.strategy.broadcast(values, src=0)
        self.last_values = dict(values)
        self._log(pl_module, values)
        if trainer.is_global_zero and self._barcode is not None:
            self._log_barcode(trainer, self._barcode)
        self._barcode = None

    def _gather(self, trainer: Trainer, pl_module: LightningModule, cap: ProbeCapture) -> Tensor:
        buffer, filled = cap.buffer, cap.filled.to(pl_module.device)
        if trainer.world_size > 1:
            width = torch.tensor([-1 if buffer is None else buffer.shape[1]], device=filled.device)
            width = int(trainer.strategy.all_gather(width).max())
            if buffer is None and width > 0:
                buffer = torch.zeros(len(cap.probe), width, device=filled.device)
            if buffer is not None:
                buffers = trainer.strategy.all_gather(buffer.to(filled.device))
                masks = trainer.strategy.all_gather(filled)
                # each probe row from the first process that saw it (padding repeats are equal)
                first = masks.to(torch.uint8).argmax(dim=0)
                buffer = buffers[first, torch.arange(len(cap.probe), device=first.device)]
                filled = masks.any(dim=0)
        if buffer is None or not bool(filled.all()):
            missing = len(cap.probe) if buffer is None else int((~filled).sum())
            raise RuntimeError(
                f"RTDCallback: {missing} of {len(cap.probe)} probe samples never reached layer "
                f"{self.layer!r} during validation (was the layer skipped, or the validation "
                "loop cut short?)"
            )
        return buffer

    def _compute(self, embeddings: Tensor, epoch: int) -> dict[str, float]:
        nan = float("nan")
        if not bool(torch.isfinite(embeddings).all()):
            warnings.warn(
                f"RTDCallback: the probe embeddings of epoch {epoch} contain NaN or Inf; logging "
                "NaN (EarlyStopping(check_finite=True) stops such runs) and writing nothing to "
                "the store",
                RTDWarning,
                stacklevel=2,
            )
            return {r: nan for r in self.references}
        values: dict[str, float] = {}
        pairs: dict[Any, tuple[Tensor, Tensor | np.ndarray]] = {}  # RTD jobs of this epoch
        if "noise" in self.references:
            pairs["noise"] = noise_pair(
                embeddings, self.noise, seed=self.noise_seed, noise_dim=self.noise_dim
            )
        wanted: dict[str, list[tuple[str, int]]] = {}
        if {"top", "all"} & set(self.references):
            try:
                wanted, arrays, ref_epoch = self._store_references(epoch)
            except StoreUnavailableError as exc:
                warnings.warn(
                    f"RTDCallback: reference store unavailable ({exc}); logging NaN for "
                    "'top'/'all' this epoch, training continues",
                    RTDWarning,
                    stacklevel=2,
                )
                values.update({r: nan for r in ("top", "all") if r in self.references})
            else:
                # one RTD per distinct stored entry (the top trial is often in the "all" sample)
                pairs.update({key: (embeddings, a) for key, a in arrays.items()})
        # every RTD of the epoch in one call: the persistence computations share one thread pool
        scores = dict(zip(pairs, self._score(list(pairs.values())), strict=True))
        if "noise" in pairs:
            values["noise"] = scores["noise"]
        for ref, keys in wanted.items():
            got = [scores[k] for k in keys if k in scores]
            values[ref] = float(np.mean(got)) if got else self.empty_value
            self.last_reference_epochs[ref] = ref_epoch if got else None
        if self._wants_barcode(epoch):
            # the noise barcode when noise is a reference, else the one to the top trial
            key = "noise" if "noise" in pairs else next(iter(wanted.get("top", [])), None)
            if key in pairs:
                self._barcode = rtd_barcode(*pairs[key], backend=self.backend)
        return values

    def _score(self, pairs: Sequence[tuple[Tensor, Tensor | np.ndarray]]) -> list[float]:
        """RTD of every (embeddings, reference) pair of one epoch."""
        return rtd_pairs(pairs, symmetric=self.symmetric, backend=self.backend)

    def _reference_entries(self, epoch: int) -> tuple[list[StoreEntry], int | None]:
        """Other trials' entries (no embeddings) at ``epoch``, else at the latest earlier one."""
        assert self.store is not None
        entries = self.store.entries(epoch, exclude_trial=self.trial_id, load_embeddings=False)
        if entries:
            return entries, epoch
        for earlier in sorted((e for e in self.store.epochs() if e < epoch), reverse=True):
            entries = self.store.entries(
                earlier, exclude_trial=self.trial_id, load_embeddings=False
            )
            if entries:
                return entries, earlier
        return [], None

    def _load(self, entry: StoreEntry) -> np.ndarray | None:
        assert self.store is not None and self.fingerprint is not None
        self.fingerprint.check_compatible(entry.fingerprint, what=entry.label)
        full = self.store.get(entry.trial_id, entry.epoch)
        return None if full is None else full.embeddings

    def _store_references(
        self, epoch: int
    ) -> tuple[dict[str, list[tuple[str, int]]], dict[tuple[str, int], np.ndarray], int | None]:
        """The stored references of this epoch: the (trial, epoch) keys wanted by "top" and
        "all", the loaded embeddings of each distinct key, and the epoch they come from."""
        entries, ref_epoch = self._reference_entries(epoch)
        chosen: dict[str, list[StoreEntry]] = {}
        if "top" in self.references:
            assert self.objective is not None
            best = best_entry(entries, self.objective, self.mode)
            chosen["top"] = [] if best is None else [best]
        if "all" in self.references:
            chosen["all"] = sample_entries(
                entries,
                self.max_references,
                seed=self.noise_seed,
                trial_id=str(self.trial_id),
                epoch=epoch,
            )
        wanted = {ref: [(e.trial_id, e.epoch) for e in group] for ref, group in chosen.items()}
        unique = {(e.trial_id, e.epoch): e for group in chosen.values() for e in group}
        loaded = {key: self._load(e) for key, e in unique.items()}
        arrays = {key: a for key, a in loaded.items() if a is not None}
        return wanted, arrays, ref_epoch

    def _log(self, pl_module: LightningModule, values: dict[str, float]) -> None:
        for ref, value in values.items():
            pl_module.log(
                self.key(ref),
                float(value),
                on_step=False,
                on_epoch=True,
                prog_bar=self.prog_bar,
                logger=True,
                batch_size=1,
            )

    def _wants_barcode(self, epoch: int) -> bool:
        k = self.log_barcode_every_n_epochs
        return k > 0 and epoch % k == 0

    def _log_barcode(self, trainer: Trainer, barcode: Any) -> None:
        from lightning_rtd.plotting import plot_barcode

        loggers = [lg for lg in trainer.loggers if hasattr(lg, "log_image")]
        if not loggers:
            return
        import matplotlib.pyplot as plt

        fig = plot_barcode(barcode)
        # Lightning logs this epoch's validation scalars at the count of batches that stepped
        # (one less than global_step while validating at an epoch's end): use the same step.
        step = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step)
        try:
            for lg in loggers:
                lg.log_image(key=f"{self.prefix}barcode", images=[fig], step=step)
        finally:
            plt.close(fig)

    # ---- store -------------------------------------------------------------------------------

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pending, self._pending = self._pending, None
        if pending is None or not trainer.is_global_zero or self.store is None:
            return
        epoch, embeddings = pending
        metrics = trainer.callback_metrics
        keys = ([self.objective] if self.objective else []) + list(self.store_metrics)
        objectives = {}
        for k in keys:
            if k in metrics:
                v = float(metrics[k])
                if math.isfinite(v):
                    objectives[k] = v
        entry = StoreEntry(
            trial_id=str(self.trial_id),
            epoch=epoch,
            embeddings=embeddings,
            objectives=objectives,
            fingerprint=self.fingerprint,  # type: ignore[arg-type]
            meta={
                "rtd": {self.key(r): v for r, v in self.last_values.items()},
                "directions": self.monitor_modes,
            },
        )
        try:
            self.store.put(entry)
            self.written_epochs.add(epoch)
        except StoreUnavailableError as exc:
            warnings.warn(
                f"RTDCallback: could not write epoch {epoch} to the reference store ({exc}); "
                "training continues",
                RTDWarning,
                stacklevel=2,
            )

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._capture = None

    # ---- checkpointing -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "trial_id": self.trial_id,
            "probe": None if self.probe is None else self.probe.tolist(),
            "dataset_size": self.dataset_size,
            "written_epochs": sorted(self.written_epochs),
            "last_values": dict(self.last_values),
            "noise": self.noise,
            "noise_dim": self.noise_dim,
            "noise_seed": self.noise_seed,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("trial_id") is not None:
            self.trial_id = state_dict["trial_id"]
        if state_dict.get("probe") is not None:
            self.probe = np.asarray(state_dict["probe"], dtype=np.int64)
            self.dataset_size = int(state_dict["dataset_size"])
        self.written_epochs = set(state_dict.get("written_epochs", []))
        self.last_values = dict(state_dict.get("last_values", {}))
        for name in ("noise", "noise_dim", "noise_seed"):
            if name in state_dict and state_dict[name] != getattr(self, name):
                warnings.warn(
                    f"RTDCallback: resuming with {name}={getattr(self, name)!r} but the checkpoint "
                    f"used {state_dict[name]!r}; keeping the checkpoint's value so the noise "
                    "reference stays the same",
                    RTDWarning,
                    stacklevel=2,
                )
                setattr(self, name, state_dict[name])
