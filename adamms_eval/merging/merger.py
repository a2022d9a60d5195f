"""Turn a MergePlan and a MergeMethod into per-tensor paths, and stream a merged checkpoint to disk."""
from __future__ import annotations

import errno
import json
import logging
import math
import shutil
import signal
import time
from pathlib import Path as FsPath
from typing import Iterator, NoReturn

import torch
from huggingface_hub import split_state_dict_into_shards_factory
from huggingface_hub.serialization._base import parse_size_to_int
from tqdm.auto import tqdm

from ..arch.checkpoint import SAFE_INDEX, BIN_INDEX, Checkpoint
from .ahead import TensorsAhead
from .kernels import NonFiniteChunk, nonfinite, task_vector_chunks
from .stream import row_blocks, write_safetensors
from ..errors import AdammsError
from ..runtime import Interrupted
from ..arch.mapping import MergePlan, PlanEntry, build_plan
from .methods import MergeMethod, Path, make_method
from .partial import OutputLock, PartialOutput, human_bytes, plan_identity

WEIGHT_FILE_PREFIXES = ("model.safetensors", "model-", "pytorch_model")
RECORD_FILE = "adamms_merge.json"
log = logging.getLogger("adamms_eval")


def _finite(t: torch.Tensor, key: str, where) -> torch.Tensor:
    if nonfinite(t):
        raise AdammsError(f"{key} in {where} contains NaN or Inf; the checkpoint is damaged, merge a clean copy")
    return t


def require_pretrained(method: MergeMethod, given: bool) -> None:
    if method.needs_pretrained and not given:
        raise AdammsError(f"method {method.name} works on task vectors θ_i − θ0: pass the shared pretrained "
                          "language model with --pretrained DIR")


