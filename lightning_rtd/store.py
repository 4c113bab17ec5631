"""A reference store shared by the trials of a hyperparameter search.

After each validation epoch every trial writes its probe embeddings (an ``(N, d)`` array computed
on a fixed probe set of ``N`` validation samples) and its objective values to the store; other
trials read the entries of the same epoch to compute RTD to the best trial and to all others.

The root is a local folder or any [fsspec](https://filesystem-spec.readthedocs.io) URL
(``s3://bucket/prefix``, ``gs://bucket/prefix``, ``memory://name``, ...), so trials running on
many machines can share one store. Filesystem options (credentials, endpoint) go in
``storage_options``.

Layout:

```text
<root>/lrtd-v1/epoch=000003/<safe-trial-id>.npz
```

One ``.npz`` archive per (trial, epoch), holding two members:

* ``embeddings``: the ``(N, d)`` embeddings in the store's dtype (``float32`` or ``float16``);
* ``metadata``: UTF-8 JSON as a ``uint8`` array, with ``format`` (``"lightning-rtd/reference"``),
  ``format_version`` (``1``), ``trial_id``, ``epoch``, ``objectives``, ``fingerprint``,
  ``created``, ``meta``, ``dtype`` and ``shape``.

Epochs are 1-based: the number of completed training epochs when the validation ran
(``trainer.current_epoch + 1``), the resource Syne Tune schedulers use. The folder name is padded
to six digits. The file name is the trial id with every character outside ``[A-Za-z0-9_.-]`` (and
a leading ``.``) percent-encoded; ids with upper-case letters get a ``~<hash>`` suffix so that they
cannot collide on case-insensitive filesystems, and ids longer than 120 encoded characters are cut
and suffixed with a hash. Readers always take the id from the metadata.

Writes are atomic. On a local filesystem the archive goes to a temporary file in the same folder
(``.<name>.<random>.tmp``), is flushed with ``fsync`` and renamed over the target with
``os.replace``. On other filesystems the archive is built in memory and written with a single
``pipe_file`` call, which object stores apply atomically. Writing the same (trial, epoch) again
replaces the entry, so a resumed trial never leaves duplicates.

Readers never fail on a bad file: hidden files (temporary files of writers in progress) are
ignored silently, and any file that cannot be parsed (truncated, corrupt, foreign, another format
version) is skipped with one [`RTDWarning`][lightning_rtd.errors.RTDWarning] per path and store
instance. A store that cannot be reached raises
[`StoreUnavailableError`][lightning_rtd.store.StoreUnavailableError].

Retention: with ``max_entries_per_epoch=k`` every
[`ReferenceStore.put`][lightning_rtd.store.ReferenceStore.put] prunes its epoch. With a
``retention_objective`` the ``k`` best entries by that objective are kept (entries without
a finite value rank last, ties go to the newer entry), plus the entry just written if it is not
among them, so an epoch holds at most ``k + 1`` entries right after a put. Without an objective
the entry just written and the ``k - 1`` most recent others are kept. Deletion is best-effort: an
entry already removed by another process is not an error, and a failed deletion only warns.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import numbers
import operator
import os
import re
import string
import time
import uuid
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lightning_rtd.errors import ProbeMismatchError, RTDWarning

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LAYOUT_DIR",
    "STORE_ENV_VAR",
    "ProbeFingerprint",
    "ReferenceStore",
    "StoreEntry",
    "StoreUnavailableError",
    "open_store",
]

FORMAT_NAME = "lightning-rtd/reference"
"""Value of the ``format`` field of every entry's metadata."""

FORMAT_VERSION = 1
"""Version of the entry format written and read by this module."""

LAYOUT_DIR = "lrtd-v1"
"""Folder under the store root that holds the epoch folders."""

STORE_ENV_VAR = "LIGHTNING_RTD_STORE"
"""Environment variable read by [`open_store`][lightning_rtd.store.open_store] without a store."""

StoreDtype = Literal["float32", "float16"]

_EMB_MEMBER = "embeddings"
_META_MEMBER = "metadata"
_EPOCH_RE = re.compile(r"epoch=(\d+)")
_SAFE_CHARS = frozenset(string.ascii_letters + string.digits + "-_.")
_MAX_NAME = 120
_FLOAT16_MAX = float(np.finfo(np.float16).max)
# Filesystems on which a missing "folder" means a missing bucket / container: never mkdir there.
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"})


class StoreUnavailableError(OSError):
    """The reference store cannot be reached: permission denied, a missing bucket, a network
    failure, a path that runs through a regular file, ...

    Callbacks catch it, warn and log NaN instead of failing the training run.
    """


class _BadFile(Exception):
    """Internal: a store file that cannot be parsed; the message is the reason."""


