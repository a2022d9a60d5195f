"""lmms-eval model `adamms`: a built-in lmms-eval backend whose weights AdaMMS moves in place.

The base architecture's own lmms-eval wrapper (qwen2_vl, llava_hf) loads the base, builds prompts,
processes images and generates; `adamms` owns its weights through a LazyMerge. With alpha=auto each
task first answers a seeded subset at every candidate coefficient, the coefficient with the most
consistent answers is chosen (AdaMMS searching), then the whole task runs at it.
Everything that does not depend on lmms-eval (settings, preflight plan, the per-task sequence, search records)
lives in adamms_eval.session; this file is the lmms-eval plumbing: each task's requests become a HarnessTask.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from loguru import logger as eval_logger
from lmms_eval.api.instance import GenerationResult
from lmms_eval.api.model import lmms
from lmms_eval.models import get_model

from ...errors import AdammsError
from ...fingerprints import digest
from ...runtime import default_device
from ...search.runner import SearchInput
from ...search.signals import CONFIDENCE_SIGNALS
from ...session import RECORD_NAME, MergeSession, default_output_dir, parse_settings
from .backends import BACKENDS, choose_backend, default_device_map, unlisted_backend
from .loglikelihood import can_score, continuation_nll, continuation_stats

HARNESS = "lmms_eval"
# Set by the adamms model itself, never by the user: passing them would clash with ours.
_OWN_BACKEND_ARGS = {"self", "pretrained", "device", "batch_size", "max_batch_size"}
_RUN_NAMES: dict[tuple[str, str], str] = {}  # (base, other) as given -> run name, for lmms-eval's model_name
GROUP_FIELD = "question_id"  # docs sharing it are scored together (MME: the image of a question pair)

__all__ = ["Adamms", "BACKENDS", "RECORD_NAME"]


def _backend_params(cls) -> set[str] | None:
    """The keyword arguments a backend accepts: the named arguments of its __init__ and, while an __init__ passes
    **kwargs on, of its parents' (None when the chain reaches object: anything goes). lmms-eval's built-ins take
    **kwargs only to assert it is empty, and lmms.__init__ takes none, so their named arguments are the list."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass is object:
            return None
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names - _OWN_BACKEND_ARGS


def _merge_model_name(model_args) -> str | None:
    """lmms-eval names a run's output folder after `pretrained=` (θ0 here, the one model not evaluated); an
    adamms run is named after its merge instead."""
    if isinstance(model_args, str):
        from lmms_eval.utils import simple_parse_args_string
        try:
            model_args = simple_parse_args_string(model_args)
        except ValueError:
            return None
    if not isinstance(model_args, dict):
        return None
    return _RUN_NAMES.get((str(model_args.get("base")), str(model_args.get("other"))))


def _name_runs_after_the_merge() -> None:
    from lmms_eval.loggers.evaluation_tracker import GeneralConfigTracker
    current = GeneralConfigTracker.__dict__["_get_model_name"].__func__
    if getattr(current, "adamms", False):
        return

    def _get_model_name(model_args) -> str:
        return _merge_model_name(model_args) or current(model_args)
    _get_model_name.adamms = True
    GeneralConfigTracker._get_model_name = staticmethod(_get_model_name)


