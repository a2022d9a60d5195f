"""LazyMerge: move a loaded base model to any point of a merge method's path, in place.

The other checkpoint (and θ0) is read once, through the mapping, into per-tensor paths
θ(λ) = A + λ·B. `set(λ)` then writes every mapped parameter with one torch kernel; nothing is read
from disk and kept tensors are never written. Because A and B and the kernel are exactly those of
`adamms merge`, the model's weights after `set(λ)` equal the merged checkpoint bit for bit, and
switching back and forth accumulates no drift (each point is computed from A and B, never from the
previous point).

Where the paths live (`storage`):
- "device": A and B beside each weight on its own device. Costs 2 × (bytes of the weight dtype) per
  merged parameter there (4 B/param in bf16); set() is one fused kernel per tensor.
- "host": A and B in (pinned, when CUDA is present) host memory, streamed to the device per tensor.
  Costs the same 4 B/param in bf16 but in host RAM; device memory grows only by the largest tensor's
  A and B while it is moved; set() is bounded by the host-to-device copy.
- "auto" (default): "device" when that memory is free there, else "host"; else an error that says
  how many bytes are needed and free.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..arch.checkpoint import Checkpoint, StateDictSource
from ..arch.mapping import MergePlan, build_plan
from ..errors import AdammsError
from ..fingerprints import dir_stamps
from .merger import Merger
from .methods import MergeMethod, Path, make_method

HEADROOM = 1.10  # keep 10% of free memory for activations and allocator slack


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil
    return psutil.virtual_memory().available


def _unwrap(model):
    return getattr(model, "module", model)  # DistributedDataParallel / accelerate wrappers


class LazyMerge:
    def __init__(self, model, other, method: str | MergeMethod = "linear", pretrained=None, params: dict | None = None,
                 storage: str = "auto", base_tokenizer=None, base_arch: str | None = None,
                 other_arch: str | None = None, pretrained_arch: str | None = None, progress: bool = True,
                 plan: MergePlan | None = None):
        """`method`: a name (with `params`) or a built MergeMethod. `plan`: the plan of this pair from the files
        (a session's preflight plan); its open checkpoints and pairing are reused instead of planning again."""
        if storage not in ("auto", "device", "host"):
            raise AdammsError(f"storage must be auto, device or host, got {storage!r}")
        self.model = _unwrap(model)
        self.method = method if isinstance(method, MergeMethod) else make_method(method, params)
        if plan is not None:
            self.other = plan.other.source
            self.pretrained = plan.pretrained.source if plan.pretrained is not None else None
        else:
            self.other = Checkpoint(other)
            self.pretrained = Checkpoint(pretrained) if pretrained is not None else None
        # the same stamps as the search cache's identity (fingerprints.dir_stamps)
        self._stamps = {str(c.path): dir_stamps(c.path) for c in (self.other, self.pretrained) if c is not None}

        self._params = self._unique_parameters()
        config = self.model.config.to_dict()
        name_or_path = getattr(self.model.config, "_name_or_path", "") or ""
        # The model's own directory (when loaded from one) supplies its tokenizer for vocabulary alignment.
        base_src = StateDictSource(self._params, config, name_or_path or "<in-memory model>")
        plan = plan.rebase(base_src) if plan is not None else build_plan(
            base_src, self.other, self.pretrained, base_arch, other_arch, pretrained_arch, base_tokenizer=base_tokenizer)
        self.plan = plan
        self.merger = Merger(plan, self.method)
        entries = plan.merged
        self.storage = self._choose_storage(storage, entries)
        self.paths: dict[str, Path] = {}
        with torch.no_grad():
            self.merger.prepare()
            for e in tqdm(entries, desc=f"reading {self.other.path.name} paths", disable=not progress):
                param = self._params[e.key]
                path = self.merger.path(e)
                if path.a.data_ptr() == param.data_ptr():
                    path = Path(path.a.clone(), path.b, path.kind)  # A must survive writes to the weight
                target = param.device if self.storage == "device" else torch.device("cpu")
                self.paths[e.key] = path.to(target, pin=self.storage == "host" and torch.cuda.is_available())
        self._value = 0.0 if self.method.coefficient == "alpha" else None
        self._shapes = {k: (tuple(self._params[k].shape), self._params[k].dtype) for k in self.paths}

    # -- construction helpers ----------------------------------------------------------------------
    def _unique_parameters(self) -> dict[str, torch.Tensor]:
        """State dict with each storage once: a tied embedding / lm_head is moved once."""
        seen, out = set(), {}
        for key, t in self.model.state_dict(keep_vars=True).items():
            if t.device.type == "meta":
                raise AdammsError(f"{key} is offloaded (meta device); load the model onto real devices "
                                  "(device_map without disk offload) before merging in place")
            ptr = (t.device, t.data_ptr())
            if ptr not in seen:
                seen.add(ptr)
                out[key] = t.data
        return out

    def _choose_storage(self, storage: str, entries) -> str:
        per_device: dict[torch.device, int] = {}
        for e in entries:
            p = self._params[e.key]
            per_device[p.device] = per_device.get(p.device, 0) + 2 * p.numel() * p.element_size()
        host_need = sum(per_device.values())

        def fits(dev, need):
            return need * HEADROOM <= _free_bytes(dev)

        device_ok = all(fits(d, n) for d, n in per_device.items())
        if storage == "device" or (storage == "auto" and device_ok):
            if not device_ok:
                d, n = next((d, n) for d, n in per_device.items() if not fits(d, n))
                raise AdammsError(f"storage='device' needs {n / 2**30:.2f} GiB on {d} for the merge paths but "
                                  f"{_free_bytes(d) / 2**30:.2f} GiB is free; use storage='host'")
            return "device"
        host = torch.device("cpu")
        if not fits(host, host_need):
            raise AdammsError(f"the merge paths need {host_need / 2**30:.2f} GiB of host memory "
                              f"({2 * next(iter(self._params.values())).element_size()} B per merged parameter) but "
                              f"{_free_bytes(host) / 2**30:.2f} GiB is free; free memory or merge to disk with "
                              "`adamms merge`")
        return "host"

    # -- use -------------------------------------------------------------------------------------------
    @property
    def value(self) -> float | None:
        """The current coefficient (None until the first set() for methods that do not start at the base)."""
        return self._value

    def _current(self) -> dict[str, torch.Tensor]:
        """The model's tensors as they are now: `model.to(device)` and friends swap a parameter's storage,
        so the tensors captured at construction may be orphaned; look them up by name at every set()."""
        now = self.model.state_dict(keep_vars=True)
        missing = [k for k in self.paths if k not in now]
        if missing:
            raise AdammsError(f"{missing[0]} is no longer in the model: it changed since this LazyMerge was built; "
                              "build a new LazyMerge")
        return {k: now[k].data for k in self.paths}

    def _check_unchanged(self) -> dict[str, torch.Tensor]:
        for folder, stamp in self._stamps.items():
            if dir_stamps(folder) != stamp:
                raise AdammsError(f"{folder} changed on disk since this LazyMerge was built; build a new LazyMerge")
        current = self._current()
        for k, p in current.items():
            shape, dtype = self._shapes[k]
            if tuple(p.shape) != shape:
                raise AdammsError(f"{k} is now {list(p.shape)}, planned {list(shape)}: the model changed since this "
                                  "LazyMerge was built; build a new one")
            if p.dtype != dtype:
                raise AdammsError(f"{k} was cast from {dtype} to {p.dtype} after this LazyMerge was built; the merge "
                                  f"paths are {dtype}: cast the model back, or build a new LazyMerge after the cast")
            if p.device.type == "meta":
                raise AdammsError(f"{k} was offloaded (meta device) after this LazyMerge was built; keep merged "
                                  "weights on real devices")
        return current

    def set(self, lam: float) -> "LazyMerge":
        lam = self.method.check_coefficient(lam)
        current = self._check_unchanged()  # nothing is written unless every tensor can be
        with torch.no_grad():
            for key, path in self.paths.items():
                param = current[key]
                if path.a.device != param.device:
                    if self.storage == "device":  # the model moved: its paths follow it once
                        path = self.paths[key] = path.to(param.device)
                    else:
                        path = path.to(param.device, non_blocking=True)
                path.point(lam, out=param)
        self._params.update(current)
        self._value = lam
        return self

    def memory(self) -> dict:
        """Bytes held by the paths, where, and per merged parameter."""
        held = sum(p.a.numel() * p.a.element_size() + p.b.numel() * p.b.element_size() for p in self.paths.values())
        params = sum(self._params[k].numel() for k in self.paths)
        return {"storage": self.storage, "bytes": held, "merged_parameters": params,
                "bytes_per_parameter": held / max(params, 1)}
