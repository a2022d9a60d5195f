"""The arithmetic and layout of `adamms compare`'s tables (paper Table 1, Table 4, Table 8), apart from any model.

Scores are on 0-100. Row kinds: "original" (the two models as they are), "merge" (a method at a rule) and "oracle"
(an upper bound: never ranked, never marked best).
"""
from __future__ import annotations

import csv
import io


def originals_average(scores: dict[str, dict[str, float]], originals: list[str], tasks: list[str]) -> dict:
    """Per task, the mean of the original models' scores (the reference of the paper's gains)."""
    return {t: sum(scores[r][t] for r in originals) / len(originals) for t in tasks
            if all(t in scores.get(r, {}) for r in originals)}


TOP2_RULE = ("Top2 as in the paper's Table 1: over the task columns and SUM (\"8 out of 9 metrics\"), a row earns a "
             "point in a column when fewer than two merging rows score strictly higher than it; the merging rows "
             "alone are ranked (originals and the oracle are not in the pool; an original is counted against the "
             "merging rows). Ties share a place, so every tied row earns the point, ties at zero included; "
             "Top2>chance counts only points earned with a score above the column's chance (SUM: the sum of chances).")


def top2(values: dict[str, float], pool: list[str]) -> set[str]:
    """The rows of `values` fewer than two of whose pool rows score strictly higher (TOP2_RULE)."""
    ranked = [values[r] for r in pool if values.get(r) is not None]
    return {r for r, v in values.items() if v is not None and sum(x > v for x in ranked) < 2}


def table1(scores: dict[str, dict[str, float]], kinds: dict[str, str], tasks: list[str],
           chance: dict[str, float] | None = None) -> dict:
    """SUM, gain over the originals' average (per task and summed), Top-2 count (TOP2_RULE), the best row per column
    and the chance row (each task's chance score, where known)."""
    originals = [r for r, k in kinds.items() if k == "original"]
    avg = originals_average(scores, originals, tasks) if originals else {}
    ranked = [r for r in scores if kinds.get(r) != "oracle"]
    rows = {}
    for r, per_task in scores.items():
        done = [t for t in tasks if t in per_task]
        rows[r] = {"scores": {t: per_task[t] for t in done},
                   "gain": {t: per_task[t] - avg[t] for t in done if t in avg},
                   "sum": sum(per_task[t] for t in done) if len(done) == len(tasks) else None}
        rows[r]["sum_gain"] = (rows[r]["sum"] - sum(avg.values())) if rows[r]["sum"] is not None and \
            len(avg) == len(tasks) else None
    chance = {t: float(chance[t]) for t in tasks if chance and chance.get(t) is not None}
    chance_sum = sum(chance.values()) if len(chance) == len(tasks) else None
    pool = [r for r in ranked if kinds.get(r) == "merge"] or ranked
    best, points, above = {}, {r: 0 for r in scores}, {r: 0 for r in scores}
    for t in tasks + ["SUM"]:
        vals = {r: (rows[r]["sum"] if t == "SUM" else rows[r]["scores"].get(t)) for r in ranked}
        vals = {r: v for r, v in vals.items() if v is not None}
        if not vals:
            continue
        top = max(vals.values())
        best[t] = [r for r, v in vals.items() if v == top]
        floor = chance_sum if t == "SUM" else chance.get(t)
        for r in top2(vals, pool):
            points[r] += 1
            above[r] += floor is not None and vals[r] > floor
    for r in rows:
        rows[r]["top2"] = points[r] if r in ranked else None
        rows[r]["top2_above_chance"] = above[r] if r in ranked and chance else None
    return {"average": avg, "rows": rows, "best": best, "chance": chance, "chance_sum": chance_sum,
            "top2_rule": TOP2_RULE}


def oracle_point(sweep: dict[float, float]) -> tuple[float, float]:
    """(α, score) with the best score over a labeled sweep; ties go to the smaller α."""
    a = min(sweep, key=lambda x: (-sweep[x], x))
    return a, sweep[a]


def table4(chosen: dict[str, float], sweep: dict[str, dict[float, float]]) -> dict:
    """Per task: chosen α, oracle α over all candidates, their distance, the score at each and the score lost
    against the oracle; the same against the oracle over the interior candidates (the ones Algorithm 1 can
    choose; the paper's Table 4 appears to leave α=0 out: its OCRBench oracle is 85.50 at 0.1, α=0 scored 86.00)."""
    out = {}
    for t, a in chosen.items():
        if t not in sweep or a not in sweep[t]:
            continue
        oa, os_ = oracle_point(sweep[t])
        inner = sorted(sweep[t])[1:-1]
        ia, is_ = oracle_point({x: sweep[t][x] for x in inner}) if inner else (oa, os_)
        out[t] = {"chosen": a, "oracle": oa, "distance": round(abs(a - oa), 10), "score": sweep[t][a],
                  "oracle_score": os_, "lost": os_ - sweep[t][a], "oracle_interior": ia,
                  "distance_interior": round(abs(a - ia), 10), "oracle_interior_score": is_,
                  "lost_interior": is_ - sweep[t][a]}
    return out


