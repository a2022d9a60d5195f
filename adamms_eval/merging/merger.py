"""Turn a MergePlan and a MergeMethod into per-tensor paths, and stream a merged checkpoint to disk."""
from __future__ import annotations

import errno
import json
import logging
import shutil
import signal
import time
from pathlib import Path as FsPath
from typing import Iterator

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from huggingface_hub.serialization._base import parse_size_to_int
from safetensors import SafetensorError
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..arch.checkpoint import SAFE_INDEX, BIN_INDEX, Checkpoint
from .kernels import task_vector_chunks
from ..errors import AdammsError
from ..arch.mapping import MergePlan, PlanEntry, build_plan
from .methods import MergeMethod, Path, make_method
from .partial import OutputLock, PartialOutput, human_bytes, plan_identity

WEIGHT_FILE_PREFIXES = ("model.safetensors", "model-", "pytorch_model")
RECORD_FILE = "adamms_merge.json"
log = logging.getLogger("adamms_eval")


def _finite(t: torch.Tensor, key: str, where) -> torch.Tensor:
    # min or max is NaN or Inf exactly when some entry is; one pass, no temporary (isfinite(t).all() is 25x slower)
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(torch.stack(torch.aminmax(t))).all()):
        raise AdammsError(f"{key} in {where} contains NaN or Inf; the checkpoint is damaged, merge a clean copy")
    return t


def require_pretrained(method: MergeMethod, given: bool) -> None:
    if method.needs_pretrained and not given:
        raise AdammsError(f"method {method.name} works on task vectors θ_i − θ0: pass the shared pretrained "
                          "language model with --pretrained DIR")


class Merger:
    """Per-tensor paths θ(λ) for every merged tensor of the plan."""

    def __init__(self, plan: MergePlan, method: MergeMethod):
        require_pretrained(method, plan.pretrained is not None)
        self.plan, self.method = plan, method
        self._prepared = False

    def _read(self, e: PlanEntry) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Base, mapped other and θ0 tensors of a merged entry, checked for NaN/Inf."""
        p = self.plan
        base = _finite(p.base.source.get(e.key), e.key, p.base.source.path)
        other = _finite(p.other.gather(e.other), e.other[0].key, p.other.source.path)
        theta0 = None
        if e.pretrained is not None and self.method.needs_pretrained:
            theta0 = _finite(p.pretrained.gather(e.pretrained), e.pretrained[0].key, p.pretrained.source.path)
        return base, other, theta0

    @staticmethod
    def _rows(e: PlanEntry, t: torch.Tensor | None) -> torch.Tensor | None:
        return t if t is None or e.vocab is None else e.vocab.select(t)

    def inputs(self, e: PlanEntry) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Base, mapped other and θ0 for a merged entry, vocabulary rows selected."""
        return tuple(self._rows(e, t) for t in self._read(e))

    def task_vectors(self) -> Iterator[tuple[str, list[torch.Tensor]]]:
        """τ_base and τ_other for whole-model statistics, in fp32 chunks of each tensor (the statistics are sums
        and counts): the language model without embeddings / lm_head (MetaGPT), or with their merged rows too
        when the method applies the statistic to them (TIES trim=global)."""
        for e in self.plan.merged:
            if e.vocab is None or self.method.statistics_include_vocab:
                base, other, theta0 = self.inputs(e)
                for _, _, taus in task_vector_chunks(theta0, [base, other]):
                    yield e.canonical_name, taus

    def prepare(self) -> None:
        if not self._prepared and self.method.needs_pretrained:
            self.method.prepare(self.task_vectors)
        self._prepared = True

    def path(self, e: PlanEntry) -> Path:
        self.prepare()
        full, other, theta0 = self._read(e)
        path = self.method.path(e.canonical_name, *(self._rows(e, t) for t in (full, other, theta0)))
        if e.vocab is None:
            return path
        if e.vocab.prefix and e.vocab.count == full.shape[0]:
            return path  # every row aligned: nothing to keep from the base
        # Rows outside the alignment stay at the base: A = base there, and B = base (lerp) or 0 (axpy).
        a = e.vocab.scatter(full.clone(), path.a)
        b = e.vocab.scatter(full.clone() if path.kind == "lerp" else torch.zeros_like(full), path.b)
        return Path(a, b, path.kind, private_b=True)

    def tensor(self, e: PlanEntry, lam: float) -> torch.Tensor:
        if not e.merged:  # kept as the base has it (vision tower, ...): checked too, a NaN there is written as well
            t = self.plan.base.source.get(e.key)
            return t if self.plan.base.roles[e.key].ignored else _finite(t, e.key, self.plan.base.source.path)
        path = self.path(e)
        # the path is used once here: writing the point into a private B saves a tensor-sized allocation
        return path.point(lam, out=path.b if path.private_b else None)


def open_merger(base, other, method: str = "linear", params: dict | None = None, pretrained=None,
                base_arch=None, other_arch=None, pretrained_arch=None) -> Merger:
    """Plan and method from model directories; refuses incompatible pairs before reading tensor data."""
    m = make_method(method, params)
    require_pretrained(m, pretrained is not None)  # before reading any checkpoint
    plan = build_plan(Checkpoint(base), Checkpoint(other), Checkpoint(pretrained) if pretrained else None,
                      base_arch, other_arch, pretrained_arch)
    return Merger(plan, m)


def _guard_output(out: FsPath, inputs: list[FsPath], force: bool) -> None:
    for src in inputs:
        src = src.resolve()
        if out == src or src in out.parents or out in src.parents:
            raise AdammsError(f"output {out} overlaps the input {src}; choose an output outside the inputs")
    if out.exists() and not force:
        raise AdammsError(f"output {out} already exists; pass --force to replace it or choose another --out")


