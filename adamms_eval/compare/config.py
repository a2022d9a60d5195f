"""`adamms compare` configurations: the YAML file, its rows, and the plan made from them before any model loads
(every check that needs no model: the checkpoints, methods and parameters, tasks and their labels).

Config (YAML):
    base: DIR            other: DIR         pretrained: DIR (θ0; task-vector methods)
    tasks: [lmms-eval task or group names]  include_path: [folders]   limit: null
    backend_args: {...}  other_backend_args: {...}   output: DIR   cache_dir: DIR
    search: {alphas: "0:0.6:0.1", search_samples: 100, search_seed: 0, metric: exact, signal: consistency,
             record_signals: all}   (session.settings.SEARCH_KEYS; compare records every signal unless told)
    chance: {task: score}   each task's chance score on 0-100 (else the task YAML's metadata.chance, same scale)
    granularity_alphas: "0:0.6:0.05"   Figure 4: every auto row also searches this finer grid on the same subset
                         (answers shared with the main grid reused) and sweeps it; coarser grids are its subsamples
    rows:                # default: the paper's Table 1 (originals, five baselines, AdaMMS, oracle)
      - {name: AdaMMS, method: linear, coefficient: auto}     # a number, auto or oracle; method params beside
      - {name: TIES auto, method: paper_ties, coefficient: auto, alphas: "0.2:1.4:0.2"}   # a row's own search keys

A search key in a row (alphas, search_samples, ...) overrides `search:` for that row's search and oracle sweep (a
task-vector method moves along λ and needs its own grid). Errors name the fix in the YAML's own spelling.
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AdammsError, closest
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
               "output", "cache_dir", "search", "rows", "device", "batch_size", "threads", "chance",
               "granularity_alphas"}
SEARCH_KEYS = set(SEARCH_KEYS)  # the settings every searched row shares (session.settings.SETTINGS)


@dataclass
class Row:
    name: str
    original: str | None = None  # "base" / "other" for the models as they are
    method: str | None = None  # method or preset name, as written
    params: dict = field(default_factory=dict)
    rule: str | float | None = None  # a number, "auto" or "oracle"
    search: dict = field(default_factory=dict)  # this row's own search keys (over the config's `search:`)

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
    """A config path: `${ADAMMS_CACHE}` is adamms-eval's cache root even when the variable is unset (its default,
    runtime.cache_root), other variables and `~` as the shell would expand them, relative to the config's folder."""
    if path is None:
        return None
    from ..runtime import cache_root
    text = re.sub(r"\$\{ADAMMS_CACHE\}|\$ADAMMS_CACHE(?!\w)", lambda _: str(cache_root()), str(path))
    p = Path(os.path.expandvars(text)).expanduser()
    return str(p if p.is_absolute() else (root / p).resolve())


def _missing_checkpoint(key: str, path: str) -> str:
    """Where `adamms zoo build` went, so a config that points elsewhere says what to write instead."""
    from ..zoo.build import default_zoo_dir
    zoo = default_zoo_dir()
    cache = os.environ.get("ADAMMS_CACHE")
    root = f"$ADAMMS_CACHE={cache}" if cache else "the default cache; $ADAMMS_CACHE is unset"
    built = zoo / Path(path).name
    if (built / "config.json").is_file():
        return (f"{key} checkpoint {path} not found (no config.json there), but `adamms zoo build` wrote {built} "
                f"({root}): write {key}: ${{ADAMMS_CACHE}}/zoo/{zoo.name}/{built.name} in the config")
    return (f"{key} checkpoint {path} not found (no config.json there); `adamms zoo build` writes the zoo to {zoo} "
            f"({root}): build it, or fix the path")


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
    chance: dict = field(default_factory=dict)  # task -> chance score (0-100), where known
    source: Path | None = None  # the config file as given (copied beside comparison.json)


def yaml_spell(name: str, value) -> str:
    """How an option is written in a compare config: `name: value` (at the top, under search:, or in a row)."""
    return f"{name}: {value}"


def _method_options(cfg: dict, method: str, params: dict, row_search: dict | None = None) -> dict:
    search = {**(cfg.get("search") or {}), **(row_search or {})}
    opts = {"base": cfg["base"], "other": cfg["other"], "method": method, "alpha": "auto", "search_report": "full",
            "record_signals": "all", **{k: v for k, v in search.items() if k in SEARCH_KEYS}, **params}
    if cfg.get("pretrained"):
        opts["pretrained"] = cfg["pretrained"]
    if cfg.get("cache_dir"):
        opts["cache_dir"] = cfg["cache_dir"]
    return opts


