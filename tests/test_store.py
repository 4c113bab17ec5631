"""The shared reference store: real files, real processes, a real (moto) S3 endpoint."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import pickle
import re
import sys
import types
import uuid
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from s3_server import S3Location, s3_store_url  # noqa: F401  (fixture)

# Spawned writer processes only need the store. The package's __init__ pulls in torch and
# Lightning (10-30 s per process on 2 busy cores), so there the package is registered without
# running its __init__; store.py itself imports nothing heavy.
_LIGHT_IMPORT_ENV = "LRTD_TEST_STORE_LIGHT_IMPORT"
if os.environ.get(_LIGHT_IMPORT_ENV) == "1" and "lightning_rtd" not in sys.modules:
    _spec = importlib.util.find_spec("lightning_rtd")
    _pkg = types.ModuleType("lightning_rtd")
    _pkg.__path__ = list(_spec.submodule_search_locations)
    sys.modules["lightning_rtd"] = _pkg

from lightning_rtd.errors import ProbeMismatchError, RTDWarning  # noqa: E402
from lightning_rtd.store import (  # noqa: E402
    LAYOUT_DIR,
    STORE_ENV_VAR,
    ProbeFingerprint,
    ReferenceStore,
    StoreEntry,
    StoreUnavailableError,
    _safe_name,
    open_store,
)

N, D = 40, 8
DATASET_SIZE = 1000
FP = ProbeFingerprint.from_indices(np.arange(N) * 7, DATASET_SIZE)


def make_entry(
    trial: str,
    epoch: int,
    *,
    seed: int = 0,
    objectives: dict[str, float] | None = None,
    created: float | None = None,
    meta: dict | None = None,
    n: int = N,
    d: int = D,
) -> StoreEntry:
    rng = np.random.default_rng(seed)
    kwargs = {} if created is None else {"created": created}
    return StoreEntry(
        trial_id=trial,
        epoch=epoch,
        embeddings=rng.normal(size=(n, d)).astype(np.float32),
        objectives={"val_acc": 0.5} if objectives is None else objectives,
        fingerprint=FP if n == N else ProbeFingerprint.from_indices(np.arange(n), DATASET_SIZE),
        meta={} if meta is None else meta,
        **kwargs,
    )


def epoch_dir(root: Path, epoch: int) -> Path:
    return root / LAYOUT_DIR / f"epoch={epoch:06d}"


@pytest.fixture(params=["local", "memory"])
def store_root(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path / "store")
        return
    import fsspec

    path = f"/lrtd-test-{uuid.uuid4().hex}"
    yield f"memory://{path}"
    fs = fsspec.filesystem("memory")
    if fs.exists(path):
        fs.rm(path, recursive=True)


# ---------------------------------------------------------------------------------------------
# Round trips and listings
# ---------------------------------------------------------------------------------------------


def test_round_trip(store_root):
    store = ReferenceStore(store_root)
    entry = make_entry(
        "trial-a", 3, seed=1, objectives={"val_acc": 0.93, "val_loss": 0.2}, meta={"lr": 0.1}
    )
    written = store.put(entry)
    assert written == store.entry_path("trial-a", 3)
    assert written.endswith(f"{LAYOUT_DIR}/epoch=000003/trial-a.npz")

    got = store.get("trial-a", 3)
    assert got is not None
    assert got.trial_id == "trial-a" and got.epoch == 3
    assert got.embeddings.dtype == np.float32
    np.testing.assert_array_equal(got.embeddings, entry.embeddings)
    assert got.objectives == {"val_acc": 0.93, "val_loss": 0.2}
    assert got.fingerprint == FP
    assert got.created == entry.created
    assert got.meta == {"lr": 0.1}

    [listed] = store.entries(3)
    np.testing.assert_array_equal(listed.embeddings, entry.embeddings)
    [light] = store.entries(3, load_embeddings=False)
    assert light.embeddings is None and light.objectives == got.objectives
    assert store.epochs() == [3]
    assert store.trials() == ["trial-a"]
    assert store.get("trial-a", 4) is None
    assert store.get("nobody", 3) is None
    assert store.entries(7) == []


def test_empty_and_missing_store(store_root):
    store = ReferenceStore(store_root)
    assert store.epochs() == []
    assert store.trials() == []
    assert store.entries(1) == []
    assert store.get("a", 1) is None
    assert store.delete("a", 1) is False


def test_overwrite_same_key_leaves_one_entry(store_root):
    store = ReferenceStore(store_root)
    store.put(make_entry("a", 1, seed=1, objectives={"val_acc": 0.1}))
    second = make_entry("a", 1, seed=2, objectives={"val_acc": 0.2})
    store.put(second)
    entries = store.entries(1)
    assert len(entries) == 1
    np.testing.assert_array_equal(entries[0].embeddings, second.embeddings)
    assert entries[0].objectives == {"val_acc": 0.2}
    if store.is_local:  # no temp file left behind
        assert sorted(os.listdir(epoch_dir(Path(store.root), 1))) == ["a.npz"]


def test_entries_exclude_and_order(store_root):
    store = ReferenceStore(store_root)
    store.put(make_entry("c", 2, created=100.0))
    store.put(make_entry("b", 2, created=50.0))
    store.put(make_entry("a", 2, created=100.0))
    store.put(make_entry("a", 1, created=1.0))
    store.put(make_entry("z", 5, created=1.0))
    assert [e.trial_id for e in store.entries(2)] == ["b", "a", "c"]
    assert [e.trial_id for e in store.entries(2, exclude_trial="a")] == ["b", "c"]
    assert [e.trial_id for e in store.entries(2, exclude_trial="zzz")] == ["b", "a", "c"]
    assert store.epochs() == [1, 2, 5]
    assert store.trials() == ["a", "b", "c", "z"]

    assert store.delete("z", 5) is True
    assert store.delete("z", 5) is False
    assert store.epochs() == [1, 2]
    assert store.trials() == ["a", "b", "c"]


def test_odd_trial_ids_round_trip(tmp_path):
    store = ReferenceStore(tmp_path / "store")
    ids = ["a/b", "../escape", ".hidden", "Upper", "upper", "trïal ✓", "x" * 300, "50%", "a~b"]
    for i, tid in enumerate(ids):
        store.put(make_entry(tid, 1, seed=i))
    assert sorted(store.trials()) == sorted(ids)
    for i, tid in enumerate(ids):
        got = store.get(tid, 1)
        assert got is not None and got.trial_id == tid
        np.testing.assert_array_equal(got.embeddings, make_entry(tid, 1, seed=i).embeddings)
    folder = epoch_dir(tmp_path / "store", 1)
    names = os.listdir(folder)
    assert len(names) == len(ids)  # all distinct, all inside the epoch folder
    assert all(not n.startswith(".") and len(n) < 140 for n in names)
    assert len({n.lower() for n in names}) == len(ids)  # safe on case-insensitive filesystems
    assert not (tmp_path / "escape.npz").exists()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=150), min_size=1, max_size=6, unique=True))
def test_safe_names_are_unique_and_safe(ids):
    names = [_safe_name(t) for t in ids]
    assert len({n.lower() for n in names}) == len(ids)  # also on case-insensitive filesystems
    for n in names:
        assert re.fullmatch(r"[A-Za-z0-9_.%~-]{1,120}", n), n
        assert not n.startswith(".")


def test_relative_root_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = ReferenceStore("rel/store")
    assert store.root == str(tmp_path / "rel" / "store")
    assert "rel/store" in repr(store)


def test_file_url_is_local(tmp_path):
    store = ReferenceStore(f"file://{tmp_path}/store")
    assert store.is_local and store.root == str(tmp_path / "store")
    store.put(make_entry("a", 1))
    assert (epoch_dir(tmp_path / "store", 1) / "a.npz").is_file()


# ---------------------------------------------------------------------------------------------
# dtype
# ---------------------------------------------------------------------------------------------


def test_float16_halves_size_and_reads_float32(tmp_path):
    big = make_entry("a", 1, seed=3, n=200, d=64, objectives={"val_acc": 0.7})
    s32 = ReferenceStore(tmp_path / "s32")
    s16 = ReferenceStore(tmp_path / "s16", dtype="float16")
    size32 = os.path.getsize(s32.put(big))
    size16 = os.path.getsize(s16.put(big))
    assert 0.45 < size16 / size32 < 0.6
    got = s16.get("a", 1)
    assert got.embeddings.dtype == np.float32
    np.testing.assert_allclose(got.embeddings, big.embeddings, rtol=1e-3, atol=1e-3)
    assert not np.array_equal(got.embeddings, big.embeddings)  # really went through float16
    assert got.objectives == {"val_acc": 0.7}


def test_float16_overflow_falls_back_to_float32(tmp_path):
    store = ReferenceStore(tmp_path / "s", dtype="float16")
    entry = make_entry("a", 1)
    entry.embeddings = entry.embeddings * 1e6
    with pytest.warns(RTDWarning, match="float16 range"):
        store.put(entry)
    got = store.get("a", 1)
    np.testing.assert_array_equal(got.embeddings, entry.embeddings)


def test_put_accepts_torch_and_float64():
    torch = pytest.importorskip("torch")
    store = ReferenceStore(f"memory:///lrtd-test-{uuid.uuid4().hex}")
    e = make_entry("a", 1)
    e.embeddings = torch.from_numpy(e.embeddings.astype(np.float64))
    store.put(e)
    assert store.get("a", 1).embeddings.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------


def test_put_rejects_bad_entries(tmp_path):
    store = ReferenceStore(tmp_path / "s")
    e = make_entry("a", 1)
    e.embeddings[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        store.put(e)
    with pytest.raises(ValueError, match="rows"):
        store.put(_rows_mismatch())
    e = make_entry("a", 1)
    e.embeddings = np.ones((N, D), dtype=np.int64)
    with pytest.raises(TypeError, match="floating"):
        store.put(e)
    with pytest.raises(TypeError, match="JSON"):
        store.put(make_entry("a", 1, meta={"x": object()}))
    with pytest.raises(TypeError, match="number"):
        store.put(make_entry("a", 1, objectives={"val_acc": "high"}))
    with pytest.raises(ValueError, match="epoch"):
        store.put(make_entry("a", -1))
    with pytest.raises(ValueError, match="trial_id"):
        store.put(make_entry("", 1))
    assert store.epochs() == []


def _rows_mismatch() -> StoreEntry:
    e = make_entry("a", 1)
    e.embeddings = e.embeddings[:-1]
    return e


def test_constructor_validation():
    with pytest.raises(ValueError, match="dtype"):
        ReferenceStore("x", dtype="float64")
    with pytest.raises(ValueError, match="max_entries_per_epoch"):
        ReferenceStore("x", max_entries_per_epoch=0)
    with pytest.raises(ValueError, match="retention_mode"):
        ReferenceStore("x", retention_mode="best")
    with pytest.raises(ValueError):
        ReferenceStore("nosuchprotocol-xyz://bucket/prefix")


# ---------------------------------------------------------------------------------------------
# Probe fingerprint
# ---------------------------------------------------------------------------------------------


def test_fingerprint_equality_and_round_trip():
    a = ProbeFingerprint.from_indices([3, 1, 2], 10)
    assert a == ProbeFingerprint.from_indices(np.array([3, 1, 2], dtype=np.int32), 10)
    assert a.num_points == 3 and a.dataset_size == 10 and len(a.indices_digest) == 64
    assert ProbeFingerprint.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    a.check_compatible(ProbeFingerprint.from_indices([3, 1, 2], 10))
    torch = pytest.importorskip("torch")
    assert ProbeFingerprint.from_indices(torch.tensor([3, 1, 2]), 10) == a


def test_fingerprint_mismatch_messages():
    mine = ProbeFingerprint.from_indices(np.arange(100), 1797)
    theirs = ProbeFingerprint.from_indices(np.arange(100), 1500)
    with pytest.raises(ProbeMismatchError, match=r"trial 'b' epoch 3.*dataset_size 1500"):
        mine.check_compatible(theirs, what="trial 'b' epoch 3")
    with pytest.raises(ProbeMismatchError, match="num_points 50 there vs 100 here"):
        mine.check_compatible(ProbeFingerprint.from_indices(np.arange(50), 1797))
    with pytest.raises(ProbeMismatchError, match="different sample indices") as info:
        mine.check_compatible(ProbeFingerprint.from_indices(np.arange(100)[::-1], 1797))
    assert "dataset_size" not in str(info.value) and "num_points" not in str(info.value)
    assert issubclass(ProbeMismatchError, ValueError)


def test_fingerprint_rejects_bad_indices():
    with pytest.raises(ValueError, match="range"):
        ProbeFingerprint.from_indices([0, 10], 10)
    with pytest.raises(ValueError, match="range"):
        ProbeFingerprint.from_indices([-1, 2], 10)
    with pytest.raises(TypeError, match="integers"):
        ProbeFingerprint.from_indices([0.5, 1.0], 10)
    with pytest.raises(ValueError, match="non-empty"):
        ProbeFingerprint.from_indices([], 10)
    with pytest.raises(ValueError, match="1-D"):
        ProbeFingerprint.from_indices([[1, 2]], 10)
    with pytest.raises(ValueError, match="digest"):
        ProbeFingerprint(10, 2, "abc")


# ---------------------------------------------------------------------------------------------
# Robust reading
# ---------------------------------------------------------------------------------------------


def _write_npz_with_metadata(path: Path, metadata: dict | np.ndarray, emb=None) -> None:
    emb = np.zeros((N, D), np.float32) if emb is None else emb
    if isinstance(metadata, dict):
        metadata = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    np.savez(path, embeddings=emb, metadata=metadata)


def test_bad_files_are_skipped_with_one_warning_each(tmp_path):
    root = tmp_path / "store"
    store = ReferenceStore(root)
    good = [make_entry(t, 2, seed=i, created=float(i)) for i, t in enumerate(["a", "b"])]
    for e in good:
        store.put(e)
    folder = epoch_dir(root, 2)
    good_bytes = (folder / "a.npz").read_bytes()
    with np.load(folder / "a.npz") as npz:
        metadata = json.loads(npz["metadata"].tobytes())

    # Silently ignored: a writer's half-written temp file.
    (folder / f".c.npz.{uuid.uuid4().hex}.tmp").write_bytes(good_bytes[: len(good_bytes) // 2])
    bad = {
        "trunc.npz": good_bytes[: len(good_bytes) // 2],
        "notes.txt": b"some notes\n",
        "empty.npz": b"",
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    np.savez(folder / "plain.npz", x=np.arange(3))
    np.save(folder / "single.npz", np.arange(3))  # np.save keeps the name as given
    _write_npz_with_metadata(folder / "future.npz", {**metadata, "format_version": 2})
    _write_npz_with_metadata(folder / "floats.npz", np.zeros(5, dtype=np.float64))
    _write_npz_with_metadata(folder / "nojson.npz", np.frombuffer(b"{not json", dtype=np.uint8))
    _write_npz_with_metadata(folder / "badtype.npz", {**metadata, "objectives": [1, 2]})
    _write_npz_with_metadata(folder / "renamed.npz", metadata)  # holds trial 'a'
    _write_npz_with_metadata(
        folder / "shape.npz",
        {**metadata, "trial_id": "shape"},
        emb=np.zeros((N + 1, D), np.float32),
    )
    _write_npz_with_metadata(
        folder / "wrongepoch.npz", {**metadata, "trial_id": "wrongepoch", "epoch": 9}
    )
    (folder / "subdir").mkdir()
    bad_names = sorted(
        [*bad, "plain.npz", "single.npz", "future.npz", "floats.npz",
         "nojson.npz", "badtype.npz", "renamed.npz", "shape.npz", "wrongepoch.npz", "subdir"]
    )  # fmt: skip

    for load in (True, False):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            entries = store.entries(2, load_embeddings=load)
            again = store.entries(2, load_embeddings=load)
            assert store.epochs() == [2]
            assert store.trials() == ["a", "b"]
        assert [e.trial_id for e in entries] == ["a", "b"]
        assert [e.trial_id for e in again] == ["a", "b"]
        if load:
            for e, g in zip(entries, good, strict=True):
                np.testing.assert_array_equal(e.embeddings, g.embeddings)
            messages = [str(w.message) for w in caught]
            assert all(issubclass(w.category, RTDWarning) for w in caught)
            warned = sorted(next(n for n in bad_names if str(folder / n) in m) for m in messages)
            assert warned == bad_names, messages  # exactly one warning per bad file
            # Each message names the path and the reason; spot-check a few reasons:
            text = "\n".join(messages)
            assert "format version 2 is not supported" in text
            assert "not a readable .npz archive" in text
            assert "no lightning-rtd metadata" in text
        else:
            assert caught == []  # the same store instance warns once per path
    # A fresh store instance warns again, once per path.
    with pytest.warns(RTDWarning) as rec:
        ReferenceStore(root).entries(2, load_embeddings=False)
    assert len(rec) == len(bad_names)
    # get() of a bad entry returns None with one warning; the good ones still read.
    (folder / "a.npz").write_bytes(good_bytes[:100])
    fresh = ReferenceStore(root)
    with pytest.warns(RTDWarning, match="a.npz"):
        assert fresh.get("a", 2) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fresh.get("a", 2) is None
        assert fresh.get("b", 2) is not None


def test_corrupt_payload_is_caught_when_loading(tmp_path):
    store = ReferenceStore(tmp_path)
    store.put(make_entry("a", 1, created=1.0))
    store.put(make_entry("c", 1, created=2.0))
    path = Path(store.entry_path("c", 1))
    data = bytearray(path.read_bytes())
    data[200:260] = bytes(60)  # inside the embeddings payload (after the .npy header)
    path.write_bytes(bytes(data))
    with pytest.warns(RTDWarning, match=r"c\.npz.*(CRC|corrupt)"):
        assert [e.trial_id for e in store.entries(1)] == ["a"]
    assert store.get("c", 1) is None  # already warned for this path
    assert ReferenceStore(tmp_path).get("a", 1) is not None


def test_memory_store_skips_foreign_files():
    import fsspec

    root = f"/lrtd-test-{uuid.uuid4().hex}"
    store = ReferenceStore(f"memory://{root}")
    store.put(make_entry("a", 1))
    fs = fsspec.filesystem("memory")
    folder = f"{root}/{LAYOUT_DIR}/epoch=000001"
    fs.pipe_file(f"{folder}/.a.npz.123.tmp", b"PK\x03\x04")
    fs.pipe_file(f"{folder}/notes.txt", b"hello")
    fs.pipe_file(f"{folder}/trunc.npz", fs.cat_file(f"{folder}/a.npz")[:300])
    fs.pipe_file(f"{folder}/nested/a.npz", fs.cat_file(f"{folder}/a.npz"))  # copy, too deep
    fs.pipe_file(f"{root}/{LAYOUT_DIR}/README", b"hello")
    bad = [f"{folder}/notes.txt", f"{folder}/trunc.npz", f"{folder}/nested/a.npz"]
    bad.append(f"{root}/{LAYOUT_DIR}/README")
    try:
        with pytest.warns(RTDWarning) as rec:
            assert [e.trial_id for e in store.entries(1)] == ["a"]
            assert store.epochs() == [1]
            assert store.trials() == ["a"]
        messages = [str(w.message) for w in rec]
        assert len(messages) == len(bad)
        for path in bad:
            assert sum(f"memory://{path}:" in m for m in messages) == 1, (path, messages)
    finally:
        fs.rm(root, recursive=True)


# ---------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------


def _expected_embeddings(writer: int, i: int) -> np.ndarray:
    return np.random.default_rng([writer, i]).normal(size=(N, D)).astype(np.float32)


def _writer_keys(writer: int) -> list[tuple[str, int]]:
    """10 (trial, epoch) keys; the 'shared' trial's keys are written by every writer."""
    keys = []
    for i in range(10):
        epoch = i // 2 + 1
        keys.append(("shared", epoch) if i % 2 == 0 else (f"w{writer}", epoch))
    return keys


