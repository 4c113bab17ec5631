"""Ray Tune integration: report monitor metrics to Ray Tune schedulers, give every trial its id
and the shared RTD reference store, and build ASHA schedulers that search on Representation
Topology Divergence.

Syne Tune 0.16 ships only single-machine backends; Ray Tune runs the same Lightning callbacks on
a cluster. Three pieces, usable separately:

1. `RayTuneReporter`, a Lightning callback that sends one ``ray.tune.report`` per validated
   training epoch: the 1-based epoch and the objectives, always as plain finite floats (the
   "worst value" policy of `lightning_rtd.integrations.synetune.ReportBuilder`, reused as is).
2. `make_trainable`, which turns ``train_fn(config, ctx)`` into a Ray function trainable whose
   `RayTrialContext` carries the Ray trial id and the reference store shared by all trials
   (``s3://bucket/prefix`` with ``storage_options`` on a cluster).
3. `ray_scheduler`, named ASHA presets (names as in the Syne Tune integration where Ray supports
   the method) returning the scheduler together with the ``metric``/``mode`` for
   ``tune.TuneConfig`` and the objectives the reporter must send (`list_ray_presets`).

Example:

```python
import ray
from ray import tune
from lightning_rtd import RTDCallback
from lightning_rtd.integrations.ray import make_trainable, ray_scheduler

preset = ray_scheduler(
    "rtd-noise-only", rtd_direction="max", metric="val_acc", mode="max",
    max_t=9, grace_period=1, reduction_factor=2, seed=0,
)

def train_fn(config, ctx):
    rtd = RTDCallback(
        layer="embedding", num_points=200, references=("noise", "top"),
        store=ctx.store, trial_id=ctx.trial_id, objective="val_acc", mode="max",
    )
    trainer = Trainer(max_epochs=9, callbacks=[rtd, preset.make_reporter()])
    trainer.fit(make_model(config))

trainable = make_trainable(
    train_fn, store="s3://my-bucket/searches/run-1",
    storage_options={"client_kwargs": {"region_name": "eu-west-1"}},
)
ray.init()
tuner = tune.Tuner(
    tune.with_resources(trainable, {"cpu": 1}),
    param_space={"lr": tune.loguniform(1e-4, 1e-1)},
    tune_config=preset.tune_config(num_samples=32),
)
results = tuner.fit()
```

Why not Ray's own ``ray.tune.integration.pytorch_lightning.TuneReportCheckpointCallback``
(Ray 2.60)? It reports in ``on_validation_end`` by default, where, if it is listed before the
``RTDCallback``, the report comes before the epoch's store entry is written, and a trial stopped
at that report never writes it (Ray ends a stopped function trial inside the blocked
``ray.tune.report`` call); it sends ``NaN`` as is (ASHA ignores NaN when computing a rung's
cut-off, and ``NaN < cutoff`` is false, so a diverged trial is never stopped) and leaves a
missing metric out of the report (Ray then aborts the whole ``Tuner.fit`` with a ``TuneError``);
it reports from every DDP rank; its resource is the report count (``training_iteration``), not
the epoch; and by default it writes and uploads a full checkpoint every validation.

Ray is imported only when a report is sent, a scheduler is built or a trainable runs, so the
callback can be unit-tested without a Ray session; Lightning is imported with this module.
"""

from __future__ import annotations

import os
import secrets
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lightning_rtd.errors import RTDWarning
from lightning_rtd.integrations.presets import RTD_PARTS, PresetDef, presets_of_kinds
from lightning_rtd.integrations.synetune import (
    EpochReporter,
    InvalidMetricError,
    InvalidPolicy,
    ObjectiveLike,
    ObjectiveSpec,
    _num_rung_levels,
)
from lightning_rtd.store import STORE_ENV_VAR, ReferenceStore, open_store

__all__ = [
    "RAY_RESERVED_KEYS",
    "SYNETUNE_ONLY_PRESETS",
    "InvalidMetricError",
    "ObjectiveSpec",
    "RayPreset",
    "RayTrialContext",
    "RayTuneReporter",
    "list_ray_presets",
    "make_trainable",
    "ray_scheduler",
]

