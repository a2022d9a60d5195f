"""`adamms compare CONFIG.yaml`: the paper's comparison tables, run through lmms-eval's own evaluator in one process.

The base is loaded once; every merge row moves its weights in place (one LazyMerge per method, the linear one kept
to bring the weights back to the base bit for bit). The `other` row runs in its own backend. Every finished
(row, task) and every (method, task, α) of a labeled sweep is stored under OUTPUT/done/, so a rerun computes only
what is missing. Outputs: comparison.md / .csv / .json, table4.md (chosen vs oracle α), table8.md (α chosen on the
labeled search subset), figures/<row>_<task>.png (D and the task score against α).

Under `torchrun` / `accelerate launch` every rank loads the base and lmms-eval shards each task's documents over
the ranks (the search too: each rank answers its share of the subset, all agree on α). Rank 0 alone reads and
writes OUTPUT (done/, tables, figures) and hands every skip decision and score to the others, so all ranks take
the same path through the rows and meet in the same collectives.

Config (YAML):
    base: DIR            other: DIR         pretrained: DIR (θ0; task-vector methods)
    tasks: [lmms-eval task or group names]  include_path: [folders]   limit: null
    backend_args: {...}  other_backend_args: {...}   output: DIR   cache_dir: DIR
    search: {alphas: "0:0.6:0.1", search_samples: 100, search_seed: 0, metric: exact}
    rows:                # default: the paper's Table 1 (originals, five baselines, AdaMMS, oracle)
      - {name: AdaMMS, method: linear, coefficient: auto}     # a number, auto or oracle; method params beside
"""
from __future__ import annotations

import difflib
import gc
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..fingerprints import digest
from ..runtime import current_rank, from_rank0, process_group
from .tables import (oracle_point, supervised_choice, table1, table1_csv, table1_markdown, table4,
                             table4_markdown, table8_markdown)
from ..errors import AdammsError

HARNESS = "lmms_eval"
RULES = ("auto", "oracle")
DEFAULT_ROWS = [
    {"name": "base", "original": "base"},
    {"name": "other", "original": "other"},
    {"name": "Task Arithmetic", "method": "paper_task_arithmetic"},
    {"name": "Ties-Merging", "method": "paper_ties"},
    {"name": "DARE-Linear", "method": "paper_dare_linear"},
    {"name": "DARE-Ties", "method": "paper_dare_ties"},
    {"name": "MetaGPT", "method": "paper_metagpt"},
    {"name": "AdaMMS", "method": "linear", "coefficient": "auto"},
    {"name": "Oracle (linear)", "method": "linear", "coefficient": "oracle"},
]
CONFIG_KEYS = {"base", "other", "pretrained", "tasks", "include_path", "limit", "backend_args", "other_backend_args",
               "output", "cache_dir", "search", "rows", "device", "batch_size", "threads"}
SEARCH_KEYS = {"alphas", "search_samples", "search_seed", "metric", "embedding_model", "storage"}


@dataclass
class Row:
    name: str
    original: str | None = None  # "base" / "other" for the models as they are
    method: str | None = None  # method or preset name, as written
    params: dict = field(default_factory=dict)
    rule: str | float | None = None  # a number, "auto" or "oracle"

    @property
    def kind(self) -> str:
        return "original" if self.original else ("oracle" if self.rule == "oracle" else "merge")

    def key(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name).strip("_") + "-" + digest(self.__dict__)[:8]


def _fail(msg: str):
    raise AdammsError(msg)


# -- ranks ---------------------------------------------------------------------------------------------------
def start_distributed() -> bool:
    """Join the launcher's process group (torchrun / accelerate launch set WORLD_SIZE), as lmms-eval's CLI does:
    through accelerate, so the backend's Accelerator() finds the same state (gloo on CPU, NCCL on GPUs).
    True when this call created the group (the caller then ends it)."""
    import datetime

    import torch.distributed as dist
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs
    Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=datetime.timedelta(hours=24))])
    return dist.is_initialized()


