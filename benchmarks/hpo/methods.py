"""Registry of HPO methods: thin records over the scheduler presets of
`lightning_rtd.integrations.synetune.make_scheduler`, plus what the replay needs to know about
each (which RTD references it reads, whether its searcher models configurations).

| method | scheduler | objectives |
|---|---|---|
| ``random`` | RandomSearch | metric (no early stopping) |
| ``asha`` | ASHA | metric |
| ``hyperband`` | ASHA with one bracket per rung level | metric |
| ``bohb`` | BOHB (kernel-density searcher + ASHA) | metric |
| ``moasha-loss`` | MOASHA | metric, val_loss (two signals, no topology) |
| ``rtd-noise-only-{max,min}`` | ASHA | rtd/noise alone (metric-free) |
| ``moasha-{noise,top,all}-{max,min}`` | MOASHA | metric, rtd/X |

``max`` is the TopoHyperDrive paper's "diversity" reading of RTD, ``min`` reads it as
"similarity to the noise / the leader / the others".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.hpo.benchmarks import Benchmark

__all__ = [
    "BASELINE",
    "Method",
    "get_method",
    "list_methods",
    "make_preset",
]

BASELINE = "asha"
"""The method every RTD method is compared with, pairwise over seeds."""


@dataclass(frozen=True)
class Method:
    """One HPO method of the benchmark.

    Attributes:
        name: registry key (equal to the preset name).
        preset: `make_scheduler` preset.
        rtd: RTD references the method's objectives read (``"noise"``, ``"top"``, ``"all"``).
        model_based: the searcher models configurations (BOHB): the replay maps each suggested
            configuration to the nearest unused pool configuration; the other methods sample at
            random, and the replay draws pool configurations without replacement instead.
        group: ``"baseline"``, ``"rtd"`` (metric + RTD) or ``"rtd-only"`` (metric-free).
        label: short label for plots and tables.
    """

    name: str
    preset: str
    rtd: tuple[str, ...] = ()
    model_based: bool = False
    group: str = "baseline"
    label: str = ""

    @property
    def uses_rtd(self) -> bool:
        """Whether the method reads an RTD value (and is charged its compute time)."""
        return bool(self.rtd)


_METHODS: dict[str, Method] = {}


def _add(method: Method) -> None:
    _METHODS[method.name] = method


_add(Method("random", "random", label="RandomSearch"))
_add(Method("asha", "asha", label="ASHA"))
_add(Method("hyperband", "hyperband", label="Hyperband"))
_add(Method("bohb", "bohb", model_based=True, label="BOHB"))
_add(Method("moasha-loss", "moasha-loss", label="MOASHA(metric, val_loss)"))
for _mode in ("max", "min"):
    _add(
        Method(
            f"rtd-noise-only-{_mode}",
            f"rtd-noise-only-{_mode}",
            rtd=("noise",),
            group="rtd-only",
            label=f"ASHA(rtd/noise {_mode})",
        )
    )
for _mode in ("max", "min"):
    for _part in ("noise", "top", "all"):
        _add(
            Method(
                f"moasha-{_part}-{_mode}",
                f"moasha-{_part}-{_mode}",
                rtd=(_part,),
                group="rtd",
                label=f"MOASHA(metric, rtd/{_part} {_mode})",
            )
        )


def list_methods() -> list[str]:
    """Names of the registered methods, baselines first."""
    return list(_METHODS)


def get_method(name: str) -> Method:
    """The method ``name``.

    Raises:
        KeyError: unknown name; the message lists the registered ones.
    """
    try:
        return _METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered: {list_methods()}") from None


def make_preset(
    method: Method,
    bench: Benchmark,
    *,
    seed: int,
    config_space: dict[str, Any] | None = None,
) -> Any:
    """The `lightning_rtd.integrations.synetune.Preset` of ``method`` on ``bench``: the
    benchmark's metric, mode, epochs (``max_t``), grace period and reduction factor.

    ``config_space`` defaults to `benchmarks.hpo.benchmarks.syne_tune_space` of ``bench``.
    Seeds NumPy's global generator with ``seed``, as `make_scheduler` does.
    """
    from benchmarks.hpo.benchmarks import syne_tune_space
    from lightning_rtd.integrations.synetune import make_scheduler

    return make_scheduler(
        method.preset,
        syne_tune_space(bench) if config_space is None else config_space,
        metric=bench.metric,
        mode=bench.mode,  # type: ignore[arg-type]
        max_t=bench.max_epochs,
        random_seed=seed,
        grace_period=bench.grace_period,
        reduction_factor=bench.reduction_factor,
    )
