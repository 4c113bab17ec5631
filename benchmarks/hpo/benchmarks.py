"""Registry of HPO benchmarks: a recipe, a fixed seeded sample of its search space (the *pool*
of configurations that is tabulated once) and the settings of the simulated searches.

Every benchmark's pool is drawn with `lightning_rtd.recipes.sample_config` from the recipe's
own search space (>= 5 hyperparameters, ``embedding_dim`` included), so a tabulated benchmark is a
random finite subset of the real search problem. Searches replayed on it (`simulate`) pick
configurations from the pool (see `simulate.PoolMapper`).

Example:
    ```python
    from benchmarks.hpo.benchmarks import get_benchmark, pool_configs

    bench = get_benchmark("digits-mlp")
    configs = pool_configs(bench)  # bench.num_configs dicts, the same on every machine
    ```
"""

from __future__ import annotations

import inspect
import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lightning_rtd.recipes import get_recipe, sample_config

__all__ = [
    "DEFAULT_ROOT",
    "ROOT_ENV_VAR",
    "Benchmark",
    "benchmark_dir",
    "callback_defaults",
    "get_benchmark",
    "list_benchmarks",
    "pool_configs",
    "register_benchmark",
    "results_root",
    "syne_tune_space",
]

ROOT_ENV_VAR = "LRTD_HPO_ROOT"
"""Environment variable that overrides where tabulations and results are written."""

DEFAULT_ROOT = Path(__file__).resolve().parent / "runs"
"""Default folder of tabulations, search results and caches (git-ignored)."""


@dataclass(frozen=True)
class Benchmark:
    """One tabulated HPO benchmark.

    Attributes:
        name: registry key (also the folder name of its files).
        recipe: the `lightning_rtd.recipes` recipe trained for every configuration.
        num_configs: size of the configuration pool (tabulated configurations).
        max_epochs: epochs each configuration is trained for (the largest fidelity).
        num_points: probe size N of the RTD callback.
        config_seed: seed of the pool sample (``random.Random(config_seed)``, one
            `sample_config` call per configuration, in order).
        train_seed: training seed of every configuration (what a real search passes, ``0``).
        fixed: hyperparameters overriding the sample (e.g. tiny widths in tests); keep
            ``embedding_dim`` out of it so embedding size stays in the space.
        n_workers: parallel trials of a simulated search.
        budget_full_trainings: simulated wall-clock budget of a search, in units of the mean
            time to train one pool configuration for all epochs, per worker. With 4 workers
            and 3 units, random search trains about 12 configurations fully, while ASHA
            (about 2.7 epochs per configuration at 20 epochs) sees about 90: budgets are chosen
            so that ASHA just about exhausts the pool.
        grace_period: ASHA's first rung (epochs).
        reduction_factor: ASHA's halving rate.
        rtd: overrides of the RTD settings (see `callback_defaults`); by default the
            benchmark uses the `lightning_rtd.RTDCallback` defaults, exactly what a real search
            with the recipe runner computes.
        description: one line for the report.
    """

    name: str
    recipe: str
    num_configs: int
    max_epochs: int
    num_points: int
    config_seed: int = 0
    train_seed: int = 0
    fixed: dict[str, Any] = field(default_factory=dict)
    n_workers: int = 4
    budget_full_trainings: float = 3.0
    grace_period: int = 1
    reduction_factor: float = 3.0
    rtd: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        recipe = get_recipe(self.recipe)
        if "embedding_dim" in self.fixed:
            raise ValueError(f"{self.name}: keep embedding_dim in the search space")
        unknown = set(self.fixed) - set(recipe.default_config)
        if unknown:
            raise ValueError(f"{self.name}: unknown fixed hyperparameters {sorted(unknown)}")
        if self.num_configs < 2 or self.max_epochs < 1 or self.num_points < 3:
            raise ValueError(f"{self.name}: need num_configs >= 2, max_epochs >= 1, N >= 3")

    @property
    def rtd_settings(self) -> dict[str, Any]:
        """The RTD settings of the benchmark: the callback's defaults updated with ``rtd``."""
        return {**callback_defaults(), **self.rtd}

    @property
    def max_references(self) -> int:
        """At most this many other trials are compared for ``rtd/all``."""
        return int(self.rtd_settings["max_references"])

    @property
    def metric(self) -> str:
        """The validation metric searched on (the recipe's)."""
        return get_recipe(self.recipe).metric

    @property
    def mode(self) -> str:
        """``"max"`` or ``"min"``: direction of `metric`."""
        return get_recipe(self.recipe).mode

    @property
    def test_metric(self) -> str:
        """The test counterpart of `metric` (``val_acc`` -> ``test_acc``)."""
        return self.metric.replace("val_", "test_", 1)

    def spec(self) -> dict[str, Any]:
        """The settings that define the tabulation (a change invalidates it)."""
        return {
            "recipe": self.recipe,
            "num_configs": self.num_configs,
            "max_epochs": self.max_epochs,
            "num_points": self.num_points,
            "config_seed": self.config_seed,
            "train_seed": self.train_seed,
            "fixed": dict(self.fixed),
            "rtd": {k: self.rtd_settings[k] for k in TABULATED_RTD_KEYS},
        }


