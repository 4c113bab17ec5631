"""Ray Tune integration: presets, reporter and trial plumbing, then a real ASHA search on a local
Ray cluster whose trials share an RTD reference store on a (moto) S3 server through s3fs."""

from __future__ import annotations

import inspect
import math
import pickle
import time
import warnings
from pathlib import Path

import pytest
import torch
from s3_server import s3_store_url  # noqa: F401  (the fixture)
from tiny import Tiny, trainer

pytest.importorskip("ray.tune")

from lightning_rtd import ReferenceStore, RTDCallback, rtd
from lightning_rtd.errors import RTDWarning
from lightning_rtd.integrations.ray import (
    InvalidMetricError,
    RayTrialContext,
    RayTuneReporter,
    list_ray_presets,
    make_trainable,
    ray_scheduler,
)

TESTS_DIR = str(Path(__file__).resolve().parent)
MAX_EPOCHS = 4


def _preset(name: str, **kwargs):
    opts = dict(metric="val_acc", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    opts.update(kwargs)
    return ray_scheduler(name, **opts)


# ---- presets -------------------------------------------------------------------------------


def test_presets_directions_and_tune_config():
    from ray.tune import TuneConfig
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    asha = _preset("asha", seed=3)
    assert (asha.metric, asha.mode, asha.name) == ("val_acc", "max", "asha")
    assert isinstance(asha.scheduler, AsyncHyperBandScheduler)
    assert asha.scheduler._time_attr == "epoch" and asha.scheduler._metric is None
    assert "rtd/noise" in asha.extra_metrics and "val_acc" not in asha.extra_metrics

    for direction in ("max", "min"):
        p = _preset("rtd-noise-only", rtd_direction=direction)
        assert (p.name, p.metric, p.mode) == (f"rtd-noise-only-{direction}", "rtd/noise", direction)
        assert p.objectives[0].mode == direction and "val_acc" in p.extra_metrics
        suffixed = _preset(f"rtd-noise-only-{direction}")
        assert (suffixed.metric, suffixed.mode) == ("rtd/noise", direction)
    top = _preset("rtd-top-only-min", rtd_key="topo/top")
    assert (top.metric, top.mode) == ("topo/top", "min")

    with pytest.raises(ValueError, match="rtd_direction"):
        _preset("rtd-noise-only-max", rtd_direction="min")
    with pytest.raises(ValueError, match="MOASHA"):
        _preset("moasha-noise-max")
    with pytest.raises(ValueError, match="MOASHA"):
        _preset("moasha-top")
    with pytest.raises(ValueError, match="BOHB"):
        _preset("bohb")
    with pytest.raises(ValueError, match="unknown preset"):
        _preset("nope")
    with pytest.raises(ValueError, match="only apply"):
        _preset("asha", rtd_direction="max")

    hb = _preset("hyperband", max_t=9, reduction_factor=3)
    assert len(hb.scheduler._brackets) == 3  # rung levels 1, 3, 9
    assert isinstance(_preset("random").scheduler, FIFOScheduler)
    assert "rtd-all-only-min" in list_ray_presets()

    cfg = _preset("rtd-noise-only-max").tune_config(num_samples=2)
    assert isinstance(cfg, TuneConfig)
    assert (cfg.metric, cfg.mode, cfg.num_samples) == ("rtd/noise", "max", 2)
    with pytest.raises(TypeError):
        asha.tune_config(metric="x")
    reporter = _preset("rtd-noise-only-min").make_reporter()
    assert reporter.reported_names == ("rtd/noise",)
    assert reporter.objectives[0].mode == "min"


# ---- reporter ------------------------------------------------------------------------------


class _NaNTiny(Tiny):
    """Logs a NaN ``bad`` metric in epoch 2 and none in epoch 1."""

    def on_validation_epoch_end(self):
        if self.current_epoch == 1:
            self.log("bad", float("nan"))
        elif self.current_epoch == 2:
            self.log("bad", 0.5)


def test_reporter_sends_plain_finite_floats_per_epoch(tmp_path):
    sent = []
    rtd_cb = RTDCallback(layer="embedding", num_points=40, references=("noise",))
    reporter = RayTuneReporter(
        [("bad", "max"), ("val_loss", "min")],
        extra_metrics=["rtd/noise", "val_acc", "absent"],
        reporter=sent.append,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(tmp_path, [rtd_cb, reporter], max_epochs=3, enable_checkpointing=True).fit(
            _NaNTiny()
        )
    assert [r["epoch"] for r in sent] == [1, 2, 3]
    for r in sent:
        assert all(type(v) in (int, float) and math.isfinite(v) for v in r.values()), r
        assert "absent" not in r and {"rtd/noise", "val_acc", "val_loss"} <= set(r)
    # missing before any finite value -> -sentinel, then NaN -> still no finite value seen
    assert sent[0]["bad"] == -1e6 and sent[1]["bad"] == -1e6 and sent[2]["bad"] == 0.5
    assert sum(issubclass(w.category, RTDWarning) for w in caught) >= 2
    assert reporter.reports == sent


def test_reporter_raise_policy_and_reserved_keys():
    strict = RayTuneReporter([("rtd/noise", "max")], on_invalid="raise", reporter=lambda r: None)
    with pytest.raises(InvalidMetricError):
        strict.report(1, {"rtd/noise": torch.tensor(float("nan"))})
    assert strict.report(2, {"rtd/noise": torch.tensor(3.0)}) == {"epoch": 2, "rtd/noise": 3.0}
    with pytest.raises(ValueError, match="Ray Tune fills"):
        RayTuneReporter([("time_total_s", "min")])
    with pytest.raises(ValueError, match="resource_attr"):
        RayTuneReporter([("val_acc", "max")], extra_metrics=["training_iteration"])
    ok = RayTuneReporter([("val_acc", "max")], resource_attr="training_iteration")
    assert ok.builder.resource_attr == "training_iteration"


# ---- trial plumbing ------------------------------------------------------------------------


def test_make_trainable_outside_ray(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen: list[RayTrialContext] = []

    def my_train(config, ctx):
        seen.append(ctx)
        return {"val_acc": 1.0}  # must not be returned to Ray

    trainable = make_trainable(my_train, store="rel-store")
    assert trainable.__name__ == "my_train"
    assert list(inspect.signature(trainable).parameters) == ["config"]
    with pytest.warns(RTDWarning, match="not running inside a Ray Tune trial"):
        assert trainable({"lr": 0.1}) is None
    ctx = seen[0]
    assert ctx.trial_id.startswith("local-") and not ctx.in_ray_tune
    assert ctx.store_url == str(tmp_path / "rel-store")  # absolute, resolved on the driver
    assert pickle.loads(pickle.dumps(ctx.store)).root == ctx.store_url

    monkeypatch.setenv("LIGHTNING_RTD_STORE", "memory://from-env")
    from_env: list[RayTrialContext] = []
    with pytest.warns(RTDWarning):
        make_trainable(lambda c, x: from_env.append(x))({})
    assert from_env[0].store_url == "memory://from-env"
    monkeypatch.delenv("LIGHTNING_RTD_STORE")
    with pytest.raises(TypeError):
        make_trainable(my_train, store=ReferenceStore("memory://x"), storage_options={"a": 1})
    with pytest.raises(TypeError):
        make_trainable(my_train, storage_options={"a": 1})


# ---- a real search -------------------------------------------------------------------------

# Embedding widths in the order Ray starts the trials. At lr=0.1 and seed 0 their rtd/noise at
# epoch 1 is about 10.2, 9.7, 9.5 and 8.8 (decreasing): with 2 trials at a time and ASHA
# maximising rtd/noise (reduction factor 2), the third and fourth trials fall below the
# epoch-1 cut-off of the first two whatever the timing, and stop after one epoch.
WIDTHS = [4, 32, 8, 16]


def _ray_trial(config, ctx):
    """One Ray trial: Tiny with RTD against noise and the top trial, reported to Ray."""
    import lightning as L

    torch.set_num_threads(1)
    L.seed_everything(config["seed"], verbose=False)
    rtd_cb = RTDCallback(
        layer="embedding",
        num_points=100,
        references=("noise", "top"),
        store=ctx.store,
        trial_id=ctx.trial_id,
        objective="val_acc",
        mode="max",
        directions=config["rtd_direction"],
    )
    reporter = RayTuneReporter(
        [("rtd/noise", config["rtd_direction"])],
        extra_metrics=["rtd/top", "val_acc", "val_loss"],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(
            ctx.trial_dir,
            [rtd_cb, reporter],
            max_epochs=MAX_EPOCHS,
            enable_checkpointing=True,
        ).fit(Tiny(width=config["width"], lr=config["lr"]))


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local 2-CPU Ray cluster for this module; its session files under a pytest temp dir."""
    import ray

    temp_dir = str(tmp_path_factory.mktemp("ray"))
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        # Unix socket paths must stay under ~107 characters: use Ray's default when long
        _temp_dir=temp_dir if len(temp_dir) < 45 else None,
        # the trial function lives in this module and uses tests/tiny.py
        runtime_env={"env_vars": {"PYTHONPATH": TESTS_DIR}},
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_asha_on_rtd_noise_with_an_s3_store(ray_cluster, s3_store_url, tmp_path):  # noqa: F811
    from ray import tune

    preset = ray_scheduler(
        "rtd-noise-only",
        rtd_direction="max",
        metric="val_acc",
        mode="max",
        max_t=MAX_EPOCHS,
        grace_period=1,
        reduction_factor=2,
        seed=0,
    )
    trainable = make_trainable(
        _ray_trial, store=s3_store_url.url, storage_options=s3_store_url.storage_options
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={
            "width": tune.grid_search(WIDTHS),
            "lr": 0.1,
            "seed": 0,
            "rtd_direction": "max",
        },
        # a reused worker skips the ~10-25 s import of torch and Lightning per trial
        tune_config=preset.tune_config(reuse_actors=True),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "ray_results"), name="rtd-asha", verbose=0
        ),
    )
    start = time.perf_counter()
    results = tuner.fit()
    elapsed = time.perf_counter() - start
    assert not results.errors, results.errors
    assert len(results) == len(WIDTHS)

    # every report has finite RTD values; epochs 1..n
    history = {}
    for result in results:
        df = result.metrics_dataframe
        tid = result.metrics["trial_id"]
        assert list(df["epoch"]) == list(range(1, len(df) + 1)), df
        for key in ("rtd/noise", "rtd/top"):
            assert df[key].map(math.isfinite).all(), (tid, key, df[key])
        history[tid] = df.set_index("epoch")
    epochs_run = {tid: len(df) for tid, df in history.items()}
    assert min(epochs_run.values()) < MAX_EPOCHS, epochs_run  # ASHA stopped someone early
    assert max(epochs_run.values()) == MAX_EPOCHS, epochs_run

    # the S3 store, read back through s3fs, holds the entries of (at least) 3 trials
    store = ReferenceStore(s3_store_url.url, storage_options=s3_store_url.storage_options)
    stored_trials = store.trials()
    assert len(stored_trials) >= 3 and set(stored_trials) <= set(history), stored_trials
    entries = {
        (e.trial_id, e.epoch): e for ep in store.epochs() for e in store.entries(ep) if ep > 0
    }
    for (tid, epoch), entry in entries.items():
        reported = history[tid].loc[epoch]
        assert entry.meta["rtd"]["rtd/noise"] == pytest.approx(reported["rtd/noise"])

    # rtd/top of a trial was computed against another trial's stored embeddings
    explained = []
    for tid, df in history.items():
        for epoch, row in df.iterrows():
            if row["rtd/top"] == 0.0:  # no other trial had written an entry yet
                continue
            own = entries[(tid, epoch)].embeddings
            candidates = [
                rtd(own, e.embeddings)
                for (other, ep), e in entries.items()
                if other != tid and ep <= epoch
            ]
            assert any(c == pytest.approx(row["rtd/top"], rel=1e-5) for c in candidates), (
                tid,
                epoch,
                row["rtd/top"],
                candidates,
            )
            explained.append((tid, epoch))
    assert explained, history
    late = [tid for tid, n in epochs_run.items() if n < MAX_EPOCHS]
    assert any(tid in late for tid, _ in explained)
    print(f"Ray search: {elapsed:.1f} s, epochs per trial {epochs_run}")
