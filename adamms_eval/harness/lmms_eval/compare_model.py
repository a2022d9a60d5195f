"""The lmms-eval model `adamms compare` evaluates through: the adamms model around a backend loaded once.

It is `Adamms` (same request plumbing, search and records) built from an already loaded backend; the comparison
runner hands it a session per method (`use`), whose coefficient it forces or lets the session search.
Under torchrun / accelerate launch it reports the process group's rank and world size (lmms-eval shards by them).
"""
from __future__ import annotations

import torch
from lmms_eval.api.model import lmms

from .model import Adamms


class ComparisonModel(Adamms):
    def __init__(self, backend, backend_name: str, device: str):  # not super().__init__: that loads a model
        lmms.__init__(self)
        self.backend, self.backend_name = backend, backend_name
        self.backend.task_dict = self.task_dict
        self.session = self.merged = None
        self._output_dir = None
        self.answers_seen: dict[str, dict] = {}  # task -> {doc id: answer} of the last evaluation (Table 3, Full)
        # the backend's device (cuda:<local rank> under data parallel) and its launcher state, so lmms-eval shards
        # the documents over the ranks and gathers them as for the backend itself
        self._device = torch.device(getattr(backend, "device", None) or device)
        if getattr(backend, "accelerator", None) is not None:
            self.accelerator = backend.accelerator
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():  # a backend on device_map=cpu says rank 0 of 1
            self._rank, self._world_size = dist.get_rank(), dist.get_world_size()
        else:
            self._rank, self._world_size = getattr(backend, "rank", 0), getattr(backend, "world_size", 1)
