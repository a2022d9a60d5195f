"""Read Hugging Face model directories tensor by tensor.

Supports `model.safetensors`, sharded safetensors with `model.safetensors.index.json`, and the
`pytorch_model*.bin` files that LLaVA-1.5 and mPLUG-Owl2 originals ship. Headers (names, shapes,
dtypes) are read without touching tensor data, so planning a 7B merge costs milliseconds.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePath, PureWindowsPath

import torch
from safetensors import safe_open

from ..errors import AdammsError

SAFE_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"

_SAFE_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype


def load_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise AdammsError(f"{path}: no such model directory; pass the folder that holds config.json")
    cfg = path / "config.json"
    if not cfg.is_file():
        raise AdammsError(f"{path}: no config.json; pass a Hugging Face model directory (save_pretrained output)")
    try:
        config = json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise AdammsError(f"{cfg}: not valid JSON ({e}); restore the file from the original checkpoint") from None
    if not isinstance(config, dict):
        raise AdammsError(f"{cfg}: holds a JSON {type(config).__name__}, not an object of settings; restore the file "
                          "from the original checkpoint")
    return config


def _corrupt(file: Path, err: Exception) -> AdammsError:
    return AdammsError(f"{file}: corrupt or truncated checkpoint file ({type(err).__name__}: {str(err)[:120]}); "
                       "download or copy it again")


def _shard_names(index: Path) -> set[str]:
    """The shard file names an index lists: relative paths inside the model folder, nothing above or beside it."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise AdammsError(f"{index}: unreadable shard index ({type(e).__name__}: {e}); copy the checkpoint "
                          "again") from None
    if not isinstance(weight_map, dict) or not all(isinstance(f, str) and f for f in weight_map.values()):
        raise AdammsError(f"{index}: weight_map must map tensor names to shard file names; copy the checkpoint again")
    for name in weight_map.values():
        if PurePath(name).is_absolute() or PureWindowsPath(name).is_absolute() or ".." in PurePath(name).parts:
            raise AdammsError(f"{index}: lists the shard {name!r}, outside the model folder; an index names files "
                              "inside its folder (model-00001-of-00002.safetensors): copy the checkpoint again")
    return set(weight_map.values())


def weight_files(path: Path) -> list[Path]:
    """The weight files of a model directory (shards listed by an index, or one file)."""
    p = Path(path)
    for index in (SAFE_INDEX, BIN_INDEX):
        if (p / index).is_file():
            files = sorted({p / f for f in _shard_names(p / index)})
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise AdammsError(f"{p}: shard files listed in {index} are missing: {', '.join(missing[:3])}; "
                                  "copy the complete checkpoint")
            return files
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (p / single).is_file():
            return [p / single]
    raise AdammsError(f"{p}: no weights found (model.safetensors, {SAFE_INDEX}, pytorch_model.bin or {BIN_INDEX})")


class TensorSource:
    """Named tensors with headers (shape, dtype) known up front; `get` reads one tensor."""
    path: Path
    config: dict
    _infos: dict[str, TensorInfo]

    def keys(self) -> list[str]:
        return list(self._infos)

    def info(self, key: str) -> TensorInfo:
        return self._infos[key]

    @property
    def infos(self) -> dict[str, TensorInfo]:
        return self._infos

    def get(self, key: str) -> torch.Tensor:
        raise NotImplementedError

    def get_rows(self, key: str, start: int, end: int) -> torch.Tensor:
        """Rows [start, end) of a tensor (dim 0); a checkpoint reads only those bytes."""
        return self.get(key)[start:end]


class Checkpoint(TensorSource):
    """A model directory on disk: its config and lazily read tensors."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.config = load_config(self.path)
        self.files = weight_files(self.path)
        self._key_file: dict[str, Path] = {}
        self._infos: dict[str, TensorInfo] = {}
        self._handles: dict[Path, object] = {}
        self._read_headers()

    # -- discovery -------------------------------------------------------------------------
    def _read_headers(self) -> None:
        for f in self.files:
            if f.suffix == ".safetensors":
                handle = self._open_safetensors(f)
                for k in handle.keys():
                    sl = handle.get_slice(k)
                    self._add(k, f, TensorInfo(tuple(sl.get_shape()), _SAFE_DTYPES[sl.get_dtype()]))
            else:
                sd = self._load_bin(f)
                for k, t in sd.items():
                    self._add(k, f, TensorInfo(tuple(t.shape), t.dtype))

    def _add(self, key: str, file: Path, info: TensorInfo) -> None:
        self._key_file[key] = file
        self._infos[key] = info

    def _open_safetensors(self, f: Path):
        if f not in self._handles:
            try:
                self._handles[f] = safe_open(str(f), framework="pt", device="cpu")
            except Exception as e:  # safetensors raises its own error types for bad headers
                raise _corrupt(f, e) from None
        return self._handles[f]

    def _load_bin(self, f: Path) -> dict:
        if f not in self._handles:
            try:  # mmap: tensor data is paged in only when a tensor is used
                self._handles[f] = torch.load(f, map_location="cpu", mmap=True, weights_only=True)
            except Exception as e:
                raise _corrupt(f, e) from None
        return self._handles[f]

    def get(self, key: str) -> torch.Tensor:
        f = self._key_file[key]
        try:
            if f.suffix == ".safetensors":
                return self._open_safetensors(f).get_tensor(key)
            return self._load_bin(f)[key]
        except AdammsError:
            raise
        except Exception as e:
            raise _corrupt(f, e) from None

    def get_rows(self, key: str, start: int, end: int) -> torch.Tensor:
        f = self._key_file[key]
        if f.suffix != ".safetensors":
            return self.get(key)[start:end]  # mmapped .bin: the slice pages in only its rows
        try:  # get_slice reads only the rows asked for (get_tensor would copy the whole tensor)
            return self._open_safetensors(f).get_slice(key)[start:end]
        except Exception as e:
            raise _corrupt(f, e) from None


class StateDictSource(TensorSource):
    """A loaded model's state dict seen through the same interface as a Checkpoint."""

    def __init__(self, state_dict: dict[str, torch.Tensor], config: dict, path: str = "<in-memory model>"):
        self.path = Path(path)
        self.config = config
        self._sd = state_dict
        self._infos = {k: TensorInfo(tuple(t.shape), t.dtype) for k, t in state_dict.items()}

    def get(self, key: str) -> torch.Tensor:
        return self._sd[key]