def _concurrent_writer(store: ReferenceStore, writer: int, barrier) -> None:
    barrier.wait(timeout=60)
    for i, (trial, epoch) in enumerate(_writer_keys(writer)):
        entry = make_entry(trial, epoch, objectives={"val_acc": writer + i / 100})
        entry.embeddings = _expected_embeddings(writer, i)
        entry.meta = {"writer": writer, "i": i}
        store.put(entry)


def _run_writers(store: ReferenceStore, n_writers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_LIGHT_IMPORT_ENV, "1")  # inherited by the children only
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n_writers)
    procs = [
        ctx.Process(target=_concurrent_writer, args=(store, w, barrier)) for w in range(n_writers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * n_writers


def _check_after_writers(store: ReferenceStore, n_writers: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no corrupt or unreadable file
        assert store.epochs() == [1, 2, 3, 4, 5]
        for epoch in range(1, 6):
            entries = store.entries(epoch)
            ids = sorted(e.trial_id for e in entries)
            assert ids == sorted(["shared"] + [f"w{w}" for w in range(n_writers)])
            for e in entries:
                writer, i = e.meta["writer"], e.meta["i"]
                assert _writer_keys(writer)[i] == (e.trial_id, epoch)
                np.testing.assert_array_equal(e.embeddings, _expected_embeddings(writer, i))
                assert e.objectives == {"val_acc": writer + i / 100}


def test_concurrent_writers_local(tmp_path, monkeypatch):
    store = ReferenceStore(tmp_path / "store")
    _run_writers(store, 4, monkeypatch)
    _check_after_writers(store, 4)
    leftovers = [p for p in (tmp_path / "store").rglob("*") if p.name.startswith(".")]
    assert leftovers == []


# ---------------------------------------------------------------------------------------------
# Retention
# ---------------------------------------------------------------------------------------------


def test_retention_keeps_best_k_plus_newest(store_root):
    store = ReferenceStore(
        store_root, max_entries_per_epoch=2, retention_objective="val_acc", retention_mode="max"
    )
    steps = [
        ("a", 0.5, {"a"}),
        ("b", 0.9, {"a", "b"}),
        ("c", 0.7, {"b", "c"}),
        ("d", 0.1, {"b", "c", "d"}),  # the newest is kept although it is the worst
        ("e", 0.8, {"b", "e"}),
        ("f", float("nan"), {"b", "e", "f"}),
        ("g", 0.95, {"g", "b"}),
    ]
    for t, (trial, acc, expected) in enumerate(steps):
        store.put(make_entry(trial, 1, objectives={"val_acc": acc}, created=float(t)))
        assert {e.trial_id for e in store.entries(1, load_embeddings=False)} == expected, trial
    store.put(make_entry("h", 2, objectives={}))  # another epoch is not touched
    assert {e.trial_id for e in store.entries(1)} == {"g", "b"}


def test_retention_min_mode_and_missing_objective(tmp_path):
    store = ReferenceStore(
        tmp_path, max_entries_per_epoch=1, retention_objective="val_loss", retention_mode="min"
    )
    store.put(make_entry("a", 1, objectives={"val_loss": 0.3}, created=1.0))
    store.put(make_entry("b", 1, objectives={"val_loss": 0.1}, created=2.0))
    assert {e.trial_id for e in store.entries(1)} == {"b"}
    store.put(make_entry("c", 1, objectives={"val_acc": 0.99}, created=3.0))  # no val_loss
    assert {e.trial_id for e in store.entries(1)} == {"b", "c"}
    store.put(make_entry("d", 1, objectives={"val_loss": 0.2}, created=4.0))
    assert {e.trial_id for e in store.entries(1)} == {"b", "d"}


def test_retention_without_objective_keeps_most_recent(tmp_path):
    store = ReferenceStore(tmp_path, max_entries_per_epoch=3)
    for t, trial in enumerate("abcde"):
        store.put(make_entry(trial, 4, created=float(t)))
    assert [e.trial_id for e in store.entries(4)] == ["c", "d", "e"]
    store.put(make_entry("a", 4, created=0.5))  # old timestamp, but just written: kept
    assert [e.trial_id for e in store.entries(4)] == ["a", "d", "e"]


# ---------------------------------------------------------------------------------------------
# Unavailable store
# ---------------------------------------------------------------------------------------------


def test_unwritable_local_root_raises_store_unavailable(tmp_path):
    blocker = tmp_path / "a-regular-file"
    blocker.write_text("not a folder")
    root = blocker / "store"
    store = ReferenceStore(root)
    with pytest.raises(StoreUnavailableError, match=str(root)) as info:
        store.put(make_entry("a", 1))
    assert isinstance(info.value, OSError)
    with pytest.raises(StoreUnavailableError, match=str(root)):
        store.entries(1)
    with pytest.raises(StoreUnavailableError, match=str(root)):
        store.epochs()
    with pytest.raises(StoreUnavailableError, match=str(root)):
        store.get("a", 1)


# ---------------------------------------------------------------------------------------------
# S3 through a local moto server
# ---------------------------------------------------------------------------------------------


def test_s3_round_trip_and_concurrent_writers(
    s3_store_url: S3Location,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
):
    loc = s3_store_url
    store = ReferenceStore(loc.url, dtype="float16", storage_options=loc.storage_options)
    entry = make_entry("s3-trial", 2, seed=5, objectives={"val_acc": 0.8}, meta={"k": [1, 2]})
    url = store.put(entry)
    assert url == f"s3://{loc.bucket}/{loc.prefix}/{LAYOUT_DIR}/epoch=000002/s3-trial.npz"
    got = store.get("s3-trial", 2)
    np.testing.assert_allclose(got.embeddings, entry.embeddings, rtol=1e-3, atol=1e-3)
    assert got.objectives == {"val_acc": 0.8} and got.meta == {"k": [1, 2]}
    assert store.epochs() == [2] and store.trials() == ["s3-trial"]
    assert store.delete("s3-trial", 2) is True
    assert store.delete("s3-trial", 2) is False
    assert store.epochs() == []

    # A second instance (fresh fs, as in another process) sees the first one's writes.
    store.put(entry)
    other = pickle.loads(pickle.dumps(store))
    assert [e.trial_id for e in other.entries(2)] == ["s3-trial"]
    store.delete("s3-trial", 2)

    # Two processes writing at once, some to the same keys.
    s32 = ReferenceStore(loc.url, storage_options=loc.storage_options)
    _run_writers(s32, 2, monkeypatch)
    _check_after_writers(s32, 2)

    # The endpoint also comes from the environment (AWS_ENDPOINT_URL) for a bare URL.
    bare = ReferenceStore(loc.url)
    assert bare.epochs() == [1, 2, 3, 4, 5]

    # A missing bucket is an unavailable store, for writers and readers.
    missing = ReferenceStore(
        f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x", storage_options=loc.storage_options
    )
    with pytest.raises(StoreUnavailableError, match="no-such-bucket"):
        missing.put(entry)
    with pytest.raises(StoreUnavailableError, match="no-such-bucket"):
        missing.entries(2)


def test_s3_retention_and_bad_objects(s3_store_url: S3Location):  # noqa: F811
    import fsspec

    loc = s3_store_url
    store = ReferenceStore(
        loc.url,
        storage_options=loc.storage_options,
        max_entries_per_epoch=1,
        retention_objective="val_acc",
        retention_mode="max",
    )
    store.put(make_entry("a", 1, objectives={"val_acc": 0.9}, created=1.0))
    store.put(make_entry("b", 1, objectives={"val_acc": 0.1}, created=2.0))
    store.put(make_entry("c", 1, objectives={"val_acc": 0.2}, created=3.0))
    assert [e.trial_id for e in store.entries(1)] == ["a", "c"]

    fs = fsspec.filesystem("s3", **loc.storage_options)
    folder = f"{loc.bucket}/{loc.prefix}/{LAYOUT_DIR}/epoch=000001"
    fs.pipe_file(f"{folder}/.x.npz.1.tmp", b"PK")
    fs.pipe_file(f"{folder}/broken.npz", b"PK\x03\x04 truncated")
    with pytest.warns(RTDWarning, match="broken.npz") as rec:
        assert [e.trial_id for e in store.entries(1)] == ["a", "c"]
    assert len(rec) == 1


# ---------------------------------------------------------------------------------------------
# Pickling, construction helpers
# ---------------------------------------------------------------------------------------------


def test_pickle_round_trip(store_root):
    store = ReferenceStore(store_root, dtype="float16", max_entries_per_epoch=5)
    store.put(make_entry("a", 1))  # instantiates the filesystem where there is one
    clone = pickle.loads(pickle.dumps(store))
    assert isinstance(clone, ReferenceStore)
    assert clone.root == store.root and repr(clone) == repr(store)
    assert clone.dtype == "float16" and clone.max_entries_per_epoch == 5
    assert [e.trial_id for e in clone.entries(1)] == ["a"]  # same process: same memory fs
    assert store.root in repr(store)


def test_open_store(tmp_path, monkeypatch):
    store = open_store(tmp_path / "s", dtype="float16")
    assert isinstance(store, ReferenceStore) and store.dtype == "float16"
    assert open_store(str(tmp_path / "s")).root == store.root
    assert open_store(store) is store
    with pytest.raises(TypeError, match="together with"):
        open_store(store, dtype="float32")
    monkeypatch.setenv(STORE_ENV_VAR, str(tmp_path / "env"))
    assert open_store(None).root == str(tmp_path / "env")
    monkeypatch.delenv(STORE_ENV_VAR)
    with pytest.raises(ValueError, match=STORE_ENV_VAR):
        open_store(None)


def test_archive_layout_is_documented_format(tmp_path):
    store = ReferenceStore(tmp_path)
    path = store.put(make_entry("a", 12, objectives={"val_acc": 0.25}))
    assert path == str(tmp_path / LAYOUT_DIR / "epoch=000012" / "a.npz")
    with zipfile.ZipFile(path) as z:
        assert z.namelist() == ["embeddings.npy", "metadata.npy"]
    with np.load(path, allow_pickle=False) as npz:
        md = json.loads(npz["metadata"].tobytes())
        assert npz["embeddings"].shape == (N, D)
    assert md["format"] == "lightning-rtd/reference" and md["format_version"] == 1
    assert md["trial_id"] == "a" and md["epoch"] == 12 and md["dtype"] == "float32"
    assert md["objectives"] == {"val_acc": 0.25} and md["shape"] == [N, D]
    assert md["fingerprint"] == FP.to_dict()
