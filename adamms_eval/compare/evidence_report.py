"""evidence.md and the Figure 4 plots: the numbers of `evidence.evidence(...)` laid out as the paper's tables."""
from __future__ import annotations

from pathlib import Path

from ..runtime import safe_name


def _n(v, digits=2):
    return "–" if v is None else f"{v:.{digits}f}"


def _a(v):
    return "–" if v is None else f"{v:g}"


def signals_markdown(per_row: dict) -> str:
    lines = ["Each signal picks from the same answers on the same subset as the paper's rule (no extra generation; "
             "nll / entropy score each answer once, teacher-forced). Interior candidates only (Algorithm 1); "
             "ties to the smaller α. Distance and score lost against the oracle over the interior candidates "
             "(what a signal can pick) and over all candidates; sums over the tasks the signal ran on.", ""]
    for row, signals in per_row.items():
        tasks = sorted({t for s in signals.values() for t in s["tasks"]})
        lines += [f"**{row}**", "", "| signal | " + " | ".join(f"{t} α (dist, lost)" for t in tasks) +
                  " | Σ distance | Σ lost (interior) | Σ lost (all) |", "|---|" + "---:|" * (len(tasks) + 3)]
        for name, s in signals.items():
            cells = []
            for t in tasks:
                v = s["tasks"].get(t)
                cells.append(f"{_a(v['alpha'])} ({_a(v['distance_interior'])}, {_n(v['lost_interior'])})" if v
                             else "n/a")
            total = s.get("sum") or {}
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {_a(total.get('distance_interior'))} | "
                         f"{_n(total.get('lost_interior'))} | {_n(total.get('lost_all'))} |")
        why = {f"{n}: {r}" for n, s in signals.items() for r in s["unavailable"].values()}
        lines += [""] + [f"- not available: {w}" for w in sorted(why)] + [""]
    return "\n".join(lines) + "\n"


def table3_markdown(per_row: dict, tasks: list[str]) -> str:
    lines = ["Paper Table 3: the paper's rule with exact-match (EM) or embedding (Emb) differences, searched on the "
             "subset (Sample) or on every input of the task (Full, from the labeled sweep's own answers). Full-task "
             "score at the chosen α (α in brackets).", ""]
    for row, per_task in per_row.items():
        lines += [f"**{row}**", "", "| variant | " + " | ".join(tasks) + " | SUM |", "|---|" + "---:|" * (len(tasks) + 1)]
        for variant in ("exact_full", "embedding_full", "exact_sample", "embedding_sample"):
            vals = [per_task.get(t, {}).get(variant, {}) for t in tasks]
            scores = [v.get("score") for v in vals]
            total = sum(scores) if all(x is not None for x in scores) else None
            name = {"exact": "EM", "embedding": "Emb"}[variant.split("_")[0]] + "-" + \
                {"full": "Full", "sample": "Sample"}[variant.split("_")[1]]
            lines.append(f"| {name} | " + " | ".join(f"{_n(v.get('score'))} ({_a(v.get('alpha'))})" if "alpha" in v
                                                     else "n/a" for v in vals) + f" | {_n(total)} |")
        why = {f"{t} {k}: {v['unavailable']}" for t in tasks for k, v in per_task.get(t, {}).items()
               if "unavailable" in v}
        lines += [""] + [f"- {w}" for w in sorted(why)] + [""]
    return "\n".join(lines) + "\n"


def table14_markdown(per_row: dict) -> str:
    lines = ["Paper Tables 14 and 4: every candidate's full-task score, the originals and their average, the oracle "
             "over all candidates and over the interior ones, the α chosen per task and its distance to the best α.",
             ""]
    for row, t in per_row.items():
        tasks = t["tasks"]
        lines += [f"**{row}**", "", "| | " + " | ".join(tasks) + " | SUM |", "|---|" + "---:|" * (len(tasks) + 1)]

        def line(name, vals):
            total = sum(vals) if vals and all(v is not None for v in vals) else None
            lines.append(f"| {name} | " + " | ".join(_n(v) for v in vals) + f" | {_n(total)} |")
        for name, scores in t["originals"].items():
            line(name, [scores.get(x) for x in tasks])
        if t["average"]:
            line("AVG", [t["average"].get(x) for x in tasks])
        for a, scores in t["candidates"].items():
            line(f"α={a}", [scores.get(x) for x in tasks])
        for key, name in (("oracle_all", "Oracle (all candidates)"), ("oracle_interior", "Oracle (interior)")):
            cells = [t.get(key, {}).get(x) for x in tasks]  # paper Table 4's layout: score (α)
            lines.append(f"| {name} | " + " | ".join(f"{_n(c['score'])} ({_a(c['alpha'])})" if c else "–"
                                                     for c in cells) + " | |")
        line(row, [t["score"].get(x) for x in tasks])
        for key, name in (("chosen", "selected α"), ("distance_all", "distance to the best α (all)"),
                          ("distance_interior", "distance to the best α (interior)")):
            lines.append(f"| {name} | " + " | ".join(_a(t[key].get(x)) for x in tasks) + " | |")
        lines.append("")
    return "\n".join(lines) + "\n"


