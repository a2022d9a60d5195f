"""The per-task coefficient search, independent of any harness.

A harness wrapper hands over a task's inputs (keyed by doc id) and a function that answers a list
of them with the model as it currently is; `CoefficientSearch` moves the LazyMerge through the
candidates, answers a seeded subset at each (reusing cached answers), and picks the coefficient
with `select_alpha`. Under torch.distributed every rank answers its own share of the subset and the
answers are gathered, so every rank picks the same coefficient.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from tqdm.auto import tqdm

from ..runtime import all_gather
from .cache import GenerationCache
from ..errors import AdammsError
from .rule import draw_subset
from .signals import CONFIDENCE_SIGNALS, DEFAULT_SIGNAL, SIGNALS, choose, needs_confidence

log = logging.getLogger("adamms_eval")
DEFAULT_BATCH = 8


@dataclass
class SearchInput:
    doc_id: Any
    key: str          # identifies the input's prompt and settings in the cache
    payload: Any      # whatever the harness needs to answer it
    group: Any = None  # inputs the task scores together (MME: an image's two questions) share one; drawn whole


class CoefficientSearch:
    """`batch_size`: answers are requested from the harness and appended to the cache this many at a time, so
    a crash loses at most one batch. Batches are fixed slices of the rank's share of the subset, the same in
    a resumed run, so a backend that batches sees the same company for each input."""

    def __init__(self, merged, alphas: list[float], samples: int = 100, seed: int = 0, metric: str = "exact",
                 embedding_model: str | None = None, cache_dir=None, identity: dict | None = None,
                 gather: Callable = all_gather, progress: bool = True, batch_size: int = DEFAULT_BATCH,
                 signal: str = DEFAULT_SIGNAL, record_signals=(), base_identity: dict | None = None):
        self.merged, self.alphas = merged, list(alphas)  # checked by the settings; set() checks again
        self.samples, self.seed, self.metric, self.embedding_model = samples, seed, metric, embedding_model
        self.signal, self.record_signals = signal, list(record_signals)
        self.cache_dir, self.identity, self.gather, self.progress = cache_dir, identity or {}, gather, progress
        if int(batch_size) < 1:
            raise AdammsError(f"search batch size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        # the candidate that is the base itself (linear α = 0): its answers live under the base's own identity
        base_at = getattr(merged.method, "base_at", None)
        self.base_at = base_at if base_identity is not None and cache_dir else None
        self.base_identity = base_identity

    def run(self, task: str, inputs: list[SearchInput], answer: Callable[[list[SearchInput]], list[str]],
            score: Callable[[float, dict], dict] | None = None, rank: int | None = None,
            confidence: Callable[[list[SearchInput], list[str]], list[dict]] | None = None) -> dict:
        """`confidence(inputs, answers)`: token statistics of the model's own answers as it is now (signals nll and
        entropy); asked right after each batch is generated, at the same coefficient, and cached beside it."""
        started = time.time()
        if self.signal in CONFIDENCE_SIGNALS and confidence is None:
            raise AdammsError(f"signal={self.signal} needs the token log-probabilities of the model's own answers, "
                              "and this harness cannot score answers; use signal=consistency")
        scoring = confidence is not None and needs_confidence([self.signal, *self.record_signals])
        local = {i.doc_id: i for i in inputs}
        all_ids = sorted({d for ids in self.gather(sorted(local)) for d in ids})
        if not all_ids:
            raise AdammsError(f"alpha=auto: task {task} has no inputs to search on; give the task data or a fixed alpha")
        groups: dict = {}
        for part in self.gather({i.doc_id: i.group for i in inputs if i.group is not None}):
            groups.update(part)
        subset = draw_subset(all_ids, self.samples, self.seed, groups)
        notes = []
        if groups and len(set(map(repr, groups.values()))) < len(groups) and len(subset) < len(all_ids):
            notes.append(f"the subset is drawn in whole groups of inputs the task scores together: {len(subset)} "
                         f"inputs in {len({repr(groups.get(d, d)) for d in subset})} groups")
        if self.samples > len(all_ids):
            notes.append(f"search_samples={self.samples} is larger than the task ({len(all_ids)} inputs): using all")
            log.warning("%s: %s", task, notes[-1])
        mine = [local[d] for d in subset if d in local]
        cache = GenerationCache(self.cache_dir, self.identity, task, rank) if self.cache_dir else None
        # every rank reads every rank's file: the same note and count on each, so keep one
        dropped = max(self.gather(cache.dropped_lines if cache else 0))
        notes += sorted({n for n in self.gather(cache.note if cache else "") if n})
        got = {a: {i.doc_id: r for i in mine if (r := cache.get(a, i.key)) is not None} if cache else {}
               for a in self.alphas}
        stats = {a: {i.doc_id: json.loads(r) for i in mine if (r := cache.get(a, _stats_key(i))) is not None}
                 if cache and scoring else {} for a in self.alphas}
        base_cache = self.base_cache(task, rank) if self.base_at in self.alphas else None
        from_base = 0
        if base_cache:  # answered by the base before (a plain run, compare's base row, a search with another model)
            known = {i.doc_id: r for i in mine if i.doc_id not in got[self.base_at]
                     and (r := base_cache.get(self.base_at, i.key)) is not None}
            got[self.base_at].update(known)
            from_base = len(known)
        reused = sum(len(g) for g in got.values())
        generated = len(self.alphas) * len(mine) - reused
        batches = [mine[j:j + self.batch_size] for j in range(0, len(mine), self.batch_size)]
        unscorable = []

        def score_batch(alpha, batch) -> bool:
            try:
                self._score(confidence, alpha, [i for i in batch if i.doc_id not in stats[alpha]], got[alpha],
                            stats[alpha], cache, task)
                return True
            except _Unscorable as e:
                unscorable.append(str(e))
                return False
        with tqdm(total=generated, desc=f"adamms search {task}", disable=not self.progress) as bar:
            for alpha in self.alphas:
                if len(got[alpha]) == len(mine) and (not scoring or len(stats[alpha]) == len(mine)):
                    continue  # every answer of this candidate is cached: no need to move the weights
                self.merged.set(alpha)
                bar.set_postfix_str(f"{self.merged.method.coefficient}={alpha:g}")
                for batch in batches:
                    todo = [i for i in batch if i.doc_id not in got[alpha]]
                    if not todo:
                        scoring = scoring and score_batch(alpha, batch)
                        continue
                    fresh = list(answer(todo))
                    if len(fresh) != len(todo):
                        raise AdammsError(f"the harness answered {len(fresh)} of {len(todo)} search inputs of {task}")
                    store = base_cache if alpha == self.base_at and base_cache else cache
                    if store:
                        store.put(alpha, {i.key: r for i, r in zip(todo, fresh)})
                    got[alpha].update((i.doc_id, r) for i, r in zip(todo, fresh))
                    bar.update(len(todo))
                    scoring = scoring and score_batch(alpha, batch)
        merged_answers: dict[float, dict] = {a: {} for a in self.alphas}
        for part in self.gather(got):
            for a, answers in part.items():
                merged_answers[a].update(answers)
        responses = {a: [merged_answers[a][d] for d in subset] for a in self.alphas}
        scoring = all(self.gather(scoring))  # every rank scores, or none uses the scores
        token_stats = None
        if scoring:
            merged_stats: dict[float, dict] = {a: {} for a in self.alphas}
            for part in self.gather(stats):
                for a, per_doc in part.items():
                    merged_stats[a].update(per_doc)
            token_stats = {a: [merged_stats[a][d] for d in subset] for a in self.alphas}
        result = choose(self.signal, responses, token_stats, self.metric, self.embedding_model)
        counts = [sum(x) for x in zip(*self.gather([generated, reused, from_base]))]
        record = {**result.to_json(), "coefficient": self.merged.method.coefficient, "candidates": self.alphas,
                  "subset_size": len(subset), "task_size": len(all_ids), "search_seed": self.seed,
                  "generations": counts[0], "reused_from_cache": counts[1], "reused_base_answers": counts[2],
                  "cache_lines_dropped": dropped,
                  "alpha_per_rank": self.gather(result.alpha),
                  "search_seconds": round(time.time() - started, 2), "notes": notes}
        if self.record_signals:
            record["signals"] = self._other_signals(responses, token_stats, unscorable[0] if unscorable else
                                                    None if confidence is not None else "the harness has no scorer")
        if score is not None:  # search_report=full: the subset's answers too (evidence re-reads them, e.g. Figure 4)
            record["subset"] = subset
            record["responses"] = {str(a): responses[a] for a in self.alphas}
            record["task_scores"] = _transpose({a: score(a, dict(zip(subset, responses[a]))) for a in self.alphas})
        return record

    def _score(self, confidence, alpha, todo, answers, stats, cache, task) -> None:
        if not todo:
            return
        try:
            fresh = list(confidence(todo, [answers[i.doc_id] for i in todo]))
        except (AdammsError, NotImplementedError) as e:
            reason = str(e).split("\n")[0] or type(e).__name__
            if self.signal in CONFIDENCE_SIGNALS:
                raise AdammsError(f"signal={self.signal} needs the token log-probabilities of the model's own "
                                  f"answers, and this harness cannot score them ({reason}); use "
                                  "signal=consistency") from None
            raise _Unscorable(reason) from None
        if len(fresh) != len(todo):
            raise AdammsError(f"the harness scored {len(fresh)} of {len(todo)} search answers of {task}")
        if cache:
            cache.put(alpha, {_stats_key(i): json.dumps(s) for i, s in zip(todo, fresh)})
        stats.update((i.doc_id, s) for i, s in zip(todo, fresh))

    def _other_signals(self, responses, token_stats, why_unscored) -> dict:
        """The α each recorded signal picks from the same answers (a signal that cannot run says why)."""
        out = {}
        wanted = [("consistency", m) for m in ("exact", "embedding")] if "consistency" in self.record_signals else []
        wanted += [(s, None) for s in SIGNALS if s in self.record_signals and s != "consistency"]
        for signal, metric in wanted:
            name = signal if metric is None else f"{signal}_{metric}"
            if signal in CONFIDENCE_SIGNALS and token_stats is None:
                out[name] = {"unavailable": f"the harness cannot score answers ({why_unscored or 'not scored'})"}
                continue
            try:
                res = choose(signal, responses, token_stats, metric or "exact", self.embedding_model)
            except AdammsError as e:  # e.g. no sentence-transformers for the embedding metric
                out[name] = {"unavailable": str(e)}
                continue
            out[name] = {"alpha": res.alpha, "scores": {str(a): v for a, v in res.scores.items()}}
        return out

    def base_cache(self, task: str, rank: int | None = None) -> GenerationCache | None:
        """The cache of the base's own answers to `task` (None when no candidate is the base)."""
        if self.base_at is None:
            return None
        return GenerationCache(self.cache_dir, self.base_identity, task, rank)

    def remember_base_answers(self, task: str, answers: dict[str, str], rank: int | None = None) -> None:
        """Keep the base's answers to `task`'s inputs ({SearchInput.key: answer}) that a run at the base's coefficient
        produced anyway, so that a later search does not generate them again."""
        cache = self.base_cache(task, rank)
        if cache is not None:
            cache.put(self.base_at, {k: a for k, a in answers.items() if cache.get(self.base_at, k) is None})


class _Unscorable(Exception):
    """The harness could not score answers; only recorded signals wanted it, so the search goes on without."""


def _stats_key(item: SearchInput) -> str:
    """The cache key of an answer's token statistics (beside the answer's own key)."""
    return f"{item.key}#token_stats"


def _transpose(by_alpha: dict[float, dict]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for alpha, metrics in by_alpha.items():
        for name, value in metrics.items():
            out.setdefault(name, {})[str(alpha)] = value
    return out