def _load_yaml(path: Path) -> dict:
    import yaml
    if not path.is_file():
        _fail(f"config {path} not found; pass a YAML file (see configs/ for examples)")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        _fail(f"{path} is not valid YAML ({str(e).splitlines()[0]}); fix the file")
    if not isinstance(cfg, dict):
        _fail(f"{path} must be a mapping with base, other, tasks and rows")
    return cfg


def _resolve(path: str | None, root: Path) -> str | None:
    if path is None:
        return None
    p = Path(os.path.expandvars(str(path))).expanduser()
    return str(p if p.is_absolute() else (root / p).resolve())


@dataclass
class Plan:
    cfg: dict
    root: Path
    rows: list[Row]
    tasks: list[str]
    task_manager: object
    sessions: dict  # method key -> (Settings, MergeSession)
    backend: str
    other_backend: str
    out: Path
    metrics: dict


def _method_options(cfg: dict, method: str, params: dict) -> dict:
    search = cfg.get("search") or {}
    opts = {"base": cfg["base"], "other": cfg["other"], "method": method, "alpha": "auto", "search_report": "full",
            **{k: v for k, v in search.items() if k in SEARCH_KEYS}, **params}
    if cfg.get("pretrained"):
        opts["pretrained"] = cfg["pretrained"]
    if cfg.get("cache_dir"):
        opts["cache_dir"] = cfg["cache_dir"]
    return {k: str(v) if not isinstance(v, str) else v for k, v in opts.items()}


def _method_key(row: Row) -> str:
    return digest([row.method, sorted(row.params.items())])


LINEAR_KEY = _method_key(Row("linear", method="linear"))  # always planned: it restores the base between methods


def torch_no_grad():
    import torch
    return torch.no_grad()


def _parse_rows(raw) -> list[Row]:
    rows, names = [], set()
    for i, r in enumerate(raw if raw is not None else DEFAULT_ROWS):
        if not isinstance(r, dict) or not r.get("name"):
            _fail(f"rows[{i}] needs a name (e.g. {{name: AdaMMS, method: linear, coefficient: auto}})")
        r = dict(r)
        name = str(r.pop("name"))
        if name in names:
            _fail(f"rows[{i}]: two rows are named {name!r}; give each row its own name")
        names.add(name)
        if "original" in r:
            if r["original"] not in ("base", "other") or len(r) > 1:
                _fail(f"row {name!r}: original must be base or other, with no other fields")
            rows.append(Row(name, original=r["original"]))
            continue
        method = r.pop("method", None)
        if not method:
            _fail(f"row {name!r} needs a method (linear, ties, ... or a preset such as paper_ties) or original: base|other")
        rule = r.pop("coefficient", None)
        params = {k: v for k, v in r.items()}
        for k in ("alpha", "lambda"):
            if k in params:
                if rule is not None:
                    _fail(f"row {name!r}: give the coefficient once (coefficient: or {k}:)")
                rule = params.pop(k)
        if isinstance(rule, str) and rule not in RULES:
            try:
                rule = float(rule)
            except ValueError:
                _fail(f"row {name!r}: coefficient {rule!r} must be a number, auto or oracle")
        rows.append(Row(name, method=str(method), params={k: str(v) for k, v in params.items()}, rule=rule))
    return rows


def _leaf_tasks(tm, names: list[str]) -> list[str]:
    out = []
    for n in names:
        if n not in tm.all_tasks:
            close = difflib.get_close_matches(n, tm.all_tasks, 1)
            _fail(f"task {n!r} is not known to lmms-eval{' (did you mean ' + close[0] + '?)' if close else ''}; "
                  "check the name or add its folder to include_path")
        if n in tm.all_groups:
            out += _leaf_tasks(tm, [t if isinstance(t, str) else t["task"] for t in tm._get_config(n)["task"]])
        else:
            out.append(n)
    return list(dict.fromkeys(out))


