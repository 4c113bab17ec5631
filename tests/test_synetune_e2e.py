"""End-to-end Syne Tune searches on the digits recipe with real trials (LocalBackend), the
launcher's command line, config-space conversion, summary and plot.

The slow tests run real tuners (2 workers, 105 s each) and check from the tuner's results
and the shared RTD store that trials report what their scheduler reads, that rungs stop trials,
and that ``rtd/top`` is RTD to the best earlier trial recomputed from the stored embeddings.
"""

from __future__ import annotations

import json
import math
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from syne_tune.config_space import Categorical, Domain
from syne_tune.report import retrieve

import lightning_rtd.integrations.synetune_launch as launcher
from lightning_rtd import ReferenceStore, rtd
from lightning_rtd.integrations.synetune import PRESET_ALIASES, list_presets
from lightning_rtd.recipes.runner import get_recipe
from lightning_rtd.references import best_entry

REPO = Path(__file__).resolve().parents[1]
RTD_KEYS = ("rtd/noise", "rtd/top", "rtd/all")
MAX_EPOCHS = 4
# Syne Tune 0.16 stops a trial at a rung when its rank there exceeds 1/rf. With rf = 4 and
# max_t = 4 the only rung is epoch 1, where any trial that is not the best so far is stopped,
# so a few trials suffice to see stops (with rf = 2 the second of two trials never stops).
REDUCTION_FACTOR = 4
TINY_SPACE = {
    "width": ("choice", [16, 32]),
    "embedding_dim": ("choice", [4, 8]),
    "depth": ("randint", 1, 2),
    "batch_size": ("choice", [32, 64]),
}


# ---- fast: config space, parsing, summaries ---------------------------------------------------


def test_to_syne_tune_space_converts_every_kind_and_keeps_constants() -> None:
    space = launcher.to_syne_tune_space(
        {
            "lr": ("loguniform", 1e-4, 1e-1),
            "p": ("uniform", 0.0, 0.5),
            "depth": ("randint", 1, 3),
            "width": ("lograndint", 8, 256),
            "act": ("choice", ["relu", "gelu"]),
            "epochs": 5,
            "name": "x",
        }
    )
    assert all(isinstance(space[k], Domain) for k in ("lr", "p", "depth", "width", "act"))
    assert isinstance(space["act"], Categorical) and space["act"].categories == ["relu", "gelu"]
    assert (space["lr"].lower, space["lr"].upper) == (1e-4, 1e-1)
    assert (space["depth"].lower, space["depth"].upper) == (1, 3)
    assert space["epochs"] == 5 and space["name"] == "x"
    rng = np.random.RandomState(0)
    for _ in range(50):
        assert 1 <= space["depth"].sample(random_state=rng) <= 3
        assert 8 <= space["width"].sample(random_state=rng) <= 256
    with pytest.raises(ValueError):
        launcher.to_syne_tune_space({"lr": ("loguniform", 0.0, 1.0)})


def test_build_config_space_carries_the_preset_objectives_as_constants() -> None:
    preset = launcher.make_scheduler(
        "moasha-noise-max", {"x": 1}, metric="val_acc", mode="max", max_t=4, random_seed=0
    )
    space = launcher.build_config_space(
        "digits-mlp",
        preset.objectives,
        preset.minimize_all,
        max_epochs=4,
        num_points=100,
        seed=3,
        store="/tmp/store-{tuner}",
        wandb=True,
        search_space={"width": ("choice", [16, 32]), "depth": 1},
    )
    assert space["objectives"] == "val_acc:max,rtd/noise:max" and space["minimize_all"] is True
    assert space["max_epochs"] == 4 and space["num_points"] == 100 and space["seed"] == 3
    assert space["rtd_store"] == "/tmp/store-{tuner}" and space["wandb"] is True
    assert space["depth"] == 1 and space["width"].categories == [16, 32]
    assert set(get_recipe("digits-mlp").default_config) <= set(space)
    plain = launcher.build_config_space("digits-mlp", (), False, max_epochs=2, num_points=50)
    assert "rtd_store" not in plain and "wandb" not in plain
    with pytest.raises(ValueError, match="no hyperparameters"):
        launcher.build_config_space(
            "digits-mlp", (), False, max_epochs=2, num_points=50, search_space={"nope": 1}
        )
    with pytest.raises(ValueError, match="whitespace"):
        launcher.build_config_space(
            "digits-mlp", (), False, max_epochs=2, num_points=50, store="/a b"
        )