def figure4_markdown(per_row: dict) -> str:
    lines = ["Paper Figure 4: granularity. Coarser grids are subsamples of the searched grid; each picks from the "
             "same subset answers with the paper's rule; full-task score at its α.", ""]
    for row, per_task in per_row.items():
        steps = sorted({g for v in per_task.values() for g in v}, key=float)
        lines += [f"**{row}**", "", "| task | " + " | ".join(f"granularity {g}" for g in steps) + " |",
                  "|---|" + "---:|" * len(steps)]
        for task, v in per_task.items():
            lines.append(f"| {task} | " + " | ".join(f"α={_a(v[g]['alpha'])}: {_n(v[g]['score'])}" if "alpha" in v[g]
                                                      else f"n/a ({v[g]['unavailable']})" for g in steps) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def evidence_markdown(ev: dict, tasks: list[str]) -> str:
    return "\n".join(["# Evidence: the paper's claims and selection signals, from this comparison's records", "",
                      "## Selection signals against the oracle", "", signals_markdown(ev["signals"]),
                      "## Exact vs embedding; subset vs all inputs (paper Table 3)", "",
                      table3_markdown(ev["table3"], tasks),
                      "## The α chosen per task (paper Table 14)", "", table14_markdown(ev["table14"]),
                      "## Granularity (paper Figure 4)", "", figure4_markdown(ev["figure4"])])


def figure4_plots(ev: dict, sweeps_by_row: dict, out: Path) -> dict:
    """Per row and task: the full-task score against α, a star at the α each granularity chose (paper Figure 4)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    files = {}
    for row, per_task in ev["figure4"].items():
        for task, by_step in per_task.items():
            sw = {float(a): s for a, s in sweeps_by_row.get(row, {}).get(task, {}).items()}
            if not sw:
                continue
            fig, ax = plt.subplots(figsize=(5, 3.2))
            ax.plot(sorted(sw), [sw[a] for a in sorted(sw)], "-", color="grey", lw=1, label="every candidate")
            for (step, v), colour in zip(sorted(by_step.items(), key=lambda x: float(x[0])),
                                         ("tab:blue", "tab:orange", "tab:green", "tab:red")):
                if "alpha" not in v:
                    continue
                grid = v["candidates"]
                ax.plot(grid, [sw.get(a) for a in grid], "o-", color=colour, ms=3, label=f"granularity {step}")
                ax.plot([v["alpha"]], [v["score"]], "*", color=colour, ms=14, mec="black")
            ax.set_xlabel("α")
            ax.set_ylabel("full-task score (0-100)")
            ax.set_title(f"{row}: {task} (star: the α chosen)", fontsize=9)
            ax.legend(fontsize=7)
            files[f"figure4/{row}/{task}"] = _save(fig, out, "figure4", row, task)
    return files


def _save(fig, out: Path, kind: str, row: str, task: str) -> str:
    """Write a finished figure to out/figures/KIND_ROW_TASK.png and close it; the path relative to `out`."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    f = out / "figures" / f"{kind}_{safe_name(row, collapse=True)}_{safe_name(task)}.png"  # never a path
    f.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(f, dpi=90)
    plt.close(fig)
    return str(f.relative_to(out))


def signals_plots(records_by_row: dict, sweeps_by_row: dict, out: Path) -> dict:
    """Per row and task: each signal's values over the interior candidates (scaled to 0-1, lower wins) with a star
    at its pick, and the full-task score on a second axis (the numbers: the records' `signals`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    files = {}
    for row, per_task in records_by_row.items():
        for task, rec in per_task.items():
            signals = {n: s for n, s in (rec.get("signals") or {}).items() if "scores" in s}
            if not signals:
                continue
            fig, ax = plt.subplots(figsize=(5.5, 3.4))
            for name, s in signals.items():
                vals = {float(a): v for a, v in s["scores"].items()}
                finite = [v for v in vals.values() if v != float("inf")]
                lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
                xs = sorted(vals)
                ys = [(min(vals[a], hi) - lo) / (hi - lo) if hi > lo else 0.0 for a in xs]
                line, = ax.plot(xs, ys, "o-", ms=3, label=name)
                ax.plot([s["alpha"]], [ys[xs.index(float(s["alpha"]))]], "*", ms=12, color=line.get_color(),
                        mec="black")
            ax.set_xlabel("α")
            ax.set_ylabel("signal, scaled (lower wins)")
            sw = {float(a): v for a, v in sweeps_by_row.get(row, {}).get(task, {}).items()}
            if sw:
                ax2 = ax.twinx()
                ax2.plot(sorted(sw), [sw[a] for a in sorted(sw)], "s--", color="black", ms=3, lw=1)
                ax2.set_ylabel("full-task score (0-100), dashed")
            ax.set_title(f"{row}: {task} (star: each signal's pick)", fontsize=9)
            ax.legend(fontsize=6)
            files[f"signals/{row}/{task}"] = _save(fig, out, "signals", row, task)
    return files
