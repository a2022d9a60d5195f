"""The mapping base <- other, composed from two adapters (other -> canonical slots -> base tensors).

Built from tensor headers and configs only. Each base tensor becomes a `PlanEntry`: merged (with
where each of its slots comes from in the other model and in θ0) or kept (with the reason).
Paper, section 3.1 and Appendix B: a duplicated multimodal copy in the base maps, slot by slot, to the
other's copy for the same modality where it has one (CogVLM's vision expert k/v <- mPLUG-Owl2's
multiway.1 k/v), else to the other's original (shared / text) weight (CogVLM's vision-expert q <-
mPLUG's shared q_proj); a tensor without counterpart is kept.
"""
from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .adapters import VOCAB_SLOTS, Adapter, LMShape, detect
from ..errors import AdammsError
from ..fingerprints import dir_stamps
from .vocab import VocabAlignment, align_vocab


log = logging.getLogger("adamms_eval")


@dataclass(frozen=True)
class SlotRef:
    """Where one canonical slot lives in a checkpoint: a whole tensor, or one part of a fused tensor."""
    key: str
    part: int | None = None          # index into `parts` when the tensor is fused
    parts: tuple[str, ...] = ()      # slot names of the fused tensor, in row order


@dataclass
class PlanEntry:
    key: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    group: str
    slots: tuple[str, ...] = ()
    other: list[SlotRef] = field(default_factory=list)
    pretrained: list[SlotRef] | None = None
    reason: str = ""                 # why kept; empty when merged
    vocab: VocabAlignment | None = None
    branch: str | None = None        # duplicated copy's own name (CogVLM vision_expert, mPLUG multiway_vision)

    @property
    def merged(self) -> bool:
        return not self.reason

    @property
    def canonical_name(self) -> str:
        """Layout-independent name (same for a checkpoint on disk and the loaded model), e.g. to seed DARE.

        Uses the copy's own branch name, not the modality it is matched by, so DARE masks are those of before."""
        return (f"{self.branch}:" if self.branch else "") + "+".join(self.slots)


class ModelSide:
    """One checkpoint seen through its adapter: slot -> SlotRef for originals and duplicated copies."""

    def __init__(self, source, adapter: Adapter):
        self.source = source
        self.adapter = adapter
        self.shape: LMShape = adapter.lm_shape(source.config)
        self.roles = {k: adapter.classify(k) for k in source.keys()}
        self.original: dict[str, SlotRef] = {}
        self.copies: dict[tuple[str, str], SlotRef] = {}
        for key, role in self.roles.items():
            for i, slot in enumerate(role.slots):
                ref = SlotRef(key, i, role.slots) if len(role.slots) > 1 else SlotRef(key)
                if role.duplicate_of:
                    self.copies[(role.duplicate_of, slot)] = ref
                else:
                    self.original[slot] = ref

    def rows_of(self, ref: SlotRef) -> int:
        info = self.source.info(ref.key)
        return self.shape.rows(ref.parts[ref.part]) if ref.part is not None else info.shape[0]

    def slot_shape(self, ref: SlotRef) -> tuple[int, ...]:
        return (self.rows_of(ref),) + tuple(self.source.info(ref.key).shape[1:])

    def gather(self, refs: list[SlotRef]) -> torch.Tensor:
        """Assemble the tensor made of these slots (concatenated along dim 0 when several)."""
        pieces = []
        for ref in refs:
            t = self.source.get(ref.key)
            if ref.part is not None:
                sizes = [self.shape.rows(s) for s in ref.parts]
                t = t.narrow(0, sum(sizes[:ref.part]), sizes[ref.part])
            pieces.append(t)
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, 0)

    def ref_rows(self, ref: SlotRef) -> int:
        if ref.part is None:
            return self.source.info(ref.key).shape[0]
        return self.shape.rows(ref.parts[ref.part])

    def gather_rows(self, refs: list[SlotRef], start: int, end: int) -> torch.Tensor:
        """Rows [start, end) of `gather(refs)`, reading only those rows."""
        pieces, offset = [], 0
        for ref in refs:
            n = self.ref_rows(ref)
            lo, hi = max(start, offset), min(end, offset + n)
            if lo < hi:
                first = 0
                if ref.part is not None:
                    first = sum(self.shape.rows(s) for s in ref.parts[:ref.part])
                pieces.append(self.source.get_rows(ref.key, first + lo - offset, first + hi - offset))
            offset += n
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, 0)


