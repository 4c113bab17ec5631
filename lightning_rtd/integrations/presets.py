"""The scheduler presets shared by the Syne Tune and Ray Tune integrations: one table of what
each named preset optimises, independent of the tuning library.

Each library builds its schedulers from this table
(`lightning_rtd.integrations.synetune.make_scheduler`,
`lightning_rtd.integrations.ray.ray_scheduler`) and offers the kinds it supports: Syne Tune all
of them, Ray Tune the single-objective ones (``random``, ``asha``, ``hyperband``). This module
imports neither library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["min", "max"]
"""Direction of an objective: ``"min"`` (smaller is better) or ``"max"``."""

PresetKind = Literal["random", "asha", "hyperband", "bohb", "moasha"]

RTD_PARTS = ("noise", "top", "all")
DIRECTION_READINGS: dict[str, str] = {"max": "diversity", "min": "similarity to the leader"}
"""How each RTD direction reads in a search (see the Syne Tune guide)."""


@dataclass(frozen=True)
class PresetDef:
    """What a named preset optimises.

    Attributes:
        kind: the scheduler family.
        description: one line for listings and logs.
        rtd: the RTD reference it uses (``"noise"``, ``"top"``, ``"all"``), if any.
        rtd_mode: the direction of the RTD objective; ``None`` for presets whose direction is
            given when the scheduler is built (Ray's ``rtd-*-only`` with ``rtd_direction``).
        with_metric: whether the validation metric is an objective.
        with_loss: whether the validation loss is an objective (``moasha-loss``).
    """

    kind: PresetKind
    description: str
    rtd: str | None = None
    rtd_mode: Mode | None = None
    with_metric: bool = True
    with_loss: bool = False


def _build() -> dict[str, PresetDef]:
    defs = {
        "random": PresetDef("random", "random search on the validation metric (no stopping)"),
        "asha": PresetDef("asha", "ASHA early stopping on the validation metric"),
        "hyperband": PresetDef("hyperband", "asynchronous Hyperband (ASHA, several brackets)"),
        "bohb": PresetDef("bohb", "BOHB: ASHA with a kernel-density (TPE-like) searcher"),
        "moasha-loss": PresetDef(
            "moasha",
            "MOASHA on (metric, validation loss): a second signal without topology",
            with_loss=True,
        ),
    }
    for mode, reading in DIRECTION_READINGS.items():
        for part in RTD_PARTS:
            defs[f"rtd-{part}-only-{mode}"] = PresetDef(
                "asha",
                f"ASHA on rtd/{part} alone ({mode}imised: {reading}); the metric is not used",
                rtd=part,
                rtd_mode=mode,  # type: ignore[arg-type]
                with_metric=False,
            )
            defs[f"moasha-{part}-{mode}"] = PresetDef(
                "moasha",
                f"MOASHA on (metric, rtd/{part} {mode}imised: {reading})",
                rtd=part,
                rtd_mode=mode,  # type: ignore[arg-type]
            )
    return defs


PRESETS: dict[str, PresetDef] = _build()
"""Every preset, by name."""


def presets_of_kinds(*kinds: PresetKind) -> dict[str, PresetDef]:
    """The presets whose scheduler family is one of ``kinds``, in table order."""
    return {name: d for name, d in PRESETS.items() if d.kind in kinds}
