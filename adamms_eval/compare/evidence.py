"""The paper's claims as numbers, computed from `adamms compare`'s own records (no model, no generation):
Table 3 (exact vs embedding difference; the 100-input subset vs all inputs), Table 14 (the α chosen per task and
every candidate's score), Figure 4 (granularity: coarser grids are subsamples of the searched one, chosen from the
same answers), the selection signals against the oracle, and `--check` (which published numbers a rerun changed).

Inputs (all in comparison.json): per searched row and task its search record (the chosen α, the recorded signals,
the subset's answers per candidate), per method and task the labeled sweep {α: full-task score} and, where the
sweep stored them, the full task's answers per candidate.
"""
from __future__ import annotations

import math

from ..errors import AdammsError
from ..search.signals import choose
from .tables import oracle_point

GRANULARITIES = (0.05, 0.1, 0.2)
# What a resumed rerun changes without changing any result: never compared by --check.
UNCHECKED = {"timings_seconds", "versions", "config", "figures", "search_seconds", "generations",
             "reused_from_cache", "cache_lines_dropped", "notes", "seconds"}


def _f(a) -> float:
    return round(float(a), 10)


def _sweep(sw: dict) -> dict[float, float]:
    return {_f(a): float(s) for a, s in sw.items()}


def oracles(sweep: dict) -> dict:
    """The oracle over all candidates and over the interior ones (those Algorithm 1 can choose)."""
    sw = _sweep(sweep)
    alphas = sorted(sw)
    inner = {a: sw[a] for a in alphas[1:-1]} or sw
    (a_all, s_all), (a_in, s_in) = oracle_point(sw), oracle_point(inner)
    return {"all": {"alpha": a_all, "score": s_all}, "interior": {"alpha": a_in, "score": s_in}}


def against_oracle(alpha: float, sweep: dict) -> dict:
    """Distance of a chosen α to each oracle α and the score lost against each."""
    sw, o = _sweep(sweep), oracles(sweep)
    a = _f(alpha)
    return {"alpha": a, "score": sw[a],
            **{f"{k}_{name}": v for name, ov in o.items()
               for k, v in (("oracle", ov["alpha"]), ("distance", round(abs(a - ov["alpha"]), 10)),
                            ("lost", ov["score"] - sw[a]))}}


def signals_table(records: dict[str, dict], sweeps: dict[str, dict]) -> dict:
    """Per signal and task (from each task's search record): the α it picks, its distance to the oracle α and the
    score lost (interior and all-candidates oracle), summed over the tasks every signal could run on."""
    per: dict[str, dict] = {}
    for task, rec in records.items():
        if task not in sweeps:
            continue
        signals = rec.get("signals") or {}
        for name, s in signals.items():
            entry = per.setdefault(name, {"tasks": {}, "unavailable": {}})
            if "alpha" in s and _f(s["alpha"]) in _sweep(sweeps[task]):
                entry["tasks"][task] = against_oracle(s["alpha"], sweeps[task])
            else:
                entry["unavailable"][task] = s.get("unavailable", "α outside the sweep")
    for entry in per.values():
        v = list(entry["tasks"].values())
        entry["sum"] = {k: round(sum(x[k] for x in v), 10) for k in ("distance_interior", "lost_interior",
                                                                     "distance_all", "lost_all")} if v else {}
    return per


def table3(record: dict | None, sweep: dict, full_answers: dict | None, metric: str = "exact",
           embedding_model: str | None = None) -> dict:
    """EM / Emb × Sample (the search subset) / Full (every input of the task, from the labeled sweep's answers):
    the α each picks and its full-task score. A variant that cannot be computed says why."""
    sw = _sweep(sweep)
    out = {}
    sig = (record or {}).get("signals") or {}
    for m in ("exact", "embedding"):
        key = f"consistency_{m}"
        if key in sig and "alpha" in sig[key]:
            a = _f(sig[key]["alpha"])
        elif record and record.get("metric", metric) == m and (record.get("signal") or "consistency") == "consistency":
            a = _f(record["alpha"])
        else:
            a = None
        out[f"{m}_sample"] = {"alpha": a, "score": sw.get(a)} if a is not None else \
            {"unavailable": sig.get(key, {}).get("unavailable", "not recorded")}
        if not full_answers or any(_f(x) not in {_f(k) for k in full_answers} for x in sw):
            out[f"{m}_full"] = {"unavailable": "the sweep stored no answers for every candidate"}
            continue
        answers = {_f(k): v for k, v in full_answers.items()}
        docs = sorted(set.intersection(*(set(v) for v in answers.values())), key=str)
        responses = {x: [answers[x][d] for d in docs] for x in sorted(sw)}
        try:
            a = choose("consistency", responses, metric=m, embedding_model=embedding_model).alpha
            out[f"{m}_full"] = {"alpha": a, "score": sw[a], "n": len(docs)}
        except AdammsError as e:
            out[f"{m}_full"] = {"unavailable": str(e)}
    return out


def subgrid(alphas, step: float) -> list[float]:
    """The candidates of `alphas` on a grid of `step` from the first one (a coarser granularity, subsampled)."""
    alphas = sorted(_f(a) for a in alphas)
    ratio = [(a - alphas[0]) / step for a in alphas]
    return [a for a, r in zip(alphas, ratio) if abs(r - round(r)) < 1e-6]


