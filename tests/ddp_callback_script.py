"""Run by tests/test_callback.py: validate a fixed model with RTDCallback on 1 or 2 CPU processes
(Lightning's "ddp" strategy re-launches this script for rank 1), then fit 2 epochs under DDP
with EarlyStopping / ModelCheckpoint monitoring rtd/noise. Each rank saves what it saw."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from tiny import Tiny

from lightning_rtd import RTDCallback
from lightning_rtd.store import ReferenceStore


def main(out: Path, devices: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    store = out / "store"
    # an earlier trial in the store, so that 'top' and 'all' are computed against something
    ref_store = ReferenceStore(store)
    strategy = "ddp" if devices > 1 else "auto"
    common = dict(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(out),
    )

    def cb(trial):
        return RTDCallback(
            layer="embedding",
            num_points=100,
            references=("noise", "top", "all"),
            store=str(store),
            trial_id=trial,
            objective="val_acc",
            mode="max",
        )

    pl.seed_everything(0, verbose=False)
    earlier = Tiny(lr=0.3)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in earlier.parameters():
            p.add_(0.5 * torch.randn_like(p))
    t0 = pl.Trainer(callbacks=[cb("earlier")], enable_checkpointing=False, **common)
    t0.validate(earlier, verbose=False)

    pl.seed_everything(0, verbose=False)
    model = Tiny()
    callback = cb("me")
    t1 = pl.Trainer(callbacks=[callback], enable_checkpointing=False, **common)
    t1.validate(model, verbose=False)
    validate = {k: float(v) for k, v in t1.callback_metrics.items() if k.startswith("rtd/")}

    fit_cb = RTDCallback(layer="embedding", num_points=100, prefix="rtd/", references="noise")
    t2 = pl.Trainer(
        max_epochs=2,
        callbacks=[
            fit_cb,
            ModelCheckpoint(dirpath=out / "ckpt", monitor="rtd/noise", mode="max"),
            EarlyStopping(monitor="rtd/noise", mode="max", patience=5),
        ],
        **common,
    )
    t2.fit(Tiny())
    rank = t1.global_rank
    stored = ref_store.get("me", 1)
    np.save(
        out / f"rank{rank}.npy",
        {
            "validate": validate,
            "probe": callback.probe,
            "stored": None if stored is None else stored.embeddings,
            "fit_ok": "rtd/noise" in t2.callback_metrics,
        },
        allow_pickle=True,
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
