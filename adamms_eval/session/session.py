"""One AdaMMS evaluation run inside a harness, independent of the harness (lmms-eval, VLMEvalKit, compare).

A harness wrapper does four things, in this order:

1. ``settings, backend_kwargs = parse_settings(options, backend_params=..., spell=...)`` (session/settings.py): every
   setting checked before anything loads.
2. ``session = MergeSession(settings, backend_name, harness, spell, log)``: the preflight plan of the pair (headers
   and configs only: an incompatible pair fails before the base loads).
3. ``session.attach(model, rank=..., batch_size=...)`` once the base model is loaded: the `LazyMerge` that owns its
   weights (built from the preflight plan and the settings' method, set to a fixed α at once) and the search.
4. Per task, ``session.run_task(task)`` with a `HarnessTask`: the one per-task sequence every harness follows
   (choose the coefficient, say it, write the record, move the weights). ``session.write_records(folder)``
   writes `adamms_search.json` and the plots at the end of a run.

`adamms compare` drives a session through the same calls plus ``force(coefficient)`` and ``forget(task)``.
"""
from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path
from typing import Callable, Protocol

from ..errors import AdammsError
from ..runtime import current_rank
from ..search.cache import cache_dir_problem, default_cache_dir
from ..search.runner import SearchInput
from .records import RECORD_NAME, default_output_dir, recorded, run_name, write_records
from .settings import SETTINGS, Settings, lmms_spell, parse_settings

log = logging.getLogger("adamms_eval")

__all__ = ["HarnessTask", "MergeSession", "RECORD_NAME", "SETTINGS", "Settings", "default_output_dir", "parse_settings",
           "console", "preflight_plan"]


class HarnessTask(Protocol):
    """What a harness hands the session for one task (an lmms-eval task, a VLMEvalKit dataset)."""
    name: str
    output_dir: Path | None           # where rank 0 writes the record after a search (None: at the end only)
    score: Callable[[float, dict], dict] | None  # search_report=full: the task's own score of {doc: answer}

    def search_inputs(self) -> list[SearchInput]:
        """This rank's inputs of the task (asked for only when the session searches)."""

    def answer(self, inputs: list[SearchInput]) -> list[str]:
        """The model's answers to `inputs`, as it is now."""

    # Optional (signals nll / entropy): token statistics of the model's own `answers` to `inputs`, as it is now, one
    # {"nll": Σ −log p, "entropy": Σ H, "tokens": n} per answer, from one teacher-forced pass (no generation). None
    # or absent: the harness cannot score; a scorer that fails raises AdammsError with the reason in one line.
    confidence: Callable[[list[SearchInput], list[str]], list[dict]] | None


def console(message: str) -> None:
    """A session's channel for a harness whose own log does not reach the console (VLMEvalKit's runner)."""
    print(message, file=sys.stderr, flush=True)


def preflight_plan(settings: Settings, spell: Callable = lmms_spell):
    """The merge plan from headers and configs only: fails on an incompatible pair before any weights load."""
    from ..arch.checkpoint import Checkpoint
    from ..arch.mapping import build_plan
    try:
        return build_plan(Checkpoint(settings.base), Checkpoint(settings.other),
                          Checkpoint(settings.pretrained) if settings.pretrained else None,
                          settings.arch.get("base_arch"), settings.arch.get("other_arch"),
                          settings.arch.get("pretrained_arch"))
    except AdammsError as e:  # the planner speaks `adamms` CLI flags; say it the way this harness takes options
        raise AdammsError(respell(str(e), spell)) from None


def respell(message: str, spell: Callable) -> str:
    """Rewrite `--base-arch NAME` / `--pretrained DIR` advice of the adamms CLI into this harness's spelling."""
    return re.sub(r"--(base-arch|other-arch|pretrained-arch|pretrained)\b(?: ([A-Z]+))?",
                  lambda m: spell(m.group(1).replace("-", "_"), m.group(2) or "VALUE"), message)