class Merger:
    """Per-tensor paths θ(λ) for every merged tensor of the plan."""

    def __init__(self, plan: MergePlan, method: MergeMethod, dtype: torch.dtype | None = None):
        require_pretrained(method, plan.pretrained is not None)
        self.plan, self.method = plan, method
        self.dtype = dtype  # output dtype of floating tensors (None: each tensor's own, the base's)
        self._prepared = False

    def out_dtype(self, e: PlanEntry) -> torch.dtype:
        return self.dtype if self.dtype is not None and e.dtype.is_floating_point else e.dtype

    def _streamable(self, e: PlanEntry) -> bool:
        """Merged block by block: an elementwise method, and rows that map to rows (no token-id alignment)."""
        return not e.merged or (self.method.rowwise and (e.vocab is None or e.vocab.prefix) and len(e.shape) > 0)

    def whole(self, e: PlanEntry, lam: float) -> torch.Tensor:
        """The output tensor of an entry merged whole, in the output dtype. An output dtype other than the
        tensor's own computes the merge in fp32 and casts the result once (mergekit's out_dtype)."""
        out = self.out_dtype(e)
        return self.tensor(e, lam, fp32=out != e.dtype).to(out)

    def blocks(self, e: PlanEntry, lam: float, ahead: TensorsAhead | None = None) -> Iterator[torch.Tensor]:
        """The output tensor of `e` at `lam` in row order, in the output dtype; an entry merged whole comes from
        `ahead` when it holds it (computed there on a worker thread)."""
        out = self.out_dtype(e)
        if not self._streamable(e):
            yield ahead.take(e.key) if ahead is not None and e.key in ahead else self.whole(e, lam)
            return
        p, cast = self.plan, (torch.float32 if out != e.dtype else None)
        merged_rows = e.shape[0] if e.vocab is None else e.vocab.count
        for s, t in row_blocks(e.shape):
            base = p.base.source.get_rows(e.key, s, t)
            hi = min(t, merged_rows)
            if not e.merged or hi <= s:  # kept, or rows past the aligned vocabulary: the base's
                yield self._kept(e, base).to(out)  # a merged entry is never an ignored buffer: checked
                continue
            other = p.other.gather_rows(e.other, s, hi)
            theta0 = None
            if e.pretrained is not None and self.method.needs_pretrained:
                theta0 = p.pretrained.gather_rows(e.pretrained, s, hi)
            ins = [x if x is None or cast is None else x.to(cast) for x in (base[: hi - s], other, theta0)]
            try:
                path = self.method.path(e.canonical_name, *ins)
            except NonFiniteChunk:
                self._refuse(e, (base[: hi - s], other, theta0), self._task_vector_overflow_message(e))
            merged = path.point(lam, out=path.b if path.private_b else None).to(out)
            # Only the result is checked: a NaN or Inf in any input reaches it through the elementwise path, and
            # one pass over the output is cheaper than one over each input. The rare failure names its cause.
            if nonfinite(merged):
                self._refuse(e, (base[: hi - s], other, theta0), self._overflow_message(e, lam, out))
            yield merged
            if hi < t:
                yield _finite(base[hi - s:], e.key, p.base.source.path).to(out)

    def _check(self, e: PlanEntry, inputs) -> None:
        """Refuse (naming the tensor and its file) a base / other / θ0 input of `e` that holds NaN or Inf."""
        p = self.plan
        refs = [(e.key, p.base), (e.other[0].key, p.other),
                (e.pretrained[0].key if e.pretrained else None, p.pretrained)]
        for t, (key, model) in zip(inputs, refs):
            if t is not None:
                _finite(t, key, model.source.path)

    def _refuse(self, e: PlanEntry, inputs, otherwise: str) -> NoReturn:
        """A merged block or a task vector holds NaN or Inf: name the input that does, else raise `otherwise`."""
        self._check(e, inputs)
        raise AdammsError(otherwise)

    def _overflow_message(self, e: PlanEntry, lam: float, out: torch.dtype) -> str:
        return (f"{e.key}: the {self.method.name} merge at {self.method.coefficient}={lam:g} overflows "
                f"{str(out).removeprefix('torch.')} though every input is finite; choose a smaller "
                "coefficient or --dtype float32")

    @staticmethod
    def _task_vector_overflow_message(e: PlanEntry) -> str:
        return (f"{e.key}: its task vector x − θ0 overflows float32 though every input is finite "
                "(entries near ±3.4e38); the checkpoint is damaged, merge a clean copy")

    def _kept(self, e: PlanEntry, t: torch.Tensor) -> torch.Tensor:
        """A tensor written as the base has it, checked for NaN/Inf unless the model recomputes it at load."""
        return t if self.plan.base.roles[e.key].ignored else _finite(t, e.key, self.plan.base.source.path)

    def _read(self, e: PlanEntry) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Base, mapped other and θ0 tensors of a merged entry, checked for NaN/Inf: here, or, for a task-vector
        method on rows that all take part, chunk by chunk as the task vectors are formed (NonFiniteChunk)."""
        p = self.plan
        base, other = p.base.source.get(e.key), p.other.gather(e.other)
        theta0 = None
        if e.pretrained is not None and self.method.needs_pretrained:
            theta0 = p.pretrained.gather(e.pretrained)
        if theta0 is None or e.vocab is not None:
            self._check(e, (base, other, theta0))
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
                base, other, theta0 = inputs = self.inputs(e)
                try:
                    for _, _, taus in task_vector_chunks(theta0, [base, other]):
                        yield e.canonical_name, taus
                except NonFiniteChunk:
                    self._refuse(e, inputs, self._task_vector_overflow_message(e))

    def prepare(self) -> None:
        if not self._prepared and self.method.needs_pretrained:
            self.method.prepare(self.task_vectors)
        self._prepared = True

    def path(self, e: PlanEntry, fp32: bool = False) -> Path:
        self.prepare()
        full, other, theta0 = self._read(e)
        if fp32:
            full, other, theta0 = (t if t is None else t.float() for t in (full, other, theta0))
        try:
            path = self.method.path(e.canonical_name, *(self._rows(e, t) for t in (full, other, theta0)))
        except NonFiniteChunk:
            self._refuse(e, (full, other, theta0), self._task_vector_overflow_message(e))
        if e.vocab is None:
            return path
        if e.vocab.prefix and e.vocab.count == full.shape[0]:
            return path  # every row aligned: nothing to keep from the base
        # Rows outside the alignment stay at the base: A = base there, and B = base (lerp) or 0 (axpy).
        a = e.vocab.scatter(full.clone(), path.a)
        b = e.vocab.scatter(full.clone() if path.kind == "lerp" else torch.zeros_like(full), path.b)
        return Path(a, b, path.kind, private_b=True)

    def tensor(self, e: PlanEntry, lam: float, fp32: bool = False) -> torch.Tensor:
        if not e.merged:  # kept as the base has it (vision tower, ...): checked too, a NaN there is written as well
            return self._kept(e, self.plan.base.source.get(e.key))
        path = self.path(e, fp32)
        # the path is used once here: writing the point into a private B saves a tensor-sized allocation
        return path.point(lam, out=path.b if path.private_b else None)


def open_merger(base, other, method: str = "linear", params: dict | None = None, pretrained=None,
                base_arch=None, other_arch=None, pretrained_arch=None, dtype: torch.dtype | None = None) -> Merger:
    """Plan and method from model directories; refuses incompatible pairs before reading tensor data."""
    m = make_method(method, params)
    require_pretrained(m, pretrained is not None)  # before reading any checkpoint
    plan = build_plan(Checkpoint(base), Checkpoint(other), Checkpoint(pretrained) if pretrained else None,
                      base_arch, other_arch, pretrained_arch)
    return Merger(plan, m, dtype)


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


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk or an exhausted quota


def _disk_full(e: BaseException) -> bool:
    # every byte of a merge goes through our own writer (stream.write_safetensors), so a full disk is an OSError
    return isinstance(e, OSError) and e.errno in DISK_FULL


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
    layout = {k: (tuple(e.shape), merger.out_dtype(e)) for k, e in entries.items()}
    nbytes = {k: math.prod(shape) * dtype.itemsize for k, (shape, dtype) in layout.items()}
    # the hub's split over byte counts: its torch wrapper sizes tensors through torch.distributed.tensor, whose
    # import alone took ~1 s of every merge; the shards are the same (no storage sharing: every tensor is new)
    split = split_state_dict_into_shards_factory(nbytes, get_storage_size=int, max_shard_size=shard_bytes,
                                                 filename_pattern="model{suffix}.safetensors")
    total = sum(nbytes.values())
    with OutputLock(out):
        _guard_output(out, sources, force)  # again, under the lock: a merge that finished meanwhile counts
        identity = {**plan_identity(merger, lam, split.filename_to_tensors, max_shard_size),
                    "dtype": str(merger.dtype)}
        partial = PartialOutput.resume(out, identity, notify)
        try:
            merger.prepare()
            whole = [(k, nbytes[k]) for filename, keys in split.filename_to_tensors.items()
                     if filename not in partial.kept for k in keys if not merger._streamable(entries[k])]
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"{method.name} {method.coefficient}={lam:g}",
                      disable=not progress) as bar, TensorsAhead(whole, lambda k: merger.whole(entries[k], lam)) as ahead:
                for filename, keys in split.filename_to_tensors.items():
                    if filename in partial.kept:
                        bar.update(sum(nbytes[k] for k in keys))
                        continue
                    # block by block: neither a whole shard nor (for elementwise methods) a whole tensor in memory;
                    # hashed as written, not read back
                    written = partial.hasher()
                    write_safetensors(partial.path / filename, [(k, *layout[k]) for k in keys],
                                      lambda k: merger.blocks(entries[k], lam, ahead), metadata={"format": "pt"},
                                      on_bytes=bar.update, hasher=written)
                    partial.finished(filename, written.hexdigest())
            tmp = partial.path
            if split.is_sharded:
                index = {"metadata": {**split.metadata, "total_size": total}, "weight_map": split.tensor_to_filename}
                (tmp / SAFE_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True))
            _copy_side_files(plan.base.source.path, tmp)
            record = {"method": method.describe(), method.coefficient: lam,
                      "dtype": str(merger.dtype).removeprefix("torch.") if merger.dtype else "as the base",
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
            raise Interrupted(getattr(e, "signum", signal.SIGINT), f"nothing written to {out}; {kept}") from None
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