def plan(config_path: str | Path) -> Plan:
    """Every check that needs no model: the config, the checkpoints, methods and parameters, tasks and labels."""
    from ..merging.methods import make_method
    from ..session.session import MergeSession, choose_backend, parse_settings
    config_path = Path(config_path)
    cfg, root = _load_yaml(config_path), config_path.resolve().parent
    unknown = sorted(set(cfg) - CONFIG_KEYS)
    if unknown:
        _fail(f"{config_path}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(CONFIG_KEYS))}")
    for k in ("base", "other", "tasks"):
        if not cfg.get(k):
            _fail(f"{config_path}: `{k}` is missing")
    bad = sorted(set(cfg.get("search") or {}) - SEARCH_KEYS)
    if bad:
        _fail(f"{config_path}: search.{bad[0]} is unknown; search takes {', '.join(sorted(SEARCH_KEYS))}")
    for k in ("base", "other", "pretrained"):
        cfg[k] = _resolve(cfg.get(k), root)
        if cfg[k] and not (Path(cfg[k]) / "config.json").is_file():
            _fail(f"{k} checkpoint {cfg[k]} not found (no config.json there); build it (`adamms zoo build`) or fix the path")
    includes = [_resolve(p, root) for p in ([cfg["include_path"]] if isinstance(cfg.get("include_path"), str)
                                            else cfg.get("include_path") or [])]
    rows = _parse_rows(cfg.get("rows"))
    sessions = {}
    for row in rows:
        if row.original:
            continue
        try:
            method = make_method(row.method, row.params)
        except AdammsError as e:
            _fail(f"row {row.name!r}: {e}")
        if isinstance(row.rule, float):
            try:
                method.check_coefficient(row.rule)
            except AdammsError as e:
                _fail(f"row {row.name!r}: {e}")
        mk = _method_key(row)
        if mk not in sessions:
            try:
                settings, _ = parse_settings(_method_options(cfg, row.method, row.params))
                backend = choose_backend(HARNESS, cfg["base"], None)
                sessions[mk] = (settings, MergeSession(settings, backend, HARNESS))  # preflight plan: headers only
            except AdammsError as e:
                _fail(f"row {row.name!r}: {e}")
    if LINEAR_KEY not in sessions:
        settings, _ = parse_settings(_method_options(cfg, "linear", {}))
        sessions[LINEAR_KEY] = (settings, MergeSession(settings, choose_backend(HARNESS, cfg["base"], None), HARNESS))
    from lmms_eval.tasks import TaskManager
    tm = TaskManager("WARNING", include_path=includes or None)
    names = [cfg["tasks"]] if isinstance(cfg["tasks"], str) else list(cfg["tasks"])
    tasks = _leaf_tasks(tm, names)
    metrics = {}
    for t in tasks:
        tc = tm._get_config(t)
        metrics[t] = (tc.get("metric_list") or [{"metric": "acc"}])[0]["metric"]
        if tc.get("doc_to_target") is None and any(r.kind == "oracle" for r in rows):
            _fail(f"task {t} has no labels (doc_to_target), so the oracle row cannot score it; drop the oracle row "
                  "or the task")
    out = Path(_resolve(cfg.get("output") or "comparison", root))
    return Plan(cfg, root, rows, tasks, tm, sessions, choose_backend(HARNESS, cfg["base"], None),
                choose_backend(HARNESS, cfg["other"], None), out, metrics)


