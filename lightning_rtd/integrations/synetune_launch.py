"""Launch a real Syne Tune search on a recipe, then summarise and plot it.

The pieces `examples/launch_synetune.py` is made of, usable on their own:

- `to_syne_tune_space` turns a recipe's plain-dict search space (``("loguniform", 1e-4, 1e-1)``,
  ``("choice", [32, 64])``, ...; see `lightning_rtd.recipes.runner`) into
  ``syne_tune.config_space`` domains;
- `build_config_space` adds the constants every trial needs: ``max_epochs``, ``num_points``,
  ``seed``, and the preset's ``objectives`` / ``minimize_all`` so that each trial reports exactly
  the names its scheduler reads;
- `launch` builds the preset (`make_scheduler`), a ``LocalBackend`` on the recipe's example
  script and a ``Tuner``, runs it, prints one line per finished trial and the best configuration,
  and writes a plot of the search (`plot_search`) into the tuner's results folder;
- `summarize_trials` and `best_trial` read a tuner's results dataframe.

Example:
    ```python
    from lightning_rtd.integrations.synetune_launch import launch

    result = launch("digits-mlp", "moasha-noise-max", n_workers=2, max_wallclock=300)
    print(result.best, result.plot_path)
    ```

Where things go: results in Syne Tune's folder for the tuner
(``$SYNETUNE_FOLDER/<tuner-name>`` or ``~/syne-tune/<tuner-name>``), one sub-folder per trial
(``std.out``, ``std.err``, ``checkpoints/last.ckpt``), the RTD reference store shared by the
trials in ``<tuner folder>/rtd-store`` unless ``store`` says otherwise, and the plot in
``<tuner folder>/search.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import pandas as pd
    from syne_tune.tuner_callback import TunerCallback
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "lightning_rtd.integrations.synetune_launch needs Syne Tune: "
        "pip install 'lightning-rtd[synetune]'"
    ) from err

from lightning_rtd.integrations.synetune import (
    STORE_DIRNAME,
    STORE_ENV_VAR,
    ObjectiveSpec,
    Preset,
    list_presets,
    make_scheduler,
)
from lightning_rtd.recipes.runner import (
    SPACE_KINDS,
    Recipe,
    _check_domain,
    get_recipe,
    list_recipes,
)

__all__ = [
    "PLOT_FILENAME",
    "RESOURCE_ATTR",
    "SUMMARY_FILENAME",
    "LaunchResult",
    "TrialOutcome",
    "TrialProgress",
    "best_trial",
    "build_config_space",
    "build_parser",
    "default_entry_point",
    "default_num_points",
    "launch",
    "main",
    "objectives_arg",
    "parse_space_override",
    "plot_search",
    "rung_levels",
    "summarize_trials",
    "to_syne_tune_space",
]

RESOURCE_ATTR = "epoch"
"""Resource key of the reports (1-based epochs) and the schedulers' ``time_attr``."""

PLOT_FILENAME = "search.png"
"""File name of the search plot in the tuner's results folder."""

SUMMARY_FILENAME = "lightning-rtd-summary.json"
"""File name of the search summary (best trial, outcomes) in the tuner's results folder."""

STOPPED = "stopped"
COMPLETED = "completed"
CUT_OFF = "cut-off"


# --------------------------------------------------------------------------------------------
# Config space
# --------------------------------------------------------------------------------------------


def default_num_points(recipe_name: str) -> int:
    """Probe-set size used for a recipe when ``num_points`` is not given.

    Args:
        recipe_name: A registered recipe.

    Returns:
        The recipe's ``num_points`` (200 for digits, whose validation split has 270 samples).
    """
    return get_recipe(recipe_name).num_points


def to_syne_tune_space(space: Mapping[str, Any]) -> dict[str, Any]:
    """Convert a plain-dict search space into a Syne Tune config space.

    Entries ``(kind, ...)`` with ``kind`` in ``loguniform``, ``uniform``, ``randint``,
    ``lograndint`` and ``choice`` become the ``syne_tune.config_space`` domain of the same name
    (bounds inclusive); any other value is kept as a constant.

    Args:
        space: Hyperparameter name -> ``(kind, *arguments)`` or constant.

    Returns:
        The config space, in the order of ``space``.

    Raises:
        ValueError: An entry whose first element is a known kind has invalid arguments.
    """
    from syne_tune import config_space as cs

    out: dict[str, Any] = {}
    for key, spec in space.items():
        if not (isinstance(spec, tuple) and spec and spec[0] in SPACE_KINDS):
            out[key] = spec
            continue
        _check_domain(key, spec)
        kind = spec[0]
        if kind == "choice":
            out[key] = cs.choice(list(spec[1]))
        else:
            out[key] = getattr(cs, kind)(spec[1], spec[2])
    return out


