"""The per-task coefficient search, independent of any harness.

A harness wrapper hands over a task's inputs (keyed by doc id) and a function that answers a list
of them with the model as it currently is; `CoefficientSearch` moves the LazyMerge through the
candidates, answers a seeded subset at each (reusing cached answers), and picks the coefficient
with `select_alpha`. Under torch.distributed every rank answers its own share of the subset and the
answers are gathered, so every rank picks the same coefficient.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from tqdm.auto import tqdm

from .cache import GenerationCache
from .errors import AdammsError
from .search import draw_subset, select_alpha

log = logging.getLogger("adamms_eval")


@dataclass
class SearchInput:
    doc_id: Any
    key: str          # identifies the input's prompt and settings in the cache
    payload: Any      # whatever the harness needs to answer it


def all_gather(obj) -> list:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


class CoefficientSearch:
    def __init__(self, merged, alphas: list[float], samples: int = 100, seed: int = 0, metric: str = "exact",
                 embedding_model: str | None = None, cache_dir=None, identity: dict | None = None,
                 gather: Callable = all_gather, progress: bool = True):
        self.merged, self.alphas = merged, [merged.method.check_coefficient(a) for a in alphas]
        self.samples, self.seed, self.metric, self.embedding_model = samples, seed, metric, embedding_model
        self.cache_dir, self.identity, self.gather, self.progress = cache_dir, identity or {}, gather, progress

    def run(self, task: str, inputs: list[SearchInput], answer: Callable[[list[SearchInput]], list[str]],
            score: Callable[[float, dict], dict] | None = None) -> dict:
        started = time.time()
        local = {i.doc_id: i for i in inputs}
        all_ids = sorted({d for ids in self.gather(sorted(local)) for d in ids})
        if not all_ids:
            raise AdammsError(f"alpha=auto: task {task} has no inputs to search on; give the task data or a fixed alpha")
        subset = draw_subset(all_ids, self.samples, self.seed)
        notes = []
        if self.samples > len(all_ids):
            notes.append(f"search_samples={self.samples} is larger than the task ({len(all_ids)} inputs): using all")
            log.warning("%s: %s", task, notes[-1])
        mine = [local[d] for d in subset if d in local]
        cache = GenerationCache(self.cache_dir, self.identity, task) if self.cache_dir else None
        if cache is not None and cache.note:
            notes.append(cache.note)
        responses, generated, reused = {}, 0, 0
        for alpha in tqdm(self.alphas, desc=f"adamms search {task}", disable=not self.progress):
            self.merged.set(alpha)
            got = {i.doc_id: cache.get(alpha, i.key) for i in mine} if cache else {}
            todo = [i for i in mine if got.get(i.doc_id) is None]
            if todo:
                fresh = dict(zip((i.doc_id for i in todo), answer(todo)))
                got.update(fresh)
                if cache:
                    cache.put(alpha, {i.key: fresh[i.doc_id] for i in todo})
            generated += len(todo)
            reused += len(mine) - len(todo)
            merged_answers = {}
            for part in self.gather(got):
                merged_answers.update(part)
            responses[alpha] = [merged_answers[d] for d in subset]
        result = select_alpha(responses, self.metric, self.embedding_model)
        counts = [sum(x) for x in zip(*self.gather([generated, reused]))]
        record = {**result.to_json(), "coefficient": self.merged.method.coefficient, "candidates": self.alphas,
                  "subset_size": len(subset), "task_size": len(all_ids), "search_seed": self.seed,
                  "generations": counts[0], "reused_from_cache": counts[1],
                  "alpha_per_rank": self.gather(result.alpha),
                  "search_seconds": round(time.time() - started, 2), "notes": notes}
        if score is not None:
            record["task_scores"] = _transpose({a: score(a, dict(zip(subset, responses[a]))) for a in self.alphas})
        return record


def _transpose(by_alpha: dict[float, dict]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for alpha, metrics in by_alpha.items():
        for name, value in metrics.items():
            out.setdefault(name, {})[str(alpha)] = value
    return out
