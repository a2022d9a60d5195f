"""The lmms-eval model `adamms compare` evaluates through: the adamms model around a backend loaded once.

It is `Adamms` (same request plumbing, search and records) built from an already loaded backend; the comparison
runner swaps its session (one per method) and either forces a coefficient or lets the session search.
"""
from __future__ import annotations

import torch
from lmms_eval.api.model import lmms

from .lmms_eval_model import Adamms


class ComparisonModel(Adamms):
    def __init__(self, backend, backend_name: str, device: str):  # not super().__init__: that loads a model
        lmms.__init__(self)
        self.backend, self.backend_name = backend, backend_name
        self.backend.task_dict = self.task_dict
        self.session = self.merged = None
        self.forced: float | None = None  # a fixed coefficient for the next evaluation; None = the session's rule
        self._output_dir = None
        self._device = torch.device(device)

    def _alpha_for(self, task: str, requests, answer, score) -> float:
        if self.forced is not None:
            self.session.set_for(self.forced)
            return self.forced
        return super()._alpha_for(task, requests, answer, score)