def objectives_arg(objectives: Sequence[ObjectiveSpec]) -> str:
    """The ``--objectives`` value of a recipe trial, e.g. ``"val_acc:max,rtd/noise:max"``.

    Args:
        objectives: The preset's objectives (``Preset.objectives``).

    Returns:
        Comma-separated ``key:mode`` pairs.

    Raises:
        ValueError: A key with whitespace, a comma or a colon (``LocalBackend`` passes values
            on a command line split at spaces).
    """
    for obj in objectives:
        if any(c.isspace() or c in ",:" for c in obj.key):
            raise ValueError(f"objective key {obj.key!r} cannot be passed to a trial script")
    return ",".join(f"{o.key}:{o.mode}" for o in objectives)


def parse_space_override(recipe: Recipe, key: str, text: str) -> Any:
    """Read a ``--set KEY=SPEC`` value: a domain ``kind:args`` or a constant.

    Domains: ``choice:16,32,64``, ``loguniform:1e-4,1e-2``, ``uniform:0,0.5``,
    ``randint:1,3``, ``lograndint:8,256``. Anything else is a constant of the type of the
    recipe's default (``--set lr=0.01`` fixes the learning rate).

    Args:
        recipe: The recipe whose hyperparameter is overridden.
        key: Hyperparameter name.
        text: The specification.

    Returns:
        A search-space entry ``(kind, ...)`` or a constant.

    Raises:
        ValueError: Unknown hyperparameter or a value that does not parse.
    """
    if key not in recipe.default_config:
        raise ValueError(
            f"recipe {recipe.name!r} has no hyperparameter {key!r}; "
            f"known: {sorted(recipe.default_config)}"
        )
    default = recipe.default_config[key]

    def typed(raw: str) -> Any:
        raw = raw.strip()
        if isinstance(default, bool):
            low = raw.lower()
            if low not in ("true", "false", "1", "0"):
                raise ValueError(f"--set {key}: expected a boolean, got {raw!r}")
            return low in ("true", "1")
        if isinstance(default, int):
            value = float(raw)
            if not value.is_integer():
                raise ValueError(f"--set {key}: expected an integer, got {raw!r}")
            return int(value)
        if isinstance(default, float):
            return float(raw)
        return raw

    kind, sep, rest = text.partition(":")
    if sep and kind in SPACE_KINDS:
        values = [typed(v) for v in rest.split(",") if v.strip()]
        spec: tuple[Any, ...] = (kind, values) if kind == "choice" else (kind, *values)
        _check_domain(key, spec)
        return spec
    try:
        return typed(text)
    except ValueError as err:
        raise ValueError(f"--set {key}={text}: {err}") from err


