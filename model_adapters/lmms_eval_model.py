"""lmms-eval model `adamms`: a built-in lmms-eval backend whose weights AdaMMS moves in place.

The base architecture's own lmms-eval wrapper (qwen2_vl, llava_hf) loads the base, builds prompts,
processes images and generates; `adamms` owns its weights through a LazyMerge. With alpha=auto each
task first answers a seeded subset at every candidate coefficient, the coefficient with the most
consistent answers is chosen (AdaMMS searching), then the whole task runs at it.
"""
from __future__ import annotations

import collections
import copy
from pathlib import Path

import torch
from loguru import logger as eval_logger
from lmms_eval.api.instance import GenerationResult
from lmms_eval.api.model import lmms
from lmms_eval.models import get_model

from adamms_eval.autosearch import CoefficientSearch, SearchInput
from adamms_eval.cache import default_cache_dir, digest
from adamms_eval.checkpoint import file_stamps, load_config, weight_files
from adamms_eval.errors import AdammsError
from adamms_eval.lazy import LazyMerge
from adamms_eval.methods import REGISTRY
from adamms_eval.report import plot_search
from adamms_eval.search import DEFAULT_ALPHAS, parse_alphas, write_json_atomic

from .loglikelihood import continuation_nll

BACKENDS = {"qwen2_vl": "qwen2_vl", "llava": "llava_hf", "llava_onevision": "llava_hf", "llava_next": "llava_hf"}
RECORD_NAME = "adamms_search.json"


def _choose_backend(base: str, backend: str | None) -> str:
    if backend:
        return backend
    model_type = load_config(base).get("model_type")
    if model_type not in BACKENDS:
        raise AdammsError(f"no lmms-eval backend known for model_type {model_type!r}; pass backend=NAME "
                          f"(known: {', '.join(sorted(set(BACKENDS.values())))})")
    return BACKENDS[model_type]