def granularity(record: dict, sweep: dict, steps=GRANULARITIES, metric: str | None = None,
                embedding_model: str | None = None) -> dict:
    """Figure 4: per granularity, the α the paper's rule picks from the record's subset answers on the subsampled
    grid, and its full-task score. A granularity finer than the searched grid, or leaving under three candidates,
    is reported as such."""
    sw = _sweep(sweep)
    responses = {_f(a): r for a, r in (record.get("responses") or {}).items()}
    out = {}
    for step in steps:
        key = f"{step:g}"
        grid = subgrid(responses, step) if responses else []
        searched = sorted(responses)
        if not responses:
            out[key] = {"unavailable": "the search record holds no answers (search_report=full stores them)"}
        elif len(searched) > 1 and step < min(b - a for a, b in zip(searched, searched[1:])) - 1e-9:
            out[key] = {"unavailable": f"finer than the searched grid {searched}"}
        elif len(grid) < 3:
            out[key] = {"unavailable": f"under three candidates on a {key} grid: {grid}"}
        else:
            res = choose("consistency", {a: responses[a] for a in grid}, metric=metric or record.get("metric", "exact"),
                         embedding_model=embedding_model)
            out[key] = {"candidates": grid, "alpha": res.alpha, "score": sw.get(res.alpha),
                        "D": {f"{a:g}": v for a, v in res.scores.items()}}
    return out


def table14(sweep_by_task: dict[str, dict], chosen: dict[str, float], originals: dict[str, dict]) -> dict:
    """Every candidate's full-task score per task, the originals and their average, the chosen α per task and its
    distance to the best α (over all candidates and over the interior ones)."""
    tasks = list(sweep_by_task)
    alphas = sorted({a for sw in sweep_by_task.values() for a in _sweep(sw)})
    rows = {f"{a:g}": {t: _sweep(sweep_by_task[t]).get(a) for t in tasks} for a in alphas}
    avg = {t: sum(o[t] for o in originals.values()) / len(originals) for t in tasks
           if originals and all(t in o for o in originals.values())}
    picked = {t: against_oracle(chosen[t], sweep_by_task[t]) for t in tasks if t in chosen}
    best = {t: oracles(sweep_by_task[t]) for t in tasks}
    return {"tasks": tasks, "candidates": rows, "originals": originals, "average": avg,
            "oracle_all": {t: o["all"] for t, o in best.items()},
            "oracle_interior": {t: o["interior"] for t, o in best.items()},
            "chosen": {t: v["alpha"] for t, v in picked.items()}, "score": {t: v["score"] for t, v in picked.items()},
            "distance_all": {t: v["distance_all"] for t, v in picked.items()},
            "distance_interior": {t: v["distance_interior"] for t, v in picked.items()}}


def evidence(data: dict, full_answers: dict | None = None, embedding_model: str | None = None) -> dict:
    """Every evidence table of a comparison (its data as `adamms compare` builds comparison.json; full_answers:
    {method key: {task: {α: {doc: answer}}}} from the labeled sweep, for Table 3's Full columns)."""
    rows = {r["name"]: r for r in data["rows"]}
    kinds = {n: r["kind"] for n, r in rows.items()}
    out = {"signals": {}, "table3": {}, "figure4": {}, "table14": {}}
    originals = {n: data["scores"][n] for n, k in kinds.items() if k == "original"}
    for name, per_task in (data.get("search_records") or {}).items():
        mk = rows[name]["method_key"]
        sweeps = data["sweeps"].get(mk, {})
        full = (full_answers or {}).get(mk, {})
        out["signals"][name] = signals_table(per_task, sweeps)
        out["table3"][name] = {t: table3(rec, sweeps[t], full.get(t), rec.get("metric", "exact"), embedding_model)
                               for t, rec in per_task.items() if t in sweeps}
        finer = (data.get("granularity_search") or {}).get(name, {})  # config granularity_alphas: a finer grid
        out["figure4"][name] = {t: granularity(finer[t]["record"], finer[t]["sweep"], embedding_model=embedding_model)
                                if t in finer else granularity(rec, sweeps[t], embedding_model=embedding_model)
                                for t, rec in per_task.items() if t in sweeps}
        chosen = {t: rec["alpha"] for t, rec in per_task.items()}
        out["table14"][name] = table14({t: sweeps[t] for t in data["tasks"] if t in sweeps}, chosen, originals)
    return out


# -- --check ---------------------------------------------------------------------------------------------------
def numbers(obj, path: str = "") -> dict[str, object]:
    """Every number (and every chosen value) of a JSON document by its path, results only (UNCHECKED left out)."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in UNCHECKED:
                continue
            out.update(numbers(v, f"{path}.{k}" if path else str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(numbers(v, f"{path}[{i}]"))
    elif isinstance(obj, (int, float, str)) or obj is None:
        out[path] = obj
    return out


def differences(published: dict, rerun: dict) -> list[str]:
    """One line per value that differs between a published comparison.json and a rerun's (or is only in one)."""
    a, b = numbers(published), numbers(rerun)
    lines = []
    for path in sorted(set(a) | set(b)):
        if path not in b:
            lines.append(f"{path}: published {a[path]!r}, missing from the rerun")
        elif path not in a:
            lines.append(f"{path}: not published, rerun {b[path]!r}")
        elif not _same(a[path], b[path]):
            lines.append(f"{path}: published {a[path]!r}, rerun {b[path]!r}")
    return lines


def _same(x, y) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return x == y and type(x) is type(y) or (isinstance(x, (int, float)) and isinstance(y, (int, float))
                                            and not isinstance(x, bool) and float(x) == float(y))
