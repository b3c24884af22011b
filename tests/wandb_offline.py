"""Read back an offline W&B run (wandb 0.31 ships no reader for its own `run-*.wandb` files).

File layout, checked against files written by wandb 0.31 on this machine:
- a 7-byte header: b":W&B", a 2-byte magic (0xBEE1, little-endian) and a version byte (0);
- then LevelDB-log framing over 32 KiB blocks counted from the start of the file. Each chunk
  has a 7-byte header: CRC32 (4 bytes, little-endian; plain zlib.crc32 over the type byte and
  the payload, not LevelDB's masked CRC32C), length (2 bytes, little-endian) and type
  (FULL=1, FIRST=2, MIDDLE=3, LAST=4). A block tail shorter than 7 bytes is zero padding;
- each assembled record is a serialised `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
CHUNK_HEADER = 7
FILE_MAGIC = b":W&B"
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_record_bytes(path: Path) -> list[bytes]:
    """Return the payload of every record in a W&B datastore file, checking each CRC."""
    data = path.read_bytes()
    if data[:4] != FILE_MAGIC:
        raise ValueError(f"{path} is not a W&B datastore file (header {data[:7]!r})")
    records: list[bytes] = []
    pending = b""
    pos = 7
    while pos < len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER:  # padding at the end of a block
            pos += left_in_block
            continue
        if pos + CHUNK_HEADER > len(data):
            break  # truncated tail (a run that did not finish cleanly)
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        if kind == 0 and length == 0:  # zero fill after the last record of a block
            pos += left_in_block
            continue
        payload = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        if len(payload) < length:
            break
        if zlib.crc32(bytes([kind]) + payload) != crc:
            raise ValueError(f"CRC mismatch at byte {pos} of {path}")
        pos += CHUNK_HEADER + length
        if kind == FULL:
            records.append(payload)
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            records.append(pending + payload)
            pending = b""
        else:
            raise ValueError(f"unknown chunk type {kind} at byte {pos} of {path}")
    return records


def _put(target: dict[str, Any], item: Any) -> None:
    """Store one proto item; `nested_key` (how W&B stores dict values) becomes nested dicts."""
    value = json.loads(item.value_json)
    if not item.nested_key:
        target[item.key] = value
        return
    *parents, last = item.nested_key
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = value


def _drop(target: dict[str, Any], item: Any) -> None:
    *parents, last = list(item.nested_key) or [item.key]
    for part in parents:
        target = target.get(part, {})
    target.pop(last, None)


def find_run_file(run_dir: Path) -> Path:
    """The one `run-*.wandb` in `run_dir` (an `offline-run-*` folder, or a folder above one)."""
    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("run-*.wandb")) or sorted(run_dir.rglob("run-*.wandb"))
    files = [f for f in files if "latest-run" not in f.parts]
    if len(files) != 1:
        raise FileNotFoundError(f"expected one run-*.wandb under {run_dir}, found {files}")
    return files[0]


def read_records(run_dir: Path, timeout: float = 15.0) -> list[Any]:
    """Parsed `Record`s of a finished run, waiting up to `timeout` s for the exit record.

    `run.finish()` returns before wandb-core has flushed the file (its writer buffers and
    closes the stream in the background), so a read right after finish can see a partial
    file. Process exit does wait, so this only matters for readers in the same process.
    """
    from wandb.proto import wandb_internal_pb2 as pb  # lazy: only the tests need protobuf

    path = find_run_file(run_dir)
    deadline = time.monotonic() + timeout
    while True:
        records = []
        try:
            for raw in iter_record_bytes(path):
                record = pb.Record()
                record.ParseFromString(raw)
                records.append(record)
        except ValueError:  # a chunk caught mid-write; corrupt if it persists
            if time.monotonic() > deadline:
                raise
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} has no exit record after {timeout} s (run not finished?)")
        time.sleep(0.05)


def read_offline_run(run_dir: Path, timeout: float = 15.0) -> dict[str, Any]:
    """Return {"config", "history", "summary"} of the finished offline run in `run_dir`.

    `run_dir` is either the `offline-run-*` folder itself or a folder holding exactly one
    such run somewhere below it (e.g. the `dir=` that was passed to wandb.init).
    """
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for record in read_records(run_dir, timeout):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            for item in record.run.config.update:
                _put(config, item)
        elif kind == "config":
            for item in record.config.update:
                _put(config, item)
            for item in record.config.remove:
                _drop(config, item)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _put(row, item)
            history.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                _put(summary, item)
            for item in record.summary.remove:
                _drop(summary, item)
    # W&B wraps each config value as {"value": v} (plus internal "_wandb"); unwrap for tests.
    config = {
        k: v["value"] if isinstance(v, dict) and set(v) == {"value"} else v
        for k, v in config.items()
    }
    return {"config": config, "history": history, "summary": summary}
