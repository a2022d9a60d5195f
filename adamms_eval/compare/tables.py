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


def table1(scores: dict[str, dict[str, float]], kinds: dict[str, str], tasks: list[str]) -> dict:
    """SUM, gain over the originals' average (per task and summed), Top-2 count and the best row per column."""
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
    best, top2 = {}, {r: 0 for r in scores}
    for t in tasks + ["SUM"]:
        vals = {r: (rows[r]["sum"] if t == "SUM" else rows[r]["scores"].get(t)) for r in ranked}
        vals = {r: v for r, v in vals.items() if v is not None}
        if not vals:
            continue
        ordered = sorted(vals.values(), reverse=True)
        best[t] = [r for r, v in vals.items() if v == ordered[0]]
        if t != "SUM":
            second = ordered[1] if len(ordered) > 1 else ordered[0]
            for r, v in vals.items():
                top2[r] += v >= second
    for r in rows:
        rows[r]["top2"] = top2[r] if r in ranked else None
    return {"average": avg, "rows": rows, "best": best}


def oracle_point(sweep: dict[float, float]) -> tuple[float, float]:
    """(α, score) with the best score over a labeled sweep; ties go to the smaller α."""
    a = min(sweep, key=lambda x: (-sweep[x], x))
    return a, sweep[a]


def table4(chosen: dict[str, float], sweep: dict[str, dict[float, float]]) -> dict:
    """Per task: chosen α, oracle α, their distance, the score at each and the score lost against the oracle."""
    out = {}
    for t, a in chosen.items():
        if t not in sweep or a not in sweep[t]:
            continue
        oa, os_ = oracle_point(sweep[t])
        out[t] = {"chosen": a, "oracle": oa, "distance": round(abs(a - oa), 10), "score": sweep[t][a],
                  "oracle_score": os_, "lost": os_ - sweep[t][a]}
    return out


def supervised_choice(subset_scores: dict[float, float]) -> float:
    """Table 8's supervised baseline: the α with the best task score on the labeled subset (ties: smaller α)."""
    return oracle_point(subset_scores)[0]


def _fmt(v, digits=2):
    return "–" if v is None else f"{v:.{digits}f}"


def table1_markdown(t1: dict, tasks: list[str], labels: dict[str, str], kinds: dict[str, str]) -> str:
    head = "| Model | " + " | ".join(tasks) + " | SUM | Top2 |"
    lines = [head, "|" + "---|" * (len(tasks) + 3)]
    section = None
    titles = {"original": "Original models", "merge": "Merging", "oracle": "Upper bound (labels)"}
    for r, row in t1["rows"].items():
        if kinds[r] != section:
            section = kinds[r]
            lines.append(f"| **{titles[section]}** |" + " |" * (len(tasks) + 2))
        cells = []
        for t in tasks + ["SUM"]:
            v = row["sum"] if t == "SUM" else row["scores"].get(t)
            g = row["sum_gain"] if t == "SUM" else row["gain"].get(t)
            cell = _fmt(v) + (f" ({g:+.2f})" if g is not None and kinds[r] != "original" else "")
            cells.append(f"**{cell}**" if r in t1["best"].get(t, []) and v is not None else cell)
        lines.append(f"| {labels[r]} | " + " | ".join(cells) + f" | {'' if row['top2'] is None else row['top2']} |")
    avg = t1["average"]
    if avg:
        lines.append("| *originals' average* | " + " | ".join(_fmt(avg.get(t)) for t in tasks) +
                     f" | {_fmt(sum(avg.values()) if len(avg) == len(tasks) else None)} | |")
    return "\n".join(lines) + "\n"


def table1_csv(t1: dict, tasks: list[str], labels: dict[str, str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["row", *tasks, "SUM", *(f"gain_{t}" for t in tasks), "gain_SUM", "top2"])
    for r, row in t1["rows"].items():
        w.writerow([labels[r], *(row["scores"].get(t, "") for t in tasks), "" if row["sum"] is None else row["sum"],
                    *(row["gain"].get(t, "") for t in tasks), "" if row["sum_gain"] is None else row["sum_gain"],
                    "" if row["top2"] is None else row["top2"]])
    return buf.getvalue()


def table4_markdown(views: dict[str, dict], coefficient: dict[str, str]) -> str:
    lines = ["| row | task | chosen | oracle | distance | score | oracle score | lost |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row, per_task in views.items():
        c = coefficient.get(row, "α")
        for t, v in per_task.items():
            lines.append(f"| {row} | {t} | {c}={v['chosen']:g} | {c}={v['oracle']:g} | {v['distance']:g} | "
                         f"{v['score']:.2f} | {v['oracle_score']:.2f} | {v['lost']:.2f} |")
    return "\n".join(lines) + "\n"


def table8_markdown(views: dict[str, dict]) -> str:
    lines = ["| row | task | unlabeled α | score | supervised α (labeled subset) | score | unlabeled − supervised |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row, per_task in views.items():
        for t, v in per_task.items():
            lines.append(f"| {row} | {t} | {v['unlabeled']:g} | {v['unlabeled_score']:.2f} | {v['supervised']:g} "
                         f"(n={v['n']}) | {v['supervised_score']:.2f} | {v['unlabeled_score'] - v['supervised_score']:+.2f} |")
    return "\n".join(lines) + "\n"
