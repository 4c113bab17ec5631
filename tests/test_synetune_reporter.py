"""SyneTuneReporter with real Lightning Trainers and Syne Tune's own stdout parser."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from syne_tune.report import retrieve
from torch.utils.data import DataLoader, TensorDataset

from lightning_rtd.errors import RTDWarning
from lightning_rtd.integrations.synetune import (
    InvalidMetricError,
    ObjectiveSpec,
    ReportBuilder,
    SyneTuneReporter,
)

REPO = Path(__file__).resolve().parents[1]


# ---- fixtures: a tiny module and a fake RTD callback ----------------------------------------


class TinyModule(LightningModule):
    """Logs ``val_acc = 0.1 * k`` and ``val_loss = 1 / k`` in ``on_validation_epoch_end``, where
    ``k`` counts the (non sanity-check) validation runs, so every value identifies its run."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
        self.val_runs = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x,) = batch
        return self.layer(x).pow(2).mean()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        (x,) = batch
        self.layer(x)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.log("val_acc", torch.tensor(-5.0))  # must never be reported
            return
        self.val_runs += 1
        self.log("val_acc", torch.tensor(0.1 * self.val_runs))
        self.log("val_loss", torch.tensor(1.0 / self.val_runs))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=4)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)


class FakeRTD(Callback):
    """Logs ``rtd/noise`` in ``on_validation_epoch_end`` like the RTD callbacks do; the value of
    each (1-based) epoch comes from ``values``, a missing epoch logs nothing."""

    def __init__(self, values: dict[int, float]) -> None:
        self.values = values

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1
        if epoch in self.values:
            pl_module.log("rtd/noise", torch.tensor(self.values[epoch], dtype=torch.float64))


def make_trainer(tmp_path: Path, callbacks: list[Callback], **kwargs: Any) -> Trainer:
    # enable_checkpointing stays True: Lightning refuses a Checkpoint subclass otherwise, and the
    # reporter (a Checkpoint) already keeps Lightning from adding its default ModelCheckpoint
    opts: dict[str, Any] = {
        "max_epochs": 4,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(tmp_path),
    }
    opts.update(kwargs)
    return Trainer(callbacks=callbacks, **opts)


def parsed_reports(out: str) -> list[dict[str, Any]]:
    """Reports as the LocalBackend reads them from the trial's stdout."""
    return retrieve(out.splitlines())


def without_st(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if not k.startswith("st_")}


# ---- Lightning runs ------------------------------------------------------------------------


def test_reports_plain_floats_with_one_based_epochs(tmp_path: Path, capsys) -> None:
    reporter = SyneTuneReporter(
        [ObjectiveSpec("val_acc", "max"), ObjectiveSpec("rtd/noise", "max")],
        extra={"preset": "test", "seed": 3},
        extra_metrics=["val_loss", "not_logged"],
    )
    rtd = FakeRTD({1: 0.5, 2: 0.6, 3: 0.7, 4: 0.8})
    trainer = make_trainer(tmp_path, [rtd, reporter], num_sanity_val_steps=2)
    trainer.fit(TinyModule())

    reports = parsed_reports(capsys.readouterr().out)
    assert [r["epoch"] for r in reports] == [1, 2, 3, 4]
    for k, r in enumerate(reports, start=1):
        assert r["val_acc"] == pytest.approx(0.1 * k)
        assert r["rtd/noise"] == pytest.approx(0.4 + 0.1 * k)
        assert r["val_loss"] == pytest.approx(1.0 / k)
        assert r["preset"] == "test" and r["seed"] == 3
        assert "not_logged" not in r
        assert {"st_worker_time", "st_worker_iter", "st_worker_timestamp"} <= set(r)
        assert all(isinstance(r[k2], float) for k2 in ("val_acc", "rtd/noise", "val_loss"))
    # the attribute keeps what was sent: plain Python values only
    assert [without_st(r) for r in reports] == reporter.reports
    for r in reporter.reports:
        assert all(type(v) in (int, float, str) for v in r.values())


