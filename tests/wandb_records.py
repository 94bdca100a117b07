"""Read an offline W&B run's ``.wandb`` file back as protobuf records, as ``wandb sync`` would upload them.

The file is W&B's record log (the LevelDB log layout): a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then
32 KiB blocks of chunks, each ``crc32 (4) | length (2) | type (1)`` and its bytes; a record is one FULL chunk or a
FIRST, MIDDLEs and a LAST; a block's tail shorter than a chunk header is padding. wandb 0.31 reads it in its Go
core only, so the tests read it here with the protobuf classes wandb ships (``wandb.proto.wandb_internal_pb2``).
"""

from __future__ import annotations

import struct
from pathlib import Path

BLOCK, CHUNK_HEADER = 32 * 1024, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"{path} is not a W&B record log"
    out, pending, pos = [], b"", 7
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:
            pos += left  # padding at a block's end
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        chunk = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            out.append(pending + chunk)
        elif kind == 0 and length == 0:
            break  # the zeroed tail of a file still being written
    return out


def records(path: Path) -> list:
    """Every record of a ``.wandb`` file, parsed (``record.WhichOneof("record_type")``: run, config, history, ...)."""
    from wandb.proto import wandb_internal_pb2 as pb  # noqa: PLC0415

    parsed = []
    for raw in raw_records(path):
        r = pb.Record()
        r.ParseFromString(raw)
        parsed.append(r)
    return parsed


def run_record(path: Path):
    """The run's own record (id, name, group, job type, tags, config at start)."""
    return next(r.run for r in records(path) if r.WhichOneof("record_type") == "run")


def item_key(item) -> str:
    """The top-level key of a config, summary or history item (``key``, or the first of ``nested_key``)."""
    return item.key or (item.nested_key[0] if item.nested_key else "")