def test_parser_accepts_every_preset_and_alias() -> None:
    parser = launcher.build_parser()
    names = list_presets(include_aliases=True)
    for must in ("rtd-top-only-max", "rtd-top-only-min", "moasha-loss", *PRESET_ALIASES):
        assert must in names
    for name in names:
        assert parser.parse_args(["--scheduler", name]).scheduler == name
    for recipe in ("digits-mlp", "mnist-cnn", "mnist1d-mlp"):
        assert parser.parse_args(["--recipe", recipe]).recipe == recipe
    with pytest.raises(SystemExit):
        parser.parse_args(["--scheduler", "moasha-nois"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--recipe", "cifar"])
    defaults = parser.parse_args([])
    assert defaults.wandb is False and defaults.store is None and defaults.num_points is None
    assert parser.parse_args(["--wandb"]).wandb is True
    assert parser.parse_args(["--no-wandb"]).wandb is False


def test_main_maps_arguments_to_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(launcher, "launch", lambda *a, **k: calls.append((a, k)) or "done")
    argv = [
        "--recipe", "mnist1d-mlp", "--scheduler", "moasha-top-min", "--n-workers", "3",
        "--max-wallclock", "90", "--max-epochs", "7", "--seed", "5", "--num-points", "300",
        "--store", "memory://st-{tuner}", "--wandb", "--grace-period", "2",
        "--reduction-factor", "2", "--set", "width=choice:64,128", "--set", "lr=0.01",
        "--set", "dropout=uniform:0,0.2",
    ]  # fmt: skip
    assert launcher.main(argv) == "done"
    ((args, kwargs),) = calls
    assert args == ("mnist1d-mlp", "moasha-top-min")
    assert kwargs["n_workers"] == 3 and kwargs["max_wallclock"] == 90.0
    assert kwargs["max_epochs"] == 7 and kwargs["seed"] == 5 and kwargs["num_points"] == 300
    assert kwargs["store"] == "memory://st-{tuner}" and kwargs["wandb"] is True
    assert kwargs["grace_period"] == 2 and kwargs["reduction_factor"] == 2.0
    assert kwargs["search_space"] == {
        "width": ("choice", [64, 128]),
        "lr": 0.01,
        "dropout": ("uniform", 0.0, 0.2),
    }
    assert kwargs["entry_point"] == REPO / "examples" / "mnist1d_mlp.py"
    with pytest.raises(SystemExit):
        launcher.main(["--set", "nope=1"])
    with pytest.raises(SystemExit):
        launcher.main(["--set", "width"])


def test_example_script_is_thin_and_shows_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["launch_synetune.py", "--help"])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(REPO / "examples" / "launch_synetune.py"), run_name="__main__")
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--recipe", "--scheduler", "--n-workers", "--max-wallclock", "--max-epochs",
                   "--seed", "--num-points", "--store", "--wandb", "--no-wandb"):  # fmt: skip
        assert option in out


def test_defaults_rungs_and_entry_points() -> None:
    assert launcher.default_num_points("digits-mlp") == 200
    assert launcher.default_num_points("mnist-cnn") == 500
    assert launcher.rung_levels(4, 1, 2) == [1, 2]
    assert launcher.rung_levels(30, 1, 3) == [1, 3, 9, 27]
    assert launcher.rung_levels(10, 1, 2.5) == [1, 3, 7]
    for recipe in ("digits-mlp", "mnist-cnn", "mnist1d-mlp"):
        assert launcher.default_entry_point(recipe).is_file()
    with pytest.raises(FileNotFoundError):
        launcher.default_entry_point("digits-mlp", REPO / "docs")