class MergePlan:
    def __init__(self, base: ModelSide, other: ModelSide, pretrained: ModelSide | None, entries: list[PlanEntry],
                 vocab: VocabAlignment, vocab_note: str):
        self.base, self.other, self.pretrained = base, other, pretrained
        self.entries = entries
        self.vocab, self.vocab_note = vocab, vocab_note
        self.same_model = ""  # other is the base itself (see same_model): merging changes nothing

    def rebase(self, base_src) -> "MergePlan":
        """The same pairing for the base's tensors under other names (the loaded model's, where transformers 5
        renamed the checkpoint's keys): other and θ0 stay open, adapters and vocabulary alignment are reused; only
        the base's own tensors are classified again."""
        base = ModelSide(base_src, self.base.adapter)
        check_compatible(self.base, base, "loaded base")
        entries = [_entry(key, base, self.other, self.pretrained, self.vocab) for key in base_src.keys()]
        plan = MergePlan(base, self.other, self.pretrained, entries, self.vocab, self.vocab_note)
        plan.same_model = self.same_model
        return plan

    @property
    def merged(self) -> list[PlanEntry]:
        return [e for e in self.entries if e.merged]

    def warnings(self) -> list[str]:
        """What the counts alone would hide: language-model tensors of the base left unmerged."""
        out = [self.same_model] if self.same_model else []
        for what, side in (("other", self.other), ("pretrained", self.pretrained)):
            if side is None:
                continue
            lost = [e.key for e in self.entries if e.reason == f"no counterpart in the {what} model"]
            head = [k for k in lost if self.base.roles[k].slots == ("lm_head.weight",)]
            if head and "lm_head.weight" not in side.original and "embed_tokens.weight" in side.original:
                tied = side.source.config.get("tie_word_embeddings")
                out.append(f"the {what} model ({side.adapter.name}) has no lm_head tensor"
                           f"{' (tie_word_embeddings)' if tied else ''}: the base's {head[0]} is NOT merged and "
                           "keeps the base's values; only the embeddings move")
                lost = [k for k in lost if k not in head]
            if lost:
                out.append(f"{len(lost)} language-model tensors of the base have no counterpart in the {what} model "
                           f"and keep the base's values (first: {lost[0]})")
        return out

    def summary(self) -> dict:
        groups: dict[str, dict] = defaultdict(lambda: {"tensors": 0, "merged": 0, "kept": Counter(), "vocab_aligned": 0})
        for e in self.entries:
            g = groups[e.group]
            g["tensors"] += 1
            if e.merged:
                g["merged"] += 1
                g["vocab_aligned"] += e.vocab is not None
            else:
                g["kept"][e.reason] += 1
        return {
            "base": {"path": str(self.base.source.path), "architecture": self.base.adapter.name,
                     "family": self.base.shape.family},
            "other": {"path": str(self.other.source.path), "architecture": self.other.adapter.name},
            "pretrained": None if self.pretrained is None else
            {"path": str(self.pretrained.source.path), "architecture": self.pretrained.adapter.name},
            "tensors": len(self.entries), "merged": len(self.merged),
            "merged_parameters": sum(_merged_numel(e) for e in self.merged),
            "vocabulary": self.vocab_note,
            "groups": {k: {**v, "kept": dict(v["kept"])} for k, v in sorted(groups.items())},
            "warnings": self.warnings(),
        }


def _merged_numel(e: PlanEntry) -> int:
    n = 1
    for s in e.shape[1:]:
        n *= s
    return n * (e.vocab.count if e.vocab is not None else e.shape[0])


def check_compatible(base: ModelSide, other: ModelSide, what: str = "other") -> None:
    problems = base.shape.mismatches(other.shape)
    if problems:
        raise AdammsError(f"cannot merge {other.source.path} ({what}, {other.adapter.name}) into "
                          f"{base.source.path} ({base.adapter.name}): language models differ: {'; '.join(problems)}; "
                          "AdaMMS merges models grown from the same pretrained language model")