class Adamms(lmms):
    is_simple = True

    def __init__(self, batch_size=1, max_batch_size=None, device=None, **options):
        super().__init__()
        # Everything is checked before any weights load: settings, backend arguments, the pair's plan.
        settings, _ = parse_settings(options)
        self.backend_name = choose_backend(settings.base, settings.backend)
        missing = ""
        try:
            cls = get_model(self.backend_name, force_simple=True)
        except ValueError as e:  # lmms-eval's "model not found ... available models: a, b, ..."
            cls, missing = unlisted_backend(self.backend_name), str(e)
        if cls is None:
            import difflib
            known = missing.partition("available models:")[2].split(",")
            close = difflib.get_close_matches(self.backend_name, [k.strip() for k in known], n=1)
            hint = f"did you mean backend={close[0]}? " if close else ""
            raise AdammsError(f"backend={self.backend_name}: lmms-eval has no such model; {hint}leave backend= out "
                              "to choose it from the base's config.json") from None
        settings, backend_kwargs = parse_settings(options, _backend_params(cls),
                                                  backend_label=f"lmms-eval's {self.backend_name} backend")
        if settings.signal in CONFIDENCE_SIGNALS and not can_score(cls, self.backend_name):  # before any load
            raise AdammsError(f"signal={settings.signal} needs the token log-probabilities of the model's own answers, "
                              f"and lmms-eval's {self.backend_name} backend cannot score answers here (no "
                              "continuation_stats, not in harness/lmms_eval/loglikelihood.PROMPTS); use "
                              "signal=consistency")
        self.session = MergeSession(settings, self.backend_name, HARNESS, say=eval_logger.info)
        _RUN_NAMES[(str(options["base"]), str(options["other"]))] = self.session.run_name
        _name_runs_after_the_merge()

        device = device or default_device()
        default_device_map(backend_kwargs, device, torch.cuda.is_available())
        self.backend = cls(pretrained=settings.base, device=device, batch_size=batch_size, **backend_kwargs)
        self.backend.task_dict = self.task_dict  # the evaluator fills ours; share the same dict
        self.merged = self.session.attach(
            self.backend.model, rank=self.rank, code_files=[__file__, str(Path(__file__).with_name("loglikelihood.py"))],
            backend_args={**backend_kwargs, "device": device, "batch_size": batch_size},
            batch_size=int(batch_size) if str(batch_size).isdigit() else None)  # search answers cached per batch
        self._output_dir: Path | None = None
        self._device = torch.device(device)
        self.answers_seen: dict[str, dict] = {}  # task -> {doc id: answer} of the last full evaluation (compare)

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
        """Where the record goes: beside lmms-eval's results (<output_path>/<model name>/), else search_output,
        else the documented default folder (logged)."""
        if self._output_dir is not None or not requests:
            return
        cli = getattr(getattr(requests[0].args[2], "__self__", None), "args", None)  # doc_to_visual is bound to the Task
        if cli is not None and getattr(cli, "output_path", None):
            from lmms_eval.loggers.evaluation_tracker import GeneralConfigTracker
            from lmms_eval.utils import sanitize_model_name
            name = sanitize_model_name(GeneralConfigTracker._get_model_name(cli.model_args))
            self._output_dir = Path(cli.output_path) / name
        elif self.session.settings.search_output:
            self._output_dir = Path(self.session.settings.search_output)
        else:
            self._output_dir = default_output_dir(self.session.run_name)
            if self.rank == 0:
                eval_logger.warning(f"adamms: no --output_path: the search record goes to {self._output_dir} "
                                    "(set --output_path, search_output=DIR or $ADAMMS_OUTPUT)")

    def use(self, session: MergeSession, output_dir: Path | None) -> None:
        """Evaluate through `session` (attached to this model's weights) and record into `output_dir`."""
        self.session, self.merged, self._output_dir = session, session.merged, output_dir

    def _run_task(self, task: str, requests, answer, score) -> float:
        """The session's per-task sequence over this task's requests (lmms-eval pads short ranks with padding-only
        requests: they are answered but never searched on)."""
        real = [r for r in requests if not r.metadata.get("__padding_only__")]
        return self.session.run_task(_Task(task, self._output_dir, score,
                                           lambda: self._search_inputs(real), answer, self._confidence))

    def _search_inputs(self, requests) -> list[SearchInput]:
        docs = collections.OrderedDict()
        for r in requests:
            docs.setdefault(r.doc_id, []).append(r)
        groups = self._doc_groups(requests)
        return [SearchInput(d, f"{d}:{digest([str(a) for a in (rs[0].args[0], rs[0].args[1])] + [len(rs)])}", rs,
                            groups.get(d)) for d, rs in docs.items()]

    def _doc_groups(self, requests) -> dict:
        """{doc_id: group} when the task's docs come in groups it scores together: MME's aggregation needs both
        questions of an image, and its docs (lmms-eval's `mme`, our `adamms_shapes_mme`) share the image's
        `question_id`. A task whose question_id never repeats (or that has none) is not grouped."""
        if not requests:
            return {}
        task, split = requests[0].args[4], requests[0].args[5]
        try:
            dataset = self.task_dict[task][split]
        except (KeyError, TypeError):
            return {}
        if GROUP_FIELD not in (getattr(dataset, "column_names", None) or ()):
            return {}
        column = [str(v) for v in dataset[GROUP_FIELD]]
        if len(set(column)) == len(column):
            return {}
        return {r.doc_id: column[r.doc_id] for r in requests}

    # -- lmms API ------------------------------------------------------------------------------------------
    def generate_until(self, requests):
        self._note_output_dir(requests)
        out = [None] * len(requests)
        for task, idx in self._by_task(requests).items():
            reqs = [requests[i] for i in idx]

            def answer(inputs):
                with backend_bar_off(self.backend), _generating_together(self.backend, len(inputs)):
                    return [str(x) for x in self.backend.generate_until([self._fresh(i.payload[0]) for i in inputs])]

            self._run_task(task, reqs, answer, self._scorer(reqs, generate=True))
            seen = self.answers_seen.setdefault(task, {})
            for i, resp in zip(idx, self.backend.generate_until([self._fresh(r) for r in reqs])):
                out[i] = resp
                seen[requests[i].doc_id] = str(resp)
            self._remember_base(task, reqs, {id(requests[i]): str(out[i]) for i in idx})
        return out

    def loglikelihood(self, requests):
        self._note_output_dir(requests)
        out = [None] * len(requests)
        for task, idx in self._by_task(requests).items():
            reqs = [requests[i] for i in idx]

            def answer(inputs):  # a multiple-choice input answers with its most likely choice
                return [min(i.payload, key=lambda r: self._nll(r)[0]).args[1].strip() for i in inputs]

            self._run_task(task, reqs, answer, self._scorer(reqs, generate=False))
            best: dict = {}
            nll_of: dict = {}
            for i, r in zip(idx, reqs):
                nll = self._nll(r)
                nll_of[id(r)] = nll[0]
                out[i] = GenerationResult(text=nll)  # lmms-eval would stringify a bare tuple
                if r.doc_id not in best or nll[0] < best[r.doc_id][0]:  # the answer: the most likely choice
                    best[r.doc_id] = (nll[0], r.args[1].strip())
            self.answers_seen.setdefault(task, {}).update({d: a for d, (_, a) in best.items()})
            self._remember_base(task, reqs, nll_of, pick=lambda rs: min(rs, key=lambda r: nll_of[id(r)]).args[1].strip())
        return out

    def _confidence(self, inputs, answers) -> list[dict]:
        """Token statistics of each answer after its own prompt (one forward pass each; session.HarnessTask). A
        multiple-choice input's answer is scored as the choice it is, with the choice's own spacing."""
        out = []
        for item, ans in zip(inputs, answers):
            req = next((r for r in item.payload if r.args[1].strip() == ans), item.payload[0]) \
                if isinstance(item.payload[0].args[1], str) else item.payload[0]
            continuation = req.args[1] if isinstance(req.args[1], str) else ans
            ctx, _, doc_to_visual, doc_id, task, split = req.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
            try:
                out.append(continuation_stats(self.backend, self.backend_name, ctx, continuation, visuals))
            except NotImplementedError as e:
                raise AdammsError(str(e)) from None
        return out

    def _remember_base(self, task: str, reqs, by_request: dict, pick=None) -> None:
        """Answers made at the base (a run at linear α = 0, compare's base row) are kept as the base's answers to
        the task's search inputs, so a later search on this base does not generate its α = 0 candidate again."""
        if not self.session.at_base():
            return
        real = [r for r in reqs if not r.metadata.get("__padding_only__")]
        answers = {i.key: pick(i.payload) if pick else by_request[id(i.payload[0])] for i in self._search_inputs(real)}
        self.session.remember_base_answers(task, answers)

    def _nll(self, req) -> tuple[float, bool]:
        ctx, continuation, doc_to_visual, doc_id, task, split = req.args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
        return continuation_nll(self.backend, self.backend_name, ctx, continuation, visuals)

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("adamms does not support multi-round generation yet")

    # -- reporting -----------------------------------------------------------------------------------------
    def _scorer(self, reqs, generate: bool):
        """search_report=full: the task's own score of each candidate's subset answers, i.e. its process_results
        per doc and its aggregation functions over the subset (uses labels; for the record and plot only)."""
        task_obj = getattr(reqs[0].args[2], "__self__", None)
        if task_obj is None:
            return None
        task, split = reqs[0].task_name, reqs[0].args[5]

        def score(alpha, answers: dict) -> dict:
            per_metric = collections.defaultdict(list)
            for doc_id, ans in answers.items():
                doc = self.task_dict[task][split][doc_id]
                if generate:
                    res = task_obj.process_results(doc, [ans])
                else:  # lmms-eval takes the argmin of the choices' losses: the answer gets the smallest
                    choices = task_obj.doc_to_choice(doc)
                    res = task_obj.process_results(doc, [(0.0 if c.strip() == ans else 1.0, False) for c in choices])
                for metric, value in res.items():
                    per_metric[metric].append(value)
            aggregations = task_obj.aggregation()
            out = {}
            for metric, items in per_metric.items():
                fn = aggregations.get(metric)
                if fn is None:
                    continue  # lmms-eval reports only metrics with an aggregation too
                kw = {"args": task_obj.args} if "args" in inspect.signature(fn).parameters else {}
                try:
                    out[metric] = float(fn(items, **kw))
                except Exception as e:
                    raise AdammsError(f"{metric}: its aggregation {getattr(fn, '__name__', fn)} fails on the "
                                      f"{len(items)}-doc search subset ({type(e).__name__}: {e})") from None
            return out
        return score

    def clean(self):
        if self._output_dir is None:
            self._output_dir = Path(self.session.settings.search_output or default_output_dir(self.session.run_name))
        if self.rank == 0:
            self.session.write_records(self._output_dir)  # says where the record went
        super().clean()