def shard_size_bytes(value) -> int:
    """--max-shard-size as bytes: a size with a unit (huggingface_hub's: 500MB, 2GB) or a whole number of bytes."""
    text = str(value).strip()
    try:
        size = int(text) if text.isdigit() else parse_size_to_int(text)
    except ValueError:
        size = None
    if not size or size <= 0:
        raise AdammsError(f"--max-shard-size {value}: write a size above zero with a unit, e.g. 1GB, 500MB or 200KB "
                          "(units KB, MB, GB, TB; a whole number is bytes)")
    return size


# errno values (and safetensors' Rust io::Error kinds) of a full disk or an exhausted quota
DISK_FULL = {errno.ENOSPC: "StorageFull", errno.EDQUOT: "QuotaExceeded"}


def _disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return e.errno in DISK_FULL
    text = str(e)
    return isinstance(e, SafetensorError) and any(f"code: {n}," in text or kind in text
                                                  for n, kind in DISK_FULL.items())


class MergeInterrupted(KeyboardInterrupt):
    """A merge stopped by SIGINT / SIGTERM; the message says what was kept. `signum` is the signal."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


def write_merged(merger: Merger, lam: float, out_dir, force: bool = False, max_shard_size: str = "1GB",
                 progress: bool = True, extra_record: dict | None = None, notify=None) -> FsPath:
    """Stream the merged checkpoint shard by shard into `.OUT.partial-PID`, then rename it to out_dir.

    Crash safety (see partial.py): the whole run holds a lock beside the output; each finished shard is
    recorded with its hash in the partial folder, so a killed run's shards are reused by the next run of the
    same plan; partial folders of other plans are removed. `notify(message)` receives what was found."""
    plan, method = merger.plan, merger.method
    lam = method.check_coefficient(lam)
    notify = notify or log.warning
    out = FsPath(out_dir).resolve()
    sources = [plan.base.source.path, plan.other.source.path] + ([plan.pretrained.source.path] if plan.pretrained else [])
    _guard_output(out, sources, force)
    shard_bytes = shard_size_bytes(max_shard_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    entries = {e.key: e for e in plan.entries}
    meta = {k: torch.empty(e.shape, dtype=e.dtype, device="meta") for k, e in entries.items()}
    split = split_torch_state_dict_into_shards(meta, filename_pattern="model{suffix}.safetensors",
                                               max_shard_size=shard_bytes)
    nbytes = {k: t.numel() * t.element_size() for k, t in meta.items()}
    total = sum(nbytes.values())
    with OutputLock(out):
        _guard_output(out, sources, force)  # again, under the lock: a merge that finished meanwhile counts
        partial = PartialOutput.resume(out, plan_identity(merger, lam, split.filename_to_tensors, max_shard_size),
                                       notify)
        try:
            merger.prepare()
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"{method.name} {method.coefficient}={lam:g}",
                      disable=not progress) as bar:
                for filename, keys in split.filename_to_tensors.items():
                    if filename in partial.kept:
                        bar.update(sum(nbytes[k] for k in keys))
                        continue
                    shard = {}
                    for k in keys:
                        shard[k] = merger.tensor(entries[k], lam).contiguous()
                        bar.update(nbytes[k])
                    save_file(shard, str(partial.path / filename), metadata={"format": "pt"})
                    del shard
                    partial.finished(filename)
            tmp = partial.path
            if split.is_sharded:
                index = {"metadata": {**split.metadata, "total_size": total}, "weight_map": split.tensor_to_filename}
                (tmp / SAFE_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True))
            _copy_side_files(plan.base.source.path, tmp)
            record = {"method": method.describe(), method.coefficient: lam,
                      "base": str(plan.base.source.path), "other": str(plan.other.source.path),
                      "pretrained": str(plan.pretrained.source.path) if plan.pretrained else None,
                      "plan": plan.summary(), "seconds": round(time.time() - started, 2),
                      "resumed_shards": len(partial.kept), **(extra_record or {})}
            (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2, default=str))
            partial.complete()
            if out.exists():
                shutil.rmtree(out)
            tmp.rename(out)
        except KeyboardInterrupt as e:  # SIGINT, or SIGTERM turned into one by the CLI: keep finished shards
            n, size = partial.keep_finished()
            kept = f"{n} finished shard(s) ({human_bytes(size)}) kept in {partial.path} for resume: rerun the same " \
                   "command" if n else "nothing kept"
            raise MergeInterrupted(f"nothing written to {out}; {kept}", getattr(e, "signum", signal.SIGINT)) from None
        except BaseException as e:
            if not _disk_full(e):
                partial.remove()
                raise
            try:  # drops the half-written file: what is kept is whole and recorded with its hash
                n, size = partial.keep_finished()
            except OSError:  # the manifest on disk still lists the shards recorded before
                n, size = len(partial.manifest["shards"]), sum(s["bytes"] for s in partial.manifest["shards"].values())
            free = shutil.disk_usage(out.parent).free
            kept = f"{n} finished shard(s) ({human_bytes(size)}) kept in {partial.path}" if n else "nothing kept"
            raise AdammsError(f"disk full writing {out}: the merge needs {human_bytes(total - size)} more and "
                              f"{human_bytes(free)} is free there; {kept}: free space and rerun the same "
                              "command to resume") from None
    return out


def _copy_side_files(src: FsPath, dst: FsPath) -> None:
    """Config, tokenizer, processor, chat template and remote-code files of the base; not its weights."""
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith(WEIGHT_FILE_PREFIXES) and f.name not in (SAFE_INDEX, BIN_INDEX,
                                                                                           RECORD_FILE):
            shutil.copy2(f, dst / f.name)
