"""Scheduler presets, their directions with the real Syne Tune schedulers, trial-argument
plumbing, and short real tuning runs through LocalBackend."""

from __future__ import annotations

import json
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import syne_tune.constants as stc
from syne_tune.backend.trial_status import Trial
from syne_tune.config_space import choice, loguniform, randint, uniform
from syne_tune.optimizer.baselines import ASHA, BOHB, RandomSearch
from syne_tune.optimizer.scheduler import SchedulerDecision
from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

from lightning_rtd.integrations.synetune import (
    CHECKPOINT_ARG,
    CONFIG_JSON_ARG,
    PRESET_ALIASES,
    STORE_ENV_VAR,
    ObjectiveSpec,
    ReportBuilder,
    SyneTuneReporter,
    TrialContext,
    list_presets,
    make_scheduler,
    parse_trial_args,
)

REPO = Path(__file__).resolve().parents[1]

SPACE = {
    "lr": loguniform(1e-4, 1e-1),
    "width": randint(8, 64),
    "act": choice(["relu", "gelu"]),
    "epochs": 9,
}

EXPECTED = {
    "random",
    "asha",
    "hyperband",
    "bohb",
    "rtd-noise-only-max",
    "rtd-noise-only-min",
    "rtd-top-only-max",
    "rtd-top-only-min",
    "rtd-all-only-max",
    "rtd-all-only-min",
    "moasha-noise-max",
    "moasha-noise-min",
    "moasha-top-max",
    "moasha-top-min",
    "moasha-all-max",
    "moasha-all-min",
    "moasha-loss",
}


def build(name: str, metric: str = "val_acc", mode: str = "max", **kwargs: Any):
    return make_scheduler(name, SPACE, metric=metric, mode=mode, max_t=9, random_seed=7, **kwargs)  # type: ignore[arg-type]


# ---- names, types and directions -----------------------------------------------------------


def test_preset_names_and_aliases() -> None:
    assert set(list_presets()) == EXPECTED
    assert set(list_presets(include_aliases=True)) == EXPECTED | set(PRESET_ALIASES)
    assert PRESET_ALIASES == {
        "rtd-noise-only": "rtd-noise-only-max",
        "moasha-noise": "moasha-noise-max",
        "moasha-top": "moasha-top-max",
        "moasha-all": "moasha-all-max",
    }
    for alias, target in PRESET_ALIASES.items():
        preset = build(alias)
        assert preset.name == target
        assert preset.objectives == build(target).objectives
    with pytest.raises(ValueError, match="unknown preset"):
        build("moasha-nois")


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("mode", ["max", "min"])
def test_every_preset_builds_with_consistent_names(name: str, mode: str) -> None:
    metric = "val_acc" if mode == "max" else "val_err"
    preset = build(name, metric=metric, mode=mode)
    scheduler = preset.scheduler
    assert list(scheduler.metric_names()) == list(preset.metric_names)
    assert preset.resource_attr == "epoch" and preset.max_t == 9 and preset.description
    keys = [o.key for o in preset.objectives]
    if name.startswith("moasha"):
        assert isinstance(scheduler, MOASHA)
        assert scheduler.do_minimize is True and preset.minimize_all
        assert scheduler.time_attr == "epoch" and scheduler.max_t == 9
        rtd_part = name.split("-")[1]
        second = "val_loss" if rtd_part == "loss" else f"rtd/{rtd_part}"
        assert keys == [metric, second]
    elif name.startswith("rtd-") and "-only-" in name:
        rtd_key = f"rtd/{name.split('-')[1]}"
        assert isinstance(scheduler, ASHA) and not preset.minimize_all
        assert keys == [rtd_key] and scheduler.metric == rtd_key
        assert scheduler.do_minimize is name.endswith("-min")
        assert metric in preset.extra_metrics  # reported for analysis only
    else:
        expected_type = {"random": RandomSearch, "bohb": BOHB}.get(name, ASHA)
        assert type(scheduler) is expected_type
        assert keys == [metric] and not preset.minimize_all
        assert scheduler.do_minimize is (mode == "min")
        if name != "random":
            assert scheduler.time_attr == "epoch" and scheduler.metric == metric
    if name == "hyperband":
        assert len(scheduler.brackets) == 3  # rung levels 1, 3, 9
    elif name != "random":
        assert len(scheduler.brackets) == 1
    # a reporter made from the preset sends exactly what the scheduler reads
    reporter = preset.make_reporter()
    assert reporter.reported_names == preset.metric_names
    report = reporter.builder.build(1, {k: 0.5 for k in keys})
    assert set(preset.metric_names) <= set(report)