def _fake_results() -> pd.DataFrame:
    rows = []
    # trial 0 completes 4 epochs, trial 1 is stopped at the rung at epoch 1, trial 2 is cut off
    for trial, epochs, last_decision in ((0, 4, "STOP"), (1, 1, "STOP"), (2, 2, "CONTINUE")):
        for epoch in range(1, epochs + 1):
            rows.append(
                {
                    "trial_id": trial,
                    "epoch": epoch,
                    "val_acc": 0.2 * epoch + 0.01 * trial,
                    "rtd/noise": 5.0 + epoch,
                    "st_tuner_time": 10.0 * trial + epoch,
                    "st_decision": last_decision if epoch == epochs else "CONTINUE",
                    "config_lr": 0.1 * (trial + 1),
                    "config_width": 16,
                }
            )
    return pd.DataFrame(rows)


def test_summaries_best_trial_and_plot(tmp_path: Path) -> None:
    results = _fake_results()
    outcomes = launcher.summarize_trials(results, max_t=4, metrics=["val_acc"])
    assert {k: (o.epochs, o.outcome) for k, o in outcomes.items()} == {
        0: (4, "completed"),
        1: (1, "stopped"),
        2: (2, "cut-off"),
    }
    assert outcomes[1].last["val_acc"] == pytest.approx(0.21)
    best = launcher.best_trial(results, "val_acc", "max", hyperparameters=["lr", "width"])
    assert best is not None
    assert (best["trial_id"], best["epoch"]) == (0, 4)
    assert best["config"] == {"lr": 0.1, "width": 16}
    worst = launcher.best_trial(results, "val_acc", "min")
    assert worst is not None and (worst["trial_id"], worst["epoch"]) == (0, 1)
    assert launcher.best_trial(results, "missing", "max") is None
    path = launcher.plot_search(
        results, tmp_path / "p" / "search.png", metric="val_acc", mode="max", max_t=4,
        second=("rtd/noise", "max"), outcomes=outcomes, rungs=[1, 2],
    )  # fmt: skip
    _assert_png(path, min_height=600)


def test_trial_progress_prints_one_line_per_finished_trial(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from syne_tune.backend.trial_status import Trial

    progress = launcher.TrialProgress(4, ["val_acc", "rtd/noise"])
    progress.on_tuning_start(None)
    trials = [Trial(i, {"lr": 0.1 * i}, None) for i in range(4)]
    report = {"val_acc": 0.5, "rtd/noise": 3.0}
    progress.on_trial_result(trials[0], "InProgress", {"epoch": 1, **report}, "CONTINUE")
    progress.on_trial_result(trials[1], "InProgress", {"epoch": 1, **report}, "STOP")
    progress.on_trial_result(trials[0], "InProgress", {"epoch": 4, **report}, "STOP")
    progress.on_trial_complete(trials[2], {"epoch": 4, **report})
    progress.on_trial_result(trials[3], "InProgress", {"epoch": 2, **report}, "CONTINUE")
    progress.on_tuning_end()
    assert {k: (o.epochs, o.outcome) for k, o in progress.outcomes.items()} == {
        0: (4, "completed"),
        1: (1, "stopped"),
        2: (4, "completed"),
        3: (2, "cut-off"),
    }
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.startswith("[lightning-rtd") for line in lines)
    assert "trial 1 stopped at a rung, epoch 1 of 4 | val_acc 0.5 | rtd/noise 3" in lines[0]
    assert "trial 3 cut off by the end of the search at epoch 2 of 4" in lines[3]
    assert progress.outcomes[1].config == {"lr": 0.1}


def _assert_png(path: Path, min_height: int) -> None:
    import matplotlib.image as mpimg

    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    assert image.shape[0] >= min_height and image.shape[1] >= 800
    assert float(np.std(image[..., :3])) > 0.01  # not a blank canvas


# ---- slow: real tuners ----------------------------------------------------------------------


