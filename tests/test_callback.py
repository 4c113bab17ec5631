"""RTDCallback with real Trainers, real files and tiny models on CPU."""

from __future__ import annotations

import csv
import itertools
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as pl
import numpy as np
import pytest
import scipy.stats
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from tiny import N_VAL, Tiny, trainer
from torch import nn
from wandb_log import wait_for_history

import lightning_rtd as L
from lightning_rtd import ProbeMismatchError, RTDCallback, RTDWarning
from lightning_rtd.capture import reduce_features, select_output
from lightning_rtd.references import noise_pair
from lightning_rtd.store import ReferenceStore

ALL = ("noise", "top", "all")


def _fit(tmp_path, cb, max_epochs=2, model=None, **kwargs):
    pl.seed_everything(0, verbose=False)
    t = trainer(tmp_path, [cb] if isinstance(cb, Callback) else cb, max_epochs=max_epochs, **kwargs)
    t.fit(model or Tiny())
    return t


def _cb(store, trial_id, **kwargs):
    opts = dict(
        layer="embedding",
        num_points=100,
        references=ALL,
        store=str(store),
        trial_id=trial_id,
        objective="val_acc",
        mode="max",
        max_references=None,
    )
    opts.update(kwargs)
    return RTDCallback(**opts)


def _read_csv(logger_dir: Path) -> list[dict[str, str]]:
    with open(next(logger_dir.rglob("metrics.csv"))) as f:
        return list(csv.DictReader(f))


# --- logging, monitors ----------------------------------------------------------------------------


def test_logs_keys_writes_store_and_noise_is_deterministic(tmp_path):
    cb = _cb(tmp_path / "store", "a")
    t = _fit(tmp_path, cb)
    for key in ("rtd/noise", "rtd/top", "rtd/all"):
        assert key in t.callback_metrics
    assert float(t.callback_metrics["rtd/top"]) == 0.0  # first trial: documented empty value
    store = ReferenceStore(tmp_path / "store")
    assert store.epochs() == [1, 2] and store.trials() == ["a"]
    entry = store.get("a", 2)
    assert entry.embeddings.shape == (100, 16)
    assert entry.objectives["val_acc"] == pytest.approx(float(t.callback_metrics["val_acc"]))
    assert entry.fingerprint == cb.fingerprint and entry.fingerprint.dataset_size == N_VAL
    x, z = noise_pair(torch.from_numpy(entry.embeddings), "matched", seed=0, noise_dim=16)
    expected = L.rtd(x, z)
    assert float(t.callback_metrics["rtd/noise"]) == pytest.approx(expected, rel=1e-5)
    assert cb.monitor_modes == {"rtd/noise": "max", "rtd/top": "max", "rtd/all": "max"}
    assert entry.meta["directions"] == cb.monitor_modes


@pytest.mark.parametrize("check_every", [1, 2])
def test_checkpoint_and_early_stopping_act_on_same_epoch_value(tmp_path, check_every):
    cb = RTDCallback(layer="embedding", num_points=100, references="noise")
    ckpt = ModelCheckpoint(
        dirpath=tmp_path / "ckpt",
        monitor="rtd/noise",
        mode="max",
        save_top_k=1,
        filename="e{epoch}",
        auto_insert_metric_name=False,
    )
    es = EarlyStopping(monitor="rtd/noise", mode="max", patience=0, min_delta=0.0)
    logger = CSVLogger(tmp_path / "logs", name="run")
    _fit(
        tmp_path,
        [cb, ckpt, es],
        max_epochs=6 * check_every,
        logger=logger,
        enable_checkpointing=True,
        check_val_every_n_epoch=check_every,
        model=Tiny(lr=0.5),
    )
    rows = [r for r in _read_csv(tmp_path / "logs") if r.get("rtd/noise")]
    values = {int(r["epoch"]): float(r["rtd/noise"]) for r in rows}
    assert len(values) >= 2
    assert all((e + 1) % check_every == 0 for e in values)  # logged on validation epochs only
    best_epoch = max(values, key=values.get)
    assert float(ckpt.best_model_score) == pytest.approx(values[best_epoch], rel=1e-6)
    assert Path(ckpt.best_model_path).name == f"e{best_epoch}.ckpt"
    # EarlyStopping saw each epoch's fresh value: it stopped at the first non-improvement
    epochs = sorted(values)
    first_drop = next((e for a, e in itertools.pairwise(epochs) if values[e] <= values[a]), None)
    if first_drop is not None:
        assert es.stopped_epoch == first_drop
        assert float(es.best_score) == pytest.approx(
            max(values[e] for e in epochs if e < first_drop)
        )