def test_moasha_minimises_every_objective_in_the_reported_space() -> None:
    for name in [n for n in EXPECTED if n.startswith("moasha")]:
        preset = build(name, metric="val_acc", mode="max")
        builder = ReportBuilder(preset.objectives, minimize_all=preset.minimize_all)
        assert preset.scheduler.do_minimize is True
        for obj in preset.objectives:
            good, bad = (0.9, 0.1) if obj.mode == "max" else (0.1, 0.9)
            others = {o.key: 0.5 for o in preset.objectives if o is not obj}
            name_read = obj.reported_key(preset.minimize_all)
            r_good = builder.build(1, {obj.key: good, **others})[name_read]
            r_bad = builder.build(1, {obj.key: bad, **others})[name_read]
            assert r_good < r_bad, (name, obj)  # better raw value -> smaller reported value
    rtd_max = build("moasha-noise-max").objectives[1]
    rtd_min = build("moasha-noise-min").objectives[1]
    assert rtd_max == ObjectiveSpec("rtd/noise", "max")
    assert rtd_min == ObjectiveSpec("rtd/noise", "min")
    assert build("moasha-noise-max").metric_names == ("neg_val_acc", "neg_rtd/noise")
    assert build("moasha-noise-min").metric_names == ("neg_val_acc", "rtd/noise")
    assert build("moasha-loss").metric_names == ("neg_val_acc", "val_loss")
    assert build("moasha-all-min", metric="val_err", mode="min").metric_names == (
        "val_err",
        "rtd/all",
    )


def _decision(preset, first: dict[str, float], second: dict[str, float]) -> str:
    """The scheduler's decision on a second trial reaching the first rung after a first one."""
    builder = ReportBuilder(preset.objectives, minimize_all=preset.minimize_all)
    scheduler = preset.scheduler
    decision = ""
    for trial_id, raw in enumerate([first, second]):
        config = scheduler.suggest().config
        trial = Trial(trial_id=trial_id, config=config, creation_time=datetime.now())
        scheduler.on_trial_add(trial)
        decision = scheduler.on_trial_result(trial, builder.build(1, raw))
    return decision


@pytest.mark.parametrize(
    ("name", "better", "worse"),
    [
        ("asha", {"val_acc": 0.9}, {"val_acc": 0.1}),
        ("bohb", {"val_acc": 0.9}, {"val_acc": 0.1}),
        ("rtd-noise-only-max", {"rtd/noise": 3.0}, {"rtd/noise": 1.0}),
        ("rtd-noise-only-min", {"rtd/noise": 1.0}, {"rtd/noise": 3.0}),
        ("moasha-noise-max", {"val_acc": 0.9, "rtd/noise": 3.0}, {"val_acc": 0.1, "rtd/noise": 1}),
        ("moasha-top-min", {"val_acc": 0.9, "rtd/top": 1.0}, {"val_acc": 0.1, "rtd/top": 3.0}),
        ("moasha-loss", {"val_acc": 0.9, "val_loss": 0.2}, {"val_acc": 0.1, "val_loss": 2.0}),
    ],
)
def test_schedulers_stop_the_worse_trial(name: str, better: dict, worse: dict) -> None:
    """Real rung decisions: with reduction factor 3, a trial ranked below the top third at the
    first rung is stopped, one ranked first continues."""
    assert _decision(build(name), better, worse) == SchedulerDecision.STOP
    assert _decision(build(name), worse, better) == SchedulerDecision.CONTINUE


