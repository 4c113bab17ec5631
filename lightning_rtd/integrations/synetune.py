"""Syne Tune 0.16 integration: report monitor metrics to schedulers, parse trial arguments and
build scheduler presets that search on Representation Topology Divergence.

Three pieces, usable separately:

1. `SyneTuneReporter`, a Lightning callback that sends one report per validated training epoch
   to Syne Tune: the 1-based epoch and every metric the scheduler reads, always as plain finite
   floats (a missing or non-finite value is replaced by the worst value seen so far, or raises).
   It is a ``lightning.pytorch.callbacks.Checkpoint`` so that it runs in Lightning's monitoring
   phase, after the epoch's ``ModelCheckpoint`` has been written.
2. `parse_trial_args`, which turns the ``--key value`` arguments ``LocalBackend`` gives a
   training script into a typed config and a `TrialContext` (trial id, checkpoint folder,
   checkpoint to resume from, RTD reference store shared by the trials of one tuning run).
3. `make_scheduler`, named scheduler presets that return the scheduler together with the
   objectives the reporter must send (`list_presets`).

Example, on the tuner side:

```python
from syne_tune import StoppingCriterion, Tuner
from syne_tune.backend import LocalBackend
from syne_tune.config_space import loguniform
from lightning_rtd.integrations.synetune import make_scheduler

preset = make_scheduler(
    "moasha-noise-max", {"lr": loguniform(1e-4, 1e-1), "epochs": 9},
    metric="val_acc", mode="max", max_t=9, random_seed=0,
)
Tuner(
    trial_backend=LocalBackend(entry_point="train.py"),
    scheduler=preset.scheduler,
    stop_criterion=StoppingCriterion(max_wallclock_time=3600),
    n_workers=2,
).run()
```

and in ``train.py`` (the objectives are those of the preset: ``val_acc`` and ``rtd/noise``, both
maximised, reported negated as ``neg_val_acc`` and ``neg_rtd/noise`` since MOASHA minimises all
of its objectives):

```python
config, ctx = parse_trial_args(defaults={"lr": 1e-3, "epochs": 9})
reporter = SyneTuneReporter(
    [ObjectiveSpec("val_acc", "max"), ObjectiveSpec("rtd/noise", "max")], minimize_all=True
)
trainer = Trainer(
    max_epochs=config["epochs"], callbacks=[rtd_callback, ctx.model_checkpoint(), reporter]
)
trainer.fit(model, ckpt_path=ctx.resume_from)
```

Syne Tune is imported only when a report is sent or a scheduler is built, so trial plumbing works
without it; Lightning is imported with this module.
"""

from __future__ import annotations

import ast
import json
import math
import os
import secrets
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn

from lightning_rtd.errors import RTDWarning
from lightning_rtd.integrations.presets import PRESETS, Mode
from lightning_rtd.store import STORE_ENV_VAR

__all__ = [
    "CHECKPOINT_ARG",
    "CONFIG_JSON_ARG",
    "NEGATED_PREFIX",
    "PRESET_ALIASES",
    "STORE_ARG",
    "STORE_DIRNAME",
    "STORE_ENV_VAR",
    "EpochReporter",
    "InvalidMetricError",
    "ObjectiveSpec",
    "Preset",
    "ReportBuilder",
    "SyneTuneReporter",
    "TrialContext",
    "list_presets",
    "make_scheduler",
    "negated_name",
    "parse_trial_args",
]

InvalidPolicy = Literal["worst", "raise"]
"""What to do with a missing or non-finite objective value, see `ReportBuilder`."""

NEGATED_PREFIX = "neg_"
"""Prefix of the name under which a maximised objective is reported negated."""

CHECKPOINT_ARG = "st_checkpoint_dir"
"""Argument ``LocalBackend`` passes with the trial's checkpoint folder (``syne_tune.constants``)."""

CONFIG_JSON_ARG = "st_config_json_filename"
"""Argument ``LocalBackend(pass_args_as_json=True)`` passes with the config JSON file."""

STORE_ARG = "rtd_store"
"""Trial argument (``--rtd_store URL``) that overrides the RTD reference store location."""

STORE_DIRNAME = "rtd-store"
"""Name of the store folder inside a tuning run's folder (or a standalone run's root)."""

LAST_CHECKPOINT = "last.ckpt"

_RESERVED_PREFIX = "st_"  # Syne Tune rejects reported keys starting with it
_MODES = ("min", "max")
_POLICIES = ("worst", "raise")
_DEFAULT_RTD_KEYS = {"noise": "rtd/noise", "top": "rtd/top", "all": "rtd/all"}


class InvalidMetricError(ValueError):
    """An objective is missing or non-finite and its policy is ``"raise"``."""


def negated_name(key: str) -> str:
    """Name under which the negation of a maximised objective is reported.

    Args:
        key: Metric name, e.g. ``"val_acc"``.

    Returns:
        ``"neg_" + key``, e.g. ``"neg_val_acc"``.
    """
    return NEGATED_PREFIX + key


# --------------------------------------------------------------------------------------------
# Objectives and reports
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectiveSpec:
    """A metric a scheduler optimises, and its direction.

    Args:
        key: Name of the metric in ``trainer.callback_metrics`` (``"val_acc"``, ``"rtd/noise"``).
        mode: ``"min"`` if smaller is better, ``"max"`` if larger is better.

    Raises:
        ValueError: Empty key, key starting with Syne Tune's reserved ``"st_"`` or unknown mode.
    """

    key: str
    mode: Mode

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"objective key must be a non-empty string, got {self.key!r}")
        if self.key.startswith(_RESERVED_PREFIX):
            raise ValueError(
                f"objective key {self.key!r} starts with {_RESERVED_PREFIX!r}, "
                "a prefix Syne Tune reserves for itself"
            )
        if self.mode not in _MODES:
            raise ValueError(f"objective mode must be 'min' or 'max', got {self.mode!r}")

    def reported_key(self, minimize_all: bool = False) -> str:
        """Name the scheduler reads this objective under.

        Args:
            minimize_all: Whether the scheduler minimises every objective (MOASHA); a maximised
                objective is then reported negated under `negated_name`.

        Returns:
            ``key``, or ``"neg_" + key`` for a ``"max"`` objective when ``minimize_all``.
        """
        return negated_name(self.key) if minimize_all and self.mode == "max" else self.key

    def is_worse(self, a: float, b: float) -> bool:
        """Whether value ``a`` is strictly worse than ``b`` for this objective."""
        return a > b if self.mode == "min" else a < b


