"""Classifiers whose penultimate layer is a submodule named ``embedding``.

`Classifier` is the shared `LightningModule`: ``forward`` is
``head(embedding(x))``, the loss is cross-entropy, the optimiser AdamW, and it logs
``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``test_loss`` and ``test_acc`` once per
epoch. The output of ``model.embedding`` (shape ``(B, embedding_dim)``, after the activation) is
the representation that `lightning_rtd.RTDCallback` compares (``layer="embedding"``).

Every architectural and optimisation hyperparameter is a constructor argument and is saved with
`save_hyperparameters`, so checkpoints and loggers
record them.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Accuracy

__all__ = ["CNNClassifier", "Classifier", "MLPClassifier"]


class Classifier(L.LightningModule):
    """Base classifier: an ``embedding`` submodule followed by a linear ``head``.

    Subclasses build the embedding network, pass it here and then call
    ``self.save_hyperparameters()``.

    Args:
        embedding: network mapping a batch of inputs to ``(B, embedding_dim)`` features.
        embedding_dim: width of the embedding's output.
        num_classes: number of classes.
        lr: AdamW learning rate.
        weight_decay: AdamW (decoupled) weight decay.
    """

    def __init__(
        self,
        embedding: nn.Module,
        embedding_dim: int,
        num_classes: int,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        super().__init__()
        _check_positive(embedding_dim=embedding_dim, num_classes=num_classes)
        if lr <= 0 or weight_decay < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got {lr} and {weight_decay}")
        self.embedding = embedding
        self.head = nn.Linear(embedding_dim, num_classes)
        self.embedding_dim = int(embedding_dim)
        self.num_classes = int(num_classes)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.train_acc = Accuracy(task="multiclass", num_classes=num_classes)
        self.val_acc = Accuracy(task="multiclass", num_classes=num_classes)
        self.test_acc = Accuracy(task="multiclass", num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of shape ``(B, num_classes)``."""
        return self.head(self.embedding(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The representation compared by RTD, shape ``(B, embedding_dim)``."""
        return self.embedding(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = getattr(self, f"{stage}_acc")
        acc(logits, y)
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        self.log(
            f"{stage}_acc",
            acc,
            on_step=False,
            on_epoch=True,
            prog_bar=stage == "val",
            batch_size=len(y),
        )
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        """Cross-entropy on one training batch; logs ``train_loss`` and ``train_acc``."""
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        """Logs ``val_loss`` and ``val_acc`` (epoch means)."""
        return self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        """Logs ``test_loss`` and ``test_acc`` (epoch means)."""
        return self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW over all parameters with ``lr`` and ``weight_decay``."""
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class MLPClassifier(Classifier):
    """Multi-layer perceptron for flat inputs (images are flattened first).

    ``embedding`` is ``depth`` blocks of Linear(width) - ReLU - Dropout followed by
    Linear(embedding_dim) - ReLU; ``head`` maps the embedding to the class logits.

    Args:
        input_dim: number of input features.
        num_classes: number of classes.
        width: units of each hidden layer.
        depth: number of hidden layers of size ``width`` before the embedding layer (``0``:
            the embedding layer reads the input directly).
        embedding_dim: units of the embedding (penultimate) layer.
        dropout: dropout probability after each hidden layer.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        width: int = 128,
        depth: int = 2,
        embedding_dim: int = 32,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        _check_positive(input_dim=input_dim, width=width, embedding_dim=embedding_dim)
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        _check_dropout(dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = input_dim
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.ReLU(), nn.Dropout(dropout)]
            fan_in = width
        layers += [nn.Linear(fan_in, embedding_dim), nn.ReLU()]
        super().__init__(nn.Sequential(*layers), embedding_dim, num_classes, lr, weight_decay)
        self.save_hyperparameters()


class CNNClassifier(Classifier):
    """Small convolutional network for images such as MNIST's ``(1, 28, 28)``.

    ``embedding`` is ``depth`` blocks of Conv3x3 - BatchNorm - ReLU - MaxPool2, the number of
    channels doubling from ``channels`` in each block, then Flatten - Dropout -
    Linear(embedding_dim) - ReLU.

    Args:
        num_classes: number of classes.
        in_channels: channels of the input images.
        image_size: height and width of the (square) input images.
        channels: output channels of the first convolution block.
        depth: number of convolution blocks; ``image_size`` must stay >= 1 after ``depth``
            halvings.
        embedding_dim: units of the embedding (penultimate) layer.
        dropout: dropout probability before the embedding layer.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        channels: int = 16,
        depth: int = 2,
        embedding_dim: int = 64,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        _check_positive(
            in_channels=in_channels, channels=channels, depth=depth, embedding_dim=embedding_dim
        )
        _check_dropout(dropout)
        side = image_size // 2**depth
        if side < 1:
            raise ValueError(f"image_size={image_size} is too small for depth={depth}")
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(depth):
            c_out = channels * 2**i
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        layers += [
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c_in * side * side, embedding_dim),
            nn.ReLU(),
        ]
        super().__init__(nn.Sequential(*layers), embedding_dim, num_classes, lr, weight_decay)
        self.save_hyperparameters()


def _check_positive(**values: int) -> None:
    bad = {k: v for k, v in values.items() if v < 1}
    if bad:
        raise ValueError(f"must be >= 1: {bad}")


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