def test_max_metric_asha_is_not_minimising() -> None:
    preset = build("asha", metric="val_acc", mode="max")
    assert preset.scheduler.do_minimize is False
    assert preset.scheduler.metric_mode() == "max"
    assert preset.metric_names == ("val_acc",)  # read raw, not negated


def test_seeding_makes_suggestions_reproducible() -> None:
    def suggestions(name: str) -> list[dict[str, Any]]:
        scheduler = build(name).scheduler
        return [scheduler.suggest().config for _ in range(5)]

    for name in ("moasha-noise-max", "asha", "random"):
        np.random.seed(12345)  # whatever the global state was, make_scheduler reseeds it
        a = suggestions(name)
        np.random.rand(7)
        b = suggestions(name)
        assert a == b, name
        assert len({json.dumps(c, sort_keys=True, default=str) for c in a}) > 1


def test_options_and_errors() -> None:
    preset = build("moasha-noise-max", rtd_key="rtd/noise@layer3", brackets=2)
    assert preset.metric_names == ("neg_val_acc", "neg_rtd/noise@layer3")
    assert len(preset.scheduler.brackets) == 2
    assert build("hyperband", brackets=2).scheduler.brackets.__len__() == 2
    assert build("moasha-loss", loss_key="val_nll").metric_names == ("neg_val_acc", "val_nll")
    preset = make_scheduler(
        "asha", SPACE, metric="val_acc", mode="max", max_t=9, random_seed=0, resource_attr="step"
    )
    assert preset.scheduler.time_attr == "step"
    assert preset.make_reporter().builder.resource_attr == "step"
    with pytest.raises(TypeError, match="do_minimize"):
        build("asha", do_minimize=True)
    with pytest.raises(ValueError, match="twice"):
        build("moasha-loss", metric="val_loss", mode="min")
    with pytest.raises(ValueError, match="twice"):
        build("moasha-noise-max", metric="rtd/noise")
    with pytest.raises(ValueError, match="mode"):
        build("asha", mode="maximize")
    with pytest.raises(ValueError, match="rtd_key"):
        build("asha", rtd_key="rtd/x")
    with pytest.raises(ValueError, match="grace_period"):
        build("asha", grace_period=10)


def test_reporter_from_preset_adds_extra_metrics() -> None:
    preset = build("rtd-noise-only-max")
    reporter = SyneTuneReporter.from_preset(preset, extra_metrics=["lr"], extra={"preset": "x"})
    report = reporter.builder.build(2, {"rtd/noise": 0.3, "val_acc": 0.8, "lr": 0.01})
    assert report == {
        "epoch": 2,
        "rtd/noise": 0.3,
        "val_acc": 0.8,
        "lr": 0.01,
        "preset": "x",
    }


# ---- trial plumbing -----------------------------------------------------------------------


def test_constants_match_syne_tune() -> None:
    assert stc.ST_CHECKPOINT_DIR == CHECKPOINT_ARG
    assert stc.ST_CONFIG_JSON_FNAME_ARG == CONFIG_JSON_ARG