Mode = Literal["min", "max"]
"""Direction of an objective: ``"min"`` (smaller is better) or ``"max"``."""

RAY_RESERVED_KEYS: frozenset[str] = frozenset(
    {
        "done",
        "trial_id",
        "config",
        "date",
        "timestamp",
        "pid",
        "hostname",
        "node_ip",
        "experiment_id",
        "experiment_tag",
        "time_this_iter_s",
        "time_total_s",
        "time_since_restore",
        "iterations_since_restore",
        "timesteps_since_restore",
        "timesteps_total",
        "episodes_total",
        "should_checkpoint",
        "checkpoint_dir_name",
        "__duplicate__",
        "__trial_info__",
    }
)
"""Result keys Ray Tune fills in or interprets itself; a reported metric must not use them.
``training_iteration`` (Ray's report counter) may be used as the resource key only."""

_RTD_KEYS = {"noise": "rtd/noise", "top": "rtd/top", "all": "rtd/all"}
_MODES = ("min", "max")

SYNETUNE_ONLY_PRESETS: dict[str, str] = {
    "moasha": (
        "MOASHA is multi-objective; Ray's ASHA ranks trials on a single metric. Use the Syne Tune "
        "preset of the same name (lightning_rtd.integrations.synetune.make_scheduler), or an "
        "'rtd-*-only' / 'asha' preset here"
    ),
    "bohb": (
        "Ray's BOHB needs ConfigSpace and hpbandster, which lightning-rtd does not depend on; use "
        "the Syne Tune 'bohb' preset, or pass Ray's TuneBOHB/HyperBandForBOHB to tune.TuneConfig "
        "yourself"
    ),
}
"""Syne Tune preset families that `ray_scheduler` refuses, with the reason."""


def _check_key(key: str, *, resource_attr: str) -> None:
    if key == "training_iteration" and key != resource_attr:
        raise ValueError(
            "'training_iteration' is Ray's own report counter; use it as resource_attr only"
        )
    if key in RAY_RESERVED_KEYS or key.startswith("config/"):
        raise ValueError(f"{key!r} is a result key Ray Tune fills in itself; rename the metric")


# --------------------------------------------------------------------------------------------
# Reporter
# --------------------------------------------------------------------------------------------