def test_minimize_all_reports_negated_names(tmp_path: Path, capsys) -> None:
    seen: list[dict[str, Any]] = []
    reporter = SyneTuneReporter(
        [("val_acc", "max"), ("val_loss", "min")], minimize_all=True, on_report=seen.append
    )
    assert reporter.reported_names == ("neg_val_acc", "val_loss")
    make_trainer(tmp_path, [reporter], max_epochs=2).fit(TinyModule())
    reports = parsed_reports(capsys.readouterr().out)
    assert len(reports) == 2 and seen == reporter.reports
    for k, r in enumerate(reports, start=1):
        assert r["neg_val_acc"] == pytest.approx(-0.1 * k)
        assert r["val_acc"] == pytest.approx(0.1 * k)  # raw value kept for analysis
        assert r["val_loss"] == pytest.approx(1.0 / k)


def test_nan_at_epoch_2_gets_worst_seen(tmp_path: Path, capsys) -> None:
    reporter = SyneTuneReporter([("val_acc", "max"), ("rtd/noise", "max")])
    rtd = FakeRTD({1: 0.3, 2: float("nan"), 3: 0.9, 4: float("inf")})
    with pytest.warns(RTDWarning, match="rtd/noise"):
        make_trainer(tmp_path, [rtd, reporter]).fit(TinyModule())
    values = [r["rtd/noise"] for r in parsed_reports(capsys.readouterr().out)]
    # max objective: the worst seen is the smallest finite value so far
    assert values == pytest.approx([0.3, 0.3, 0.9, 0.3])
    assert reporter.builder.worst_seen == pytest.approx({"rtd/noise": 0.3, "val_acc": 0.1})


def test_minimised_objective_nan_gets_largest_seen(tmp_path: Path, capsys) -> None:
    reporter = SyneTuneReporter([("rtd/noise", "min")], minimize_all=True)
    rtd = FakeRTD({1: 0.3, 2: 0.7, 3: float("-inf"), 4: float("nan")})
    with pytest.warns(RTDWarning):
        make_trainer(tmp_path, [rtd, reporter]).fit(TinyModule())
    values = [r["rtd/noise"] for r in parsed_reports(capsys.readouterr().out)]
    assert values == pytest.approx([0.3, 0.7, 0.7, 0.7])


def test_missing_metric_sentinel_then_worst(tmp_path: Path, capsys) -> None:
    reporter = SyneTuneReporter(
        [("val_acc", "max"), ("rtd/noise", "max"), ("val_f1", "max"), ("err", "min")],
        minimize_all=True,
        sentinels={"err": 123.0},
    )
    rtd = FakeRTD({2: 0.4, 4: 0.8})  # nothing logged at epochs 1 and 3
    with pytest.warns(RTDWarning, match="val_f1"):
        make_trainer(tmp_path, [rtd, reporter]).fit(TinyModule())
    reports = parsed_reports(capsys.readouterr().out)
    assert [r["neg_val_f1"] for r in reports] == [1e6] * 4  # never logged: -(-1e6)
    assert [r["err"] for r in reports] == [123.0] * 4
    # epoch 3 logs nothing: Lightning keeps epoch 2's value in callback_metrics
    assert [r["rtd/noise"] for r in reports] == pytest.approx([-1e6, 0.4, 0.4, 0.8])
    for r in reports:
        assert all(math.isfinite(v) for v in r.values() if isinstance(v, float))


def test_raise_policy_fails_the_run(tmp_path: Path, capsys) -> None:
    reporter = SyneTuneReporter(
        [("val_acc", "max"), ("rtd/noise", "max")], on_invalid={"rtd/noise": "raise"}
    )
    rtd = FakeRTD({1: 0.3, 2: float("nan")})
    with pytest.raises(InvalidMetricError, match="rtd/noise"):
        make_trainer(tmp_path, [rtd, reporter]).fit(TinyModule())
    assert [r["epoch"] for r in parsed_reports(capsys.readouterr().out)] == [1]


