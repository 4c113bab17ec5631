"""Read back what an offline W&B run really logged, by decoding its ``run-*.wandb`` file.

The file is a LevelDB-style log: a 7-byte file header (``:W&B``, magic, version), then 32 KiB
blocks of chunks, each with a 7-byte header (CRC32, little-endian uint16 length, type 1=full,
2=first, 3=middle, 4=last) and a payload that is (part of) one serialised
``wandb_internal_pb2.Record``. A block whose remaining space is shorter than a header is padded.
The W&B service writes the file asynchronously, so readers wait until the keys they expect show
up (or a timeout passes).
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterable
from pathlib import Path

BLOCK = 32768
HEADER = 7


def records(path: Path) -> list:
    """Every complete record of a ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    blob = Path(path).read_bytes()
    if blob[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B record log")
    pos, pending, out = HEADER, b"", []
    while pos + HEADER <= len(blob):
        if BLOCK - pos % BLOCK < HEADER:  # trailer too short for a header: padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", blob[pos : pos + HEADER])
        if kind == 0:  # zero padding up to the end of the block
            pos += BLOCK - pos % BLOCK
            continue
        chunk = blob[pos + HEADER : pos + HEADER + length]
        if len(chunk) < length:  # a chunk still being written
            break
        pos += HEADER + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            out.append(rec)
    return out


def history_rows(path: Path) -> list[dict]:
    """The history rows (``wandb.log`` calls) of a ``.wandb`` file, keys joined with ``/``."""
    rows = []
    for rec in records(path):
        if rec.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in rec.history.item
                }
            )
    return rows


def wait_for_history(
    path: Path, keys: Iterable[str], *, count: int = 1, timeout: float = 60.0
) -> list[dict]:
    """History rows once every key in ``keys`` appears in at least ``count`` rows."""
    keys = list(keys)
    deadline = time.monotonic() + timeout
    while True:
        rows = history_rows(path)
        if all(sum(k in r for r in rows) >= count for k in keys) or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)