class RayTuneReporter(EpochReporter):
    """Lightning callback that reports monitor metrics to Ray Tune once per validated epoch.

    When a validation run of ``trainer.fit`` ends (not the sanity check) the epoch is marked; at
    the end of that training epoch the reporter calls, on global rank 0 only,
    ``ray.tune.report({resource_attr: trainer.current_epoch + 1, ...})`` with the objectives
    read from ``trainer.callback_metrics`` as plain finite floats, plus ``extra_metrics`` when
    present and finite.

    Missing or non-finite objectives follow the policy of
    [`ReportBuilder`][lightning_rtd.integrations.synetune.ReportBuilder] (the same code as the
    Syne Tune reporter): ``"worst"`` (default) reports the worst finite value seen so far by this
    trial (or ``-sentinel`` for a ``"max"`` objective, ``+sentinel`` for ``"min"``, before any
    was seen), with an [`RTDWarning`][lightning_rtd.errors.RTDWarning]; ``"raise"`` raises
    [`InvalidMetricError`][lightning_rtd.integrations.synetune.InvalidMetricError], which fails
    the trial (Ray counts it against ``FailureConfig(max_failures)``). This matters more with
    Ray than with Syne Tune: Ray aborts the whole ``Tuner.fit`` when a result lacks the
    scheduler's metric, and its ASHA never stops a trial that reports NaN.

    Why this hook: Lightning runs ``Checkpoint`` subclasses after every other callback, so the
    RTD values logged in ``on_validation_epoch_end`` are in ``callback_metrics`` and the
    ``RTDCallback``'s store entry (written in ``on_validation_end``) and the epoch's
    ``ModelCheckpoint`` exist before the report. ``ray.tune.report`` blocks until Ray has
    processed the result; when the scheduler stops the trial, Ray ends the training thread
    inside that call (``SystemExit(0)``, which Lightning passes through after its teardown),
    so nothing after the last report runs: list the reporter last. Several validations in one
    epoch give one report with the last validation's metrics; epochs without validation give
    no report, and the resource stays the integer epoch (``training_iteration`` counts
    reports).

    Values are read as ``ModelCheckpoint`` and ``EarlyStopping`` read them: a metric logged in
    an earlier epoch but not in this one keeps its earlier value.

    Being a ``Checkpoint``, Lightning treats the reporter as a checkpoint callback:
    ``Trainer(enable_checkpointing=False)`` refuses it and Lightning adds no default
    ``ModelCheckpoint``. The reporter registers no Ray checkpoint (ASHA only stops trials; a
    trial is never resumed elsewhere).

    Args:
        objectives: Objectives the scheduler reads, as ``ObjectiveSpec`` or ``(key, mode)``;
            a `RayPreset` gives them (see `from_preset`).
        resource_attr: Key of the 1-based epoch, the scheduler's ``time_attr`` (``"epoch"``;
            ``"training_iteration"`` overrides Ray's report counter with the epoch).
        on_invalid: ``"worst"`` or ``"raise"``, globally or per objective key.
        sentinel: Magnitude of the fallback before any finite value was seen.
        sentinels: Exact fallback values per objective key.
        extra: Static key/values added to every report.
        extra_metrics: Metrics also reported when present and finite, for analysis.
        on_report: Called with each report dict after Ray accepted it (rank 0 only; not for
            the report at which Ray stops the trial, which ends inside that call).
        reporter: Callable receiving the report dict; ``ray.tune.report`` by default (outside a
            Ray Tune trial Ray warns once and drops the report).

    Raises:
        ValueError: Invalid objectives or policy, or a key Ray Tune reserves (`RAY_RESERVED_KEYS`).

    Attributes:
        reports: Every report sent by this callback, in order.
        builder: The ``ReportBuilder``.
    """

    engine = "Ray Tune"

    def __init__(
        self,
        objectives: ObjectiveLike | Sequence[ObjectiveLike],
        *,
        resource_attr: str = "epoch",
        on_invalid: InvalidPolicy | Mapping[str, InvalidPolicy] = "worst",
        sentinel: float = 1e6,
        sentinels: Mapping[str, float] | None = None,
        extra: Mapping[str, Any] | None = None,
        extra_metrics: Sequence[str] = (),
        on_report: Callable[[dict[str, Any]], None] | None = None,
        reporter: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        super().__init__(
            objectives,
            on_report=on_report,
            reporter=reporter,
            resource_attr=resource_attr,
            on_invalid=on_invalid,
            sentinel=sentinel,
            sentinels=sentinels,
            extra=extra,
            extra_metrics=extra_metrics,
        )
        for key in (*self.builder.reported_names, *self.builder.extra, *extra_metrics):
            _check_key(key, resource_attr=resource_attr)
        if resource_attr in RAY_RESERVED_KEYS:
            raise ValueError(f"resource_attr {resource_attr!r} is a key Ray Tune fills in itself")

    def _send(self, report: dict[str, Any]) -> None:
        if self._reporter is None:
            self._reporter = _ray_tune_report
        self._reporter(report)


def _ray_tune_report(metrics: dict[str, Any]) -> None:
    try:
        from ray import tune
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "RayTuneReporter needs Ray Tune: pip install 'lightning-rtd[ray]'"
        ) from err
    # ray.tune.report, not ray.train.report: with Ray Train v2 (the default in Ray 2.60) the
    # latter raises inside a Tune function trainable.
    tune.report(metrics)