# --------------------------------------------------------------------------------------------
# Probe fingerprint
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeFingerprint:
    """Identity of a probe set: embeddings are comparable row by row only if this matches.

    Attributes:
        dataset_size: Number of samples of the dataset the probe was drawn from.
        num_points: Number of probe samples ``N`` (rows of the embeddings).
        indices_digest: SHA-256 hex digest of the probe's dataset indices, as little-endian
            int64, in probe order.
    """

    dataset_size: int
    num_points: int
    indices_digest: str

    def __post_init__(self) -> None:
        for name in ("dataset_size", "num_points"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"ProbeFingerprint.{name} must be a positive int, got {value!r}")
            object.__setattr__(self, name, int(value))
        digest = self.indices_digest
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(
                "ProbeFingerprint.indices_digest must be a lower-case SHA-256 hex digest "
                f"(64 characters), got {digest!r}"
            )

    @classmethod
    def from_indices(cls, indices: npt.ArrayLike, dataset_size: int) -> ProbeFingerprint:
        """Fingerprint of the probe made of ``indices`` (in probe order) of a dataset.

        Args:
            indices: 1-D integer dataset indices of the probe samples: a sequence, a NumPy array
                or a ``torch.Tensor`` (any device).
            dataset_size: Number of samples in the dataset; every index must be below it.

        Returns:
            The fingerprint.

        Raises:
            TypeError: ``indices`` are not integers.
            ValueError: ``indices`` are empty, not 1-D, or out of ``range(dataset_size)``.
        """
        if hasattr(indices, "detach") and hasattr(indices, "cpu"):  # torch.Tensor, duck-typed
            indices = indices.detach().cpu().numpy()
        idx = np.asarray(indices)
        if idx.dtype.kind not in "iu":
            if idx.size == 0:
                idx = idx.astype(np.int64)
            else:
                raise TypeError(f"probe indices must be integers, got dtype {idx.dtype}")
        if idx.ndim != 1 or idx.size == 0:
            raise ValueError(f"probe indices must be a non-empty 1-D array, got shape {idx.shape}")
        if isinstance(dataset_size, bool) or not isinstance(dataset_size, numbers.Integral):
            raise TypeError(f"dataset_size must be an int, got {dataset_size!r}")
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= dataset_size:
            raise ValueError(
                f"probe indices must lie in range(dataset_size={dataset_size}), got values from "
                f"{lo} to {hi}"
            )
        digest = hashlib.sha256(np.ascontiguousarray(idx, dtype="<i8").tobytes()).hexdigest()
        return cls(dataset_size=int(dataset_size), num_points=int(idx.size), indices_digest=digest)

    def to_dict(self) -> dict[str, Any]:
        """Return the fingerprint as a JSON-serialisable dict."""
        return {
            "dataset_size": self.dataset_size,
            "num_points": self.num_points,
            "indices_digest": self.indices_digest,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeFingerprint:
        """Build a fingerprint from the output of
        [`to_dict`][lightning_rtd.store.ProbeFingerprint.to_dict].

        Raises:
            ValueError: A field is missing or invalid.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"a probe fingerprint must be a mapping, got {type(data).__name__}")
        missing = [k for k in ("dataset_size", "num_points", "indices_digest") if k not in data]
        if missing:
            raise ValueError(f"probe fingerprint lacks {', '.join(missing)}")
        return cls(
            dataset_size=data["dataset_size"],
            num_points=data["num_points"],
            indices_digest=data["indices_digest"],
        )

    def check_compatible(self, other: ProbeFingerprint, what: str = "the other embeddings") -> None:
        """Raise unless ``other`` describes the same probe set as this (local) fingerprint.

        Args:
            other: The fingerprint of the embeddings to compare with, e.g. a stored entry's.
            what: How to name those embeddings in the message, e.g. ``"trial 'b' epoch 3"``.

        Raises:
            ProbeMismatchError: The dataset size, the number of points or the sample indices
                differ; the message names each difference.
        """
        if other == self:
            return
        diffs = []
        if other.dataset_size != self.dataset_size:
            diffs.append(f"dataset_size {other.dataset_size} there vs {self.dataset_size} here")
        if other.num_points != self.num_points:
            diffs.append(f"num_points {other.num_points} there vs {self.num_points} here")
        if other.indices_digest != self.indices_digest:
            diffs.append(
                f"different sample indices (digest {other.indices_digest[:12]}... there vs "
                f"{self.indices_digest[:12]}... here)"
            )
        raise ProbeMismatchError(
            f"cannot compare embeddings of {what} with this trial's: probe sets differ "
            f"({'; '.join(diffs)}). Every trial must draw the same probe samples: same dataset, "
            "same probe size and the same seed or explicit indices."
        )


# --------------------------------------------------------------------------------------------
# Entries
# --------------------------------------------------------------------------------------------


@dataclass
class StoreEntry:
    """One trial's probe embeddings and objectives at one epoch.

    Attributes:
        trial_id: Id of the trial that wrote the entry.
        epoch: 1-based epoch: the number of completed training epochs when the validation ran
            (``trainer.current_epoch + 1``).
        embeddings: ``(N, d)`` probe embeddings. Entries read from a store hold ``float32``;
            ``None`` when read with ``load_embeddings=False``.
        objectives: Objective values, e.g. ``{"val_acc": 0.93, "val_loss": 0.2}``.
        fingerprint: Identity of the probe set the embeddings were computed on.
        created: Unix time the entry was made.
        meta: JSON-serialisable extras.
    """

    trial_id: str
    epoch: int
    embeddings: np.ndarray | None
    objectives: dict[str, float]
    fingerprint: ProbeFingerprint
    created: float = field(default_factory=time.time)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Human-readable name for messages, e.g. ``"trial 'b' epoch 3"``."""
        return f"trial {self.trial_id!r} epoch {self.epoch}"


def _safe_name(trial_id: str) -> str:
    """File name stem of a trial id (see the module docstring)."""
    parts = []
    for i, ch in enumerate(trial_id):
        if ch in _SAFE_CHARS and not (i == 0 and ch == "."):
            parts.append(ch)
        else:
            parts.extend(f"%{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
    name = "".join(parts)
    digest = hashlib.sha256(trial_id.encode("utf-8", "surrogatepass")).hexdigest()
    has_upper = name != name.lower()
    if len(name) > (_MAX_NAME - 13 if has_upper else _MAX_NAME):
        return f"{name[:100]}~{digest[:16]}"
    if has_upper:
        return f"{name}~{digest[:12]}"
    return name


def _check_epoch(epoch: Any) -> int:
    if isinstance(epoch, bool):
        raise TypeError(f"epoch must be an int, got {epoch!r}")
    try:
        value = operator.index(epoch)
    except TypeError:
        raise TypeError(f"epoch must be an int, got {type(epoch).__name__}") from None
    if value < 0:
        raise ValueError(f"epoch must be >= 0 (1-based completed epochs), got {value}")
    return value


def _check_trial_id(trial_id: Any) -> str:
    if not isinstance(trial_id, str) or not trial_id:
        raise ValueError(f"trial_id must be a non-empty str, got {trial_id!r}")
    return trial_id


def _as_float_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, duck-typed
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        raise TypeError(f"embeddings must be floating point, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"embeddings must be a non-empty 2-D (N, d) array, got shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class ReferenceStore:
    """Probe embeddings and objectives of every trial of a search, by epoch.

    Constructible from plain values (a LightningCLI YAML works) and picklable: only the root and
    the options are pickled; the fsspec filesystem is created lazily in each process.

    Args:
        root: Local folder or fsspec URL (``s3://bucket/prefix``, ``memory://name``, ...).
            Relative local paths are made absolute when the store is created.
        dtype: Dtype the embeddings are stored in. ``"float16"`` halves the size; entries whose
            values exceed the float16 range are stored as float32 with a warning. Reading
            always returns float32.
        storage_options: Keyword arguments for the fsspec filesystem (credentials, endpoint).
        max_entries_per_epoch: If set, prune each epoch after every put (see the module
            docstring for the policy).
        retention_objective: Objective that ranks entries for pruning; without it the most
            recent entries are kept.
        retention_mode: ``"max"`` if a larger ``retention_objective`` is better, ``"min"`` if a
            smaller one is.

    Raises:
        ValueError: An option is invalid or the URL's protocol is unknown.
        ImportError: The filesystem package for the URL's protocol is not installed.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        dtype: StoreDtype = "float32",
        storage_options: dict[str, Any] | None = None,
        max_entries_per_epoch: int | None = None,
        retention_objective: str | None = None,
        retention_mode: Literal["max", "min"] = "min",
    ) -> None:
        if isinstance(root, ReferenceStore):
            raise TypeError("root is already a ReferenceStore; use open_store() to pass it on")
        root_str = os.fspath(root)
        if not isinstance(root_str, str) or not root_str:
            raise ValueError(f"root must be a non-empty path or URL, got {root!r}")
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
        if max_entries_per_epoch is not None and (
            isinstance(max_entries_per_epoch, bool)
            or not isinstance(max_entries_per_epoch, numbers.Integral)
            or max_entries_per_epoch < 1
        ):
            raise ValueError(
                "max_entries_per_epoch must be a positive int or None, got "
                f"{max_entries_per_epoch!r}"
            )
        if retention_mode not in ("max", "min"):
            raise ValueError(f"retention_mode must be 'max' or 'min', got {retention_mode!r}")
        if retention_objective is not None and not isinstance(retention_objective, str):
            raise ValueError(f"retention_objective must be a str, got {retention_objective!r}")
        if storage_options is not None and not isinstance(storage_options, Mapping):
            raise ValueError(f"storage_options must be a dict, got {storage_options!r}")

        import fsspec.core

        protocol, path = fsspec.core.split_protocol(root_str)
        self._local = protocol in (None, "file", "local") and "::" not in root_str
        if self._local:
            root_str = os.path.abspath(os.path.expanduser(path))
        else:
            root_str = root_str.rstrip("/")
            if "::" not in root_str:  # fail early on an unknown / uninstalled protocol
                fsspec.get_filesystem_class(protocol)

        self._root = root_str
        self.dtype: StoreDtype = dtype
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        self.max_entries_per_epoch = (
            None if max_entries_per_epoch is None else int(max_entries_per_epoch)
        )
        self.retention_objective = retention_objective
        self.retention_mode: Literal["max", "min"] = retention_mode
        self._fs: Any = None
        self._fs_root = ""
        self._warned: set[str] = set()

    # ---- identity, pickling ---------------------------------------------------------------

    @property
    def root(self) -> str:
        """The store root: an absolute local path or the fsspec URL."""
        return self._root

    @property
    def is_local(self) -> bool:
        """Whether the store lives on the local filesystem (atomic rename writes)."""
        return self._local

    def __repr__(self) -> str:
        extra = ""
        if self.max_entries_per_epoch is not None:
            extra = f", max_entries_per_epoch={self.max_entries_per_epoch}"
            if self.retention_objective is not None:
                extra += (
                    f", retention_objective={self.retention_objective!r}, "
                    f"retention_mode={self.retention_mode!r}"
                )
        return f"ReferenceStore({self._root!r}, dtype={self.dtype!r}{extra})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fs"] = None
        state["_fs_root"] = ""
        state["_warned"] = set()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # ---- paths ----------------------------------------------------------------------------

    def _filesystem(self) -> tuple[Any, str]:
        if self._fs is None:
            import fsspec.core

            try:
                fs, path = fsspec.core.url_to_fs(self._root, **self.storage_options)
            except (ImportError, TypeError, ValueError):
                raise  # configuration errors: a missing package, bad storage_options
            except Exception as exc:
                raise self._unavailable("connecting", exc) from exc
            self._fs, self._fs_root = fs, path.rstrip("/")
        return self._fs, self._fs_root

    def _base(self) -> str:
        if self._local:
            return os.path.join(self._root, LAYOUT_DIR)
        return f"{self._filesystem()[1]}/{LAYOUT_DIR}"

    def _epoch_dir(self, epoch: int) -> str:
        name = f"epoch={epoch:06d}"
        base = self._base()
        return os.path.join(base, name) if self._local else f"{base}/{name}"

    def _entry_path(self, trial_id: str, epoch: int) -> str:
        name = _safe_name(trial_id) + ".npz"
        d = self._epoch_dir(epoch)
        return os.path.join(d, name) if self._local else f"{d}/{name}"

    def _display(self, path: str) -> str:
        if self._local:
            return path
        fs = self._filesystem()[0]
        try:
            return str(fs.unstrip_protocol(path))
        except Exception:
            return path

    def entry_path(self, trial_id: str, epoch: int) -> str:
        """Path (local) or URL (fsspec) of the file that holds ``(trial_id, epoch)``."""
        return self._display(self._entry_path(_check_trial_id(trial_id), _check_epoch(epoch)))

    def _unavailable(self, action: str, exc: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"reference store {self._root} is unavailable ({action} failed): "
            f"{type(exc).__name__}: {exc}"
        )

    def _warn_bad(self, path: str, reason: str) -> None:
        shown = self._display(path)
        if shown in self._warned:
            return
        self._warned.add(shown)
        warnings.warn(f"skipping reference store file {shown}: {reason}", RTDWarning, stacklevel=4)

    # ---- writing --------------------------------------------------------------------------

    def put(self, entry: StoreEntry) -> str:
        """Write ``entry`` atomically, replacing any entry of the same (trial, epoch).

        With ``max_entries_per_epoch`` set, the entry's epoch is then pruned.

        Args:
            entry: The entry. Its embeddings may be a NumPy array or a ``torch.Tensor`` with
                ``fingerprint.num_points`` rows and finite values.

        Returns:
            The path or URL of the written file.

        Raises:
            TypeError: A field has the wrong type (non-float embeddings, non-numeric
                objectives, metadata that is not JSON-serialisable, ...).
            ValueError: A field has an invalid value (NaN / Inf embeddings, a row count that
                does not match the fingerprint, a negative epoch, ...).
            StoreUnavailableError: The store cannot be written.
        """
        data, trial_id, epoch = self._serialise(entry)
        path = self._entry_path(trial_id, epoch)
        if self._local:
            try:
                self._write_local(path, data)
            except OSError as exc:
                raise self._unavailable(f"writing {path}", exc) from exc
        else:
            self._write_remote(path, data)
        if self.max_entries_per_epoch is not None:
            self._prune(epoch, keep=trial_id)
        return self._display(path)

    def _serialise(self, entry: StoreEntry) -> tuple[bytes, str, int]:
        if not isinstance(entry, StoreEntry):
            raise TypeError(f"put() expects a StoreEntry, got {type(entry).__name__}")
        trial_id = _check_trial_id(entry.trial_id)
        epoch = _check_epoch(entry.epoch)
        if not isinstance(entry.fingerprint, ProbeFingerprint):
            raise TypeError(
                f"entry.fingerprint must be a ProbeFingerprint, got {type(entry.fingerprint)}"
            )
        if entry.embeddings is None:
            raise ValueError(f"{entry.label}: cannot store an entry without embeddings")
        emb = _as_float_array(entry.embeddings)
        if not np.isfinite(emb).all():
            raise ValueError(
                f"{entry.label}: embeddings of shape {emb.shape} contain NaN or Inf values"
            )
        if emb.shape[0] != entry.fingerprint.num_points:
            raise ValueError(
                f"{entry.label}: embeddings have {emb.shape[0]} rows but the probe fingerprint "
                f"has {entry.fingerprint.num_points} points"
            )
        dtype = self.dtype
        if dtype == "float16" and float(np.abs(emb).max()) > _FLOAT16_MAX:
            warnings.warn(
                f"{entry.label}: embeddings exceed the float16 range (|x| up to "
                f"{float(np.abs(emb).max()):.3g}); storing this entry as float32",
                RTDWarning,
                stacklevel=3,
            )
            dtype = "float32"
        objectives: dict[str, float] = {}
        if not isinstance(entry.objectives, Mapping):
            raise TypeError(f"{entry.label}: objectives must be a dict of str to float")
        for key, value in entry.objectives.items():
            if not isinstance(key, str):
                raise TypeError(f"{entry.label}: objective names must be str, got {key!r}")
            try:
                objectives[key] = float(value)
            except (TypeError, ValueError):
                raise TypeError(
                    f"{entry.label}: objective {key!r} must be a number, got {value!r}"
                ) from None
        created = float(entry.created)
        if not math.isfinite(created):
            raise ValueError(f"{entry.label}: created must be a finite unix time, got {created}")
        if not isinstance(entry.meta, Mapping):
            raise TypeError(f"{entry.label}: meta must be a dict, got {type(entry.meta).__name__}")
        metadata = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "trial_id": trial_id,
            "epoch": epoch,
            "objectives": objectives,
            "fingerprint": entry.fingerprint.to_dict(),
            "created": created,
            "meta": dict(entry.meta),
            "dtype": dtype,
            "shape": list(emb.shape),
        }
        try:
            meta_bytes = json.dumps(metadata, sort_keys=True).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{entry.label}: meta is not JSON-serialisable: {exc}") from exc
        buf = io.BytesIO()
        # The metadata goes last: a reader that only needs it touches the end of the archive.
        np.savez(
            buf,
            **{
                _EMB_MEMBER: np.ascontiguousarray(emb, dtype=dtype),
                _META_MEMBER: np.frombuffer(meta_bytes, dtype=np.uint8),
            },
        )
        return buf.getvalue(), trial_id, epoch

    @staticmethod
    def _write_local(path: str, data: bytes) -> None:
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(tmp, flags, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            for attempt in range(5):
                try:
                    os.replace(tmp, path)
                    break
                except PermissionError:  # Windows: the target is open in a reader
                    if os.name != "nt" or attempt == 4:
                        raise
                    time.sleep(0.05 * (attempt + 1))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if os.name == "posix":  # make the rename durable; best-effort
            with contextlib.suppress(OSError):
                dir_fd = os.open(folder, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)

    def _write_remote(self, path: str, data: bytes) -> None:
        fs = self._filesystem()[0]
        try:
            try:
                fs.pipe_file(path, data)
            except FileNotFoundError:
                if _protocols(fs) & _OBJECT_STORES:
                    raise
                fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                fs.pipe_file(path, data)
        except Exception as exc:
            raise self._unavailable(f"writing {self._display(path)}", exc) from exc

    # ---- deleting and retention -----------------------------------------------------------

    def delete(self, trial_id: str, epoch: int) -> bool:
        """Delete the entry of ``(trial_id, epoch)`` if it exists.

        Returns:
            ``True`` if a file was deleted, ``False`` if there was none (or another process
            deleted it first).

        Raises:
            StoreUnavailableError: The file exists but cannot be deleted, or the store cannot be
                reached.
        """
        path = self._entry_path(_check_trial_id(trial_id), _check_epoch(epoch))
        try:
            if self._local:
                os.remove(path)
            else:
                fs = self._filesystem()[0]
                fs.invalidate_cache(path)
                if not fs.exists(path):
                    return False
                fs.rm_file(path)
                fs.invalidate_cache(path)
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise self._unavailable(f"deleting {self._display(path)}", exc) from exc
        return True

    def _prune(self, epoch: int, keep: str) -> None:
        k = self.max_entries_per_epoch
        assert k is not None
        try:
            current = self.entries(epoch, load_embeddings=False)
        except StoreUnavailableError as exc:
            warnings.warn(f"could not prune epoch {epoch}: {exc}", RTDWarning, stacklevel=3)
            return
        if len(current) <= k:
            return
        newest_first = sorted(current, key=lambda e: (e.created, e.trial_id), reverse=True)
        if self.retention_objective is None:
            others = [e for e in newest_first if e.trial_id != keep]
            kept = {keep} | {e.trial_id for e in others[: k - 1]}
        else:
            ranked = sorted(newest_first, key=self._rank_key)  # stable: newer first on ties
            kept = {keep} | {e.trial_id for e in ranked[:k]}
        for e in current:
            if e.trial_id in kept:
                continue
            try:
                self.delete(e.trial_id, epoch)
            except StoreUnavailableError as exc:
                warnings.warn(f"could not prune {e.label}: {exc}", RTDWarning, stacklevel=3)

    def _rank_key(self, entry: StoreEntry) -> tuple[int, float]:
        value = entry.objectives.get(self.retention_objective or "")
        if value is None or not math.isfinite(value):
            return (1, 0.0)
        return (0, -value if self.retention_mode == "max" else value)

    # ---- reading --------------------------------------------------------------------------

    def epochs(self) -> list[int]:
        """Sorted epochs that hold at least one entry file.

        Raises:
            StoreUnavailableError: The store cannot be listed (a missing store is empty).
        """
        found: set[int] = set()
        if self._local:
            base = self._base()
            try:
                with os.scandir(base) as it:
                    subdirs = list(it)
            except FileNotFoundError:
                return []
            except OSError as exc:
                raise self._unavailable(f"listing {base}", exc) from exc
            for d in subdirs:
                if d.name.startswith("."):
                    continue
                m = _EPOCH_RE.fullmatch(d.name)
                if m is None or not d.is_dir():
                    self._warn_bad(d.path, "not part of the store layout (foreign file?)")
                    continue
                try:
                    with os.scandir(d.path) as it:
                        if any(_is_entry_name(f.name) for f in it):
                            found.add(int(m.group(1)))
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise self._unavailable(f"listing {d.path}", exc) from exc
        else:
            base = self._base()
            for path in self._find_remote(base):
                rel = path[len(base) + 1 :].split("/")
                if any(part.startswith(".") for part in rel):
                    continue
                m = _EPOCH_RE.fullmatch(rel[0]) if len(rel) == 2 else None
                if m is None:
                    self._warn_bad(path, "not part of the store layout (foreign file?)")
                elif _is_entry_name(rel[1]):
                    found.add(int(m.group(1)))
        return sorted(found)

    def _find_remote(self, folder: str) -> list[str]:
        fs = self._filesystem()[0]
        try:
            fs.invalidate_cache(folder)
            return [str(p) for p in fs.find(folder)]
        except Exception as exc:
            raise self._unavailable(f"listing {self._display(folder)}", exc) from exc

    def _list_epoch(self, epoch: int) -> list[str]:
        """Paths of the non-hidden files of one epoch folder."""
        folder = self._epoch_dir(epoch)
        if self._local:
            try:
                with os.scandir(folder) as it:
                    return [f.path for f in it if not f.name.startswith(".")]
            except FileNotFoundError:
                return []
            except OSError as exc:
                raise self._unavailable(f"listing {folder}", exc) from exc
        out = []
        for path in self._find_remote(folder):
            if not path.startswith(folder + "/"):
                continue
            rel = path[len(folder) + 1 :].split("/")
            if any(part.startswith(".") for part in rel):
                continue
            if len(rel) > 1:
                self._warn_bad(path, "not part of the store layout (foreign file?)")
                continue
            out.append(path)
        return out

    def entries(
        self, epoch: int, *, exclude_trial: str | None = None, load_embeddings: bool = True
    ) -> list[StoreEntry]:
        """All readable entries of one epoch, sorted by ``(created, trial_id)``.

        Files that cannot be parsed are skipped with one
        [`RTDWarning`][lightning_rtd.errors.RTDWarning] each.

        Args:
            epoch: The 1-based epoch.
            exclude_trial: Leave out this trial's entry (usually the calling trial).
            load_embeddings: If ``False``, read only the metadata and the array header
                (``embeddings`` is ``None``): cheaper on a local filesystem, e.g. to find the
                best trial. A damaged embeddings payload may then go unnoticed until
                [`get`][lightning_rtd.store.ReferenceStore.get] loads it (and returns ``None``).

        Returns:
            The entries.

        Raises:
            StoreUnavailableError: The store cannot be listed (a missing store is empty).
        """
        epoch = _check_epoch(epoch)
        skip_name = None if exclude_trial is None else _safe_name(exclude_trial) + ".npz"
        out = []
        for path in self._list_epoch(epoch):
            name = os.path.basename(path) if self._local else path.rsplit("/", 1)[-1]
            if name == skip_name:
                continue
            if not _is_entry_name(name):
                self._warn_bad(path, "not a .npz entry file (foreign file?)")
                continue
            entry = self._read(path, epoch, load_embeddings=load_embeddings, strict=False)
            if entry is not None and entry.trial_id != exclude_trial:
                out.append(entry)
        out.sort(key=lambda e: (e.created, e.trial_id))
        return out

    def get(self, trial_id: str, epoch: int, *, load_embeddings: bool = True) -> StoreEntry | None:
        """The entry of ``(trial_id, epoch)``, or ``None`` if there is none or it is unreadable.

        Args:
            trial_id: The trial.
            epoch: The 1-based epoch.
            load_embeddings: If ``False``, read only the metadata.

        Raises:
            StoreUnavailableError: The store cannot be reached.
        """
        trial_id = _check_trial_id(trial_id)
        epoch = _check_epoch(epoch)
        path = self._entry_path(trial_id, epoch)
        entry = self._read(path, epoch, load_embeddings=load_embeddings, strict=True)
        if entry is not None and entry.trial_id != trial_id:
            self._warn_bad(path, f"holds trial {entry.trial_id!r}, expected {trial_id!r}")
            return None
        return entry

    def trials(self) -> list[str]:
        """Sorted ids of every trial with at least one readable entry.

        Reads the metadata of every entry (the file names are not always reversible).

        Raises:
            StoreUnavailableError: The store cannot be listed.
        """
        ids: set[str] = set()
        for epoch in self.epochs():
            ids.update(e.trial_id for e in self.entries(epoch, load_embeddings=False))
        return sorted(ids)

    def _read(
        self, path: str, epoch: int, *, load_embeddings: bool, strict: bool
    ) -> StoreEntry | None:
        """Parse one entry file; ``None`` if it vanished or is bad (then warn once).

        With ``strict``, errors other than a missing file raise StoreUnavailableError.
        """
        try:
            if self._local:
                source: Any = open(path, "rb")  # noqa: SIM115 - closed below
            else:
                source = io.BytesIO(self._filesystem()[0].cat_file(path))
        except FileNotFoundError:
            return None  # never written, or deleted / replaced concurrently
        except Exception as exc:
            if strict:
                raise self._unavailable(f"reading {self._display(path)}", exc) from exc
            self._warn_bad(path, f"cannot be read ({type(exc).__name__}: {exc})")
            return None
        try:
            with source:
                return _parse_entry(source, epoch, path, load_embeddings=load_embeddings)
        except _BadFile as exc:
            self._warn_bad(path, str(exc))
        except Exception as exc:  # never raise on a bad file
            self._warn_bad(path, f"cannot be parsed ({type(exc).__name__}: {exc})")
        return None


def _protocols(fs: Any) -> set[str]:
    proto = getattr(fs, "protocol", ())
    return {proto} if isinstance(proto, str) else set(proto)


def _is_entry_name(name: str) -> bool:
    return name.endswith(".npz") and not name.startswith(".")


def _parse_entry(source: Any, epoch: int, path: str, *, load_embeddings: bool) -> StoreEntry:
    """Parse an entry archive from a binary file object; raise _BadFile with the reason."""
    try:
        npz = np.load(source, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise _BadFile(f"not a readable .npz archive, truncated or corrupt? ({exc})") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise _BadFile("a single .npy array, not an entry archive (foreign file?)")
    with npz:
        if _META_MEMBER not in npz.files:
            raise _BadFile("no lightning-rtd metadata member (not written by ReferenceStore?)")
        if _EMB_MEMBER not in npz.files:
            raise _BadFile("no embeddings member")
        try:
            raw = npz[_META_MEMBER]
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            raise _BadFile(f"the metadata member is truncated or corrupt ({exc})") from exc
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise _BadFile(
                f"the metadata member must be a 1-D uint8 array, got {raw.dtype} {raw.shape}"
            )
        try:
            md = json.loads(raw.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _BadFile(f"the metadata is not valid JSON ({exc})") from exc
        if not isinstance(md, dict) or md.get("format") != FORMAT_NAME:
            raise _BadFile(f"the metadata does not declare format {FORMAT_NAME!r}")
        if md.get("format_version") != FORMAT_VERSION:
            raise _BadFile(
                f"format version {md.get('format_version')!r} is not supported "
                f"(this reader handles version {FORMAT_VERSION})"
            )
        fields = _check_metadata(md)
        if fields["epoch"] != epoch:
            raise _BadFile(
                f"holds epoch {fields['epoch']}, but lies in the folder of epoch {epoch}"
            )
        name = path.replace("\\", "/").rsplit("/", 1)[-1]
        if name != _safe_name(fields["trial_id"]) + ".npz":
            raise _BadFile(
                f"holds trial {fields['trial_id']!r}, whose file would be "
                f"{_safe_name(fields['trial_id'])}.npz (renamed or copied file?)"
            )
        fp: ProbeFingerprint = fields["fingerprint"]
        if load_embeddings:
            try:
                emb = npz[_EMB_MEMBER]
            except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
                raise _BadFile(f"the embeddings member is truncated or corrupt ({exc})") from exc
            shape, dtype = emb.shape, emb.dtype
        else:
            shape, dtype = _npy_header(npz)
            emb = None
        if dtype.kind != "f" or dtype.itemsize != np.dtype(fields["dtype"]).itemsize:
            raise _BadFile(f"embeddings have dtype {dtype}, metadata says {fields['dtype']}")
        if len(shape) != 2 or list(shape) != fields["shape"] or shape[0] != fp.num_points:
            raise _BadFile(
                f"embeddings have shape {tuple(shape)}, metadata says {tuple(fields['shape'])} "
                f"with {fp.num_points} probe points"
            )
        if emb is not None:
            emb = np.asarray(emb, dtype=np.float32)
            if not np.isfinite(emb).all():
                raise _BadFile("embeddings contain NaN or Inf values")
    return StoreEntry(
        trial_id=fields["trial_id"],
        epoch=fields["epoch"],
        embeddings=emb,
        objectives=fields["objectives"],
        fingerprint=fp,
        created=fields["created"],
        meta=fields["meta"],
    )


def _npy_header(npz: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the embeddings member, read from its header only."""
    try:
        with npz.zip.open(_EMB_MEMBER + ".npy") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise _BadFile(f"embeddings member has unsupported .npy version {version}")
    except _BadFile:
        raise
    except (KeyError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise _BadFile(f"the embeddings member is truncated or corrupt ({exc})") from exc
    return tuple(shape), np.dtype(dtype)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_metadata(md: dict[str, Any]) -> dict[str, Any]:
    """Type-check the metadata fields; raise _BadFile naming the first bad one."""
    trial_id = md.get("trial_id")
    if not isinstance(trial_id, str) or not trial_id:
        raise _BadFile(f"metadata field trial_id must be a non-empty str, got {trial_id!r}")
    epoch = md.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise _BadFile(f"metadata field epoch must be an int >= 0, got {epoch!r}")
    objectives = md.get("objectives")
    if not isinstance(objectives, dict) or not all(
        isinstance(k, str) and _is_number(v) for k, v in objectives.items()
    ):
        raise _BadFile("metadata field objectives must map names to numbers")
    try:
        fingerprint = ProbeFingerprint.from_dict(md.get("fingerprint"))  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise _BadFile(f"metadata field fingerprint is invalid ({exc})") from exc
    created = md.get("created")
    if not _is_number(created):
        raise _BadFile(f"metadata field created must be a number, got {created!r}")
    meta = md.get("meta")
    if not isinstance(meta, dict):
        raise _BadFile(f"metadata field meta must be an object, got {type(meta).__name__}")
    dtype = md.get("dtype")
    if dtype not in ("float32", "float16"):
        raise _BadFile(f"metadata field dtype must be float32 or float16, got {dtype!r}")
    shape = md.get("shape")
    if not isinstance(shape, list) or len(shape) != 2 or not all(_is_number(s) for s in shape):
        raise _BadFile(f"metadata field shape must be [N, d], got {shape!r}")
    return {
        "trial_id": trial_id,
        "epoch": epoch,
        "objectives": {k: float(v) for k, v in objectives.items()},
        "fingerprint": fingerprint,
        "created": float(created),
        "meta": meta,
        "dtype": dtype,
        "shape": shape,
    }


def open_store(
    store: str | os.PathLike[str] | ReferenceStore | None, **kwargs: Any
) -> ReferenceStore:
    """Return a reference store for a path, URL or existing store.

    Args:
        store: A [`ReferenceStore`][lightning_rtd.store.ReferenceStore] (returned as is), a
            local path or fsspec URL, or ``None`` to read the root from the
            ``LIGHTNING_RTD_STORE`` environment variable (handy to point every trial of a search
            at one store).
        **kwargs: Keyword arguments of
            [`ReferenceStore`][lightning_rtd.store.ReferenceStore] (``dtype``,
            ``storage_options``, ...), for a path or URL only.

    Returns:
        The store.

    Raises:
        ValueError: ``store`` is ``None`` and ``LIGHTNING_RTD_STORE`` is not set.
        TypeError: ``kwargs`` were given together with a ``ReferenceStore``.
    """
    if isinstance(store, ReferenceStore):
        if kwargs:
            raise TypeError(
                f"open_store() got options {sorted(kwargs)} together with {store!r}; configure "
                "the ReferenceStore itself instead"
            )
        return store
    if store is None:
        store = os.environ.get(STORE_ENV_VAR) or None
        if store is None:
            raise ValueError(
                f"no reference store given and the {STORE_ENV_VAR} environment variable is not "
                "set; pass a local folder or an fsspec URL shared by all trials"
            )
    return ReferenceStore(store, **kwargs)