def supervised_choice(subset_scores: dict[float, float]) -> float:
    """Table 8's supervised baseline: the α with the best task score on the labeled subset (ties: smaller α)."""
    return oracle_point(subset_scores)[0]


def _fmt(v, digits=2):
    return "–" if v is None else f"{v:.{digits}f}"


def table1_markdown(t1: dict, tasks: list[str], labels: dict[str, str], kinds: dict[str, str]) -> str:
    chance = t1.get("chance") or {}
    extra = " Top2>chance |" if chance else ""
    head = "| Model | " + " | ".join(tasks) + " | SUM | Top2 |" + extra
    lines = [head, "|" + "---|" * (len(tasks) + 3 + bool(chance))]
    section = None
    titles = {"original": "Original models", "merge": "Merging", "oracle": "Upper bound (labels)"}
    for r, row in t1["rows"].items():
        if kinds[r] != section:
            section = kinds[r]
            lines.append(f"| **{titles[section]}** |" + " |" * (len(tasks) + 2 + bool(chance)))
        cells = []
        for t in tasks + ["SUM"]:
            v = row["sum"] if t == "SUM" else row["scores"].get(t)
            g = row["sum_gain"] if t == "SUM" else row["gain"].get(t)
            cell = _fmt(v) + (f" ({g:+.2f})" if g is not None and kinds[r] != "original" else "")
            cells.append(f"**{cell}**" if r in t1["best"].get(t, []) and v is not None else cell)
        above = f" {'' if row.get('top2_above_chance') is None else row['top2_above_chance']} |" if chance else ""
        lines.append(f"| {labels[r]} | " + " | ".join(cells) + f" | {'' if row['top2'] is None else row['top2']} |"
                     + above)
    avg = t1["average"]
    if avg:
        lines.append("| *originals' average* | " + " | ".join(_fmt(avg.get(t)) for t in tasks) +
                     f" | {_fmt(sum(avg.values()) if len(avg) == len(tasks) else None)} | |" + " |" * bool(chance))
    if chance:
        lines.append("| *chance* | " + " | ".join(_fmt(chance.get(t)) for t in tasks) +
                     f" | {_fmt(t1.get('chance_sum'))} | | |")
    return "\n".join(lines) + "\n"


def table1_csv(t1: dict, tasks: list[str], labels: dict[str, str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["row", *tasks, "SUM", *(f"gain_{t}" for t in tasks), "gain_SUM", "top2", "top2_above_chance"])
    for r, row in t1["rows"].items():
        w.writerow([labels[r], *(row["scores"].get(t, "") for t in tasks), "" if row["sum"] is None else row["sum"],
                    *(row["gain"].get(t, "") for t in tasks), "" if row["sum_gain"] is None else row["sum_gain"],
                    "" if row["top2"] is None else row["top2"],
                    "" if row.get("top2_above_chance") is None else row["top2_above_chance"]])
    chance = t1.get("chance") or {}
    if chance:
        w.writerow(["chance", *(chance.get(t, "") for t in tasks), "" if t1.get("chance_sum") is None
                    else t1["chance_sum"], *([""] * (len(tasks) + 3))])
    return buf.getvalue()


def table4_markdown(views: dict[str, dict], coefficient: dict[str, str]) -> str:
    lines = ["Oracle over all candidates, and over the interior ones (Algorithm 1 chooses only those; the paper's "
             "Table 4 appears to leave α=0 out).", "",
             "| row | task | chosen | score | oracle (all) | distance | lost | oracle (interior) | distance | lost |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row, per_task in views.items():
        c = coefficient.get(row, "α")
        for t, v in per_task.items():
            ia = v.get("oracle_interior", v["oracle"])
            lines.append(f"| {row} | {t} | {c}={v['chosen']:g} | {v['score']:.2f} | {c}={v['oracle']:g} "
                         f"({v['oracle_score']:.2f}) | {v['distance']:g} | {v['lost']:.2f} | {c}={ia:g} "
                         f"({v.get('oracle_interior_score', v['oracle_score']):.2f}) | "
                         f"{v.get('distance_interior', v['distance']):g} | {v.get('lost_interior', v['lost']):.2f} |")
    return "\n".join(lines) + "\n"


def table8_markdown(views: dict[str, dict]) -> str:
    lines = ["| row | task | unlabeled α | score | supervised α (labeled subset) | score | unlabeled − supervised | "
             "supervised α (all labeled inputs) | score |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row, per_task in views.items():
        for t, v in per_task.items():
            every = f"{v['supervised_all']:g} | {v['supervised_all_score']:.2f}" if "supervised_all" in v else "– | –"
            lines.append(f"| {row} | {t} | {v['unlabeled']:g} | {v['unlabeled_score']:.2f} | {v['supervised']:g} "
                         f"(n={v['n']}) | {v['supervised_score']:.2f} | {v['unlabeled_score'] - v['supervised_score']:+.2f} "
                         f"| {every} |")
    return "\n".join(lines) + "\n"