# --------------------------------------------------------------------------------------------
# Trial plumbing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RayTrialContext:
    """Where a Ray Tune trial runs: its id and the RTD reference store it shares.

    Attributes:
        trial_id: Ray's trial id (``ray.tune.get_context().get_trial_id()``, e.g.
            ``"b56c9_00003"``), the ``trial_id`` column of Ray's results; pass it to
            ``RTDCallback(trial_id=...)`` so store entries and Ray results line up. A generated
            ``"local-..."`` id when the trainable runs outside Ray Tune.
        trial_name: Ray's trial name (the trial id outside Ray Tune).
        trial_dir: The trial's local working folder on the node running it (Ray makes it the
            working directory), or ``None`` outside Ray Tune.
        store: The reference store shared by all trials, or ``None`` when no store was given
            (RTD against noise only). Pass it as ``RTDCallback(store=...)``.
    """

    trial_id: str
    trial_name: str
    trial_dir: str | None
    store: ReferenceStore | None

    @property
    def store_url(self) -> str | None:
        """Root of the shared store (absolute local path or fsspec URL), or ``None``."""
        return None if self.store is None else self.store.root

    @property
    def in_ray_tune(self) -> bool:
        """Whether the trainable runs as a Ray Tune trial."""
        return self.trial_dir is not None


def _current_trial(store: ReferenceStore | None) -> RayTrialContext:
    from ray import tune

    trial_id = None
    name = None
    trial_dir = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ray warns once when called outside a session
        ctx = tune.get_context()
        trial_id = ctx.get_trial_id()
        if trial_id is not None:
            name = ctx.get_trial_name()
            trial_dir = ctx.get_trial_dir()
    if trial_id is None:
        trial_id = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        warnings.warn(
            f"make_trainable: not running inside a Ray Tune trial; using trial id {trial_id!r} "
            "(reports are dropped by Ray)",
            RTDWarning,
            stacklevel=3,
        )
    return RayTrialContext(
        trial_id=str(trial_id),
        trial_name=str(name or trial_id),
        trial_dir=None if trial_dir is None else str(trial_dir),
        store=store,
    )