def test_check_val_every_2_epochs_reports_fresh_values(tmp_path: Path, capsys) -> None:
    reporter = SyneTuneReporter([("val_acc", "max"), ("rtd/noise", "max")])
    rtd = FakeRTD({e: 0.1 * e for e in range(1, 5)})
    make_trainer(tmp_path, [rtd, reporter], check_val_every_n_epoch=2).fit(TinyModule())
    reports = parsed_reports(capsys.readouterr().out)
    assert [r["epoch"] for r in reports] == [2, 4]
    assert [r["val_acc"] for r in reports] == pytest.approx([0.1, 0.2])  # 1st, 2nd validation
    assert [r["rtd/noise"] for r in reports] == pytest.approx([0.2, 0.4])  # epoch 2, epoch 4


def test_val_check_interval_reports_once_per_epoch(tmp_path: Path, capsys) -> None:
    reporter = SyneTuneReporter([("val_acc", "max")])
    make_trainer(tmp_path, [reporter], max_epochs=3, val_check_interval=0.5).fit(TinyModule())
    reports = parsed_reports(capsys.readouterr().out)
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    # two validations per epoch: each report carries the epoch's last one
    assert [r["val_acc"] for r in reports] == pytest.approx([0.2, 0.4, 0.6])


@pytest.mark.parametrize("every_n", [1, 2])
def test_checkpoint_is_written_before_the_report(tmp_path: Path, capsys, every_n: int) -> None:
    ckpt_dir = tmp_path / "ckpt"
    at_report: list[tuple[int, bool, int]] = []

    def check(report: dict[str, Any]) -> None:
        epoch = report["epoch"]
        last = ckpt_dir / "last.ckpt"
        saved_epoch = torch.load(last, weights_only=False)["epoch"] if last.exists() else -1
        at_report.append((epoch, (ckpt_dir / f"e{epoch - 1}.ckpt").exists(), saved_epoch))

    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="e{epoch}",
        auto_insert_metric_name=False,
        save_top_k=-1,
        save_last=True,
    )
    reporter = SyneTuneReporter([("val_acc", "max")], on_report=check)
    # Lightning moves Checkpoint subclasses to the end and keeps their relative order
    trainer = make_trainer(tmp_path, [checkpoint, reporter], check_val_every_n_epoch=every_n)
    trainer.fit(TinyModule())
    epochs = [2, 4] if every_n == 2 else [1, 2, 3, 4]
    # the epoch's checkpoint file exists and last.ckpt is that epoch's (0-based) when reporting
    assert at_report == [(e, True, e - 1) for e in epochs]


def test_reporter_counts_as_a_checkpoint_callback(tmp_path: Path) -> None:
    reporter = SyneTuneReporter([("val_acc", "max")])
    trainer = make_trainer(tmp_path, [reporter])
    # Lightning adds no default ModelCheckpoint when a Checkpoint subclass is present ...
    assert trainer.checkpoint_callbacks == [reporter]
    # ... and refuses one when checkpointing is disabled
    with pytest.raises(MisconfigurationException, match="enable_checkpointing=False"):
        make_trainer(tmp_path, [reporter], enable_checkpointing=False)


def test_reporter_before_model_checkpoint_warns(tmp_path: Path, capsys) -> None:
    reporter = SyneTuneReporter([("val_acc", "max")])
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt")
    with pytest.warns(RTDWarning, match="before a ModelCheckpoint"):
        make_trainer(tmp_path, [reporter, checkpoint], max_epochs=1).fit(TinyModule())


def test_sanity_check_and_validate_do_not_report(tmp_path: Path, capsys) -> None:
    reporter = SyneTuneReporter([("val_acc", "max")])
    trainer = make_trainer(tmp_path, [reporter], max_epochs=1, num_sanity_val_steps=2)
    trainer.fit(TinyModule())
    trainer.validate(trainer.lightning_module, verbose=False)
    reports = parsed_reports(capsys.readouterr().out)
    assert [r["epoch"] for r in reports] == [1]
    assert reports[0]["val_acc"] == pytest.approx(0.1)  # not the sanity-check value -5


