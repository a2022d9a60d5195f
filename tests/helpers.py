"""Test helpers that read checkpoints independently of adamms_eval.arch.checkpoint."""
from pathlib import Path

import torch
from safetensors.torch import load_file


def state_dict(d: Path) -> dict[str, torch.Tensor]:
    d = Path(d)
    sd = {}
    for f in sorted(d.glob("*.safetensors")):
        sd.update(load_file(f))
    for f in sorted(d.glob("pytorch_model*.bin")):
        sd.update(torch.load(f, map_location="cpu", weights_only=True))
    return sd


def lerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Equation (1) in fp32: (1 - α)·a + α·b."""
    return (1 - alpha) * a.float() + alpha * b.float()


def write_header_only_safetensors(path: Path, shapes: dict[str, tuple[tuple[int, ...], str]]) -> None:
    """A valid safetensors file whose data section is a hole (sparse): real-size headers at no disk cost.

    Lets tests plan real 7B layouts; the safetensors library cannot write a file without the data.
    """
    import json
    import struct
    sizes = {"BF16": 2, "F16": 2, "F32": 4}
    header, offset = {}, 0
    for name, (shape, dtype) in shapes.items():
        n = sizes[dtype]
        for s in shape:
            n *= s
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob)
        fh.truncate(8 + len(blob) + offset)


def shapes_tasks(folder: Path, rows: int) -> Path:
    """The shipped adamms_shapes lmms-eval tasks with `rows` generated shapes questions under `folder` (the repo's
    own task folder is left alone); pass `folder` as --include_path."""
    from adamms_eval.task_folders import write_shapes_tasks
    write_shapes_tasks(folder, rows=rows)
    return folder


def same_output(a: Path, b: Path) -> None:
    """Byte-identical merge outputs; the merge record may differ only in its timing and resume count."""
    import json
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for f in a.iterdir():
        if f.name == "adamms_merge.json":
            ra, rb = (json.loads(x.read_text()) for x in (f, b / f.name))
            for r in (ra, rb):
                r.pop("seconds"), r.pop("resumed_shards")
            assert ra == rb
        else:
            assert f.read_bytes() == (b / f.name).read_bytes(), f.name