ObjectiveLike = ObjectiveSpec | tuple[str, str]


def _as_objectives(
    objectives: ObjectiveLike | Sequence[ObjectiveLike],
) -> tuple[ObjectiveSpec, ...]:
    if isinstance(objectives, ObjectiveSpec):
        objectives = [objectives]
    elif (
        isinstance(objectives, tuple)
        and len(objectives) == 2
        and all(isinstance(x, str) for x in objectives)
    ):
        objectives = [objectives]  # a single ("key", "mode") pair
    out = []
    for obj in objectives:
        if isinstance(obj, ObjectiveSpec):
            out.append(obj)
        elif isinstance(obj, (tuple, list)) and len(obj) == 2:
            out.append(ObjectiveSpec(obj[0], obj[1]))
        else:
            raise TypeError(f"expected an ObjectiveSpec or a (key, mode) pair, got {obj!r}")
    if not out:
        raise ValueError("at least one objective is needed")
    keys = [o.key for o in out]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate objective keys: {keys}")
    return tuple(out)


def _to_float(value: Any, key: str) -> float | None:
    """A metric value as a Python float; ``None`` when absent. Non-finite values pass through."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(
                f"metric {key!r} is a tensor of shape {tuple(value.shape)}; a scalar is needed"
            )
        return float(value.detach().cpu().reshape(()).item())
    if isinstance(value, (np.ndarray, np.generic)):
        arr = np.asarray(value)
        if arr.size != 1:
            raise TypeError(f"metric {key!r} is an array of shape {arr.shape}; a scalar is needed")
        return float(arr.reshape(()).item())
    if isinstance(value, (bool, int, float)):
        return float(value)
    raise TypeError(f"metric {key!r} has unsupported type {type(value).__name__}")


def _check_static(extra: Mapping[str, Any] | None) -> dict[str, str | int | float | bool]:
    out: dict[str, str | int | float | bool] = {}
    for k, v in (extra or {}).items():
        if not isinstance(k, str) or not k or k.startswith(_RESERVED_PREFIX):
            raise ValueError(f"invalid extra key {k!r} (empty, not a string or starts with 'st_')")
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"extra value {k!r}={v!r} is not finite")
        if not isinstance(v, (str, bool, int, float)):
            raise TypeError(f"extra value {k!r} must be a str, int, float or bool, got {v!r}")
        out[k] = v
    return out


class ReportBuilder:
    """Turns raw metric values into one Syne Tune report: plain finite floats, every objective
    present, maximised objectives negated when the scheduler minimises everything.

    This is the Lightning-free core of `SyneTuneReporter`; use it directly in scripts that are
    not Lightning runs.

    Policy for a missing or non-finite (NaN, inf) objective, chosen per objective:

    - ``"worst"`` (default): report the worst finite value this builder has seen for that
      objective (the largest for ``"min"``, the smallest for ``"max"``), or, before any finite
      value was seen, a sentinel: ``+sentinel`` for ``"min"`` objectives and ``-sentinel`` for
      ``"max"`` ones, or the value given in ``sentinels``. The trial is ranked last rather than
      arbitrarily (Syne Tune ranks NaN at random) and the tuning run does not abort (it does when
      a scheduler metric is absent from a report).
    - ``"raise"``: raise `InvalidMetricError`, which fails the trial (Syne Tune counts it
      against ``max_failures``).

    Substituted values are not added to the worst-seen record.

    Args:
        objectives: The objectives the scheduler reads, as ``ObjectiveSpec`` or ``(key, mode)``.
        resource_attr: Key of the resource level (the scheduler's ``time_attr``).
        minimize_all: Report each ``"max"`` objective negated as ``"neg_" + key`` (its raw value
            is still reported under ``key``), for schedulers with a single ``do_minimize=True``
            over all objectives such as MOASHA.
        on_invalid: ``"worst"`` or ``"raise"``, for all objectives or as a ``{key: policy}``
            mapping (objectives not in it use ``"worst"``).
        sentinel: Magnitude of the fallback value used before any finite value was seen.
        sentinels: Exact fallback values per objective key, in the metric's own (raw) scale.
        extra: Static key/values added to every report (str, int, float or bool).
        extra_metrics: Further metrics reported when present and finite, omitted otherwise (for
            analysis only; never read by the scheduler).

    Raises:
        ValueError: Invalid objectives, policy, sentinel or names clashing with each other.
    """

    def __init__(
        self,
        objectives: ObjectiveLike | Sequence[ObjectiveLike],
        *,
        resource_attr: str = "epoch",
        minimize_all: bool = False,
        on_invalid: InvalidPolicy | Mapping[str, InvalidPolicy] = "worst",
        sentinel: float = 1e6,
        sentinels: Mapping[str, float] | None = None,
        extra: Mapping[str, Any] | None = None,
        extra_metrics: Sequence[str] = (),
    ) -> None:
        self.objectives = _as_objectives(objectives)
        self.resource_attr = resource_attr
        self.minimize_all = bool(minimize_all)
        keys = [o.key for o in self.objectives]
        if not resource_attr or resource_attr.startswith(_RESERVED_PREFIX):
            raise ValueError(f"invalid resource_attr {resource_attr!r}")

        if isinstance(on_invalid, str):
            policies = dict.fromkeys(keys, on_invalid)
        else:
            unknown = set(on_invalid) - set(keys)
            if unknown:
                raise ValueError(f"on_invalid names unknown objectives {sorted(unknown)}")
            policies = {k: on_invalid.get(k, "worst") for k in keys}
        for k, p in policies.items():
            if p not in _POLICIES:
                raise ValueError(f"policy for {k!r} must be 'worst' or 'raise', got {p!r}")
        self.on_invalid: dict[str, str] = policies

        if not (math.isfinite(sentinel) and sentinel > 0):
            raise ValueError(f"sentinel must be a finite positive magnitude, got {sentinel!r}")
        self._fallback = {
            o.key: (float(sentinel) if o.mode == "min" else -float(sentinel))
            for o in self.objectives
        }
        for k, v in (sentinels or {}).items():
            if k not in self._fallback:
                raise ValueError(f"sentinels names unknown objective {k!r}")
            if not math.isfinite(float(v)):
                raise ValueError(f"sentinel for {k!r} must be finite, got {v!r}")
            self._fallback[k] = float(v)

        self.extra = _check_static(extra)
        names = [resource_attr, *self.reported_names]
        names += [o.key for o in self.objectives if o.reported_key(self.minimize_all) != o.key]
        if len(set(names)) != len(names):
            raise ValueError(f"reported names clash: {names}")
        clash = set(self.extra) & set(names)
        if clash:
            raise ValueError(f"extra keys clash with reported metrics: {sorted(clash)}")
        self.extra_metrics: tuple[str, ...] = tuple(
            m for m in dict.fromkeys(extra_metrics) if m not in names and m not in self.extra
        )
        for m in self.extra_metrics:
            if m.startswith(_RESERVED_PREFIX):
                raise ValueError(f"extra metric {m!r} starts with 'st_'")
        self._worst: dict[str, float] = {}
        self.last_substituted: tuple[str, ...] = ()

    @property
    def reported_names(self) -> tuple[str, ...]:
        """Names of the objectives as the scheduler reads them (``Preset.metric_names``)."""
        return tuple(o.reported_key(self.minimize_all) for o in self.objectives)

    @property
    def worst_seen(self) -> dict[str, float]:
        """Worst finite raw value seen so far per objective key (a copy)."""
        return dict(self._worst)

    def fallback(self, key: str) -> float:
        """Raw value substituted for objective ``key`` if it were invalid now."""
        return self._worst.get(key, self._fallback[key])

    def build(self, resource: int | float, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Build one report.

        Args:
            resource: Resource level, e.g. the 1-based epoch; must be finite and positive.
            metrics: Raw metric values (tensors, NumPy or Python scalars; missing keys allowed).

        Returns:
            ``{resource_attr: resource, <reported objectives>..., <raw values of negated
            objectives>..., <present extra metrics>..., <extra>...}`` with plain Python values.
            `last_substituted` lists the objectives whose value was replaced.

        Raises:
            InvalidMetricError: An objective with policy ``"raise"`` is missing or non-finite.
            TypeError: A metric is not a scalar.
            ValueError: ``resource`` is not finite and positive.
        """
        if isinstance(resource, bool) or not isinstance(resource, (int, float, np.number)):
            raise ValueError(f"resource must be a number, got {resource!r}")
        resource = resource.item() if isinstance(resource, np.number) else resource
        if not math.isfinite(resource) or resource <= 0:
            raise ValueError(
                f"resource must be finite and > 0 (report 1-based epochs), got {resource!r}"
            )
        values: dict[str, float] = {}
        substituted: list[str] = []
        for obj in self.objectives:
            value = _to_float(metrics.get(obj.key), obj.key)
            if value is None or not math.isfinite(value):
                if self.on_invalid[obj.key] == "raise":
                    what = "missing" if value is None else f"non-finite ({value})"
                    raise InvalidMetricError(
                        f"objective {obj.key!r} is {what} at {self.resource_attr}={resource}; "
                        f"present metrics: {sorted(metrics)}"
                    )
                values[obj.key] = self.fallback(obj.key)
                substituted.append(obj.key)
            else:
                values[obj.key] = value
        # update the worst-seen record only once the whole report is valid
        for obj in self.objectives:
            if obj.key in substituted:
                continue
            v = values[obj.key]
            if obj.key not in self._worst or obj.is_worse(v, self._worst[obj.key]):
                self._worst[obj.key] = v

        report: dict[str, Any] = {self.resource_attr: resource}
        for obj in self.objectives:
            name = obj.reported_key(self.minimize_all)
            report[name] = -values[obj.key] if name != obj.key else values[obj.key]
        for obj in self.objectives:
            if obj.reported_key(self.minimize_all) != obj.key:
                report[obj.key] = values[obj.key]
        for key in self.extra_metrics:
            value = _to_float(metrics.get(key), key)
            if value is not None and math.isfinite(value):
                report[key] = value
        report.update(self.extra)
        self.last_substituted = tuple(substituted)
        return report

    def state_dict(self) -> dict[str, Any]:
        """The worst values seen, so that a resumed trial keeps the same substitution policy."""
        return {"worst_seen": dict(self._worst)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the worst values seen from `state_dict`.

        Keys of objectives this builder does not have are ignored.
        """
        keys = {o.key for o in self.objectives}
        self._worst = {
            k: float(v)
            for k, v in dict(state_dict.get("worst_seen", {})).items()
            if k in keys and math.isfinite(float(v))
        }


class EpochReporter(Checkpoint):
    """Shared logic of the per-epoch scheduler reporters (`SyneTuneReporter`, and
    ``RayTuneReporter`` in `lightning_rtd.integrations.ray`): mark a validated epoch in
    ``on_validation_end``, report once in ``on_train_epoch_end`` from global rank 0, keep the
    worst-seen state on every rank, warn about a ``ModelCheckpoint`` listed after the reporter
    and about a ``fit`` without reports. Subclasses say how a report is sent (`_send`).

    Args:
        objectives: Objectives the scheduler reads, as ``ObjectiveSpec`` or ``(key, mode)``.
        on_report: Called with each report dict after it was sent (rank 0 only).
        reporter: The sending callable (see the subclass).
        **builder_kwargs: Keyword arguments of `ReportBuilder`.
    """

    engine = "the scheduler"
    """Name used in messages."""

    def __init__(
        self,
        objectives: ObjectiveLike | Sequence[ObjectiveLike],
        *,
        on_report: Callable[[dict[str, Any]], None] | None = None,
        reporter: Callable[..., Any] | None = None,
        **builder_kwargs: Any,
    ) -> None:
        super().__init__()
        self.builder = ReportBuilder(objectives, **builder_kwargs)
        self.on_report = on_report
        self.reports: list[dict[str, Any]] = []
        self._reporter = reporter
        self._pending_epoch: int | None = None
        self._reports_before_fit = 0

    @classmethod
    def _preset_kwargs(cls, preset: Any) -> dict[str, Any]:
        return {}

    @classmethod
    def from_preset(cls, preset: Any, **kwargs: Any) -> Any:
        """A reporter sending exactly what ``preset.scheduler`` reads, plus its extra metrics.

        Args:
            preset: A preset of this engine (`make_scheduler`, or ``ray_scheduler``).
            **kwargs: Further arguments of the reporter (``extra_metrics`` are added to the
                preset's).

        Returns:
            The reporter.
        """
        extra_metrics = (*preset.extra_metrics, *kwargs.pop("extra_metrics", ()))
        return cls(
            preset.objectives,
            resource_attr=preset.resource_attr,
            extra_metrics=extra_metrics,
            **cls._preset_kwargs(preset),
            **kwargs,
        )

    @property
    def objectives(self) -> tuple[ObjectiveSpec, ...]:
        """The objectives, in their own (raw) direction."""
        return self.builder.objectives

    @property
    def reported_names(self) -> tuple[str, ...]:
        """Objective names as sent to, and read by, the scheduler."""
        return self.builder.reported_names

    @property
    def state_key(self) -> str:
        """Unique per resource key and objectives, so several reporters can coexist."""
        return self._generate_state_key(
            resource_attr=self.builder.resource_attr, objectives=list(self.reported_names)
        )

    def _send(self, report: dict[str, Any]) -> None:
        raise NotImplementedError

    def report(self, resource: int | float, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Build a report from raw metrics and send it now.

        Usable outside Lightning; the callback hooks call it on global rank 0.

        Args:
            resource: Resource level (1-based epoch).
            metrics: Raw metric values (tensors, NumPy or Python scalars).

        Returns:
            The report sent (plain Python values).

        Raises:
            InvalidMetricError: An objective with policy ``"raise"`` is invalid.
        """
        report = self.builder.build(resource, metrics)
        if self.builder.last_substituted:
            warnings.warn(
                f"{self.engine} report at {self.builder.resource_attr}={resource}: objectives "
                f"{list(self.builder.last_substituted)} missing or non-finite, reported as "
                "the worst value seen (or the sentinel)",
                RTDWarning,
                stacklevel=2,
            )
        # recorded first: a scheduler may end the trial inside the send (Ray: SystemExit)
        self.reports.append(dict(report))
        self._send(dict(report))
        if self.on_report is not None:
            self.on_report(dict(report))
        return report

    # ---- Lightning hooks -------------------------------------------------------------------

    def _on_fit_setup(self, trainer: pl.Trainer) -> None:
        """Engine-specific set-up at the start of ``fit``."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Reset the per-fit state and check that no ``ModelCheckpoint`` comes after it."""
        if stage != TrainerFn.FITTING:
            return
        self._pending_epoch = None
        self._reports_before_fit = len(self.reports)
        self._on_fit_setup(trainer)
        callbacks = list(trainer.callbacks)
        if self in callbacks:
            later = callbacks[callbacks.index(self) + 1 :]
            if any(isinstance(cb, ModelCheckpoint) for cb in later):
                rank_zero_warn(
                    f"{type(self).__name__} is listed before a ModelCheckpoint: reports will be "
                    f"sent before the epoch's checkpoint is written, and {self.engine} may end "
                    "the trial in between. List the reporter after ModelCheckpoint.",
                    category=RTDWarning,
                )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Mark the current training epoch as validated (sanity check and non-fit runs excluded)."""
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        self._pending_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report once if this epoch was validated; rank 0 sends, other ranks only track state."""
        if self._pending_epoch is None or self._pending_epoch != trainer.current_epoch:
            self._pending_epoch = None
            return
        self._pending_epoch = None
        resource = trainer.current_epoch + 1
        metrics = dict(trainer.callback_metrics)
        if trainer.is_global_zero:
            self.report(resource, metrics)
        else:
            # same policy on every rank: a "raise" fails all ranks, the worst-seen record agrees
            self.builder.build(resource, metrics)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Warn when ``fit`` made no report: the scheduler then never saw this trial."""
        if trainer.is_global_zero and len(self.reports) == self._reports_before_fit:
            rank_zero_warn(
                f"{type(self).__name__} sent no report during fit (no validation epoch ended); "
                f"{self.engine} never saw this trial (Syne Tune even aborts the whole tuning "
                "run). Check max_epochs, check_val_every_n_epoch and limit_val_batches.",
                category=RTDWarning,
            )

    def state_dict(self) -> dict[str, Any]:
        """Worst values seen per objective (saved in Lightning checkpoints)."""
        return self.builder.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the worst values seen from a checkpoint."""
        self.builder.load_state_dict(state_dict)


class SyneTuneReporter(EpochReporter):
    """Lightning callback that reports monitor metrics to Syne Tune once per validated epoch.

    When a validation run of ``trainer.fit`` ends (not the sanity check), the epoch is marked;
    at the end of that training epoch the reporter sends, from global rank 0 only, one
    ``syne_tune.Reporter`` report: ``{resource_attr: trainer.current_epoch + 1, ...}`` with the
    objectives read from ``trainer.callback_metrics`` as plain finite floats (see
    `ReportBuilder` for the policy on missing or non-finite values, negated names and extras).

    Why this hook: Lightning runs ``Checkpoint`` subclasses after all other callbacks and after
    the ``LightningModule``'s own hook, so metrics logged in ``on_validation_epoch_end`` (by
    the module or by an RTD callback) and in ``on_train_epoch_end`` are in ``callback_metrics``;
    and ``ModelCheckpoint`` writes the epoch's checkpoint either in ``on_validation_end``
    (``check_val_every_n_epoch > 1``, ``val_check_interval`` other than ``1.0``) or in
    ``on_train_epoch_end`` (validating once per epoch), both before the reporter's
    ``on_train_epoch_end`` when the reporter is listed after it. Syne Tune SIGKILLs a trial as
    soon as a report reaches ``max_t`` or the scheduler stops it, so writing the checkpoint
    before reporting matters; list this callback last. Several validations in one epoch
    (``val_check_interval=0.25``) give one report with the last validation's metrics, so the
    resource stays the integer epoch; epochs without validation give no report.

    Values are read as ``ModelCheckpoint`` and ``EarlyStopping`` read them: a metric logged in
    an earlier epoch but not in this one keeps its earlier value in ``callback_metrics`` and is
    reported with it; only a metric never logged during this ``fit`` counts as missing.

    A trial that ends without any report makes Syne Tune abort the whole tuning run; the reporter
    warns at the end of ``fit`` in that case (e.g. ``max_epochs < check_val_every_n_epoch``).

    Being a ``Checkpoint``, Lightning treats the reporter as a checkpoint callback:
    ``Trainer(enable_checkpointing=False)`` refuses it, Lightning no longer adds its default
    ``ModelCheckpoint`` (list one yourself, e.g. ``TrialContext.model_checkpoint()``), and
    ``trainer.checkpoint_callback`` (used by ``ckpt_path="best"``) is the first ``Checkpoint``
    in the list, so list the ``ModelCheckpoint`` first. The reporter warns at ``setup`` when a
    ``ModelCheckpoint`` comes after it.

    Args:
        objectives: Objectives the scheduler reads, as ``ObjectiveSpec`` or ``(key, mode)``; a
            `Preset` gives them (see `from_preset`).
        resource_attr: Key of the 1-based epoch (the scheduler's ``time_attr``).
        minimize_all: Report ``"max"`` objectives negated as ``"neg_" + key`` (for MOASHA).
        on_invalid: ``"worst"`` or ``"raise"``, globally or per objective key.
        sentinel: Magnitude of the fallback before any finite value was seen.
        sentinels: Exact fallback values per objective key.
        extra: Static key/values added to every report.
        extra_metrics: Metrics also reported when present and finite, for analysis.
        on_report: Called with each report dict after it was sent (rank 0 only).
        reporter: Callable receiving the report as keyword arguments; defaults to a
            ``syne_tune.Reporter()`` created at ``setup``.

    Attributes:
        reports: Every report sent by this callback, in order (without Syne Tune's own
            ``st_*`` keys).
        builder: The `ReportBuilder`.
    """

    engine = "Syne Tune"

    def __init__(
        self,
        objectives: ObjectiveLike | Sequence[ObjectiveLike],
        *,
        resource_attr: str = "epoch",
        minimize_all: bool = False,
        on_invalid: InvalidPolicy | Mapping[str, InvalidPolicy] = "worst",
        sentinel: float = 1e6,
        sentinels: Mapping[str, float] | None = None,
        extra: Mapping[str, Any] | None = None,
        extra_metrics: Sequence[str] = (),
        on_report: Callable[[dict[str, Any]], None] | None = None,
        reporter: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(
            objectives,
            on_report=on_report,
            reporter=reporter,
            resource_attr=resource_attr,
            minimize_all=minimize_all,
            on_invalid=on_invalid,
            sentinel=sentinel,
            sentinels=sentinels,
            extra=extra,
            extra_metrics=extra_metrics,
        )

    @classmethod
    def _preset_kwargs(cls, preset: Any) -> dict[str, Any]:
        return {"minimize_all": preset.minimize_all}

    def _on_fit_setup(self, trainer: pl.Trainer) -> None:
        # create the Syne Tune reporter now: its clock starts here
        if self._reporter is None and trainer.is_global_zero:
            self._reporter = _make_syne_tune_reporter()

    def _send(self, report: dict[str, Any]) -> None:
        if self._reporter is None:
            self._reporter = _make_syne_tune_reporter()
        self._reporter(**report)


def _make_syne_tune_reporter() -> Callable[..., Any]:
    try:
        from syne_tune import Reporter
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "SyneTuneReporter needs Syne Tune: pip install 'lightning-rtd[synetune]'"
        ) from err
    return Reporter()


# --------------------------------------------------------------------------------------------
# Trial plumbing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialContext:
    """Where a trial runs: its id, folders and the RTD reference store it shares.

    Attributes:
        trial_id: Syne Tune trial id (the name of the trial's folder), or a generated
            ``"local-..."`` id for a standalone run.
        checkpoint_dir: Folder for this trial's checkpoints (``--st_checkpoint_dir``).
        store_url: Location of the RTD reference store shared by all trials of the tuning run:
            ``<tuner_path>/rtd-store`` by default, overridden by ``--rtd_store`` or the
            ``LIGHTNING_RTD_STORE`` environment variable (a local path or an fsspec URL).
        tuner_path: Folder holding every trial's folder (``None`` for a standalone run).
        resume_from: ``<checkpoint_dir>/last.ckpt`` if it exists (a paused, resumed or copied
            trial), else ``None``; pass it as ``trainer.fit(..., ckpt_path=ctx.resume_from)``.
        config_json: The config file of ``LocalBackend(pass_args_as_json=True)``, if used.
    """

    trial_id: str
    checkpoint_dir: Path
    store_url: str
    tuner_path: Path | None = None
    resume_from: Path | None = None
    config_json: Path | None = None

    @property
    def in_syne_tune(self) -> bool:
        """Whether the script was started by a Syne Tune backend."""
        return self.tuner_path is not None

    def model_checkpoint(self, **kwargs: Any) -> ModelCheckpoint:
        """A ``ModelCheckpoint`` writing into ``checkpoint_dir`` with ``last.ckpt``, the file
        `resume_from` looks for.

        Args:
            **kwargs: Further ``ModelCheckpoint`` arguments (``monitor``, ``save_top_k``, ...).

        Returns:
            The callback; list it before the ``SyneTuneReporter``.
        """
        kwargs.setdefault("save_last", True)
        return ModelCheckpoint(dirpath=str(self.checkpoint_dir), **kwargs)


_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def _parse_bool(raw: str, key: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"argument --{key}: cannot read {raw!r} as a boolean")


def _parse_literal(raw: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return json.loads(raw)


def _infer(raw: str) -> Any:
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    if raw in ("True", "true", "False", "false"):
        return raw.lower() == "true"
    if raw in ("None", "null"):
        return None
    if raw[:1] in ("[", "{", "("):
        try:
            return _parse_literal(raw)
        except (ValueError, SyntaxError):
            return raw
    return raw


def _coerce(raw: str, default: Any, key: str) -> Any:
    """``raw`` read as the type of ``default`` (or inferred when there is no default)."""
    if default is None:
        return _infer(raw)
    if isinstance(default, bool):
        return _parse_bool(raw, key)
    try:
        if isinstance(default, int):
            try:
                return int(raw)
            except ValueError:
                f = float(raw)
                if not f.is_integer():
                    raise
                return int(f)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, str):
            return raw
        if isinstance(default, (list, tuple, dict)):
            value = _parse_literal(raw)
            if isinstance(default, tuple) and isinstance(value, list):
                value = tuple(value)
            if not isinstance(value, type(default)):
                raise ValueError(f"expected a {type(default).__name__}")
            return value
        return type(default)(raw)
    except (ValueError, SyntaxError, TypeError) as err:
        raise ValueError(
            f"argument --{key}: cannot read {raw!r} as {type(default).__name__} ({err})"
        ) from err


def _coerce_json(value: Any, default: Any) -> Any:
    if isinstance(default, bool) or isinstance(value, bool):
        return value
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _split_argv(argv: Sequence[str]) -> dict[str, str | None]:
    """``--key value`` pairs; values split on spaces by ``LocalBackend`` are joined back."""
    out: dict[str, str | None] = {}
    key: str | None = None
    parts: list[str] = []

    def flush() -> None:
        if key is not None:
            out[key] = " ".join(parts) if parts else None

    for token in argv:
        if token.startswith("--") and len(token) > 2:
            flush()
            parts = []
            key, sep, value = token[2:].partition("=")
            if sep:
                parts.append(value)
        elif key is None:
            raise ValueError(f"unexpected positional argument {token!r}; expected --key value")
        else:
            parts.append(token)
    flush()
    return out


def parse_trial_args(
    argv: Sequence[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    *,
    standalone_dir: str | os.PathLike[str] = "lrtd-runs",
    standalone_store: str | os.PathLike[str] | None = None,
    trial_id: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], TrialContext]:
    """Read a training script's arguments as Syne Tune's ``LocalBackend`` passes them.

    ``LocalBackend`` starts ``python train.py --key value ... --st_checkpoint_dir
    <tuner_path>/<trial_id>/checkpoints``; with ``pass_args_as_json=True`` it passes
    ``--st_config_json_filename <file>`` instead of the config entries. Values are formatted with
    ``str()`` and split on spaces; they are joined back here.

    The config starts from ``defaults``, then the JSON config file (if any), then the command
    line. A value is converted to the type of its default (``bool`` accepts ``True/False/1/0/
    yes/no``; ``int`` accepts ``"3.0"``; lists, tuples and dicts are read as Python or JSON
    literals); arguments without a default are inferred (int, float, bool, None, literal, else
    str); a flag without value reads as ``True``. Syne Tune's ``st_*`` arguments and
    ``--rtd_store`` are plumbing and are not put in the config.

    The RTD reference store is, by priority: ``--rtd_store``, the ``LIGHTNING_RTD_STORE``
    environment
    variable, ``<tuner_path>/rtd-store`` (one folder per tuning run, shared by its trials, distinct
    between runs); for a standalone run ``standalone_store`` or ``<standalone_dir>/rtd-store``. A
    ``{tuner}`` placeholder in an overriding URL is replaced by the tuning run's folder name (or
    ``"standalone"``), so one environment variable can serve several tuning runs.

    Outside Syne Tune (no ``--st_checkpoint_dir``), the trial id is ``trial_id`` or a generated
    ``"local-<time>-<hex>"`` and the checkpoints go to ``<standalone_dir>/<trial_id>/checkpoints``.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.
        defaults: Default config values; their types drive the conversion.
        standalone_dir: Root of standalone runs.
        standalone_store: Store location of standalone runs.
        trial_id: Id of a standalone run (ignored under Syne Tune).
        environ: Environment to read ``LIGHTNING_RTD_STORE`` from; defaults to ``os.environ``.

    Returns:
        ``(config, context)``.

    Raises:
        ValueError: A positional argument, a value that does not convert to its default's type,
            or a missing value for a non-boolean argument.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = dict(defaults or {})
    env = os.environ if environ is None else environ
    raw = _split_argv(argv)

    config_json: Path | None = None
    config: dict[str, Any] = dict(defaults)
    json_name = raw.pop(CONFIG_JSON_ARG, None)
    if json_name:
        config_json = Path(json_name)
        with open(config_json) as f:
            loaded = json.load(f)
        for k, v in loaded.items():
            config[k] = _coerce_json(v, defaults.get(k))

    ckpt_raw = raw.pop(CHECKPOINT_ARG, None)
    store_arg = raw.pop(STORE_ARG, None)
    for key, value in raw.items():
        default = defaults.get(key)
        if value is None:
            if default is None or isinstance(default, bool):
                config[key] = True
                continue
            raise ValueError(f"argument --{key} has no value")
        config[key] = _coerce(value, default, key)
    for key in [k for k in config if k.startswith(_RESERVED_PREFIX) or k == STORE_ARG]:
        config.pop(key)

    if ckpt_raw:
        checkpoint_dir = Path(ckpt_raw)
        trial = checkpoint_dir.parent.name
        tuner_path: Path | None = checkpoint_dir.parent.parent
        default_store = str(tuner_path / STORE_DIRNAME)
        tuner_name = tuner_path.name
    else:
        root = Path(standalone_dir)
        trial = trial_id or f"local-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        checkpoint_dir = root / trial / "checkpoints"
        tuner_path = None
        default_store = str(standalone_store or root / STORE_DIRNAME)
        tuner_name = "standalone"

    override = store_arg or env.get(STORE_ENV_VAR) or None
    store_url = override.replace("{tuner}", tuner_name) if override else default_store
    last = checkpoint_dir / LAST_CHECKPOINT
    context = TrialContext(
        trial_id=trial,
        checkpoint_dir=checkpoint_dir,
        store_url=store_url,
        tuner_path=tuner_path,
        resume_from=last if last.is_file() else None,
        config_json=config_json,
    )
    return config, context


# --------------------------------------------------------------------------------------------
# Scheduler presets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """A Syne Tune scheduler with the objectives its trials must report.

    Attributes:
        name: Canonical preset name (aliases resolved).
        scheduler: The Syne Tune 0.16 scheduler, ready for ``Tuner(scheduler=...)``.
        objectives: The objectives in their own direction (e.g. ``val_acc`` ``"max"``).
        minimize_all: Whether the scheduler minimises every objective, so ``"max"`` objectives
            are reported negated (MOASHA presets).
        resource_attr: The scheduler's ``time_attr`` (1-based epoch key).
        max_t: Largest resource level; a report at ``max_t`` stops the trial.
        extra_metrics: Metrics also reported, for analysis only, when present.
        description: One line on what the preset searches for.
    """

    name: str
    scheduler: Any
    objectives: tuple[ObjectiveSpec, ...]
    minimize_all: bool
    resource_attr: str
    max_t: int
    extra_metrics: tuple[str, ...] = ()
    description: str = ""

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Names the scheduler reads from each report (equal to ``scheduler.metric_names()``)."""
        return tuple(o.reported_key(self.minimize_all) for o in self.objectives)

    def make_reporter(self, **kwargs: Any) -> SyneTuneReporter:
        """Shortcut for `SyneTuneReporter.from_preset`."""
        return SyneTuneReporter.from_preset(self, **kwargs)


_PRESETS = PRESETS  # every family of the shared table is available with Syne Tune

PRESET_ALIASES: dict[str, str] = {
    "rtd-noise-only": "rtd-noise-only-max",
    "moasha-noise": "moasha-noise-max",
    "moasha-top": "moasha-top-max",
    "moasha-all": "moasha-all-max",
}
"""Short names kept for the TopoHyperDrive paper's presets, which maximise RTD ("diversity")."""

_RESERVED_KWARGS = ("metrics", "do_minimize", "time_attr")


def list_presets(include_aliases: bool = False) -> list[str]:
    """Names accepted by `make_scheduler`.

    Args:
        include_aliases: Also list the aliases of `PRESET_ALIASES`.

    Returns:
        Sorted names.
    """
    names = list(_PRESETS)
    if include_aliases:
        names += list(PRESET_ALIASES)
    return sorted(names)


def _num_rung_levels(max_t: int, grace_period: int, reduction_factor: float) -> int:
    n, level = 0, float(grace_period)
    while level <= max_t:
        n += 1
        level *= reduction_factor
    return max(n, 1)


def make_scheduler(
    name: str,
    config_space: Mapping[str, Any],
    *,
    metric: str,
    mode: Mode,
    max_t: int,
    random_seed: int,
    resource_attr: str = "epoch",
    grace_period: int = 1,
    reduction_factor: float = 3,
    rtd_key: str | None = None,
    loss_key: str = "val_loss",
    **kwargs: Any,
) -> Preset:
    """Build a named Syne Tune 0.16 scheduler and the objectives its trials must report.

    Presets (``metric``/``mode`` is the validation metric, e.g. ``val_acc``/``"max"``):

    | name | scheduler | objectives |
    |---|---|---|
    | ``random`` | ``RandomSearch`` | metric |
    | ``asha`` | ``ASHA`` | metric |
    | ``hyperband`` | ``ASHA`` with one bracket per rung level | metric |
    | ``bohb`` | ``BOHB`` (needs statsmodels) | metric |
    | ``rtd-{noise,top,all}-only-max`` / ``-min`` | ``ASHA`` | ``rtd/X`` max / min (metric unused) |
    | ``moasha-{noise,top,all}-max`` | ``MOASHA`` | metric, ``rtd/X`` maximised |
    | ``moasha-{noise,top,all}-min`` | ``MOASHA`` | metric, ``rtd/X`` minimised |
    | ``moasha-loss`` | ``MOASHA`` | metric, ``val_loss`` min |

    Maximising RTD is the TopoHyperDrive paper's "diversity" reading, minimising it reads RTD as
    "similarity to the leader". The aliases ``rtd-noise-only``, ``moasha-noise``, ``moasha-top``
    and ``moasha-all`` map to the ``-max`` variants. ``moasha-loss`` is the two-signal baseline:
    a second objective, but no topology.

    Directions: single-objective schedulers get ``do_minimize = (mode == "min")`` and read the
    raw metric. MOASHA in Syne Tune 0.16 has one ``do_minimize`` for all objectives, so it is
    built with ``do_minimize=True`` and each ``"max"`` objective is read as its negation
    ``"neg_" + key`` (``Preset.minimize_all``); a reporter made by ``Preset.make_reporter``
    sends exactly these names.

    Seeding: ``random_seed`` seeds the scheduler and its searcher, and ``numpy.random.seed``
    is called with it, since MOASHA samples configurations, and ASHA picks brackets, with the
    global NumPy generator (a process-wide side effect).

    Args:
        name: Preset name or alias, see `list_presets`.
        config_space: Syne Tune config space (domains and constants).
        metric: Validation metric key, e.g. ``"val_acc"``.
        mode: Direction of ``metric``.
        max_t: Largest resource level (epochs); a report at ``max_t`` stops the trial, which is
            killed at once: checkpoint before reporting (the reporter does) or use
            ``max_epochs + 1``.
        random_seed: Seed of the search.
        resource_attr: Resource key reported by the trials (``time_attr``).
        grace_period: Smallest resource level at which trials can be stopped.
        reduction_factor: ASHA's halving rate.
        rtd_key: Metric key of the RTD objective, replacing ``"rtd/noise"``, ``"rtd/top"`` or
            ``"rtd/all"`` (RTD presets only).
        loss_key: Metric key of the loss objective of ``moasha-loss``.
        **kwargs: Passed to the scheduler constructor (``brackets``, ``points_to_evaluate``,
            ``multiobjective_priority``, BOHB's KDE options, ...).

    Returns:
        The `Preset`.

    Raises:
        ValueError: Unknown name or mode, an objective appearing twice, or bad resource values.
        TypeError: ``kwargs`` sets what the preset decides (``metric``, ``do_minimize``, ...).
    """
    canonical = PRESET_ALIASES.get(name, name)
    if canonical not in _PRESETS:
        raise ValueError(
            f"unknown preset {name!r}; choose one of {list_presets(include_aliases=True)}"
        )
    definition = _PRESETS[canonical]
    metric_obj = ObjectiveSpec(metric, mode)
    bad = sorted(set(kwargs) & set(_RESERVED_KWARGS))
    if bad:
        raise TypeError(f"make_scheduler sets {bad} itself; do not pass them")
    if not isinstance(max_t, int) or isinstance(max_t, bool) or max_t < 1:
        raise ValueError(f"max_t must be a positive int, got {max_t!r}")
    if not 1 <= grace_period <= max_t:
        raise ValueError(f"need 1 <= grace_period <= max_t, got {grace_period} and {max_t}")
    if reduction_factor <= 1:
        raise ValueError(f"reduction_factor must be > 1, got {reduction_factor}")

    objectives: list[ObjectiveSpec] = []
    if definition.with_metric:
        objectives.append(metric_obj)
    if definition.rtd is not None:
        assert definition.rtd_mode is not None
        objectives.append(
            ObjectiveSpec(rtd_key or _DEFAULT_RTD_KEYS[definition.rtd], definition.rtd_mode)
        )
    elif rtd_key is not None:
        raise ValueError(f"rtd_key only applies to RTD presets, not {canonical!r}")
    if definition.with_loss:
        objectives.append(ObjectiveSpec(loss_key, "min"))
    keys = [o.key for o in objectives]
    if len(set(keys)) != len(keys):
        raise ValueError(f"preset {canonical!r} would optimise {keys}: an objective appears twice")

    minimize_all = definition.kind == "moasha"
    names = [o.reported_key(minimize_all) for o in objectives]
    np.random.seed(random_seed)
    space = dict(config_space)
    common = {
        "config_space": space,
        "max_t": max_t,
        "time_attr": resource_attr,
        "random_seed": random_seed,
        "grace_period": grace_period,
        "reduction_factor": reduction_factor,
    }

    if definition.kind == "random":
        from syne_tune.optimizer.baselines import RandomSearch

        scheduler: Any = RandomSearch(
            space,
            metrics=names,
            do_minimize=mode == "min",
            random_seed=random_seed,
            **kwargs,
        )
    elif definition.kind in ("asha", "hyperband"):
        from syne_tune.optimizer.baselines import ASHA

        if definition.kind == "hyperband":
            kwargs.setdefault("brackets", _num_rung_levels(max_t, grace_period, reduction_factor))
        scheduler = ASHA(
            metric=names[0], do_minimize=objectives[0].mode == "min", **common, **kwargs
        )
    elif definition.kind == "bohb":
        from syne_tune.optimizer.baselines import BOHB

        scheduler = BOHB(metric=names[0], do_minimize=mode == "min", **common, **kwargs)
    else:
        from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

        scheduler = MOASHA(metrics=names, do_minimize=True, **common, **kwargs)

    extras = [metric, loss_key, *_DEFAULT_RTD_KEYS.values()]
    return Preset(
        name=canonical,
        scheduler=scheduler,
        objectives=tuple(objectives),
        minimize_all=minimize_all,
        resource_attr=resource_attr,
        max_t=max_t,
        extra_metrics=tuple(k for k in dict.fromkeys(extras) if k not in keys),
        description=definition.description,
    )