@contextlib.contextmanager
def backend_bar_off(backend):
    """No progress bar from the backend's generate_until while the search calls it: lmms-eval's backends draw a
    "Model Responding" bar per call and the search calls once per batch (hundreds of finished bars in a log), where
    its own bar, one per task's search, counts candidates × inputs and shows the coefficient being generated.
    The backend's module imports `tqdm` by name (lmms-eval's built-ins and our ports): that name is what changes."""
    module = sys.modules.get(type(backend).__module__)
    real = getattr(module, "tqdm", None)
    if real is None:
        yield
        return

    def quiet(*args, **kwargs):
        return real(*args, **{**kwargs, "disable": True})
    module.tqdm = quiet
    try:
        yield
    finally:
        module.tqdm = real


@contextlib.contextmanager
def _generating_together(backend, n: int):
    """A search batch (search_batch_size inputs) generated as one batch by our ports' backends, whatever the run's
    batch_size; lmms-eval's built-ins batch by their own batch_size (llava_hf refuses more than 1)."""
    if not hasattr(backend, "encode_batch"):
        yield
        return
    own = backend.batch_size_per_gpu
    backend.batch_size_per_gpu = max(own, n)
    try:
        yield
    finally:
        backend.batch_size_per_gpu = own


@dataclass
class _Task:
    """One lmms-eval task's requests as a session.HarnessTask."""
    name: str
    output_dir: Path | None
    score: Callable | None
    inputs: Callable[[], list[SearchInput]]
    answer: Callable[[list[SearchInput]], list[str]]
    confidence: Callable[[list[SearchInput], list[str]], list[dict]] | None = None

    def search_inputs(self) -> list[SearchInput]:
        return self.inputs()