def test_no_validation_warns(tmp_path: Path, capsys) -> None:
    reporter = SyneTuneReporter([("val_acc", "max")])
    with pytest.warns(RTDWarning, match="no report"):
        make_trainer(tmp_path, [reporter], max_epochs=1, check_val_every_n_epoch=2).fit(
            TinyModule()
        )
    assert parsed_reports(capsys.readouterr().out) == []


def test_resumed_trial_keeps_worst_seen(tmp_path: Path, capsys) -> None:
    ckpt_dir = tmp_path / "ckpt"
    first = SyneTuneReporter([("rtd/noise", "max")])
    rtd = FakeRTD({1: 0.2, 2: 0.5, 3: float("nan")})
    trainer = make_trainer(
        tmp_path, [rtd, ModelCheckpoint(dirpath=ckpt_dir, save_last=True), first], max_epochs=2
    )
    trainer.fit(TinyModule())
    assert first.builder.worst_seen == {"rtd/noise": pytest.approx(0.2)}

    second = SyneTuneReporter([("rtd/noise", "max")])  # a fresh process after a pause
    trainer = make_trainer(
        tmp_path, [rtd, ModelCheckpoint(dirpath=ckpt_dir, save_last=True), second], max_epochs=3
    )
    with pytest.warns(RTDWarning):
        trainer.fit(TinyModule(), ckpt_path=str(ckpt_dir / "last.ckpt"))
    reports = parsed_reports(capsys.readouterr().out)
    assert [(r["epoch"], r["rtd/noise"]) for r in reports] == [(1, 0.2), (2, 0.5), (3, 0.2)]
    assert second.reports == [{"epoch": 3, "rtd/noise": pytest.approx(0.2)}]


