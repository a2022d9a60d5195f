"""Merged tensors as row blocks, and a safetensors writer that takes them block by block.

A whole-tensor merge holds the inputs, the result and, in `safetensors.torch.save_file`, a bytes copy of the
shard: a float32 34B model's embed_tokens (64000 x 7168, 1.8 GB) alone made that 5-7 GB. Here a tensor whose
method is elementwise (`MergeMethod.rowwise`) is read, merged and written ROW_BYTES at a time (inputs through
`TensorSource.get_rows`, which reads only those rows), so memory does not grow with the tensor. The file is the
safetensors format as its specification writes it (8-byte little-endian header length, JSON header with
dtype / shape / data_offsets, then the raw little-endian data), readable by `safe_open` and `from_pretrained`.
Methods whose result depends on the whole tensor (TIES's top-k trim, DARE's one random stream per tensor) and
vocabularies aligned by token ids are merged whole, as before.
"""
from __future__ import annotations

import json
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import torch

from .direct import OutputFile

ROW_BYTES = 64 << 20  # fp32 bytes of one block of rows: a few such temporaries stay well under the 2 GB bar
SAFE_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
               torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
               torch.bool: "BOOL"}


def row_blocks(shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """[start, end) row ranges of about ROW_BYTES in fp32 each (one block for a 1-D or small tensor)."""
    rows = shape[0] if shape else 1
    per_row = 4
    for d in shape[1:]:
        per_row *= d
    step = max(1, ROW_BYTES // max(per_row, 1))
    return [(s, min(s + step, rows)) for s in range(0, rows, step)] or [(0, 0)]


def write_safetensors(path: Path, tensors: list[tuple[str, tuple[int, ...], torch.dtype]],
                      blocks: Callable[[str], Iterator[torch.Tensor]], metadata: dict | None = None,
                      on_bytes: Callable[[int], None] | None = None, hasher=None) -> None:
    """Write `tensors` (name, shape, dtype) into one safetensors file, each tensor's data from `blocks(name)`:
    contiguous pieces in row order whose sizes add up to the tensor's. `hasher` (an object with `update`) sees
    every byte written, in order, so the file's hash needs no read-back."""
    header, offset = {}, 0
    for name, shape, dtype in tensors:
        n = torch.empty((), dtype=dtype).element_size()
        for d in shape:
            n *= d
        header[name] = {"dtype": SAFE_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    def write(data) -> None:
        fh.write(data)
        if hasher is not None:
            hasher.update(data)

    # One writer thread: the next block is merged while the last one is written and hashed (both release the
    # GIL). One write in flight at a time keeps the bytes in order and holds at most one extra block in memory.
    with OutputFile(path) as fh, ThreadPoolExecutor(1, thread_name_prefix="safetensors-write") as writer:
        write(struct.pack("<Q", len(blob)))
        write(blob)
        in_flight = None
        for name, shape, dtype in tensors:
            start, want = header[name]["data_offsets"]
            written = 0
            for piece in blocks(name):
                data = piece.contiguous().reshape(-1).view(torch.uint8).numpy()
                if in_flight is not None:
                    in_flight.result()
                in_flight = writer.submit(write, memoryview(data))
                written += data.nbytes
                if on_bytes:
                    on_bytes(data.nbytes)
            if written != want - start:  # a bug in the block source: never leave a file that reads wrong
                raise RuntimeError(f"{name}: wrote {written} bytes, header says {want - start}")
        if in_flight is not None:
            in_flight.result()
