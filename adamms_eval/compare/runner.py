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

The config and its plan: compare/config.py; the written tables and figures: compare/outputs.py.
"""
from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path

from ..fingerprints import digest
from ..runtime import current_rank, default_device, from_rank0, process_group, safe_name
from .config import LINEAR_KEY, Plan, Row, _fail, _method_key, plan
from .outputs import figures, summary, write_outputs
from .tables import oracle_point, supervised_choice, table1, table4

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


class Runner:
    def __init__(self, p: Plan, log=print):
        self.p, self.log = p, log
        self.done = p.out / "done"
        self.main = current_rank() == 0  # the one rank that reads and writes OUTPUT
        if self.main:
            self.done.mkdir(parents=True, exist_ok=True)
        self.model = None  # the ComparisonModel around the once-loaded base
        self.other = None  # the other model's own backend, while the `other` row runs
        self.switch = None  # merging.switch.MethodSwitch over the base, once loaded
        self.active: str | None = None  # the method whose path the weights are on
        self.timings: dict[str, float] = {}
        self.full_answers: dict = {}  # method key -> task -> α -> {doc id: answer} (from the sweep files)
        self.identity = {k: p.cfg.get(k) for k in ("base", "other", "pretrained", "limit", "backend_args", "search")}

    # -- storage --------------------------------------------------------------------------------------------
    def _file(self, *parts) -> Path:
        *folders, name = [safe_name(x, "_.=-", collapse=True) for x in parts]
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
        return self.p.cfg.get("device") or default_device()

    def _backend(self, name: str, path: str, args: dict):
        import torch
        from lmms_eval.models import get_model
        from ..harness.lmms_eval.backends import default_device_map, unlisted_backend
        device = self._device()
        args = default_device_map(dict(args or {}), device, torch.cuda.is_available())
        try:
            cls = get_model(name, force_simple=True)
        except ValueError:  # shipped by lmms-eval but not in its list (cambrian)
            cls = unlisted_backend(name)
            if cls is None:
                raise
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
        return session

    def _session(self, row: Row):
        """The attached session of the row's method, with the weights at its path (merging.switch.MethodSwitch:
        every switch passes through the base, bit for bit)."""
        from ..merging.switch import MethodSwitch
        mk = _method_key(row)
        self._base_model()
        if self.switch is None:
            self.switch = MethodSwitch(self._attach(LINEAR_KEY, "linear").merged)
        if mk != self.active:
            left = self.active
            self.switch.switch(None if mk == LINEAR_KEY else mk, lambda: self._attach(mk, row.method).merged)
            if left not in (None, LINEAR_KEY):
                self.p.sessions[left][1].detach()  # its paths go with it
            self.active = mk
        return self.p.sessions[mk][1]

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
            self._keep_answers(row, task, alpha, hit.get("answers"))
            return hit["score"]
        session = self._session(row)
        session.force(alpha)
        self.model.use(session, self.p.out / "records" / _method_key(row))
        t0 = time.perf_counter()
        score = self._evaluate(self.model, task, self.p.out)
        answers = self._answers(task)
        self._store(f, {"method": row.method, "params": row.params, "task": task, "alpha": alpha, "score": score,
                        "seconds": time.perf_counter() - t0, "coefficient": session.settings.coefficient,
                        "answers": answers})
        self._keep_answers(row, task, alpha, answers)
        return score

    def _answers(self, task: str) -> dict:
        """The full task's answers of the evaluation that just ran, every rank's share ({doc id: answer})."""
        from ..runtime import all_gather
        out: dict = {}
        for part in all_gather(self.model.answers_seen.pop(task, {})):
            out.update({str(d): a for d, a in part.items()})
        return out

    def _keep_answers(self, row: Row, task: str, alpha: float, answers) -> None:
        if answers and self.main:  # for Table 3's search on every input (evidence.table3), never in comparison.json
            self.full_answers.setdefault(_method_key(row), {}).setdefault(task, {})[alpha] = answers

    def search(self, row: Row, task: str, alphas: list[float] | None = None) -> dict:
        """The unlabeled search of the row's method on `task` (its record: D per candidate, subset scores). alphas:
        search this grid instead of the settings' (granularity_alphas: the same subset, cached answers reused)."""
        mk = _method_key(row)
        f = self._file("search", mk, task) if alphas is None else \
            self._file("search_grid", mk, task, "_".join(f"{a:g}" for a in alphas))
        hit = self._lookup(f)
        if hit:
            return hit["record"]
        session = self._session(row)
        session.force(None)
        session.forget(task)
        self.model.use(session, self.p.out / "records" / (mk if alphas is None else f"{mk}_granularity"))
        main_grid = session.search.alphas
        if alphas is not None:
            session.search.alphas = list(alphas)
        t0 = time.perf_counter()
        try:
            score = self._evaluate(self.model, task, self.p.out)
        finally:
            session.search.alphas = main_grid
        if alphas is not None:
            self.model.use(session, self.p.out / "records" / mk)
        answers = self._answers(task)
        record = from_rank0(dict(session.records[task]))  # the same on every rank (gathered); rank 0's timing
        self._store(f, {"record": record, "score": score, "seconds": time.perf_counter() - t0})
        self._store(self._file("sweep", _method_key(row), task, f"{record['alpha']:g}"),
                    {"method": row.method, "params": row.params, "task": task, "alpha": record["alpha"],
                     "score": score, "coefficient": session.settings.coefficient, "answers": answers})
        if alphas is not None:
            session.forget(task)  # the settings' grid searches this task, not this one
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
        grid: dict = {r.name: {} for r in p.rows}
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
                        fine = self._granularity_alphas()
                        if fine:  # Figure 4: a finer grid on the same subset, its own sweep (points shared)
                            grid[row.name][task] = {"record": self.search(row, task, fine),
                                                    "sweep": {f"{a:g}": self.point(row, task, a) for a in fine}}
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
        return self._write(scores, chosen, sweeps, subset, coef, {r: g for r, g in grid.items() if g})

    def _granularity_alphas(self) -> list[float] | None:
        from ..search.rule import parse_alphas
        spec = self.p.cfg.get("granularity_alphas")
        return parse_alphas(spec) if spec else None

    @staticmethod
    def _default_coefficient(row: Row, settings) -> float:
        from ..merging.methods import make_method
        m = make_method(row.method, row.params)
        return float(m.default_coefficient if getattr(m, "default_coefficient", None) is not None else 1.0)

    # -- outputs --------------------------------------------------------------------------------------------
    def _write(self, scores, chosen, sweeps, subset, coef, grid=None) -> dict:
        p = self.p
        kinds = {r.name: r.kind for r in p.rows}
        ordered = {r.name: scores[r.name] for r in p.rows}
        t1 = table1(ordered, kinds, p.tasks, p.chance)
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
                                    # the paper's "supervised with all eval. data": the best α on every labeled input
                                    "supervised_all": oracle_point(sw[task])[0],
                                    "supervised_all_score": oracle_point(sw[task])[1],
                                    "n": rec.get("subset_size")}
        if not self.main:  # every rank took part in the evaluations above; rank 0 alone writes
            return from_rank0(None)
        figs = figures(p, subset, sweeps, coef)
        data = write_outputs(p, ordered, t1, t4, t8, chosen, sweeps, subset, coef, figs, self.timings,
                             self.full_answers, grid or {})
        return from_rank0(data)