def make_trainable(
    train_fn: Callable[[dict[str, Any], RayTrialContext], Any],
    *,
    store: ReferenceStore | str | os.PathLike[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    store_dtype: Literal["float32", "float16"] = "float32",
) -> Callable[[dict[str, Any]], None]:
    """Wrap ``train_fn(config, ctx)`` as a Ray Tune function trainable ``trainable(config)``.

    In each trial the wrapper reads the trial id from ``ray.tune.get_context()`` and calls
    ``train_fn(config, ctx)`` with a `RayTrialContext` holding that id and the shared
    reference store; ``train_fn`` builds its ``Trainer`` with an ``RTDCallback(trial_id=
    ctx.trial_id, store=ctx.store, ...)`` and a `RayTuneReporter`. The return value of
    ``train_fn`` is discarded (Ray would report a returned dict as one more result).

    The store is resolved once, on the driver, and shipped to the trials (a
    [`ReferenceStore`][lightning_rtd.store.ReferenceStore] pickles only its root and options):
    a relative local path is made absolute there, which matters because Ray starts each trial
    in its own working directory. A local folder is shared only by trials on the same machine;
    for a multi-machine cluster use object storage (``s3://bucket/prefix``, ``gs://...``) that
    every node can reach. Use a fresh prefix per search: entries are keyed by Ray trial ids.

    Credentials: ``storage_options`` travel, pickled with the trainable, through the Ray
    cluster to every worker (Ray 2.60 does not write them to the experiment folder). Prefer to
    pass only non-secret options (endpoint, region) here and let s3fs find credentials on the
    workers: instance roles, ``~/.aws``, or ``AWS_*`` variables (a local cluster inherits the
    driver's environment at ``ray.init``; otherwise set them on each node or with
    ``ray.init(runtime_env={"env_vars": {...}})``).

    Args:
        train_fn: ``train_fn(config, ctx)``, run once per trial in a Ray worker.
        store: Folder, fsspec URL or ``ReferenceStore`` shared by all trials; ``None``: the
            ``LIGHTNING_RTD_STORE`` environment variable of the driver if set, else no store
            (``ctx.store`` is ``None``; RTD against noise only).
        storage_options: fsspec options of the store (e.g. ``{"client_kwargs":
            {"endpoint_url": ...}}`` for an S3-compatible service); not with a
            ``ReferenceStore``.
        store_dtype: Dtype of stored embeddings (``"float16"`` halves the traffic).

    Returns:
        The trainable, named after ``train_fn``; wrap it with ``tune.with_resources`` as usual.

    Raises:
        TypeError: ``storage_options`` given with a ``ReferenceStore`` or without a store.
        ValueError: The store URL's protocol is unknown.
        ImportError: The filesystem package of the store URL (e.g. ``s3fs``) is missing.
    """
    if store is None and os.environ.get(STORE_ENV_VAR):
        store = os.environ[STORE_ENV_VAR]
    shared: ReferenceStore | None
    if store is None:
        if storage_options:
            raise TypeError("storage_options given without a store")
        shared = None
    elif isinstance(store, ReferenceStore):
        if storage_options:
            raise TypeError("storage_options given together with a ReferenceStore; set them on it")
        shared = store
    else:
        shared = open_store(store, dtype=store_dtype, storage_options=dict(storage_options or {}))

    def trainable(config: dict[str, Any]) -> None:
        train_fn(config, _current_trial(shared))

    # no functools.wraps: Ray inspects the signature, which must stay ``(config)``
    name = getattr(train_fn, "__name__", "trainable")
    trainable.__name__ = name
    trainable.__qualname__ = name
    trainable.__doc__ = getattr(train_fn, "__doc__", None)
    return trainable


# --------------------------------------------------------------------------------------------
# Scheduler presets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RayPreset:
    """A Ray Tune scheduler with the objective its trials must report.

    The scheduler is built without ``metric``/``mode``: pass `metric` and `mode` to
    ``tune.TuneConfig`` (or use `tune_config`), which also makes them the default of
    ``ResultGrid.get_best_result()``. A scheduler instance serves one ``Tuner`` only.

    Attributes:
        name: Canonical preset name (aliases resolved, direction suffix added).
        scheduler: The Ray scheduler (``AsyncHyperBandScheduler`` or ``FIFOScheduler``).
        metric: Result key the scheduler ranks trials on.
        mode: Its direction, for ``tune.TuneConfig(mode=...)``.
        objectives: The objective, as ``(ObjectiveSpec(metric, mode),)``.
        resource_attr: The scheduler's ``time_attr`` (1-based epoch key).
        max_t: Largest resource level; a report at ``max_t`` stops the trial.
        seed: Seed of the search (``BasicVariantGenerator(random_state=seed)``).
        extra_metrics: Metrics also reported, for analysis only, when present.
        description: One line on what the preset searches for.
    """

    name: str
    scheduler: Any
    metric: str
    mode: Mode
    objectives: tuple[ObjectiveSpec, ...]
    resource_attr: str
    max_t: int
    seed: int
    extra_metrics: tuple[str, ...] = ()
    description: str = ""

    def make_reporter(self, **kwargs: Any) -> RayTuneReporter:
        """Shortcut for `RayTuneReporter.from_preset`."""
        return RayTuneReporter.from_preset(self, **kwargs)

    def tune_config(self, **kwargs: Any) -> Any:
        """A ``ray.tune.TuneConfig`` with this preset's metric, mode and scheduler.

        Args:
            **kwargs: Further ``TuneConfig`` arguments (``num_samples``,
                ``max_concurrent_trials``, ...). Without ``search_alg``, Ray's random/grid
                search (``BasicVariantGenerator``) is seeded with `seed`.

        Returns:
            The ``TuneConfig``.
        """
        from ray import tune
        from ray.tune.search.basic_variant import BasicVariantGenerator

        clash = sorted({"metric", "mode", "scheduler"} & set(kwargs))
        if clash:
            raise TypeError(f"tune_config() sets {clash} from the preset; do not pass them")
        if "search_alg" not in kwargs:
            kwargs["search_alg"] = BasicVariantGenerator(random_state=self.seed)
        return tune.TuneConfig(
            metric=self.metric, mode=self.mode, scheduler=self.scheduler, **kwargs
        )


def _build_ray_defs() -> dict[str, PresetDef]:
    """The single-objective presets of the shared table, plus ``rtd-*-only`` whose direction
    comes from ``rtd_direction``."""
    defs = presets_of_kinds("random", "asha", "hyperband")
    for part in RTD_PARTS:
        defs[f"rtd-{part}-only"] = PresetDef(
            "asha",
            f"ASHA on rtd/{part} alone, in the direction of rtd_direction; metric not used",
            rtd=part,
            with_metric=False,
        )
    return defs


_RAY_PRESETS = _build_ray_defs()


def list_ray_presets() -> list[str]:
    """Names accepted by `ray_scheduler`, sorted.

    ``rtd-{noise,top,all}-only`` take their direction from ``rtd_direction``; the names with a
    ``-max`` / ``-min`` suffix fix it (``rtd-noise-only-max`` / ``-min`` match the Syne Tune
    presets). The Syne Tune ``moasha-*`` and ``bohb`` presets are not offered, see
    `SYNETUNE_ONLY_PRESETS`.
    """
    return sorted(_RAY_PRESETS)


def ray_scheduler(
    name: str,
    *,
    metric: str,
    mode: Mode,
    max_t: int,
    grace_period: int = 1,
    reduction_factor: float = 3,
    seed: int = 0,
    rtd_key: str | None = None,
    rtd_direction: Mode | None = None,
    resource_attr: str = "epoch",
    loss_key: str = "val_loss",
    **kwargs: Any,
) -> RayPreset:
    """Build a named Ray Tune scheduler and the objective its trials must report.

    Presets (``metric``/``mode`` is the validation metric, e.g. ``val_acc``/``"max"``):

    | name | Ray scheduler | ranks trials on |
    |---|---|---|
    | ``random`` | ``FIFOScheduler`` (no stopping) | metric (best-result selection only) |
    | ``asha`` | ``ASHAScheduler`` | metric |
    | ``hyperband`` | ``ASHAScheduler`` with one bracket per rung level | metric |
    | ``rtd-noise-only`` | ``ASHAScheduler`` | ``rtd/noise`` in ``rtd_direction`` |
    | ``rtd-noise-only-max`` / ``-min`` | ``ASHAScheduler`` | ``rtd/noise`` max / min |
    | ``rtd-top-only[-max/-min]`` | ``ASHAScheduler`` | ``rtd/top`` |
    | ``rtd-all-only[-max/-min]`` | ``ASHAScheduler`` | ``rtd/all`` |

    ``rtd_direction`` is first-class: ``"max"`` is the TopoHyperDrive paper's "diversity"
    reading (keep trials whose embeddings differ from noise / the leader / the others),
    ``"min"`` reads RTD as similarity. For a suffixed name it may be omitted or must agree.
    The validation metric is still reported (``extra_metrics``) so results can be ranked on it
    afterwards (``results.get_best_result(metric="val_acc", mode="max")``).

    Not offered (``ValueError`` with the reason, see `SYNETUNE_ONLY_PRESETS`): the ``moasha-*``
    presets (Ray's ASHA ranks on one metric; a weighted sum of accuracy and RTD would depend on
    their arbitrary relative scale, so no scalarised stand-in is provided; use Syne Tune's
    MOASHA on one machine) and ``bohb``.

    Seeding: Ray's ASHA has no seed of its own; it assigns brackets with the global NumPy
    generator, so ``numpy.random.seed(seed)`` is called (a process-wide side effect, as in the
    Syne Tune presets), and `RayPreset.tune_config` seeds Ray's ``BasicVariantGenerator``.

    Args:
        name: Preset name, see `list_ray_presets`.
        metric: Validation metric key, e.g. ``"val_acc"``.
        mode: Direction of ``metric``.
        max_t: Largest resource level (epochs); a report at ``max_t`` stops the trial inside
            ``ray.tune.report`` (``trainer.fit`` does not return normally). Use
            ``max_epochs + 1`` to let the last epoch finish ``fit``.
        grace_period: Smallest resource level at which trials can be stopped.
        reduction_factor: ASHA's halving rate (2: the worse half is stopped at each rung).
        seed: Seed of the search.
        rtd_key: Metric key of the RTD objective, replacing ``"rtd/noise"`` etc.
        rtd_direction: ``"max"`` or ``"min"`` for the RTD presets (``None``: the name's suffix,
            else ``"max"``).
        resource_attr: Resource key reported by the trials (the scheduler's ``time_attr``).
        loss_key: Validation loss key, reported as an extra metric.
        **kwargs: Passed to ``AsyncHyperBandScheduler`` (e.g. ``stop_last_trials``,
            ``brackets`` for ``asha``).

    Returns:
        The `RayPreset`.

    Raises:
        ValueError: Unknown or Syne Tune-only name, bad mode or direction, inconsistent
            resource values.
        TypeError: ``kwargs`` sets what the preset decides.
    """
    base = name.split("-", 1)[0]
    if name not in _RAY_PRESETS:
        if base in SYNETUNE_ONLY_PRESETS:
            raise ValueError(
                f"preset {name!r} is not available with Ray: {SYNETUNE_ONLY_PRESETS[base]}"
            )
        raise ValueError(f"unknown preset {name!r}; choose one of {list_ray_presets()}")
    definition = _RAY_PRESETS[name]
    if mode not in _MODES:
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if rtd_direction is not None and rtd_direction not in _MODES:
        raise ValueError(f"rtd_direction must be 'min' or 'max', got {rtd_direction!r}")
    bad = sorted(
        {"metric", "mode", "time_attr", "max_t", "grace_period", "reduction_factor"} & set(kwargs)
    )
    if bad:
        raise TypeError(f"ray_scheduler sets {bad} itself; do not pass them in kwargs")
    if isinstance(max_t, bool) or not isinstance(max_t, int) or max_t < 1:
        raise ValueError(f"max_t must be a positive int, got {max_t!r}")
    if not 1 <= grace_period <= max_t:
        raise ValueError(f"need 1 <= grace_period <= max_t, got {grace_period} and {max_t}")
    if reduction_factor <= 1:
        raise ValueError(f"reduction_factor must be > 1, got {reduction_factor}")

    canonical = name
    if definition.rtd is None:
        if rtd_key is not None or rtd_direction is not None:
            raise ValueError(f"rtd_key / rtd_direction only apply to RTD presets, not {name!r}")
        objective = ObjectiveSpec(metric, mode)
    else:
        direction = definition.rtd_mode or rtd_direction or "max"
        if rtd_direction is not None and rtd_direction != direction:
            raise ValueError(
                f"preset {name!r} maximises/minimises as its name says ({direction}), but "
                f"rtd_direction={rtd_direction!r}; use 'rtd-{definition.rtd}-only' with "
                "rtd_direction, or the suffixed name alone"
            )
        canonical = f"rtd-{definition.rtd}-only-{direction}"
        objective = ObjectiveSpec(rtd_key or _RTD_KEYS[definition.rtd], direction)
    _check_key(objective.key, resource_attr=resource_attr)
    if resource_attr in RAY_RESERVED_KEYS:
        raise ValueError(f"resource_attr {resource_attr!r} is a key Ray Tune fills in itself")

    import numpy as np
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    np.random.seed(seed)
    if definition.kind == "random":
        if kwargs:
            raise TypeError(f"the 'random' preset takes no scheduler options, got {sorted(kwargs)}")
        scheduler: Any = FIFOScheduler()
    else:
        if definition.kind == "hyperband":
            kwargs.setdefault("brackets", _num_rung_levels(max_t, grace_period, reduction_factor))
        scheduler = AsyncHyperBandScheduler(
            time_attr=resource_attr,
            max_t=max_t,
            grace_period=grace_period,
            reduction_factor=reduction_factor,
            **kwargs,
        )

    extras = [metric, loss_key, *_RTD_KEYS.values()]
    return RayPreset(
        name=canonical,
        scheduler=scheduler,
        metric=objective.key,
        mode=objective.mode,
        objectives=(objective,),
        resource_attr=resource_attr,
        max_t=max_t,
        seed=seed,
        extra_metrics=tuple(
            k for k in dict.fromkeys(extras) if k != objective.key and k != resource_attr
        ),
        description=_RAY_PRESETS[canonical].description,
    )