# ---------------------------------------------------------------------------------------------------------------
class Runner:
    def __init__(self, p: Plan, log=print):
        self.p, self.log = p, log
        self.done = p.out / "done"
        self.main = current_rank() == 0  # the one rank that reads and writes OUTPUT
        if self.main:
            self.done.mkdir(parents=True, exist_ok=True)
        self.model = None  # the ComparisonModel around the once-loaded base
        self.other = None  # the other model's own backend, while the `other` row runs
        self.attached: dict[str, object] = {}  # method key -> attached MergeSession (linear kept, others replaced)
        self.active: str | None = None  # the method whose point the weights are at
        self.saved: dict = {}  # base values of tensors the active method maps and the linear path does not
        self.timings: dict[str, float] = {}
        self.identity = {k: p.cfg.get(k) for k in ("base", "other", "pretrained", "limit", "backend_args", "search")}

    # -- storage --------------------------------------------------------------------------------------------
    def _file(self, *parts) -> Path:
        *folders, name = [re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(x)) for x in parts]
        return self.done.joinpath(*folders, name + ".json")

    def _stored(self, f: Path):
        try:
            data = json.loads(f.read_text())
            return data if data.get("identity") == digest(self.identity) else None
        except (OSError, ValueError):
            return None

    def _lookup(self, f: Path):
        """A stored result as rank 0 reads it, on every rank: all ranks skip or compute together."""
        return from_rank0(self._stored(f) if self.main else None)

    def _store(self, f: Path, data: dict) -> None:
        if not self.main:
            return
        from ..search.rule import write_json_atomic
        f.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(f, {**data, "identity": digest(self.identity)})

    # -- models ---------------------------------------------------------------------------------------------
    def _device(self):
        import torch
        return self.p.cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")

    def _backend(self, name: str, path: str, args: dict):
        import torch
        from lmms_eval.models import get_model
        from ..session.session import default_device_map
        device = self._device()
        args = default_device_map(dict(args or {}), device, torch.cuda.is_available())
        cls = get_model(name, force_simple=True)
        return cls(pretrained=path, device=device, batch_size=int(self.p.cfg.get("batch_size", 1)), **args)

    def _base_model(self):
        if self.model is None:
            t0 = time.perf_counter()
            from ..harness.lmms_eval.compare_model import ComparisonModel
            backend = self._backend(self.p.backend, self.p.cfg["base"], self.p.cfg.get("backend_args"))
            self.model = ComparisonModel(backend, self.p.backend, self._device())
            self.timings["load_base"] = time.perf_counter() - t0
        return self.model

    def _attach(self, mk: str, label: str):
        model = self._base_model()
        session = self.p.sessions[mk][1]
        t0 = time.perf_counter()
        session.attach(model.backend.model, rank=model.rank, backend_args=self.p.cfg.get("backend_args") or {},
                       code_files=[str(Path(__file__))])
        self.timings[f"attach_{label}"] = time.perf_counter() - t0
        self.attached[mk] = session
        return session

    def _session(self, row: Row):
        """The attached session of the row's method. The linear LazyMerge is built first, on the base, and kept:
        its α=0 is the base bit for bit, so switching methods returns there before the next method's paths are
        built (a task-vector path's λ=0 is θ0, not the base); tensors only another method maps are saved first."""
        mk, lin = _method_key(row), LINEAR_KEY
        model = self._base_model()
        if lin not in self.attached:
            self._attach(lin, "linear")
        if self.active != mk:
            if self.active not in (None, lin):
                current = self.attached[self.active].merged.model.state_dict(keep_vars=True)
                with torch_no_grad():
                    for k, saved in self.saved.items():
                        current[k].data.copy_(saved)
                self.saved = {}
                del self.attached[self.active]
                gc.collect()
            self.attached[lin].merged.set(0.0)
            if mk != lin:
                session = self._attach(mk, row.method)
                extra = set(session.merged.paths) - set(self.attached[lin].merged.paths)
                state = session.merged.model.state_dict()
                self.saved = {k: state[k].detach().clone() for k in extra}
            self.active = mk
        model.session, model.merged = self.attached[mk], self.attached[mk].merged
        return self.attached[mk]

    def _evaluate(self, model, task: str, out_dir: Path) -> float:
        from lmms_eval.evaluator import simple_evaluate
        # as lmms-eval's CLI: its torchrun path when a process group is up (gloo or NCCL collectives)
        res = simple_evaluate(model=model, tasks=[task], task_manager=self.p.task_manager,
                              limit=self.p.cfg.get("limit"), log_samples=False, verbosity="WARNING",
                              batch_size=int(self.p.cfg.get("batch_size", 1)),
                              distributed_executor_backend="torchrun" if process_group() else "accelerate")
        score = error = None
        if self.main:  # lmms-eval gathers the results on rank 0; the other ranks get None
            if not res or task not in res.get("results", {}):
                error = f"lmms-eval returned no result for {task}; see its log above"
            else:
                vals = res["results"][task]
                key = next((k for k in vals if k.split(",")[0] == self.p.metrics[task]), None) or \
                    next(k for k in vals if "," in k and "stderr" not in k)
                score = 100.0 * float(vals[key])
        score, error = from_rank0((score, error))
        if error:
            _fail(error)
        return score

    # -- rows -----------------------------------------------------------------------------------------------
    def point(self, row: Row, task: str, alpha: float) -> float:
        """The full task's score at a fixed coefficient of the row's method (stored per method, task and α)."""
        f = self._file("sweep", _method_key(row), task, f"{alpha:g}")
        hit = self._lookup(f)
        if hit:
            return hit["score"]
        session = self._session(row)
        model = self.model
        model.forced, model._output_dir = alpha, self.p.out / "records" / _method_key(row)
        t0 = time.perf_counter()
        score = self._evaluate(model, task, self.p.out)
        self._store(f, {"method": row.method, "params": row.params, "task": task, "alpha": alpha, "score": score,
                        "seconds": time.perf_counter() - t0, "coefficient": session.settings.coefficient})
        return score

    def search(self, row: Row, task: str) -> dict:
        """The unlabeled search of the row's method on `task` (its record: D per candidate, subset scores)."""
        f = self._file("search", _method_key(row), task)
        hit = self._lookup(f)
        if hit:
            return hit["record"]
        session = self._session(row)
        model = self.model
        model.forced, model._output_dir = None, self.p.out / "records" / _method_key(row)
        session.records.pop(task, None)
        t0 = time.perf_counter()
        score = self._evaluate(model, task, self.p.out)
        record = from_rank0(dict(session.records[task]))  # the same on every rank (gathered); rank 0's timing
        self._store(f, {"record": record, "score": score, "seconds": time.perf_counter() - t0})
        self._store(self._file("sweep", _method_key(row), task, f"{record['alpha']:g}"),
                    {"method": row.method, "params": row.params, "task": task, "alpha": record["alpha"],
                     "score": score, "coefficient": session.settings.coefficient})
        return record

    def original(self, row: Row, task: str) -> float:
        if row.original == "base":
            return self.point(Row("linear", method="linear"), task, 0.0)  # linear α=0 is the base bit for bit
        f = self._file("other", task)
        hit = self._lookup(f)
        if hit:
            return hit["score"]
        t0 = time.perf_counter()
        if self.other is None:  # loaded once for the row's tasks, freed after them (run())
            self.other = self._backend(self.p.other_backend, self.p.cfg["other"], self.p.cfg.get("other_backend_args"))
            self.other.clean = lambda: None  # lmms-eval's clean() drops the model after each evaluate()
            self.timings["load_other"] = time.perf_counter() - t0
        score = self._evaluate(self.other, task, self.p.out)
        self._store(f, {"score": score, "seconds": time.perf_counter() - t0})
        return score

    def run(self) -> dict:
        import torch
        from tqdm import tqdm
        p, t_start = self.p, time.perf_counter()
        if not torch.cuda.is_available():  # on a shared CPU, one thread per process measured up to 10x faster
            torch.set_num_threads(int(p.cfg.get("threads", 1)))
        scores, chosen, sweeps, subset, coef = {}, {}, {}, {}, {}
        # originals first, then rows grouped by method (one LazyMerge per method, built once)
        order = sorted(p.rows, key=lambda r: (r.kind != "original", r.method != "linear", _method_key(r) if r.method else ""))
        for row in order:
            scores[row.name] = {}
            if row.method:
                coef[row.name] = p.sessions[_method_key(row)][0].coefficient
            for task in tqdm(p.tasks, desc=row.name, leave=False, disable=not self.main):
                t0 = time.perf_counter()
                if row.original:
                    scores[row.name][task] = self.original(row, task)
                elif isinstance(row.rule, float):
                    scores[row.name][task] = self.point(row, task, row.rule)
                elif row.rule is None:
                    settings = p.sessions[_method_key(row)][0]
                    scores[row.name][task] = self.point(row, task, self._default_coefficient(row, settings))
                else:
                    if row.rule == "auto":
                        rec = self.search(row, task)
                        chosen.setdefault(row.name, {})[task] = rec["alpha"]
                        subset.setdefault(row.name, {})[task] = rec
                        scores[row.name][task] = self.point(row, task, rec["alpha"])
                    alphas = p.sessions[_method_key(row)][0].alphas
                    sweeps.setdefault(_method_key(row), {})[task] = {a: self.point(row, task, a) for a in alphas}
                    if row.rule == "oracle":
                        a, s = oracle_point(sweeps[_method_key(row)][task])
                        chosen.setdefault(row.name, {})[task] = a
                        scores[row.name][task] = s
                self.timings[f"{row.name}/{task}"] = time.perf_counter() - t0
            if self.other is not None:
                self.other = None
                gc.collect()
        self.timings["total"] = time.perf_counter() - t_start
        return self._write(scores, chosen, sweeps, subset, coef)

    @staticmethod
    def _default_coefficient(row: Row, settings) -> float:
        from ..merging.methods import make_method
        m = make_method(row.method, row.params)
        return float(m.default_coefficient if getattr(m, "default_coefficient", None) is not None else 1.0)

    # -- outputs --------------------------------------------------------------------------------------------
    def _write(self, scores, chosen, sweeps, subset, coef) -> dict:
        p = self.p
        kinds = {r.name: r.kind for r in p.rows}
        labels = {r.name: r.name + (f" ({coef[r.name]}={r.rule:g})" if isinstance(r.rule, float) else
                                    f" ({coef[r.name]} {r.rule})" if r.rule else "") for r in p.rows}
        ordered = {r.name: scores[r.name] for r in p.rows}
        t1 = table1(ordered, kinds, p.tasks)
        t4, t8 = {}, {}
        for r in p.rows:
            if r.rule != "auto":
                continue
            sw = sweeps.get(_method_key(r), {})
            t4[r.name] = table4(chosen[r.name], sw)
            t8[r.name] = {}
            for task, rec in subset[r.name].items():
                ts = rec.get("task_scores") or {}  # {metric: {alpha: score on the labeled search subset}}
                per_alpha = ts.get(p.metrics[task]) or next(iter(ts.values()), {})
                sub = {float(a): 100.0 * float(v) for a, v in per_alpha.items()}
                if not sub or task not in sw:
                    continue
                a = supervised_choice(sub)
                t8[r.name][task] = {"unlabeled": rec["alpha"], "unlabeled_score": sw[task][rec["alpha"]],
                                    "supervised": a, "supervised_score": self.point(r, task, a),
                                    "n": rec.get("subset_size")}
        if not self.main:  # every rank took part in the evaluations above; rank 0 alone writes
            return from_rank0(None)
        figures = self._figures(subset, sweeps, coef)
        import lmms_eval
        import torch
        import transformers
        data = {"config": {k: v for k, v in p.cfg.items()}, "tasks": p.tasks, "metrics": p.metrics,
                "rows": [{**r.__dict__, "kind": r.kind, "label": labels[r.name]} for r in p.rows],
                "scores": ordered, "table1": t1, "chosen": chosen, "sweeps": {k: {t: {f"{a:g}": s for a, s in v.items()}
                                                                               for t, v in sw.items()}
                                                                           for k, sw in sweeps.items()},
                "search_records": subset, "table4": t4, "table8": t8, "figures": figures,
                "timings_seconds": {k: round(v, 2) for k, v in self.timings.items()},
                "versions": {"lmms_eval": getattr(lmms_eval, "__version__", "?"), "torch": torch.__version__,
                             "transformers": transformers.__version__, "python": sys.version.split()[0]}}
        md = ["# adamms compare", "", f"base `{p.cfg['base']}` ← other `{p.cfg['other']}`; scores 0-100; "
              "(gain over the originals' average); **best** per column; Top2 = tasks in the two best (oracle excluded).",
              "", table1_markdown(t1, p.tasks, labels, kinds)]
        if t4:
            md += ["## Chosen vs oracle coefficient (paper Table 4)", "", table4_markdown(t4, coef)]
        if t8:
            md += ["## Unlabeled choice vs α chosen on the labeled search subset (paper Table 8)", "",
                   table8_markdown(t8)]
        if figures:
            md += ["## Figures", ""] + [f"- {t}: `{f}`" for t, f in figures.items()]
        from ..search.rule import write_json_atomic
        write_json_atomic(p.out / "comparison.json", data)
        for name, text in (("comparison.md", "\n".join(md) + "\n"), ("comparison.csv", table1_csv(t1, p.tasks, labels)),
                           ("table4.md", table4_markdown(t4, coef)), ("table8.md", table8_markdown(t8))):
            tmp = p.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, p.out / name)
        return from_rank0(data)

    def _figures(self, subset, sweeps, coef) -> dict:
        """Per auto row and task: D (unlabeled) and the full task score against the coefficient (paper Figure 2)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        out = {}
        for r in self.p.rows:
            if r.rule != "auto":
                continue
            for task, rec in subset.get(r.name, {}).items():
                sw = sweeps.get(_method_key(r), {}).get(task, {})
                fig, ax = plt.subplots(figsize=(5, 3.2))
                d = {float(a): v for a, v in rec.get("scores", {}).items()}
                ax.plot(sorted(d), [d[a] for a in sorted(d)], "o-", color="tab:blue", label="D (lower = consistent)")
                ax.set_xlabel(coef.get(r.name, "alpha"))
                ax.set_ylabel("D", color="tab:blue")
                ax.axvline(rec["alpha"], color="tab:blue", ls=":", lw=1)
                if sw:
                    ax2 = ax.twinx()
                    ax2.plot(sorted(sw), [sw[a] for a in sorted(sw)], "s-", color="tab:red", label="task score")
                    ax2.set_ylabel(f"{self.p.metrics[task]} (0-100)", color="tab:red")
                ax.set_title(f"{r.name}: {task}", fontsize=9)
                fig.tight_layout()
                f = self.p.out / "figures" / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', r.name)}_{task}.png"
                f.parent.mkdir(parents=True, exist_ok=True)
                fig.savefig(f, dpi=90)
                plt.close(fig)
                out[f"{r.name}/{task}"] = str(f.relative_to(self.p.out))
        return out


def summary(data: dict) -> str:
    rows = data["table1"]["rows"]
    lines = [f"{'row':34} " + " ".join(f"{t[-10:]:>10}" for t in data["tasks"]) + f" {'SUM':>8}"]
    for r in data["rows"]:
        s = rows[r["name"]]
        lines.append(f"{r['label'][:34]:34} " + " ".join(f"{s['scores'].get(t, float('nan')):>10.1f}"
                                                        for t in data["tasks"])
                     + f" {s['sum'] if s['sum'] is not None else float('nan'):>8.1f}")
    return "\n".join(lines)


def run_compare(config_path, log=print) -> dict:
    p = plan(config_path)  # everything that can fail without a model fails here (on every rank alike)
    started = start_distributed()
    try:
        if current_rank() != 0:
            log = _quiet
        log(f"adamms compare: {len(p.rows)} rows × {len(p.tasks)} tasks -> {p.out}")
        data = Runner(p, log).run()
        log(summary(data))
        log(f"wrote {p.out}/comparison.md, comparison.csv, comparison.json, table4.md, table8.md, figures/")
        return data
    finally:
        if started:
            import torch.distributed as dist
            dist.destroy_process_group()


def _quiet(*_):
    pass


def cmd_compare(a) -> None:
    run_compare(a.config)


def add_parser(sub) -> None:
    c = sub.add_parser("compare", help="the paper's comparison tables (methods × coefficient rules) through lmms-eval")
    c.add_argument("config", help="YAML config (see configs/)")
    c.set_defaults(func=cmd_compare)