def test_every_n_epochs_relogs_last_values(tmp_path):
    cb = RTDCallback(layer="embedding", num_points=50, every_n_epochs=2)
    logger = CSVLogger(tmp_path / "logs", name="run")
    _fit(tmp_path, cb, max_epochs=4, logger=logger)
    values = [float(r["rtd/noise"]) for r in _read_csv(tmp_path / "logs") if r.get("rtd/noise")]
    assert len(values) == 4  # computed at epochs 1, 2, 4; epoch 3 repeats epoch 2
    assert values[2] == values[1] and len({values[0], values[1], values[3]}) == 3


# --- references shared through the store ----------------------------------------------------------


def test_second_trial_top_and_all_equal_functional_rtd(tmp_path):
    store_dir = tmp_path / "store"
    for tid, lr in (("a", 0.05), ("b", 0.3)):
        _fit(tmp_path / tid, _cb(store_dir, tid), model=Tiny(lr=lr))
    cb = _cb(store_dir, "c")
    t = _fit(tmp_path / "c", cb, model=Tiny(lr=0.1))
    store = ReferenceStore(store_dir)
    mine = store.get("c", 2).embeddings
    others = [store.get(tid, 2) for tid in ("a", "b")]
    best = max(others, key=lambda e: e.objectives["val_acc"])
    assert float(t.callback_metrics["rtd/top"]) == pytest.approx(
        L.rtd(mine, best.embeddings), rel=1e-5
    )
    mean_all = np.mean([L.rtd(mine, e.embeddings) for e in others])
    assert float(t.callback_metrics["rtd/all"]) == pytest.approx(mean_all, rel=1e-5)
    assert cb.last_reference_epochs == {"top": 2, "all": 2}


def test_fallback_to_latest_earlier_epoch_and_never_self(tmp_path):
    store_dir = tmp_path / "store"
    _fit(tmp_path / "a", _cb(store_dir, "a"), max_epochs=1)
    cb = _cb(store_dir, "b")
    t = _fit(tmp_path / "b", cb, max_epochs=2)
    # at epoch 2 trial a has only epoch 1: the documented fallback uses it
    assert cb.last_reference_epochs == {"top": 1, "all": 1}
    store = ReferenceStore(store_dir)
    expected = L.rtd(store.get("b", 2).embeddings, store.get("a", 1).embeddings)
    assert float(t.callback_metrics["rtd/top"]) == pytest.approx(expected, rel=1e-5)
    # a trial alone in the store (its own entries only) gets the empty value, never itself
    cb_again = _cb(tmp_path / "store2", "solo", empty_value=-1.0)
    _fit(tmp_path / "s1", cb_again, max_epochs=2)
    assert cb_again.last_values == {
        "noise": cb_again.last_values["noise"],
        "top": -1.0,
        "all": -1.0,
    }


def test_max_references_bounds_all(tmp_path):
    store_dir = tmp_path / "store"
    for i in range(3):
        _fit(tmp_path / f"t{i}", _cb(store_dir, f"t{i}", references=("noise",)), max_epochs=1)
    calls = []
    cb = _cb(store_dir, "new", references=("all",), max_references=2)
    original = cb._score
    cb._score = lambda pairs: calls.append(len(pairs)) or original(pairs)
    _fit(tmp_path / "new", cb, max_epochs=1)
    assert calls == [2]  # 3 other trials, at most 2 used


def test_store_retention_keeps_best_and_newest(tmp_path):
    store_dir = tmp_path / "store"
    acc = {}
    for i, lr in enumerate((0.01, 0.5, 0.05, 0.2)):
        cb = _cb(store_dir, f"t{i}", references=("noise",), store_retention=2)
        t = _fit(tmp_path / f"t{i}", cb, max_epochs=1, model=Tiny(lr=lr))
        acc[f"t{i}"] = float(t.callback_metrics["val_acc"])
    kept = {e.trial_id for e in ReferenceStore(store_dir).entries(1, load_embeddings=False)}
    best_two = set(sorted(acc, key=acc.get, reverse=True)[:2])
    assert len(set(acc.values())) == 4, acc  # no ties, so "the best two" is well defined
    assert kept == best_two | {"t3"}  # the k best by val_acc, plus the newest