def _run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheduler: str, **kwargs: Any
) -> launcher.LaunchResult:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("SYNETUNE_FOLDER", str(tmp_path / "syne-tune"))
    monkeypatch.delenv("LIGHTNING_RTD_STORE", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    result = launcher.launch(
        "digits-mlp",
        scheduler,
        n_workers=2,
        max_wallclock=105,
        max_epochs=MAX_EPOCHS,
        seed=0,
        num_points=100,
        grace_period=1,
        reduction_factor=REDUCTION_FACTOR,
        search_space=TINY_SPACE,
        print_update_interval=20,
        **kwargs,
    )
    assert result.tuning_s <= 120, f"the tuner ran {result.tuning_s:.0f} s"
    assert result.tuner_path.parent == tmp_path / "syne-tune"
    assert not any(cwd.iterdir()), f"files written into the cwd: {list(cwd.iterdir())}"
    return result


@dataclass
class _Checked:
    trial_ids: list[int]
    must_be_positive: int  # reports whose rtd/top and rtd/all must be (and were) > 0
    identified: int  # reports whose rtd/top was recomputed from the store and matched


def _check_reports_and_store(result: launcher.LaunchResult) -> _Checked:
    """Checks that hold for any number of trials: complete finite reports, one store entry per
    report, and rtd/top equal to RTD to the best earlier trial wherever it is identifiable."""
    df = result.results
    assert not df.empty, "no trial reported"
    trial_ids = sorted(int(t) for t in df["trial_id"].unique())

    # every report the tuner processed carries the scheduler's names and the RTD values
    for name in (*result.preset.metric_names, *RTD_KEYS, "val_acc", "epoch"):
        assert name in df.columns, name
        values = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float)
        assert np.isfinite(values).all(), f"{name}: {values}"
    assert set(df["epoch"]) <= set(range(1, MAX_EPOCHS + 1))
    # ... and so does every report each trial printed (also those after a stop decision)
    for trial in trial_ids:
        lines = (result.tuner_path / str(trial) / "std.out").read_text().splitlines()
        reports = retrieve(lines)
        assert reports, f"trial {trial} printed no report"
        for report in reports:
            for name in (*result.preset.metric_names, *RTD_KEYS):
                assert isinstance(report[name], float) and math.isfinite(report[name])
        assert [r["epoch"] for r in reports] == list(range(1, len(reports) + 1))
    # how trials ended agrees with the reports
    assert sorted(result.outcomes) == trial_ids
    for o in result.outcomes.values():
        assert df[df["trial_id"] == o.trial_id]["epoch"].max() == o.epochs
        assert (o.outcome == "completed") == (o.epochs == MAX_EPOCHS)

    # the store of this tuning run holds an entry for every reported (trial, epoch)
    assert Path(result.store_url) == result.tuner_path / "rtd-store"
    store = ReferenceStore(result.store_url)
    assert {str(t) for t in trial_ids} <= set(store.trials())
    entries = {
        (e.trial_id, e.epoch): e
        for epoch in store.epochs()
        for e in store.entries(epoch, load_embeddings=False)
    }
    records = df.to_dict("records")
    for rec in records:
        assert (str(int(rec["trial_id"])), int(rec["epoch"])) in entries

    # rtd/top and rtd/all are computed against other trials: non-zero once another trial had
    # an entry before this trial started; equal to RTD to the best such trial where the set of
    # entries the trial saw is certain (all of them written before it started, none between)
    starts = {
        int(t): float((rows["st_worker_timestamp"] - rows["st_worker_time"]).min())
        for t, rows in df.groupby("trial_id")
    }
    must_be_positive = identified = 0
    for rec in records:
        trial, epoch = str(int(rec["trial_id"])), int(rec["epoch"])
        start, mine = starts[int(rec["trial_id"])], entries[(trial, epoch)]
        others = [e for (t, _), e in entries.items() if t != trial]
        if any(e.epoch <= epoch and e.created < start for e in others):
            must_be_positive += 1
            assert rec["rtd/top"] > 0 and rec["rtd/all"] > 0, rec
        same_epoch = [e for e in others if e.epoch == epoch]
        surely_seen = [e for e in same_epoch if e.created < start]
        maybe_seen = [e for e in same_epoch if e.created < mine.created]
        if surely_seen and len(surely_seen) == len(maybe_seen):
            ref = best_entry(surely_seen, "val_acc", "max")
            assert ref is not None
            mine_full = store.get(trial, epoch)
            ref_full = store.get(ref.trial_id, epoch)
            assert mine_full is not None and ref_full is not None
            expected = rtd(mine_full.embeddings, ref_full.embeddings)
            assert rec["rtd/top"] == pytest.approx(expected, rel=1e-5, abs=1e-6), (trial, epoch)
            assert mine.meta["rtd"]["rtd/top"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
            identified += 1
    return _Checked(trial_ids, must_be_positive, identified)


def _check_search_dynamics(result: launcher.LaunchResult, checked: _Checked) -> None:
    """Checks that need a few trials: rung stops, entries of several trials, and later trials
    measured against earlier ones. Skipped (after every other check passed) when the machine
    is so loaded that fewer than three trials reported: starting a trial costs ~10 s of CPU,
    mostly importing torch and Lightning."""
    n = len(checked.trial_ids)
    if n < 3:
        pytest.skip(
            f"only {n} trials reported in {result.tuning_s:.0f} s of tuning (the first report "
            f"came {float(result.results['st_tuner_time'].min()):.0f} s after the start): "
            "the machine is too loaded for the multi-trial checks"
        )
    stopped = [o for o in result.outcomes.values() if o.outcome == "stopped"]
    assert stopped, {k: (o.epochs, o.outcome) for k, o in result.outcomes.items()}
    assert all(o.epochs < MAX_EPOCHS for o in stopped)
    assert len(ReferenceStore(result.store_url).trials()) >= 3
    assert checked.must_be_positive >= 1
    assert checked.identified >= 1, "no report whose rtd/top reference could be identified"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_moasha_on_val_acc_and_rtd_noise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _run(tmp_path, monkeypatch, "moasha-noise-max")
    assert result.preset.name == "moasha-noise-max" and result.preset.minimize_all
    assert result.preset.metric_names == ("neg_val_acc", "neg_rtd/noise")
    df = result.results
    assert np.allclose(df["neg_val_acc"], -df["val_acc"])
    assert np.allclose(df["neg_rtd/noise"], -df["rtd/noise"])
    checked = _check_reports_and_store(result)

    # best configuration: the best val_acc over all reports, printed and saved
    best = result.best
    assert best is not None and best["metric"] == "val_acc"
    assert best["value"] == pytest.approx(float(df["val_acc"].max()))
    assert set(best["config"]) == set(get_recipe("digits-mlp").default_config)
    assert best["config"]["width"] in (16, 32) and best["config"]["embedding_dim"] in (4, 8)
    out = capsys.readouterr().out
    assert f"best configuration by val_acc (max): trial {best['trial_id']}" in out
    summary = json.loads(result.summary_path.read_text())
    assert summary["best"]["trial_id"] == best["trial_id"]
    assert summary["rungs"] == [1] and summary["preset"] == "moasha-noise-max"
    for trial_id, o in result.outcomes.items():  # one progress line per finished trial
        assert summary["trials"][str(trial_id)]["outcome"] == o.outcome
        line = {
            "stopped": f"stopped at a rung, epoch {o.epochs} of {MAX_EPOCHS}",
            "completed": f"completed {o.epochs} of {MAX_EPOCHS} epochs",
            "cut-off": f"cut off by the end of the search at epoch {o.epochs} of {MAX_EPOCHS}",
        }[o.outcome]
        assert f"] trial {trial_id} {line}" in out

    # the plot of the search lies in the tuner's results folder
    assert result.plot_path == result.tuner_path / launcher.PLOT_FILENAME
    assert f"plot: {result.plot_path}" in out
    _assert_png(result.plot_path, min_height=700)  # two panels: val_acc and rtd/noise

    _check_search_dynamics(result, checked)
    assert "stopped at a rung, epoch 1 of 4" in out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_asha_on_rtd_top_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(tmp_path, monkeypatch, "rtd-top-only-max", verbose=False)
    assert result.preset.name == "rtd-top-only-max" and not result.preset.minimize_all
    assert result.preset.metric_names == ("rtd/top",)
    assert type(result.preset.scheduler).__name__ == "ASHA"
    assert result.preset.scheduler.metric == "rtd/top"
    _check_search_dynamics(result, _check_reports_and_store(result))