def build_plan(base_src, other_src, pretrained_src=None, base_arch: str | None = None, other_arch: str | None = None,
               pretrained_arch: str | None = None, base_tokenizer=None, other_tokenizer=None) -> MergePlan:
    base = ModelSide(base_src, detect(base_src.config, base_arch, "base"))
    other = ModelSide(other_src, detect(other_src.config, other_arch, "other"))
    check_compatible(base, other)
    theta0 = None
    if pretrained_src is not None:
        theta0 = ModelSide(pretrained_src, detect(pretrained_src.config, pretrained_arch, "pretrained"))
        check_compatible(base, theta0, "pretrained")
    vocab, vocab_note = align_vocab(base, other, theta0, base_tokenizer or base_src.path,
                                    other_tokenizer or other_src.path)
    entries = [_entry(key, base, other, theta0, vocab) for key in base_src.keys()]
    plan = MergePlan(base, other, theta0, entries, vocab, vocab_note)
    how = same_model(base_src, other_src)
    if how:
        plan.same_model = (f"other {other_src.path} is {how} as base {base_src.path}: every coefficient gives the "
                           "base back unchanged; pass the other model's folder as other")
        log.warning("adamms: warning: %s", plan.same_model)
    return plan


def same_model(a, b) -> str:
    """How checkpoint `b` is checkpoint `a` (from paths and file stamps only, nothing read), or "": the same folder,
    the same weight files (links into one Hugging Face cache blob), or a copy with every file's size and mtime equal
    (cp -a, rsync -a)."""
    pa, pb = Path(a.path), Path(b.path)
    if not (pa.is_dir() and pb.is_dir()):
        return ""
    if pa.resolve() == pb.resolve():
        return "the same folder"
    fa, fb = sorted(getattr(a, "files", [])), sorted(getattr(b, "files", []))
    try:
        if fa and len(fa) == len(fb) and all(os.path.samefile(x, y) for x, y in zip(fa, fb)):
            return "the same weight files"
    except OSError:
        pass
    stamps = dir_stamps(pa)
    return "a copy of the same files" if stamps and stamps == dir_stamps(pb) else ""


def _entry(key, base: ModelSide, other: ModelSide, theta0: ModelSide | None, vocab) -> PlanEntry:
    info = base.source.info(key)
    role = base.roles[key]
    e = PlanEntry(key, info.shape, info.dtype, role.group, role.slots, branch=role.branch)
    if role.ignored:
        e.reason = "buffer the model recomputes (never merged; base copy kept)"
        return e
    if not role.is_lm:
        e.reason = f"{role.group}: no counterpart (base weights kept)" if role.group != "unrecognised" else \
            f"not described by the {base.adapter.name} adapter (kept)"
        return e
    if not info.dtype.is_floating_point:
        e.reason = "not a floating-point tensor"
        return e
    e.other = [_lookup(other, slot, role.duplicate_of) for slot in role.slots]
    if None in e.other:
        e.reason = "no counterpart in the other model"
        return e
    if theta0 is not None:
        e.pretrained = [theta0.original.get(slot) for slot in role.slots]
        if None in e.pretrained:
            e.reason = "no counterpart in the pretrained model"
            return e
    if role.slots[0] in VOCAB_SLOTS:
        e.vocab = vocab
        if vocab.count == 0:
            e.reason = "no vocabulary rows in common"
        return e
    _check_shapes(e, base, other, e.other, "other")
    if theta0 is not None:
        _check_shapes(e, base, theta0, e.pretrained, "pretrained")
    return e


def _lookup(side: ModelSide, slot: str, modality: str | None) -> SlotRef | None:
    """The other's copy for the same modality where it has one for this slot, else its original weight."""
    if modality and (modality, slot) in side.copies:
        return side.copies[(modality, slot)]
    return side.original.get(slot)


def _check_shapes(e: PlanEntry, base: ModelSide, side: ModelSide, refs: list[SlotRef], what: str) -> None:
    rows = sum(side.rows_of(r) for r in refs)
    shape = (rows,) + side.slot_shape(refs[0])[1:]
    if shape != e.shape:
        raise AdammsError(f"{e.key}: shape {list(e.shape)} in the base but {list(shape)} from the {what} model "
                          f"({refs[0].key}); the checkpoints do not share one language-model architecture")
