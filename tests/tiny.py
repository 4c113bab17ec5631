"""A tiny classifier and data for callback tests (CPU, a second per epoch)."""

from __future__ import annotations

import lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

N_VAL = 151  # odd: a 2-process DistributedSampler pads one sample


def make_data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return TensorDataset(x, y)


class Tiny(pl.LightningModule):
    """MLP with an ``embedding`` submodule; logs val_loss / val_acc."""

    def __init__(self, width: int = 16, lr: float = 0.1, n_val_loaders: int = 1, conv=False):
        super().__init__()
        self.save_hyperparameters()
        self.embedding = nn.Sequential(nn.Linear(8, width), nn.ReLU())
        self.head = nn.Linear(width, 3)
        self.n_val_loaders = n_val_loaders

    def forward(self, x):
        return self.head(self.embedding(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = batch
        out = self(x)
        several = self.n_val_loaders > 1
        self.log("val_loss", nn.functional.cross_entropy(out, y), add_dataloader_idx=several)
        self.log("val_acc", (out.argmax(1) == y).float().mean(), add_dataloader_idx=several)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    def train_dataloader(self):
        return DataLoader(make_data(256, 0), batch_size=32, shuffle=True)

    def val_dataloader(self):
        loaders = [DataLoader(make_data(N_VAL, 1), batch_size=32)]
        if self.n_val_loaders > 1:
            loaders.insert(0, DataLoader(make_data(40, 2), batch_size=16))
        return loaders if self.n_val_loaders > 1 else loaders[0]


def trainer(tmp_path, callbacks, max_epochs=2, **kwargs) -> pl.Trainer:
    opts = dict(
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        devices=1,
    )
    opts.update(kwargs)
    return pl.Trainer(**opts)