def test_probe_mismatch_is_refused(tmp_path):
    store_dir = tmp_path / "store"
    _fit(tmp_path / "a", _cb(store_dir, "a", probe_seed=1), max_epochs=1)
    with pytest.raises(ProbeMismatchError, match="probe sets differ"):
        _fit(tmp_path / "b", _cb(store_dir, "b", probe_seed=2), max_epochs=1)


def test_corrupt_and_foreign_files_in_store_are_tolerated(tmp_path):
    store_dir = tmp_path / "store"
    _fit(tmp_path / "a", _cb(store_dir, "a"), max_epochs=1)
    epoch_dir = next((store_dir).rglob("epoch=000001"))
    (epoch_dir / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    (epoch_dir / "README.txt").write_text("not an entry")
    cb = _cb(store_dir, "b")
    with pytest.warns(RTDWarning, match="broken.npz"):
        t = _fit(tmp_path / "b", cb, max_epochs=1, model=Tiny(lr=0.4))
    assert math.isfinite(float(t.callback_metrics["rtd/top"]))
    assert float(t.callback_metrics["rtd/top"]) > 0


# --- faults ---------------------------------------------------------------------------------------


def test_unknown_layer_lists_submodules(tmp_path):
    with pytest.raises(ValueError, match=r"no submodule named 'encoder'.*embedding, embedding\.0"):
        _fit(tmp_path, RTDCallback(layer="encoder"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="needs `objective="):
        RTDCallback(references=("top",))
    with pytest.raises(ValueError, match="subset of"):
        RTDCallback(references=("noise", "best"))
    with pytest.raises(ValueError, match="num_points"):
        RTDCallback(num_points=2)
    with pytest.raises(ValueError, match="`noise` must be one of"):
        RTDCallback(noise="uniform")
    with pytest.raises(ValueError, match="`directions`"):
        RTDCallback(directions={"noise": "up"})


class _Poison(nn.Module):
    poisoned = False

    def forward(self, x):
        return x * float("nan") if self.poisoned else x


class _PoisonAfterFirstEpoch(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        pl_module.embedding[2].poisoned = True


def test_nonfinite_embeddings_log_nan_write_nothing_and_stop_early(tmp_path):
    model = Tiny()
    model.embedding.append(_Poison())
    cb = _cb(tmp_path / "store", "p")
    es = EarlyStopping(monitor="rtd/noise", check_finite=True, mode="max", patience=10)
    with pytest.warns(RTDWarning, match="contain NaN or Inf"):
        t = _fit(tmp_path, [_PoisonAfterFirstEpoch(), cb, es], max_epochs=5, model=model)
    assert math.isnan(float(t.callback_metrics["rtd/noise"]))
    assert t.current_epoch < 4  # stopped by EarlyStopping(check_finite=True)
    assert ReferenceStore(tmp_path / "store").epochs() == [1]  # nothing written once non-finite


def test_unreachable_store_warns_logs_nan_and_training_continues(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file where a folder should be")
    cb = _cb(blocker / "store", "u")
    with pytest.warns(RTDWarning, match="store"):
        t = _fit(tmp_path, cb, max_epochs=2)
    assert t.current_epoch == 2
    assert math.isnan(float(t.callback_metrics["rtd/top"]))
    assert math.isfinite(float(t.callback_metrics["rtd/noise"]))


def test_small_validation_set_is_clamped_with_warning(tmp_path):
    cb = RTDCallback(layer="embedding", num_points=1000)
    with pytest.warns(RTDWarning, match=f"using all {N_VAL}"):
        _fit(tmp_path, cb, max_epochs=1)
    assert len(cb.probe) == N_VAL


# --- capture variants -----------------------------------------------------------------------------


def test_callable_layer_equals_hook(tmp_path):
    hook_cb = RTDCallback(layer="embedding", num_points=80)
    fn_cb = RTDCallback(layer=lambda m, batch: m.embedding(batch[0]), num_points=80, prefix="fn/")
    t = _fit(tmp_path, [hook_cb, fn_cb], max_epochs=1)
    assert float(t.callback_metrics["fn/noise"]) == float(t.callback_metrics["rtd/noise"])


def test_second_validation_loader(tmp_path):
    cb = RTDCallback(layer="embedding", num_points=60, dataloader_idx=1)
    _fit(tmp_path, cb, max_epochs=1, model=Tiny(n_val_loaders=2))
    assert cb.dataset_size == N_VAL and len(cb.probe) == 60
    bad = RTDCallback(layer="embedding", num_points=60, dataloader_idx=3)
    with pytest.raises(ValueError, match="only 2 validation dataloaders"):
        _fit(tmp_path, bad, max_epochs=1, model=Tiny(n_val_loaders=2))


def test_datamodule_loader(tmp_path):
    from tiny import make_data

    class DM(pl.LightningDataModule):
        def train_dataloader(self):
            return torch.utils.data.DataLoader(make_data(64, 0), batch_size=16)

        def val_dataloader(self):
            return torch.utils.data.DataLoader(make_data(90, 5), batch_size=16)

    class NoLoaders(Tiny):
        train_dataloader = None
        val_dataloader = None

    cb = RTDCallback(layer="embedding", num_points=40)
    pl.seed_everything(0, verbose=False)
    t = trainer(tmp_path, [cb], max_epochs=1)
    t.fit(NoLoaders(), datamodule=DM())
    assert cb.dataset_size == 90 and math.isfinite(float(t.callback_metrics["rtd/noise"]))


def test_selectors_and_feature_maps():
    x = torch.randn(4, 3, 5, 5)
    assert select_output((x, "state"), None) is x
    assert select_output({"h": x}, "h") is x
    with pytest.raises(TypeError, match=r"dict with keys \['h'\]"):
        select_output({"h": x}, None)
    assert reduce_features(x, "flatten").shape == (4, 75)
    torch.testing.assert_close(reduce_features(x, "mean"), x.mean(dim=(2, 3)))
    with pytest.raises(ValueError, match="unknown feature_reduction"):
        reduce_features(x, "max")


def test_shuffled_validation_loader_is_refused(tmp_path):
    class Shuffled(Tiny):
        def val_dataloader(self):
            from tiny import make_data

            return torch.utils.data.DataLoader(make_data(60, 1), batch_size=8, shuffle=True)

    with pytest.raises(ValueError, match="order is random"):
        _fit(tmp_path, RTDCallback(layer="embedding", num_points=20), model=Shuffled())


# --- resume, several instances --------------------------------------------------------------------


def test_resume_keeps_probe_trial_and_never_duplicates(tmp_path):
    store_dir = tmp_path / "store"
    cb = _cb(store_dir, None)  # generated trial id
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_epochs=1)
    _fit(tmp_path, [cb, ckpt], max_epochs=2, enable_checkpointing=True)
    first_probe, first_id = cb.probe.copy(), cb.trial_id
    assert first_id and first_id in ReferenceStore(store_dir).trials()

    resumed = _cb(store_dir, None, probe_seed=123)  # a different seed must not change the probe
    pl.seed_everything(0, verbose=False)
    t = trainer(
        tmp_path,
        [resumed, ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)],
        max_epochs=4,
        enable_checkpointing=True,
    )
    t.fit(Tiny(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert resumed.trial_id == first_id
    np.testing.assert_array_equal(resumed.probe, first_probe)
    store = ReferenceStore(store_dir)
    assert store.trials() == [first_id] and store.epochs() == [1, 2, 3, 4]
    files = sorted(p.name for p in store_dir.rglob("*.npz"))
    assert len(files) == 4  # one entry per epoch, no duplicates
    assert resumed.written_epochs == {1, 2, 3, 4}


def test_two_instances_have_distinct_state_keys(tmp_path):
    a = RTDCallback(layer="embedding", num_points=30)
    b = RTDCallback(layer="head", num_points=30, prefix="rtd_head/")
    assert a.state_key != b.state_key
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(tmp_path, [a, b, ckpt], max_epochs=1, enable_checkpointing=True)
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    assert state[a.state_key]["probe"] == a.probe.tolist()
    assert state[b.state_key]["last_values"]["noise"] == b.last_values["noise"]


# --- the dimension-fair noise reference (issue: RTD objectives done right) ------------------------


def test_matched_noise_is_dimension_fair():
    """On random untrained MLPs of different widths, RTD to 'same-shape' noise ranks by width;
    the default 'matched' noise does not."""
    x = torch.randn(200, 20, generator=torch.Generator().manual_seed(0))
    widths, fair, naive = [], [], []
    for seed in range(3):
        for w in (32, 64, 128, 256, 512):
            torch.manual_seed(seed * 100 + w)
            net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, w), nn.ReLU())
            emb = net(x).detach()
            widths.append(w)
            fair.append(L.rtd(*noise_pair(emb, "matched", seed=0)))
            naive.append(L.rtd(*noise_pair(emb, "same-shape", seed=0)))
    rho_fair = scipy.stats.spearmanr(widths, fair).statistic
    rho_naive = scipy.stats.spearmanr(widths, naive).statistic
    # same-shape noise: RTD(x -> noise) collapses towards 0 as the width grows (rho about -0.95)
    assert abs(rho_naive) > 0.9, rho_naive
    assert abs(rho_fair) < 0.5, rho_fair


# --- LightningCLI ---------------------------------------------------------------------------------


def test_configurable_from_lightning_cli_yaml(tmp_path):
    from lightning.pytorch.cli import LightningCLI

    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
trainer:
  max_epochs: 1
  accelerator: cpu
  logger: false
  enable_checkpointing: false
  enable_progress_bar: false
  default_root_dir: {tmp_path}
  callbacks:
    - class_path: lightning_rtd.RTDCallback
      init_args:
        layer: embedding
        num_points: 50
        references: [noise, top]
        objective: val_acc
        mode: max
        trial_id: cli-trial
        store:
          class_path: lightning_rtd.ReferenceStore
          init_args:
            root: {tmp_path / "store"}
            dtype: float16
"""
    )
    cli = LightningCLI(
        Tiny, args=["fit", "--config", str(config)], save_config_kwargs={"overwrite": True}
    )
    cb = next(c for c in cli.trainer.callbacks if isinstance(c, RTDCallback))
    assert cb.references == ("noise", "top") and cb.store.dtype == "float16"
    assert ReferenceStore(tmp_path / "store").trials() == ["cli-trial"]


# --- W&B offline: read back what was really logged ------------------------------------------------


def test_wandb_offline_run_has_scalars_and_barcode_image(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = WandbLogger(project="lrtd-test", save_dir=str(tmp_path), offline=True)
    cb = RTDCallback(layer="embedding", num_points=60, log_barcode_every_n_epochs=1)
    t = _fit(tmp_path, cb, max_epochs=2, logger=logger)
    run = logger.experiment
    assert run.summary["rtd/noise"] == pytest.approx(float(t.callback_metrics["rtd/noise"]))
    run_dir = Path(run.dir).parent
    import wandb

    wandb.finish()
    images = list(run_dir.rglob("media/images/rtd/barcode*.png"))
    assert len(images) == 2  # one per validation epoch
    records = wait_for_history(
        next(run_dir.glob("run-*.wandb")), ["rtd/noise", "rtd/barcode/filenames"], count=2
    )
    logged = [r for r in records if "rtd/noise" in r]
    assert len(logged) == 2 and all(math.isfinite(r["rtd/noise"]) for r in logged)
    barcode_rows = [r for r in records if "rtd/barcode/filenames" in r]
    assert len(barcode_rows) == 2
    # the figure of an epoch sits at the same trainer step as that epoch's rtd scalars
    steps = sorted(r["trainer/global_step"] for r in logged)
    assert sorted(r["trainer/global_step"] for r in barcode_rows) == steps
    assert steps[0] > 0


# --- DDP: 2 CPU processes give the values of 1 process --------------------------------------------


@pytest.mark.slow
def test_ddp_two_processes_equal_one(tmp_path):
    script = Path(__file__).with_name("ddp_callback_script.py")
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"out{devices}"
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
        proc = subprocess.run(
            [sys.executable, str(script), str(out), str(devices)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        results[devices] = {
            int(p.stem.split("rank")[1]): np.load(p, allow_pickle=True).item()
            for p in out.glob("rank*.npy")
        }
    single, double = results[1][0], results[2]
    assert set(double) == {0, 1}
    for rank in (0, 1):  # every rank logged the broadcast values
        for key in ("rtd/noise", "rtd/top", "rtd/all"):
            assert double[rank]["validate"][key] == pytest.approx(single["validate"][key], rel=1e-5)
        assert double[rank]["fit_ok"]
    np.testing.assert_array_equal(double[0]["probe"], single["probe"])
    np.testing.assert_allclose(double[0]["stored"], single["stored"], rtol=1e-5, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert single["validate"]["rtd/noise"] > 0