class MergeSession:
    """Owns the merge of one run: preflight plan, LazyMerge, per-task coefficients and their records."""

    def __init__(self, settings: Settings, backend_name: str, harness: str = "lmms_eval",
                 spell: Callable = lmms_spell, say: Callable[[str], None] | None = None):
        self.settings, self.backend_name, self.harness = settings, backend_name, harness
        self.plan = preflight_plan(settings, spell)
        self.spell = spell
        if settings.auto:  # a search keeps its answers: a cache folder it cannot write is refused before loading
            problem = cache_dir_problem(settings.cache_dir or default_cache_dir())
            if problem:
                raise AdammsError(f"{problem}; give a folder this run can write with {spell('cache_dir', 'DIR')}")
        self.run_name = run_name(settings)
        self.say = say or log.info  # the harness's own log channel: what was chosen and where the record went
        self.merged = None
        self.search = None
        self.forced: float | None = None
        self.records: dict[str, dict] = {}
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S")

    @property
    def alpha(self) -> float | None:
        return self.settings.alpha

    @property
    def auto(self) -> bool:
        return self.settings.auto

    def attach(self, model, rank: int = 0, base_tokenizer=None, backend_args: dict | None = None, code_files=(),
               batch_size: int | None = None):
        """Build the LazyMerge over the loaded base model (and the search); a fixed α is set at once.

        backend_args (everything passed to the backend) and code_files (the harness wrapper's sources) are part
        of the cache identity: a change to either never reuses old answers. batch_size: how many search inputs
        the harness answers at once (the backend's batch size) unless search_batch_size says otherwise; each batch is
        cached as soon as it is answered."""
        from ..merging.lazy import LazyMerge
        from ..search.runner import CoefficientSearch
        s = self.settings
        self.merged = LazyMerge(model, s.other, s.merge_method, s.pretrained, storage=s.storage,
                                base_tokenizer=base_tokenizer or s.base, plan=self.plan, progress=rank == 0)
        if not s.auto:
            self.merged.set(s.alpha)
        from ..search.identity import base_identity
        identity = self._identity(backend_args, code_files)
        self.search = CoefficientSearch(self.merged, s.alphas, s.search_samples, s.search_seed, s.metric,
                                        s.embedding_model, s.cache_dir or default_cache_dir(), identity,
                                        progress=rank == 0, base_identity=base_identity(identity),
                                        **({"batch_size": int(n)} if (n := s.search_batch_size or batch_size) else {}),
                                        signal=s.signal, record_signals=s.record_signals)
        return self.merged

    def detach(self) -> None:
        """Drop the LazyMerge (its paths) and the search; attach again to use the session."""
        self.merged = self.search = None

    def _identity(self, backend_args, code_files) -> dict:
        """What the cached answers depend on (search.identity: files by size and mtime, method, backend)."""
        from ..search.identity import search_identity
        s = self.settings
        return search_identity(base=s.base, other=s.other, pretrained=s.pretrained, method=self.merged.method.describe(),
                               harness=self.harness.replace("_", "-"), backend=self.backend_name,
                               backend_args=backend_args, code_files=code_files)

    # -- per task ------------------------------------------------------------------------------------------------
    def force(self, coefficient: float | None) -> None:
        """Run the next tasks at this coefficient (None: back to the settings' fixed value or search)."""
        self.forced = None if coefficient is None else self.settings.merge_method.check_coefficient(coefficient)

    def forget(self, task: str) -> None:
        """Search `task` again the next time it runs."""
        self.records.pop(task, None)

    def resume(self, folder, task: str, task_size: int) -> bool:
        """Take `task`'s α from the record an earlier run with these settings wrote in `folder` (same number of
        inputs), instead of searching; True when it did."""
        rec = recorded(folder, self.run_name, task, task_size) if task not in self.records else None
        if rec:
            self.records[task] = rec
            self.say(f"adamms: {task}: {rec.get('coefficient', 'alpha')}={rec['alpha']} from the record of the "
                     f"earlier run ({folder})")
        return rec is not None

    def run_task(self, task: HarnessTask) -> float:
        """The coefficient `task` runs at, with the weights moved there: the forced one, the fixed one, or the one
        AdaMMS searching picks (once per task: the record says what was chosen and why)."""
        if self.forced is not None:
            alpha = self.forced
        elif not self.settings.auto:
            alpha = self.settings.alpha
        else:
            if task.name not in self.records:
                self.records[task.name] = self._search(task)
                rec = self.records[task.name]
                if current_rank() == 0:  # the rank at run time: lmms-eval assigns its ranks after loading
                    self.say(f"adamms: {task.name}: chose {rec['coefficient']}={rec['alpha']} D={rec['scores']} "
                             f"(n={rec['subset_size']}, {rec['search_seconds']} s)")
                    if task.output_dir is not None:
                        self.write_records(task.output_dir)
            alpha = self.records[task.name]["alpha"]
        self.set_for(alpha)
        return alpha

    def _search(self, task: HarnessTask) -> dict:
        from ..search.signals import CONFIDENCE_SIGNALS
        if self.settings.signal in CONFIDENCE_SIGNALS and getattr(task, "confidence", None) is None:
            raise AdammsError(f"{self.spell('signal', self.settings.signal)} needs the token log-probabilities of the "
                              f"model's own answers, and the {self.harness.replace('_', '-')} harness cannot score "
                              f"answers; use {self.spell('signal', 'consistency')}")
        unavailable = []
        score = task.score
        score = _guarded(score, unavailable) if score is not None and self.settings.search_report == "full" else None
        record = self.search.run(task.name, task.search_inputs(), task.answer, score,
                                 confidence=getattr(task, "confidence", None))
        if unavailable:
            record.pop("task_scores", None)
            record["task_scores_unavailable"] = unavailable[0]
            log.warning("adamms: %s: no task score per candidate: %s", task.name, unavailable[0])
        return record

    def at_base(self) -> bool:
        """Whether the weights are now the base's own (linear α = 0): answers made now are the base's answers."""
        return self.search is not None and self.search.base_at is not None and self.merged.value == self.search.base_at

    def remember_base_answers(self, task: str, answers: dict[str, str]) -> None:
        """A harness that just answered `task`'s inputs at the base ({SearchInput.key: answer}) keeps them for later
        searches on this base (with any other model): their α = 0 candidate is not generated again."""
        if self.at_base():
            self.search.remember_base_answers(task, answers, current_rank())

    def set_for(self, alpha: float) -> None:
        if self.merged.value != alpha:  # a fixed α is set once, at attach
            self.merged.set(alpha)

    # -- records ---------------------------------------------------------------------------------------------
    def record(self) -> dict:
        tasks = dict(self.records)
        if not self.settings.auto and not tasks:
            tasks = {"*": {"alpha": self.settings.alpha, "coefficient": self.settings.coefficient, "searched": False}}
        return {"run": {**self.settings.describe(), "backend": self.backend_name, "harness": self.harness,
                        "run_name": self.run_name, "started": self.started}, "tasks": tasks}

    def write_records(self, folder) -> Path:
        """adamms_search.json (+ one D-vs-α plot per searched task) in `folder` (session.records.write_records),
        and where it went, on the harness's channel (every harness says it the same way)."""
        path = write_records(folder, self.record(), self.records)
        self.say(f"adamms: search record -> {path}")
        return path


def _guarded(score: Callable, unavailable: list) -> Callable:
    """A scorer that turns its failure into a note (search_report=full is a report: it never fails a run)."""
    def run(alpha, answers):
        if unavailable:
            return {}
        try:
            out = score(alpha, answers)
        except Exception as e:  # a task's own aggregation may refuse a subset (MME needs both questions of an image)
            unavailable.append(str(e) if isinstance(e, AdammsError) else f"{type(e).__name__}: {e}".rstrip(": "))
            return {}
        if not out:
            unavailable.append("the task reports no metric with an aggregation function")
        return out
    return run