def console_logging() -> None:
    """lmms-eval logs through loguru, whose default handler prints DEBUG to the console (its task index says
    "... could not be loaded as a task or group" for every YAML file that is no task). Here INFO and up reach
    stderr ($LOGURU_LEVEL overrides); a handler someone else added is left alone."""
    import sys

    from loguru import logger
    try:
        logger.remove(0)  # loguru's default handler, if it is still there
    except ValueError:
        return
    logger.add(sys.stderr, level=os.environ.get("LOGURU_LEVEL", "INFO"))


def run_compare(config_path, log=print) -> dict:
    console_logging()
    p = plan(config_path)  # everything that can fail without a model fails here (on every rank alike)
    started = start_distributed()
    try:
        if current_rank() != 0:
            log = _quiet
        log(f"adamms compare: {len(p.rows)} rows × {len(p.tasks)} tasks -> {p.out}")
        data = Runner(p, log).run()
        log(summary(data))
        log(f"wrote {p.out}/comparison.md, comparison.csv, comparison.json, table4.md, table8.md, evidence.md, "
            "figures/")
        return data
    finally:
        if started:
            import torch.distributed as dist
            dist.destroy_process_group()


def _quiet(*_):
    pass


def check_published(published_path, data: dict, log=print) -> list[str]:
    """The values of a published comparison.json that this run's differ from, one line each (none: reproduced)."""
    from .evidence import differences
    try:
        published = json.loads(Path(published_path).read_text())
    except (OSError, ValueError) as e:
        _fail(f"--check {published_path}: cannot read it as JSON ({type(e).__name__}); pass a comparison.json")
    rerun = json.loads(json.dumps(data, default=str))  # as written to comparison.json
    lines = differences(published, rerun)
    for line in lines:
        log(f"differs: {line}")
    log(f"--check {published_path}: " + (f"{len(lines)} value(s) differ" if lines else "every published number "
                                         "reproduced exactly"))
    return lines


def cmd_compare(a) -> None:
    if a.check and not Path(a.check).is_file():  # before any model loads
        _fail(f"--check {a.check}: no such file; pass the published comparison.json")
    data = run_compare(a.config)
    if a.check and current_rank() == 0 and check_published(a.check, data):
        raise SystemExit(1)


def add_parser(sub) -> None:
    c = sub.add_parser("compare", help="the paper's comparison tables (methods × coefficient rules) through lmms-eval")
    c.add_argument("config", help="YAML config (see configs/)")
    c.add_argument("--check", metavar="PUBLISHED.json", help="rerun (resuming from OUTPUT/done and the search cache) "
                   "and report every number that differs from this published comparison.json; exit 1 if any does")
    c.set_defaults(func=cmd_compare)