def test_parse_local_backend_args(tmp_path: Path) -> None:
    ckpt = tmp_path / "my-tuner-2026" / "3" / "checkpoints"
    argv = (
        "--lr 0.001 --width 32.0 --act gelu --use_bn False --name a b  c "
        "--unknown_int 5 --unknown_float 1e-3 --unknown_list [1, 2] --neg -0.5 "
        f"--st_checkpoint_dir {ckpt}"
    ).split(" ")
    defaults = {"lr": 0.1, "width": 16, "act": "relu", "use_bn": True, "name": "", "neg": 0.0}
    config, ctx = parse_trial_args(argv, defaults, environ={})
    assert config == {
        "lr": 0.001,
        "width": 32,
        "act": "gelu",
        "use_bn": False,
        "name": "a b  c",
        "neg": -0.5,
        "unknown_int": 5,
        "unknown_float": 1e-3,
        "unknown_list": [1, 2],
    }
    assert type(config["width"]) is int and type(config["lr"]) is float
    assert ctx == TrialContext(
        trial_id="3",
        checkpoint_dir=ckpt,
        store_url=str(tmp_path / "my-tuner-2026" / "rtd-store"),
        tuner_path=tmp_path / "my-tuner-2026",
    )
    assert ctx.in_syne_tune and ctx.resume_from is None
    # a paused or copied trial resumes from last.ckpt
    ckpt.mkdir(parents=True)
    (ckpt / "last.ckpt").write_bytes(b"x")
    _, ctx = parse_trial_args(argv, defaults, environ={})
    assert ctx.resume_from == ckpt / "last.ckpt"
    mc = ctx.model_checkpoint(monitor="val_acc", mode="max")
    assert Path(mc.dirpath) == ckpt and mc.save_last


def test_parse_json_config_and_store_overrides(tmp_path: Path) -> None:
    trial_dir = tmp_path / "tuner-a" / "0"
    trial_dir.mkdir(parents=True)
    (trial_dir / "config.json").write_text(
        json.dumps({"lr": 1, "layers": [32, 16], "epochs": 3.0, "st_checkpoint_dir": "x"})
    )
    argv = [
        f"--{CONFIG_JSON_ARG}",
        str(trial_dir / "config.json"),
        f"--{CHECKPOINT_ARG}",
        str(trial_dir / "checkpoints"),
    ]
    defaults = {"lr": 0.1, "layers": [8], "epochs": 1}
    config, ctx = parse_trial_args(argv, defaults, environ={})
    assert config == {"lr": 1.0, "layers": [32, 16], "epochs": 3}
    assert type(config["lr"]) is float and type(config["epochs"]) is int
    assert ctx.config_json == trial_dir / "config.json"
    assert ctx.store_url == str(tmp_path / "tuner-a" / "rtd-store")
    # environment variable, with the tuner placeholder, then the argument, override the default
    env = {STORE_ENV_VAR: "s3://bucket/rtd/{tuner}"}
    _, ctx = parse_trial_args(argv, defaults, environ=env)
    assert ctx.store_url == "s3://bucket/rtd/tuner-a"
    config, ctx = parse_trial_args([*argv, "--rtd_store", "memory://x"], defaults, environ=env)
    assert ctx.store_url == "memory://x" and "rtd_store" not in config


def test_parse_standalone_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORE_ENV_VAR, raising=False)
    monkeypatch.setattr(sys, "argv", ["train.py", "--lr", "0.5", "--debug"])
    config, ctx = parse_trial_args(
        defaults={"lr": 0.1, "debug": False}, standalone_dir=tmp_path / "runs"
    )
    assert config == {"lr": 0.5, "debug": True}
    assert not ctx.in_syne_tune and ctx.trial_id.startswith("local-")
    assert ctx.checkpoint_dir == tmp_path / "runs" / ctx.trial_id / "checkpoints"
    assert ctx.store_url == str(tmp_path / "runs" / "rtd-store")
    _, other = parse_trial_args([], standalone_dir=tmp_path / "runs")
    assert other.trial_id != ctx.trial_id and other.store_url == ctx.store_url
    _, ctx = parse_trial_args([], trial_id="t1", standalone_store=tmp_path / "s", environ={})
    assert ctx.trial_id == "t1" and ctx.store_url == str(tmp_path / "s")
    with pytest.raises(ValueError, match="positional"):
        parse_trial_args(["train.py", "--lr", "1"])
    with pytest.raises(ValueError, match="--width"):
        parse_trial_args(["--width", "3.5"], {"width": 16})
    with pytest.raises(ValueError, match="--use_bn"):
        parse_trial_args(["--use_bn", "maybe"], {"use_bn": True})
    with pytest.raises(ValueError, match="no value"):
        parse_trial_args(["--lr"], {"lr": 0.1})


# ---- real tuning runs ----------------------------------------------------------------------

