"""One loaded model moved between the paths of several methods (the rows of `adamms compare`).

The linear LazyMerge is built first, on the base, and kept: its α=0 is the base bit for bit, so every switch returns
there before the next method's paths are built (a task-vector path's λ=0 is θ0, not the base). Tensors that only the
other method maps (the linear path does not) are saved when its LazyMerge is built and put back when it is left, so
coming back to the linear method, or to any other, starts from the base exactly.
"""
from __future__ import annotations

import gc
from typing import Callable

import torch

from .lazy import LazyMerge


class MethodSwitch:
    def __init__(self, linear: LazyMerge):
        if linear.method.name != "linear":
            raise ValueError("MethodSwitch is built on the linear LazyMerge (its α=0 is the base)")
        self.linear = linear
        self.key: str | None = None  # the active method's key; None = the linear one
        self.active: LazyMerge | None = None
        self.saved: dict[str, torch.Tensor] = {}

    def switch(self, key: str | None, build: Callable[[], LazyMerge]) -> LazyMerge:
        """Make `key`'s LazyMerge the active one (None: the linear one), building it with `build` once the
        weights are back at the base; the LazyMerge left behind is dropped."""
        if key == self.key:
            return self.active or self.linear
        self._leave()
        self.linear.set(0.0)
        if key is not None:
            merged = build()
            extra = set(merged.paths) - set(self.linear.paths)
            state = merged.model.state_dict()
            self.saved = {k: state[k].detach().clone() for k in extra}
            self.active = merged
        self.key = key
        return self.active or self.linear

    def _leave(self) -> None:
        if self.active is None:
            return
        current = self.active.model.state_dict(keep_vars=True)
        with torch.no_grad():
            for k, saved in self.saved.items():
                current[k].data.copy_(saved)
        self.saved, self.active = {}, None
        gc.collect()