def build_config_space(
    recipe_name: str,
    preset_objectives: Sequence[ObjectiveSpec],
    minimize_all: bool,
    *,
    max_epochs: int,
    num_points: int,
    seed: int = 0,
    store: str | None = None,
    wandb: bool = False,
    search_space: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Syne Tune config space of a recipe search: its hyperparameters plus the constants
    the trial script (`lightning_rtd.recipes.runner.main`) reads.

    Args:
        recipe_name: A registered recipe.
        preset_objectives: The objectives the scheduler reads (``Preset.objectives``).
        minimize_all: ``Preset.minimize_all`` (MOASHA presets report negated names).
        max_epochs: Epochs per trial (the scheduler's ``max_t``).
        num_points: RTD probe-set size.
        seed: Training seed of every trial.
        store: RTD store URL passed as ``--rtd_store``; ``None`` leaves the trials' default,
            ``<tuner folder>/rtd-store``. A ``{tuner}`` placeholder is replaced by the tuner
            name in the trial.
        wandb: Log every trial to an (offline unless configured) W&B run.
        search_space: Entries replacing the recipe's (a domain tuple or a constant).

    Returns:
        The config space.

    Raises:
        ValueError: Unknown hyperparameters, or a store URL with whitespace.
    """
    recipe = get_recipe(recipe_name)
    space: dict[str, Any] = dict(recipe.search_space)
    overrides = dict(search_space or {})
    unknown = sorted(set(overrides) - set(space))
    if unknown:
        raise ValueError(
            f"recipe {recipe_name!r} has no hyperparameters {unknown}; known: {sorted(space)}"
        )
    space.update(overrides)
    config = to_syne_tune_space(space)
    config.update(
        {
            "max_epochs": int(max_epochs),
            "num_points": int(num_points),
            "seed": int(seed),
            "objectives": objectives_arg(preset_objectives),
            "minimize_all": bool(minimize_all),
        }
    )
    if store is not None:
        if not store or any(c.isspace() for c in store):
            raise ValueError(f"store URL {store!r} is empty or has whitespace")
        config["rtd_store"] = store
    if wandb:
        config["wandb"] = True
    return config


def default_entry_point(
    recipe_name: str, examples_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The trial script of a recipe: ``<examples_dir>/<recipe with _>.py``.

    Args:
        recipe_name: A registered recipe, e.g. ``"digits-mlp"`` -> ``digits_mlp.py``.
        examples_dir: Folder of the scripts; the repository's ``examples/`` by default.

    Returns:
        The script's absolute path.

    Raises:
        FileNotFoundError: The script does not exist (e.g. an installed package without the
            repository's ``examples/``): pass ``entry_point`` to `launch`.
    """
    get_recipe(recipe_name)
    folder = (
        Path(examples_dir) if examples_dir else Path(__file__).resolve().parents[2] / "examples"
    )
    path = (folder / f"{recipe_name.replace('-', '_')}.py").resolve()
    if not path.is_file():
        raise FileNotFoundError(
            f"trial script {path} not found; pass entry_point= (a script calling "
            f"lightning_rtd.recipes.runner.main({recipe_name!r}))"
        )
    return path


def rung_levels(max_t: int, grace_period: int, reduction_factor: float) -> list[int]:
    """Epochs at which ASHA-type schedulers decide whether to stop a trial (``max_t``
    excluded: a trial reaching it always stops).

    Mirrors Syne Tune 0.16's first bracket: milestones ``grace * rf**k``; a report at the first
    epoch at or above a milestone is the one compared.

    Args:
        max_t: Largest resource level.
        grace_period: First rung.
        reduction_factor: Ratio of successive rungs.

    Returns:
        The rung epochs below ``max_t``, ascending.
    """
    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
    levels = {math.ceil(grace_period * reduction_factor**k - 1e-9) for k in range(count)}
    return sorted(level for level in levels if level < max_t)


# --------------------------------------------------------------------------------------------
# Progress and results
# --------------------------------------------------------------------------------------------


@dataclass
class TrialOutcome:
    """How one trial ended.

    Attributes:
        trial_id: Syne Tune trial id.
        epochs: Last epoch the tuner received a report for.
        outcome: ``"stopped"`` (by the scheduler at a rung, before ``max_t``),
            ``"completed"`` (reached ``max_t``) or ``"cut-off"`` (still running when the
            search ended).
        last: Raw metric values of the last report.
        config: The trial's configuration (hyperparameters and constants).
    """

    trial_id: int
    epochs: int
    outcome: str
    last: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class TrialProgress(TunerCallback):
    """Tuner callback printing one line per finished trial: how many epochs it ran, why it
    ended (stopped at a rung, reached ``max_t``, cut off by the end of the search) and its last
    values of ``metrics``.

    Args:
        max_t: Largest resource level.
        metrics: Keys shown on each line (raw names, e.g. ``val_acc``, ``rtd/noise``).
        resource_attr: Resource key of the reports.
        quiet: Record outcomes without printing.

    Attributes:
        outcomes: Trial id -> `TrialOutcome`, filled as trials finish.
    """

    def __init__(
        self,
        max_t: int,
        metrics: Sequence[str],
        *,
        resource_attr: str = RESOURCE_ATTR,
        quiet: bool = False,
    ) -> None:
        self.max_t = int(max_t)
        self.metrics = tuple(metrics)
        self.resource_attr = resource_attr
        self.quiet = quiet
        self.outcomes: dict[int, TrialOutcome] = {}
        self._last: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._started = time.monotonic()

    def on_tuning_start(self, tuner: Any) -> None:
        """Start the clock of the progress lines."""
        self._started = time.monotonic()

    def _print(self, text: str) -> None:
        if not self.quiet:
            elapsed = time.monotonic() - self._started
            print(f"[lightning-rtd {elapsed:5.0f}s] {text}", file=sys.stdout, flush=True)

    def _finish(self, trial_id: int, outcome: str) -> None:
        if trial_id in self.outcomes or trial_id not in self._last:
            return
        result, config = self._last[trial_id]
        epochs = int(result.get(self.resource_attr, 0))
        values = {k: float(result[k]) for k in self.metrics if k in result}
        self.outcomes[trial_id] = TrialOutcome(trial_id, epochs, outcome, values, config)
        why = {
            STOPPED: f"stopped at a rung, epoch {epochs} of {self.max_t}",
            COMPLETED: f"completed {epochs} of {self.max_t} epochs",
            CUT_OFF: f"cut off by the end of the search at epoch {epochs} of {self.max_t}",
        }[outcome]
        shown = " | ".join(f"{k} {_fmt(v)}" for k, v in values.items())
        self._print(f"trial {trial_id} {why}" + (f" | {shown}" if shown else ""))

    def on_trial_result(
        self, trial: Any, status: str, result: dict[str, Any], decision: str
    ) -> None:
        """Remember the last report; a STOP decision finishes the trial."""
        self._last[trial.trial_id] = (dict(result), dict(trial.config))
        if decision == "STOP":
            epochs = int(result.get(self.resource_attr, 0))
            self._finish(trial.trial_id, COMPLETED if epochs >= self.max_t else STOPPED)

    def on_trial_complete(self, trial: Any, result: dict[str, Any]) -> None:
        """A trial that exits by itself (e.g. under random search) finished its epochs."""
        self._last[trial.trial_id] = (dict(result), dict(trial.config))
        epochs = int(result.get(self.resource_attr, 0))
        self._finish(trial.trial_id, COMPLETED if epochs >= self.max_t else CUT_OFF)

    def on_tuning_end(self) -> None:
        """Trials still running when the search ends are cut off."""
        for trial_id in sorted(self._last):
            self._finish(trial_id, CUT_OFF)


def summarize_trials(
    results: pd.DataFrame,
    *,
    max_t: int,
    resource_attr: str = RESOURCE_ATTR,
    metrics: Sequence[str] = (),
) -> dict[int, TrialOutcome]:
    """How every trial of a finished search ended, from its results dataframe.

    A trial whose last report carries the decision ``STOP`` before ``max_t`` was stopped at a
    rung; one whose last report is at ``max_t`` or beyond completed; any other was still
    running when the search ended.

    Args:
        results: ``ExperimentResult.results`` (one row per report the tuner processed).
        max_t: Largest resource level.
        resource_attr: Resource key.
        metrics: Raw metric keys copied into `TrialOutcome.last`.

    Returns:
        Trial id -> outcome, sorted by id.
    """
    out: dict[int, TrialOutcome] = {}
    if results is None or results.empty:
        return out
    for trial_id, rows in results.groupby("trial_id", sort=True):
        rows = rows.sort_values(resource_attr, kind="stable")
        last = rows.iloc[-1]
        epochs = int(last[resource_attr])
        if epochs >= max_t:
            outcome = COMPLETED
        elif str(last.get("st_decision", "")) == "STOP":
            outcome = STOPPED
        else:
            outcome = CUT_OFF
        values = {k: float(last[k]) for k in metrics if k in last.index and pd.notna(last[k])}
        config = {
            c[len("config_") :]: _plain(last[c]) for c in rows.columns if c.startswith("config_")
        }
        out[int(trial_id)] = TrialOutcome(int(trial_id), epochs, outcome, values, config)
    return out


def _plain(value: Any) -> Any:
    """A dataframe cell as a plain Python value (NumPy scalars unwrapped)."""
    return value.item() if hasattr(value, "item") else value


def best_trial(
    results: pd.DataFrame,
    metric: str,
    mode: str,
    *,
    resource_attr: str = RESOURCE_ATTR,
    hyperparameters: Sequence[str] | None = None,
) -> dict[str, Any] | None:
    """The best report of a search by one raw metric.

    Args:
        results: ``ExperimentResult.results``.
        metric: Raw metric key, e.g. ``"val_acc"`` (not the negated ``neg_val_acc``).
        mode: ``"max"`` or ``"min"``.
        resource_attr: Resource key.
        hyperparameters: Config keys to include; every ``config_*`` column when ``None``.

    Returns:
        ``{"trial_id", "epoch", "metric", "mode", "value", "config"}``, or ``None`` when no
        report carries a finite value of ``metric``.
    """
    if results is None or results.empty or metric not in results.columns:
        return None
    values = pd.to_numeric(results[metric], errors="coerce")
    finite = values[values.notna() & values.abs().ne(math.inf)]
    if finite.empty:
        return None
    index = finite.idxmax() if mode == "max" else finite.idxmin()
    row = results.loc[index]
    keys = hyperparameters
    if keys is None:
        keys = [c[len("config_") :] for c in results.columns if c.startswith("config_")]
    config = {k: _plain(row[f"config_{k}"]) for k in keys if f"config_{k}" in row.index}
    return {
        "trial_id": int(row["trial_id"]),
        "epoch": int(row[resource_attr]),
        "metric": metric,
        "mode": mode,
        "value": float(row[metric]),
        "config": config,
    }


# --------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------


def plot_search(
    results: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    metric: str,
    mode: str,
    max_t: int,
    second: tuple[str, str | None] | None = None,
    metric_used: bool = True,
    outcomes: Mapping[int, TrialOutcome] | None = None,
    rungs: Sequence[int] = (),
    title: str | None = None,
    time_key: str = "st_tuner_time",
    resource_attr: str = RESOURCE_ATTR,
) -> Path:
    """Plot a search: each trial's metric over wall-clock time, with how it ended.

    One line per trial (one colour each, a dot per report, ``#id`` at its end) against the
    seconds since the search started. The end of each line says why the trial ended: a large
    ``x`` with the epoch number for a trial stopped at a rung, a filled circle for one that
    reached ``max_t``, an open triangle for one still running when the search ended. The best
    trial by ``metric`` is drawn thicker. With ``second``, a lower panel shows that metric the
    same way (e.g. the RTD objective of a MOASHA preset).

    Args:
        results: ``ExperimentResult.results``.
        path: PNG file to write.
        metric: Raw key of the upper panel (e.g. ``"val_acc"``).
        mode: ``"max"`` or ``"min"`` for ``metric``.
        max_t: Largest resource level.
        second: ``(key, mode)`` of the lower panel; ``mode`` ``None`` marks a metric the
            scheduler does not read.
        metric_used: Whether the scheduler reads ``metric`` (say so in the axis label).
        outcomes: From `summarize_trials`; computed when ``None``.
        rungs: Rung levels shown in the legend.
        title: Figure title.
        time_key: Column with the wall-clock time of each report.
        resource_attr: Resource key.

    Returns:
        ``path``.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    path = Path(path)
    if outcomes is None:
        outcomes = summarize_trials(results, max_t=max_t, resource_attr=resource_attr)
    panels: list[tuple[str, str | None, bool]] = [(metric, mode, metric_used)]
    if second is not None and second[0] in results.columns:
        panels.append((second[0], second[1], second[1] is not None))
    fig = Figure(figsize=(10, 3.6 * len(panels) + 0.9), dpi=110, layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    best = best_trial(results, metric, mode, resource_attr=resource_attr)
    best_id = None if best is None else best["trial_id"]
    palette = list(colormaps["tab10"].colors) + list(colormaps["Dark2"].colors)
    trials = sorted(int(t) for t in results["trial_id"].unique()) if not results.empty else []
    for ax, (key, key_mode, used) in zip(axes, panels, strict=True):
        for i, trial_id in enumerate(trials):
            rows = results[results["trial_id"] == trial_id].sort_values(resource_attr)
            rows = rows[pd.to_numeric(rows.get(key), errors="coerce").notna()]
            if rows.empty:
                continue
            x = rows[time_key].to_numpy(dtype=float)
            y = rows[key].to_numpy(dtype=float)
            color = palette[i % len(palette)]
            is_best = trial_id == best_id
            ax.plot(x, y, "-", color=color, lw=2.6 if is_best else 1.2, alpha=0.95, zorder=2)
            ax.plot(x, y, ".", color=color, ms=4, zorder=3)
            outcome = outcomes.get(trial_id)
            kind = outcome.outcome if outcome is not None else CUT_OFF
            epochs = outcome.epochs if outcome is not None else int(rows[resource_attr].iloc[-1])
            if kind == STOPPED:
                ax.plot(x[-1], y[-1], "x", color=color, ms=11, mew=2.6, zorder=4)
                ax.annotate(
                    f"e{epochs}",
                    (x[-1], y[-1]),
                    xytext=(5, -11),
                    textcoords="offset points",
                    fontsize=7,
                    color=color,
                )
            elif kind == COMPLETED:
                ax.plot(x[-1], y[-1], "o", color=color, ms=7, mec="black", mew=0.8, zorder=4)
            else:
                ax.plot(x[-1], y[-1], ">", color=color, ms=8, mfc="white", mew=1.6, zorder=4)
            ax.annotate(
                f"#{trial_id}",
                (x[-1], y[-1]),
                xytext=(5, 3),
                textcoords="offset points",
                fontsize=7,
                color=color,
                fontweight="bold" if is_best else "normal",
            )
        direction = {"max": "higher is better", "min": "lower is better"}.get(key_mode or "", "")
        role = "scheduler objective" if used else "not read by the scheduler"
        ax.set_ylabel(f"{key}\n({role}" + (f", {direction})" if direction and used else ")"))
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("wall-clock time since the search started [s]")
    axes[-1].set_xlim(left=0)
    n_stopped = sum(o.outcome == STOPPED for o in outcomes.values())
    handles = [
        Line2D(
            [],
            [],
            ls="",
            marker="x",
            color="black",
            ms=9,
            mew=2.2,
            label="stopped at a rung (eN: epoch)",
        ),
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            color="grey",
            mec="black",
            ms=7,
            label=f"reached max_t = {max_t} epochs",
        ),
        Line2D(
            [],
            [],
            ls="",
            marker=">",
            color="grey",
            mfc="white",
            ms=8,
            mew=1.6,
            label="running when the search ended",
        ),
    ]
    if best is not None:
        handles.append(
            Line2D(
                [],
                [],
                color="black",
                lw=2.6,
                label=f"best {metric}: trial {best_id} ({best['value']:.4g})",
            )
        )
    legend_title = None
    if rungs:
        many = len(rungs) > 1
        legend_title = f"rung{'s' * many} at epoch{'s' * many} {', '.join(map(str, rungs))}"
    axes[0].legend(
        handles=handles,
        loc="best",
        fontsize=8,
        title=legend_title,
        title_fontsize=8,
        framealpha=0.85,
    )
    head = title or "Syne Tune search"
    fig.suptitle(
        f"{head}\n{len(trials)} trials reported, {n_stopped} stopped at a rung", fontsize=11
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# --------------------------------------------------------------------------------------------
# Launch
# --------------------------------------------------------------------------------------------


@dataclass
class LaunchResult:
    """What `launch` did.

    Attributes:
        tuner_name: Syne Tune's name of the search (folder name, with a time stamp).
        tuner_path: The tuner's results folder.
        store_url: The RTD reference store shared by the trials.
        preset: The scheduler preset.
        results: One row per report the tuner processed (``ExperimentResult.results``);
            empty when there was none.
        outcomes: Trial id -> how it ended.
        best: Best report by the recipe's metric (see `best_trial`), or ``None``.
        plot_path: The search plot, or ``None`` without results or with ``plot=False``.
        summary_path: JSON file with the settings, best trial and outcomes.
        tuning_s: Wall-clock seconds of ``Tuner.run`` (trials included, until the last trial
            was stopped).
        wall_s: Wall-clock seconds of the whole launch (set-up, tuning, summary and plot).
    """

    tuner_name: str
    tuner_path: Path
    store_url: str
    preset: Preset
    results: pd.DataFrame
    outcomes: dict[int, TrialOutcome]
    best: dict[str, Any] | None
    plot_path: Path | None
    summary_path: Path
    tuning_s: float
    wall_s: float


def _second_panel(preset: Preset, metric: str) -> tuple[str, str | None] | None:
    others = [o for o in preset.objectives if o.key != metric]
    if others:
        return others[0].key, others[0].mode
    return "rtd/noise", None


def launch(
    recipe: str,
    scheduler: str = "moasha-noise-max",
    *,
    n_workers: int = 2,
    max_wallclock: float = 600.0,
    max_epochs: int | None = None,
    seed: int = 0,
    num_points: int | None = None,
    store: str | None = None,
    wandb: bool = False,
    grace_period: int = 1,
    reduction_factor: float = 3,
    search_space: Mapping[str, Any] | None = None,
    max_trials: int | None = None,
    tuner_name: str | None = None,
    entry_point: str | os.PathLike[str] | None = None,
    sleep_time: float = 0.5,
    print_update_interval: float = 30.0,
    max_failures: int = 1,
    plot: bool = True,
    verbose: bool = True,
    scheduler_kwargs: Mapping[str, Any] | None = None,
) -> LaunchResult:
    """Run a Syne Tune search of a recipe with a scheduler preset, then summarise and plot it.

    Each trial runs the recipe's script (``examples/<recipe>.py``) through ``LocalBackend``
    with the sampled hyperparameters and the constants of `build_config_space`, so it reports
    exactly ``preset.metric_names`` once per epoch. ``max_t`` is ``max_epochs``: the trial whose
    report reaches it is SIGKILLed at once, which loses nothing that matters, since the recipe
    writes ``last.ckpt`` and the RTD store entry before it reports (only the final test
    evaluation of such a trial is lost).

    Args:
        recipe: A registered recipe (``digits-mlp``, ``mnist-cnn``, ``mnist1d-mlp``).
        scheduler: A preset or alias of `lightning_rtd.integrations.synetune.make_scheduler`.
        n_workers: Trials run in parallel.
        max_wallclock: Seconds after which the search stops (running trials are killed).
        max_epochs: Epochs per trial, the scheduler's ``max_t``; the recipe's default when
            ``None``.
        seed: Seed of the scheduler, its searcher and every trial's training.
        num_points: RTD probe-set size; `default_num_points` when ``None``.
        store: RTD store URL for all trials (a ``{tuner}`` placeholder becomes the tuner
            name); when ``None``, the trials' ``LIGHTNING_RTD_STORE`` environment variable if
            set, else ``<tuner folder>/rtd-store``.
        wandb: Log every trial to W&B (offline unless ``WANDB_MODE=online``/``WANDB_API_KEY``).
        grace_period: First rung (epochs).
        reduction_factor: ASHA's ratio between rungs.
        search_space: Entries replacing the recipe's search space (domain tuples in the
            recipe format, or constants).
        max_trials: Stop once more than this many trials were started.
        tuner_name: Base name of the search; ``lrtd-<recipe>-<preset>`` by default.
        entry_point: Trial script; `default_entry_point` when ``None``.
        sleep_time: Seconds the tuner waits between polls while all workers are busy (short,
            so that stop decisions reach short epochs in time).
        print_update_interval: Seconds between Syne Tune's status tables.
        max_failures: Failed trials tolerated before the search aborts.
        plot: Write the search plot.
        verbose: Print a line per finished trial and the summary.
        scheduler_kwargs: Extra arguments of the scheduler constructor.

    Returns:
        The `LaunchResult`.

    Raises:
        ValueError: Unknown recipe hyperparameters or preset, bad numbers.
    """
    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend import LocalBackend
    from syne_tune.experiments import load_experiment
    from syne_tune.results_callback import StoreResultsCallback

    started = time.perf_counter()
    rec = get_recipe(recipe)
    epochs = rec.max_epochs if max_epochs is None else int(max_epochs)
    points = default_num_points(recipe) if num_points is None else int(num_points)
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    if not max_wallclock > 0:
        raise ValueError(f"max_wallclock must be > 0, got {max_wallclock}")
    script = Path(entry_point).resolve() if entry_point else default_entry_point(recipe)

    def preset_for(space: Mapping[str, Any]) -> Preset:
        return make_scheduler(
            scheduler,
            space,
            metric=rec.metric,
            mode=rec.mode,
            max_t=epochs,
            random_seed=seed,
            resource_attr=RESOURCE_ATTR,
            grace_period=grace_period,
            reduction_factor=reduction_factor,
            **dict(scheduler_kwargs or {}),
        )

    hyper_space = build_config_space(
        recipe,
        (),
        False,
        max_epochs=epochs,
        num_points=points,
        seed=seed,
        search_space=search_space,
    )
    draft = preset_for(hyper_space)  # learn the preset's objectives
    config_space = build_config_space(
        recipe,
        draft.objectives,
        draft.minimize_all,
        max_epochs=epochs,
        num_points=points,
        seed=seed,
        store=store,
        wandb=wandb,
        search_space=search_space,
    )
    preset = preset_for(config_space)

    shown = [rec.metric, *(o.key for o in preset.objectives if o.key != rec.metric)]
    shown += [k for k in ("rtd/noise", "rtd/top", "rtd/all") if k not in shown]
    progress = TrialProgress(epochs, shown, quiet=not verbose)
    stop = StoppingCriterion(max_wallclock_time=max_wallclock, max_num_trials_started=max_trials)
    name = tuner_name or f"lrtd-{recipe}-{preset.name}"
    rungs = rung_levels(epochs, grace_period, reduction_factor)
    tuner = Tuner(
        trial_backend=LocalBackend(entry_point=str(script), rotate_gpus=False),
        scheduler=preset.scheduler,
        stop_criterion=stop,
        n_workers=n_workers,
        sleep_time=sleep_time,
        print_update_interval=print_update_interval,
        max_failures=max_failures,
        tuner_name=name,
        callbacks=[StoreResultsCallback(), progress],
        metadata={
            "lightning_rtd": {
                "recipe": recipe,
                "preset": preset.name,
                "objectives": [[o.key, o.mode] for o in preset.objectives],
                "metric_names": list(preset.metric_names),
                "max_epochs": epochs,
                "num_points": points,
                "seed": seed,
                "rungs": rungs,
            }
        },
    )
    tuner_path = Path(tuner.tuner_path)
    # the trials resolve their store like this (parse_trial_args): --rtd_store, then the
    # environment variable they inherit, then the tuning run's folder
    override = store or os.environ.get(STORE_ENV_VAR) or None
    store_url = (
        override.replace("{tuner}", tuner.name) if override else str(tuner_path / STORE_DIRNAME)
    )
    if verbose:
        names = ", ".join(preset.metric_names)
        print(
            f"[lightning-rtd] {recipe} with {preset.name} ({preset.description}); scheduler "
            f"reads {names}; max_t = {epochs} epochs, rungs {rungs}; {n_workers} workers for "
            f"{max_wallclock:g} s; RTD store {store_url}",
            flush=True,
        )
    tuning_started = time.perf_counter()
    tuner.run()
    tuning_s = time.perf_counter() - tuning_started

    experiment = load_experiment(tuner.name)
    results = experiment.results if experiment.results is not None else pd.DataFrame()
    if not results.empty:
        results = results.sort_values(["trial_id", RESOURCE_ATTR], kind="stable")
        results = results.reset_index(drop=True)
    outcomes = summarize_trials(results, max_t=epochs, metrics=shown)
    best = best_trial(results, rec.metric, rec.mode, hyperparameters=list(rec.default_config))
    plot_path: Path | None = None
    if plot and not results.empty:
        plot_path = plot_search(
            results,
            tuner_path / PLOT_FILENAME,
            metric=rec.metric,
            mode=rec.mode,
            max_t=epochs,
            second=_second_panel(preset, rec.metric),
            metric_used=any(o.key == rec.metric for o in preset.objectives),
            outcomes=outcomes,
            rungs=rungs,
            title=f"{recipe} · {preset.name} · {n_workers} workers · {max_wallclock:g} s",
        )
    wall = time.perf_counter() - started
    summary_path = tuner_path / SUMMARY_FILENAME
    summary = {
        "tuner_name": tuner.name,
        "tuner_path": str(tuner_path),
        "recipe": recipe,
        "preset": preset.name,
        "metric_names": list(preset.metric_names),
        "max_epochs": epochs,
        "rungs": rungs,
        "store": store_url,
        "best": best,
        "trials": {
            str(k): {"epochs": o.epochs, "outcome": o.outcome, "last": o.last}
            for k, o in outcomes.items()
        },
        "plot": None if plot_path is None else str(plot_path),
        "tuning_s": tuning_s,
        "wall_s": wall,
    }
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2, default=str))
    if verbose:
        _print_summary(summary, outcomes, rec.metric)
    return LaunchResult(
        tuner_name=tuner.name,
        tuner_path=tuner_path,
        store_url=store_url,
        preset=preset,
        results=results,
        outcomes=outcomes,
        best=best,
        plot_path=plot_path,
        summary_path=summary_path,
        tuning_s=tuning_s,
        wall_s=wall,
    )


def _print_summary(
    summary: Mapping[str, Any], outcomes: Mapping[int, TrialOutcome], metric: str
) -> None:
    counts = {
        k: sum(o.outcome == k for o in outcomes.values()) for k in (STOPPED, COMPLETED, CUT_OFF)
    }
    lines = [
        "",
        f"== lightning-rtd search {summary['tuner_name']} ({summary['preset']}) ==",
        f"trials: {len(outcomes)} ({counts[STOPPED]} stopped at a rung, {counts[COMPLETED]} "
        f"reached {summary['max_epochs']} epochs, {counts[CUT_OFF]} cut off by the time limit); "
        f"tuning {summary['tuning_s']:.0f} s, {summary['wall_s']:.0f} s in all",
    ]
    best = summary["best"]
    if best is None:
        lines.append(f"best configuration: none (no report with a finite {metric})")
    else:
        lines.append(
            f"best configuration by {best['metric']} ({best['mode']}): trial {best['trial_id']} "
            f"at epoch {best['epoch']}, {best['metric']} = {best['value']:.4f}"
        )
        lines += [f"    {k} = {_fmt(v)}" for k, v in best["config"].items()]
    lines.append(f"results: {summary['tuner_path']}")
    if summary["plot"]:
        lines.append(f"plot: {summary['plot']}")
    lines.append(f"RTD store: {summary['store']}")
    print("\n".join(lines), flush=True)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``examples/launch_synetune.py``.

    Returns:
        The parser; `main` reads its namespace.
    """
    parser = argparse.ArgumentParser(
        prog="launch_synetune.py",
        description=(
            "Tune a lightning-rtd recipe with Syne Tune (LocalBackend): multi-fidelity "
            "schedulers that stop and promote trials on RTD of their validation embeddings."
        ),
        allow_abbrev=False,
    )
    parser.add_argument("--recipe", choices=list_recipes(), default="digits-mlp")
    parser.add_argument(
        "--scheduler",
        choices=list_presets(include_aliases=True),
        default="moasha-noise-max",
        help="preset; -max: RTD maximised (diversity), -min: minimised (similarity)",
    )
    parser.add_argument("--n-workers", type=int, default=2, help="trials run in parallel")
    parser.add_argument(
        "--max-wallclock", type=float, default=600.0, help="seconds before the search stops"
    )
    parser.add_argument(
        "--max-epochs", type=int, default=None, help="epochs per trial = max_t (recipe default)"
    )
    parser.add_argument("--seed", type=int, default=0, help="search and training seed")
    parser.add_argument(
        "--num-points", type=int, default=None, help="RTD probe size (digits: 200, else 500)"
    )
    parser.add_argument(
        "--store",
        default=None,
        help="RTD store URL shared by the trials ({tuner} = tuner name); "
        "default <tuner folder>/rtd-store",
    )
    parser.add_argument(
        "--wandb",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="log every trial to W&B (offline unless WANDB_MODE=online or WANDB_API_KEY)",
    )
    parser.add_argument("--grace-period", type=int, default=1, help="first rung (epochs)")
    parser.add_argument("--reduction-factor", type=float, default=3.0, help="ASHA's eta")
    parser.add_argument("--max-trials", type=int, default=None, help="stop after N trials")
    parser.add_argument("--tuner-name", default=None, help="base name of the results folder")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=SPEC",
        help="override the search space: width=choice:16,32 | lr=loguniform:1e-3,1e-1 | "
        "depth=1 (constant); repeatable",
    )
    parser.add_argument(
        "--print-interval", type=float, default=30.0, help="seconds between status tables"
    )
    parser.add_argument("--no-plot", dest="plot", action="store_false", help="skip the plot")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    examples_dir: str | os.PathLike[str] | None = None,
) -> LaunchResult:
    """Command-line entry point: parse ``argv`` and `launch`.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when ``None``.
        examples_dir: Folder of the recipes' trial scripts.

    Returns:
        The `LaunchResult`.
    """
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    recipe = get_recipe(args.recipe)
    overrides: dict[str, Any] = {}
    for item in args.overrides:
        key, sep, spec = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected KEY=SPEC")
        try:
            overrides[key.strip()] = parse_space_override(recipe, key.strip(), spec)
        except ValueError as err:
            parser.error(str(err))
    return launch(
        args.recipe,
        args.scheduler,
        n_workers=args.n_workers,
        max_wallclock=args.max_wallclock,
        max_epochs=args.max_epochs,
        seed=args.seed,
        num_points=args.num_points,
        store=args.store,
        wandb=args.wandb,
        grace_period=args.grace_period,
        reduction_factor=args.reduction_factor,
        search_space=overrides,
        max_trials=args.max_trials,
        tuner_name=args.tuner_name,
        entry_point=default_entry_point(args.recipe, examples_dir),
        print_update_interval=args.print_interval,
        plot=args.plot,
    )