TRIAL_SCRIPT = """
# A trivial trial: imports only Syne Tune (importing Lightning takes seconds per trial). It
# records its arguments, and reports raw metrics mapped to the names and signs that the
# preset's ReportBuilder produced in the test process.
import json, sys
from pathlib import Path

from syne_tune import Reporter

args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
ckpt = Path(args["--st_checkpoint_dir"])
ckpt.mkdir(parents=True, exist_ok=True)
(ckpt / "argv.json").write_text(json.dumps(sys.argv[1:]))
spec = json.loads(Path(args["--spec"]).read_text())
x = float(args["--x"])
report = Reporter()
for epoch in range(1, int(args["--epochs"]) + 1):
    raw = {"val_acc": x * epoch / 3, "val_loss": 1.0 - x, "rtd/noise": 2.0 * x}
    sent = {name: sign * raw[key] for name, key, sign in spec}
    report(epoch=epoch, **{**raw, **sent})
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["moasha-noise-max", "asha"])
def test_tuner_accepts_reported_names(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNETUNE_FOLDER", str(tmp_path / "st"))
    monkeypatch.chdir(tmp_path)  # Syne Tune's GPU probe writes ./std.out
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv(STORE_ENV_VAR, raising=False)
    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend import LocalBackend

    script = tmp_path / "trial.py"
    script.write_text(textwrap.dedent(TRIAL_SCRIPT))
    spec = tmp_path / "spec.json"
    space = {"x": uniform(0.0, 1.0), "epochs": 3, "spec": str(spec)}
    preset = make_scheduler(name, space, metric="val_acc", mode="max", max_t=3, random_seed=1)
    # names and signs exactly as the preset's reporter sends them
    builder = preset.make_reporter().builder
    ones = builder.build(1, dict.fromkeys([o.key for o in preset.objectives], 1.0))
    spec.write_text(
        json.dumps(
            [
                [
                    o.reported_key(preset.minimize_all),
                    o.key,
                    ones[o.reported_key(preset.minimize_all)],
                ]
                for o in preset.objectives
            ]
        )
    )
    tuner = Tuner(
        trial_backend=LocalBackend(entry_point=str(script), rotate_gpus=False),
        scheduler=preset.scheduler,
        stop_criterion=StoppingCriterion(max_wallclock_time=40, max_num_trials_finished=3),
        n_workers=2,
        sleep_time=0.5,
        results_update_interval=5,
        print_update_interval=600,
        max_failures=0,  # any failed trial fails the test
        tuner_name=f"lrtd-{name}",
        save_tuner=False,
    )
    tuner.run()  # a scheduler metric missing from a report raises here (KeyError/AssertionError)

    results = pd.read_csv(tuner.tuner_path / stc.ST_RESULTS_DATAFRAME_FILENAME)
    assert results["trial_id"].nunique() >= 2
    for col in [*preset.metric_names, "epoch"]:
        assert col in results.columns and results[col].notna().all()
    if name.startswith("moasha"):
        assert preset.metric_names == ("neg_val_acc", "neg_rtd/noise")
        assert (results["neg_val_acc"] == -results["val_acc"]).all()
    else:
        assert preset.metric_names == ("val_acc",)
    # the real LocalBackend arguments give the trial id, the tuner path and one shared store
    argvs = {p.parent.parent.name: p for p in tuner.tuner_path.glob("*/checkpoints/argv.json")}
    assert len(argvs) >= 2
    for trial_id, path in argvs.items():
        config, ctx = parse_trial_args(
            json.loads(path.read_text()), {"x": 0.5, "epochs": 1, "spec": ""}, environ={}
        )
        assert ctx.trial_id == trial_id and ctx.in_syne_tune
        assert ctx.tuner_path == tuner.tuner_path
        assert ctx.checkpoint_dir == path.parent
        assert ctx.store_url == str(tuner.tuner_path / "rtd-store")
        assert config["epochs"] == 3 and 0.0 <= config["x"] <= 1.0