RTD_KEYS = ("symmetric", "max_references", "noise", "noise_dim", "noise_seed", "empty_value")
"""`lightning_rtd.RTDCallback` arguments that decide the RTD values a search sees."""

TABULATED_RTD_KEYS = ("symmetric", "noise", "noise_dim", "noise_seed")
"""The subset that decides the tabulated ``rtd/noise`` values."""


def callback_defaults() -> dict[str, Any]:
    """The current defaults of `lightning_rtd.RTDCallback` for `RTD_KEYS` (read from its
    signature, so the benchmark follows the library)."""
    from lightning_rtd import RTDCallback

    params = inspect.signature(RTDCallback).parameters
    return {k: params[k].default for k in RTD_KEYS}


_BENCHMARKS: dict[str, Benchmark] = {}


def register_benchmark(bench: Benchmark, *, overwrite: bool = False) -> Benchmark:
    """Add a benchmark to the registry (``overwrite`` to replace one of the same name)."""
    if bench.name in _BENCHMARKS and not overwrite:
        raise ValueError(f"benchmark {bench.name!r} is already registered")
    _BENCHMARKS[bench.name] = bench
    return bench


def list_benchmarks(include_tests: bool = False) -> list[str]:
    """Names of the registered benchmarks (the tiny test ones only when asked)."""
    return [n for n in _BENCHMARKS if include_tests or not n.endswith("-tiny")]


def get_benchmark(name: str, **overrides: Any) -> Benchmark:
    """The benchmark ``name``, with optional field overrides (e.g. ``num_configs=8``).

    Raises:
        KeyError: unknown name; the message lists the registered ones.
    """
    try:
        bench = _BENCHMARKS[name]
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; registered: {list(_BENCHMARKS)}") from None
    return replace(bench, **overrides) if overrides else bench


def pool_configs(bench: Benchmark) -> list[dict[str, Any]]:
    """The benchmark's configuration pool: ``num_configs`` complete recipe configurations."""
    rng = random.Random(bench.config_seed)
    configs = []
    for _ in range(bench.num_configs):
        config = sample_config(bench.recipe, rng)
        config.update(bench.fixed)
        configs.append(config)
    return configs


def syne_tune_space(bench: Benchmark) -> dict[str, Any]:
    """The recipe's search space as Syne Tune domains (``fixed`` entries as constants)."""
    from syne_tune import config_space as cs

    space: dict[str, Any] = {}
    for key, spec in get_recipe(bench.recipe).search_space.items():
        if key in bench.fixed:
            space[key] = bench.fixed[key]
            continue
        kind, *args = spec
        if kind == "choice":
            space[key] = cs.choice(list(args[0]))
        else:
            space[key] = getattr(cs, kind)(args[0], args[1])
    return space


def results_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder of all benchmark files: ``root``, else ``$LRTD_HPO_ROOT``, else the default."""
    if root is not None:
        return Path(root)
    env = os.environ.get(ROOT_ENV_VAR)
    return Path(env) if env else DEFAULT_ROOT


def benchmark_dir(bench: Benchmark | str, root: str | os.PathLike[str] | None = None) -> Path:
    """``<root>/<benchmark>``: tabulation, pair cache and search results of one benchmark."""
    name = bench if isinstance(bench, str) else bench.name
    return results_root(root) / name


register_benchmark(
    Benchmark(
        name="digits-mlp",
        recipe="digits-mlp",
        num_configs=100,
        max_epochs=20,
        num_points=200,
        budget_full_trainings=3.0,
        description="MLP on scikit-learn digits, 100 configurations x 20 epochs",
    )
)
register_benchmark(
    Benchmark(
        name="mnist1d-mlp",
        recipe="mnist1d-mlp",
        num_configs=64,
        max_epochs=20,
        num_points=200,
        budget_full_trainings=2.0,
        description="MLP on MNIST-1D, 64 configurations x 20 epochs",
    )
)
register_benchmark(
    Benchmark(
        name="mnist-cnn",
        recipe="mnist-cnn",
        num_configs=24,
        max_epochs=8,
        num_points=200,
        budget_full_trainings=1.5,
        description="CNN on a 5,000-image MNIST subset, 24 configurations x 8 epochs",
    )
)
register_benchmark(
    Benchmark(
        name="digits-tiny",
        recipe="digits-mlp",
        num_configs=6,
        max_epochs=3,
        num_points=60,
        fixed={"width": 32, "depth": 1},
        n_workers=2,
        budget_full_trainings=2.0,
        description="smoke test: 6 tiny digits MLPs x 3 epochs",
    )
)
