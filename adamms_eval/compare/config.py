"""`adamms compare` configurations: the YAML file, its rows, and the plan made from them before any model loads
(every check that needs no model: the checkpoints, methods and parameters, tasks and their labels).

Config (YAML):
    base: DIR            other: DIR         pretrained: DIR (θ0; task-vector methods)
    tasks: [lmms-eval task or group names]  include_path: [folders]   limit: null
    backend_args: {...}  other_backend_args: {...}   output: DIR   cache_dir: DIR
    search: {alphas: "0:0.6:0.1", search_samples: 100, search_seed: 0, metric: exact}   (session.settings.SEARCH_KEYS)
    rows:                # default: the paper's Table 1 (originals, five baselines, AdaMMS, oracle)
      - {name: AdaMMS, method: linear, coefficient: auto}     # a number, auto or oracle; method params beside
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AdammsError
from ..fingerprints import digest
from ..runtime import safe_name
from ..session.settings import SEARCH_KEYS

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
SEARCH_KEYS = set(SEARCH_KEYS)  # the settings every searched row shares (session.settings.SETTINGS)


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
        return safe_name(self.name, collapse=True).strip("_") + "-" + digest(self.__dict__)[:8]


def _fail(msg: str):
    raise AdammsError(msg)


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
    other_backend: str | None  # None: no `original: other` row
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
    return opts


def _method_key(row: Row) -> str:
    return digest([row.method, sorted(row.params.items())])


LINEAR_KEY = _method_key(Row("linear", method="linear"))  # always planned: it restores the base between methods


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


def _check_limit(limit, config_path) -> None:
    """lmms-eval's limit: a number of documents per task (≥ 1) or a fraction of each task in (0, 1)."""
    ok = limit is None or (not isinstance(limit, bool) and isinstance(limit, (int, float))
                           and (limit >= 1 and float(limit).is_integer() or 0 < limit < 1))
    if not ok:
        _fail(f"{config_path}: limit: {limit} must be a whole number of documents per task (at least 1) or a "
              "fraction of each task between 0 and 1, e.g. limit: 20; leave it out to run every document")


def plan(config_path: str | Path) -> Plan:
    """Every check that needs no model: the config, the checkpoints, methods and parameters, tasks and labels."""
    from ..harness.lmms_eval.backends import choose_backend
    from ..merging.methods import make_method
    from ..session import MergeSession, parse_settings
    config_path = Path(config_path)
    cfg, root = _load_yaml(config_path), config_path.resolve().parent
    unknown = sorted(set(cfg) - CONFIG_KEYS)
    if unknown:
        _fail(f"{config_path}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(CONFIG_KEYS))}")
    for k in ("base", "other", "tasks"):
        if not cfg.get(k):
            _fail(f"{config_path}: `{k}` is missing")
    _check_limit(cfg.get("limit"), config_path)
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
                backend = choose_backend(cfg["base"])
                sessions[mk] = (settings, MergeSession(settings, backend, HARNESS))  # preflight plan: headers only
            except AdammsError as e:
                _fail(f"row {row.name!r}: {e}")
    if LINEAR_KEY not in sessions:
        settings, _ = parse_settings(_method_options(cfg, "linear", {}))
        sessions[LINEAR_KEY] = (settings, MergeSession(settings, choose_backend(cfg["base"]), HARNESS))
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
    # the other model needs a backend only for an `original: other` row (a remote-code other has none here)
    other_backend = choose_backend(cfg["other"]) if any(r.original == "other" for r in rows) else None
    return Plan(cfg, root, rows, tasks, tm, sessions, choose_backend(cfg["base"]), other_backend, out, metrics)