class Adamms(lmms):
    is_simple = True

    def __init__(self, base: str, other: str, alpha="auto", method: str = "linear", pretrained: str | None = None,
                 alphas=DEFAULT_ALPHAS, search_samples: int = 100, search_seed: int = 0, metric: str = "exact",
                 embedding_model: str | None = None, backend: str | None = None, cache_dir: str | None = None,
                 search_report: str = "scores", search_output: str | None = None, storage: str = "auto",
                 batch_size=1, max_batch_size=None, device=None, **kwargs):
        super().__init__()
        if method not in REGISTRY:
            raise AdammsError(f"unknown method {method!r}; choose one of {', '.join(REGISTRY)}")
        method_names = set(REGISTRY[method].params) | {"lambda"}
        params = {k: kwargs.pop(k) for k in list(kwargs) if k in method_names}
        self.backend_name = _choose_backend(base, backend)
        cpu = not torch.cuda.is_available()
        device = device or ("cpu" if cpu else "cuda")
        if cpu:
            kwargs.setdefault("device_map", "cpu")
        cls = get_model(self.backend_name, force_simple=True)
        self.backend = cls(pretrained=base, device=device, batch_size=batch_size, **kwargs)
        self.backend.task_dict = self.task_dict  # the evaluator fills ours; share the same dict
        self.merged = LazyMerge(self.backend.model, other, method, pretrained, params, storage=storage,
                                base_tokenizer=base)
        self.auto = str(alpha).lower() == "auto"
        self.alphas = parse_alphas(alphas)
        self.fixed = None if self.auto else self.merged.method.check_coefficient(float(alpha))
        if self.fixed is not None:
            self.merged.set(self.fixed)
        identity = {"base": str(Path(base).resolve()), "other": str(Path(other).resolve()),
                    "pretrained": str(Path(pretrained).resolve()) if pretrained else None,
                    "method": self.merged.method.describe(), "backend": self.backend_name,
                    "stamps": {**file_stamps(weight_files(base)), **self.merged.other.stamp()}}  # stats only
        self.search = CoefficientSearch(self.merged, self.alphas, int(search_samples), int(search_seed), metric,
                                        embedding_model, Path(cache_dir) if cache_dir else default_cache_dir(),
                                        identity, progress=self.rank == 0)
        if search_report not in ("scores", "full"):
            raise AdammsError(f"search_report={search_report!r}: choose scores or full")
        self.search_report, self.search_output = search_report, search_output
        self.records: dict[str, dict] = {}
        self.run_info = {"base": base, "other": other, "method": self.merged.method.describe(),
                         "pretrained": pretrained, "backend": self.backend_name,
                         "alpha": "auto" if self.auto else self.fixed}
        self._output_dir = None
        self._device = torch.device(device)

    @property
    def device(self):
        return self._device

    @property
    def model(self):
        return self.backend.model

    # -- request plumbing ------------------------------------------------------------------------------
    @staticmethod
    def _fresh(req):
        """A copy whose generation settings the backend may mutate (it pops `until`)."""
        c = copy.copy(req)
        c.arguments = tuple(copy.deepcopy(a) if isinstance(a, dict) else a for a in req.arguments)
        return c

    def _by_task(self, requests) -> dict[str, list[int]]:
        groups = collections.OrderedDict()
        for i, r in enumerate(requests):
            groups.setdefault(r.task_name, []).append(i)
        return groups

    def _note_output_dir(self, requests) -> None:
        if self._output_dir is not None or not requests:
            return
        cli = getattr(getattr(requests[0].args[2], "__self__", None), "args", None)  # doc_to_visual is bound to the Task
        if cli is not None and getattr(cli, "output_path", None):
            from lmms_eval.loggers.evaluation_tracker import GeneralConfigTracker
            from lmms_eval.utils import sanitize_model_name
            name = sanitize_model_name(GeneralConfigTracker._get_model_name(cli.model_args))
            self._output_dir = Path(cli.output_path) / name
        elif self.search_output:
            self._output_dir = Path(self.search_output)

    def _alpha_for(self, task: str, requests, answer, score) -> float:
        if not self.auto:
            return self.fixed
        if task not in self.records:
            real = [r for r in requests if not r.metadata.get("__padding_only__")]
            inputs = self._search_inputs(real)
            record = self.search.run(task, inputs, answer, score if self.search_report == "full" else None)
            self.records[task] = record
            eval_logger.info(f"adamms: {task}: chose {record['coefficient']}={record['alpha']} "
                             f"D={record['scores']} (n={record['subset_size']}, {record['search_seconds']} s)")
            self._write_records()
        return self.records[task]["alpha"]

    @staticmethod
    def _search_inputs(requests) -> list[SearchInput]:
        docs = collections.OrderedDict()
        for r in requests:
            docs.setdefault(r.doc_id, []).append(r)
        return [SearchInput(d, f"{d}:{digest([str(a) for a in (rs[0].args[0], rs[0].args[1])] + [len(rs)])}", rs)
                for d, rs in docs.items()]

    # -- lmms API ------------------------------------------------------------------------------------------
    def generate_until(self, requests):
        self._note_output_dir(requests)
        out = [None] * len(requests)
        for task, idx in self._by_task(requests).items():
            reqs = [requests[i] for i in idx]

            def answer(inputs):
                return [str(x) for x in self.backend.generate_until([self._fresh(i.payload[0]) for i in inputs])]

            alpha = self._alpha_for(task, reqs, answer, self._scorer(reqs, generate=True))
            if self.merged.value != alpha:  # a fixed α is set once, at construction
                self.merged.set(alpha)
            for i, resp in zip(idx, self.backend.generate_until([self._fresh(r) for r in reqs])):
                out[i] = resp
        return out

    def loglikelihood(self, requests):
        self._note_output_dir(requests)
        out = [None] * len(requests)
        for task, idx in self._by_task(requests).items():
            reqs = [requests[i] for i in idx]

            def answer(inputs):  # a multiple-choice input answers with its most likely choice
                return [min(i.payload, key=lambda r: self._nll(r)[0]).args[1].strip() for i in inputs]

            alpha = self._alpha_for(task, reqs, answer, self._scorer(reqs, generate=False))
            if self.merged.value != alpha:  # a fixed α is set once, at construction
                self.merged.set(alpha)
            for i, r in zip(idx, reqs):
                out[i] = GenerationResult(text=self._nll(r))  # lmms-eval would stringify a bare tuple
        return out

    def _nll(self, req) -> tuple[float, bool]:
        ctx, continuation, doc_to_visual, doc_id, task, split = req.args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
        return continuation_nll(self.backend, self.backend_name, ctx, continuation, visuals)

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("adamms does not support multi-round generation yet")

    # -- reporting -----------------------------------------------------------------------------------------
    def _scorer(self, reqs, generate: bool):
        """Task score of the search answers at each candidate (search_report=full; uses labels, report only)."""
        task_obj = getattr(reqs[0].args[2], "__self__", None)
        split = reqs[0].args[5]
        if task_obj is None:
            return None

        def score(alpha, answers: dict) -> dict:
            totals = collections.defaultdict(list)
            for doc_id, ans in answers.items():
                doc = self.task_dict[reqs[0].task_name][split][doc_id]
                if generate:
                    res = task_obj.process_results(doc, [ans])
                else:
                    choices = task_obj.doc_to_choice(doc)
                    res = task_obj.process_results(doc, [(0.0 if c.strip() == ans else 1.0, False) for c in choices])
                for k, v in res.items():
                    if isinstance(v, (int, float)):
                        totals[k].append(float(v))
            return {k: sum(v) / len(v) for k, v in totals.items()}
        return score

    def _write_records(self) -> None:
        if self.rank != 0 or self._output_dir is None:
            return
        data = {"run": self.run_info, "tasks": self.records}
        write_json_atomic(self._output_dir / RECORD_NAME, data)
        for task, rec in self.records.items():
            if "scores" in rec:
                plot_search(task, rec, self._output_dir / f"adamms_search_{task}.png")

    def clean(self):
        if self.fixed is not None and not self.records:
            self.records = {"*": {"alpha": self.fixed, "coefficient": self.merged.method.coefficient, "searched": False}}
        self._write_records()
        if self._output_dir is not None and self.rank == 0:
            eval_logger.info(f"adamms: search record -> {self._output_dir / RECORD_NAME}")
        super().clean()
