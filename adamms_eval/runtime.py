"""Where this process runs: its rank in a torch.distributed group (torchrun, accelerate launch), collectives that
are no-ops in a single process, the default device, and folder-safe names. One place for each, used everywhere."""
from __future__ import annotations

import os
import re
from pathlib import Path


def process_group():
    """torch.distributed when a group of more than one process is up (torchrun, accelerate launch), else None."""
    import torch.distributed as dist
    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def current_rank() -> int:
    """This process's rank: the process group's when one is up, else the launcher's RANK (0 alone)."""
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:
        pass
    return int(os.environ.get("RANK", "0"))


def all_gather(obj) -> list:
    g = process_group()
    if g is None:
        return [obj]
    out = [None] * g.get_world_size()
    g.all_gather_object(out, obj)
    return out


def from_rank0(obj):
    """Rank 0's `obj` on every rank (every rank must call this at the same point)."""
    g = process_group()
    if g is None:
        return obj
    box = [obj if g.get_rank() == 0 else None]
    g.broadcast_object_list(box, src=0)
    return box[0]


def default_device() -> str:
    """"cuda" when a GPU is visible, else "cpu"."""
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def safe_name(text: str, keep: str = "_.-", collapse: bool = False) -> str:
    """`text` with every character that is not a letter, digit or one of `keep` replaced by "_" (a run of them by one
    "_" with `collapse`): file and folder names made from task, row and model names."""
    return re.sub(rf"[^A-Za-z0-9{re.escape(keep)}]{'+' if collapse else ''}", "_", str(text))


def cache_root() -> Path:
    """Where adamms-eval keeps what it builds and caches (search answers, the zoo, written-out tasks): $ADAMMS_CACHE,
    else $XDG_CACHE_HOME/adamms-eval, else ~/.cache/adamms-eval."""
    root = os.environ.get("ADAMMS_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "adamms-eval")
    return Path(root).expanduser()