def _method_key(row: Row) -> str:
    """One session (and one LazyMerge) per method, parameters and the row's own search keys, if any."""
    key = [row.method, sorted(row.params.items())]
    return digest(key + [sorted(row.search.items())] if row.search else key)


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
        search = {k: r.pop(k) for k in sorted(set(r) & SEARCH_KEYS)}
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
        if search and rule not in RULES:
            k = next(iter(search))
            _fail(f"row {name!r}: {yaml_spell(k, search[k])} configures a search, and this row runs at "
                  f"{'its method default' if rule is None else rule}; add coefficient: auto (or oracle), or drop {k}")
        rows.append(Row(name, method=str(method), params={k: str(v) for k, v in params.items()}, rule=rule,
                        search=search))
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
    from ..merging.methods import REGISTRY, make_method
    from ..session import MergeSession, parse_settings
    method_params = {n for m in REGISTRY.values() for n in m.params}
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
            _fail(_missing_checkpoint(k, cfg[k]))
    includes = [_resolve(p, root) for p in ([cfg["include_path"]] if isinstance(cfg.get("include_path"), str)
                                            else cfg.get("include_path") or [])]
    cfg["include_path"] = includes  # resolved, as base / other / pretrained are
    rows = _parse_rows(cfg.get("rows"))
    if cfg.get("granularity_alphas") is not None:
        from ..search.rule import check_candidates, parse_alphas
        try:
            check_candidates(parse_alphas(cfg["granularity_alphas"]))
        except AdammsError as e:
            _fail(f"{config_path}: granularity_alphas: {e}")
    sessions = {}
    for row in rows:
        if row.original:
            continue
        try:
            method = make_method(row.method, row.params)
        except AdammsError as e:
            near = next(((k, c) for k in row.params if k not in method_params and (c := closest(k, SEARCH_KEYS))), None)
            if near:  # a misspelt search key, not a method parameter
                _fail(f"row {row.name!r}: {near[0]} is neither a parameter of {row.method} nor a search key; did you "
                      f"mean {near[1]}? (a search key in a row sets that row's search)")
            _fail(f"row {row.name!r}: {e}")
        fixed = [row.rule] if isinstance(row.rule, float) else []
        if row.rule == "auto" and cfg.get("granularity_alphas") is not None:
            from ..search.rule import parse_alphas
            fixed = parse_alphas(cfg["granularity_alphas"])
        for value in fixed:
            try:
                method.check_coefficient(value)
            except AdammsError as e:
                _fail(f"row {row.name!r}: {e}")
        mk = _method_key(row)
        if mk not in sessions:
            try:
                settings, _ = parse_settings(_method_options(cfg, row.method, row.params, row.search), spell=yaml_spell)
                backend = choose_backend(cfg["base"])
                sessions[mk] = (settings, MergeSession(settings, backend, HARNESS, spell=yaml_spell))  # headers only
            except AdammsError as e:
                _fail(f"row {row.name!r}: {e}")
    if LINEAR_KEY not in sessions:
        settings, _ = parse_settings(_method_options(cfg, "linear", {}), spell=yaml_spell)
        sessions[LINEAR_KEY] = (settings, MergeSession(settings, choose_backend(cfg["base"]), HARNESS, spell=yaml_spell))
    from lmms_eval.tasks import TaskManager
    tm = TaskManager("WARNING", include_path=includes or None)
    names = [cfg["tasks"]] if isinstance(cfg["tasks"], str) else list(cfg["tasks"])
    tasks = _leaf_tasks(tm, names)
    metrics, chance = {}, {}
    given = cfg.get("chance") or {}
    if not isinstance(given, dict) or any(t not in tasks for t in given):
        _fail(f"{config_path}: chance must map task names of `tasks` to a score on 0-100, e.g. chance: {{{tasks[0]}: 25}}")
    for t in tasks:
        tc = tm._get_config(t)
        metrics[t] = (tc.get("metric_list") or [{"metric": "acc"}])[0]["metric"]
        value = given.get(t, (tc.get("metadata") or {}).get("chance"))
        if value is not None:
            try:
                chance[t] = float(value)
            except (TypeError, ValueError):
                _fail(f"task {t}: chance {value!r} is not a number (a score on 0-100)")
        if tc.get("doc_to_target") is None and any(r.kind == "oracle" for r in rows):
            _fail(f"task {t} has no labels (doc_to_target), so the oracle row cannot score it; drop the oracle row "
                  "or the task")
    out = Path(_resolve(cfg.get("output") or "comparison", root))
    # the other model needs a backend only for an `original: other` row (a remote-code other has none here)
    other_backend = choose_backend(cfg["other"]) if any(r.original == "other" for r in rows) else None
    return Plan(cfg, root, rows, tasks, tm, sessions, choose_backend(cfg["base"]), other_backend, out, metrics, chance,
                config_path.resolve())