@pytest.mark.slow
def test_ddp_only_rank_zero_reports(tmp_path: Path) -> None:
    script = tmp_path / "ddp_run.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys
            import torch
            from lightning.pytorch import LightningModule, Trainer
            from torch.utils.data import DataLoader, TensorDataset
            from lightning_rtd.integrations.synetune import SyneTuneReporter

            class M(LightningModule):
                def __init__(self):
                    super().__init__()
                    self.layer = torch.nn.Linear(4, 2)
                def training_step(self, batch, i):
                    return self.layer(batch[0]).pow(2).mean()
                def validation_step(self, batch, i):
                    self.log("val_loss", self.layer(batch[0]).pow(2).mean(), sync_dist=True)
                def configure_optimizers(self):
                    return torch.optim.SGD(self.parameters(), lr=0.01)
                def train_dataloader(self):
                    return DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=4)
                def val_dataloader(self):
                    return DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)

            if __name__ == "__main__":
                reporter = SyneTuneReporter([("val_loss", "min")], extra={"tag": "ddp"})
                trainer = Trainer(
                    strategy="ddp", accelerator="cpu", devices=2, max_epochs=2, logger=False,
                    enable_progress_bar=False, enable_model_summary=False,
                    num_sanity_val_steps=0, callbacks=[reporter],
                )
                trainer.fit(M())
                out = sys.argv[1] + f"/rank{trainer.global_rank}.json"
                with open(out, "w") as f:
                    json.dump(reporter.reports, f)
            """
        )
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = parsed_reports(proc.stdout)  # both ranks share the trial's stdout
    assert [r["epoch"] for r in reports] == [1, 2]
    assert all(r["tag"] == "ddp" and math.isfinite(r["val_loss"]) for r in reports)
    assert len(json.loads((tmp_path / "rank0.json").read_text())) == 2
    assert json.loads((tmp_path / "rank1.json").read_text()) == []


# ---- ReportBuilder without Lightning -------------------------------------------------------


def test_values_are_converted_to_plain_floats() -> None:
    builder = ReportBuilder([("a", "min"), ("b", "max"), ("c", "min"), ("d", "max")])
    report = builder.build(
        np.int64(2),
        {
            "a": torch.tensor([0.25]),
            "b": np.float32(0.5),
            "c": 3,
            "d": torch.tensor(1, dtype=torch.int32),
        },
    )
    assert report == {"epoch": 2, "a": 0.25, "b": 0.5, "c": 3.0, "d": 1.0}
    assert all(type(v) is float for k, v in report.items() if k != "epoch")
    assert type(report["epoch"]) is int
    json.dumps(report, allow_nan=False)


def test_bad_inputs_are_rejected() -> None:
    builder = ReportBuilder([("a", "min")])
    with pytest.raises(TypeError, match="shape"):
        builder.build(1, {"a": torch.zeros(3)})
    with pytest.raises(TypeError, match="unsupported"):
        builder.build(1, {"a": "0.3"})
    for resource in (0, -1, float("nan"), None, True):
        with pytest.raises(ValueError, match="resource"):
            builder.build(resource, {"a": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="st_"):
        ObjectiveSpec("st_loss", "min")
    with pytest.raises(ValueError, match="mode"):
        ObjectiveSpec("loss", "minimize")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate"):
        ReportBuilder([("a", "min"), ("a", "max")])
    with pytest.raises(ValueError, match="clash"):
        ReportBuilder([("a", "min")], extra={"epoch": 3})
    with pytest.raises(ValueError, match="not finite"):
        ReportBuilder([("a", "min")], extra={"x": float("nan")})
    with pytest.raises(ValueError, match="clash"):
        ReportBuilder([("a", "max"), ("neg_a", "min")], minimize_all=True)
    with pytest.raises(ValueError, match="policy"):
        ReportBuilder([("a", "min")], on_invalid="ignore")  # type: ignore[arg-type]


def test_state_dict_round_trip() -> None:
    builder = ReportBuilder([("a", "min"), ("b", "max")])
    builder.build(1, {"a": 0.5, "b": 0.5})
    builder.build(2, {"a": 0.9, "b": 0.1})
    state = builder.state_dict()
    json.dumps(state)
    fresh = ReportBuilder([("a", "min"), ("b", "max")])
    fresh.load_state_dict(state)
    assert fresh.build(3, {}) == {"epoch": 3, "a": 0.9, "b": 0.1}
    assert fresh.last_substituted == ("a", "b")


values = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-(10**6), 10**6),
    st.floats(-1e3, 1e3).map(lambda v: torch.tensor(v, dtype=torch.float32)),
    st.sampled_from([float("nan"), float("inf"), float("-inf")]).map(torch.tensor),
)


@settings(max_examples=60, deadline=None)
@given(
    modes=st.lists(st.sampled_from(["min", "max"]), min_size=1, max_size=3),
    minimize_all=st.booleans(),
    steps=st.lists(st.lists(values, min_size=3, max_size=3), min_size=1, max_size=6),
)
def test_reports_are_always_complete_and_finite(
    modes: list[str], minimize_all: bool, steps: list[list[Any]]
) -> None:
    objectives = [ObjectiveSpec(f"m{i}", mode) for i, mode in enumerate(modes)]  # type: ignore[arg-type]
    builder = ReportBuilder(objectives, minimize_all=minimize_all)
    worst: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the builder itself never warns
        for epoch, raw in enumerate(steps, start=1):
            metrics = {f"m{i}": raw[i] for i in range(len(modes))}
            report = builder.build(epoch, metrics)
            assert set(builder.reported_names) <= set(report)
            json.dumps(report, allow_nan=False)
            for obj in objectives:
                value = report[obj.key] if obj.key in report else -report[f"neg_{obj.key}"]
                assert type(value) is float and math.isfinite(value)
                given_value = metrics[obj.key]
                given_float = None if given_value is None else float(given_value)
                if given_float is not None and math.isfinite(given_float):
                    assert value == pytest.approx(given_float)
                    if obj.key not in worst or obj.is_worse(given_float, worst[obj.key]):
                        worst[obj.key] = given_float
                else:
                    sentinel = 1e6 if obj.mode == "min" else -1e6
                    assert value == pytest.approx(worst.get(obj.key, sentinel))
                name = obj.reported_key(minimize_all)
                sign = -1.0 if name != obj.key else 1.0
                assert report[name] == pytest.approx(sign * value)
