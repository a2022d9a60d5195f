"""What `adamms compare` writes: comparison.md / .csv / .json, table4.md, table8.md and figures/<row>_<task>.png."""
from __future__ import annotations

import os
import sys

from ..runtime import safe_name
from ..search.rule import write_json_atomic
from .config import Plan, _method_key
from .evidence import evidence
from .evidence_report import evidence_markdown, figure4_plots, signals_plots
from .tables import TOP2_RULE, table1_csv, table1_markdown, table4_markdown, table8_markdown


def write_outputs(p: Plan, ordered, t1, t4, t8, chosen, sweeps, subset, coef, figures: dict, timings: dict,
                  full_answers: dict | None = None, granularity_search: dict | None = None) -> dict:
    """Every output file, each written whole under a temporary name first; returns comparison.json's data."""
    import lmms_eval
    import torch
    import transformers
    kinds = {r.name: r.kind for r in p.rows}
    labels = {r.name: r.name + (f" ({coef[r.name]}={r.rule:g})" if isinstance(r.rule, float) else
                                f" ({coef[r.name]} {r.rule})" if r.rule else "") for r in p.rows}
    data = {"config": {k: v for k, v in p.cfg.items()}, "tasks": p.tasks, "metrics": p.metrics, "chance": p.chance,
            "rows": [{**r.__dict__, "kind": r.kind, "label": labels[r.name],
                      **({"method_key": _method_key(r)} if r.method else {})} for r in p.rows],
            "scores": ordered, "table1": t1, "chosen": chosen,
            "sweeps": {k: {t: {f"{a:g}": s for a, s in v.items()} for t, v in sw.items()} for k, sw in sweeps.items()},
            "search_records": subset, "granularity_search": granularity_search or {}, "table4": t4, "table8": t8, "figures": figures,
            "timings_seconds": {k: round(v, 2) for k, v in timings.items()},
            "versions": {"lmms_eval": getattr(lmms_eval, "__version__", "?"), "torch": torch.__version__,
                         "transformers": transformers.__version__, "python": sys.version.split()[0]}}
    ev = evidence(data, full_answers, embedding_model=(p.cfg.get("search") or {}).get("embedding_model"))
    data["evidence"] = ev
    rows_sweeps = {r.name: {t: (granularity_search or {}).get(r.name, {}).get(t, {}).get("sweep") or sw
                            for t, sw in data["sweeps"].get(_method_key(r), {}).items()}
                   for r in p.rows if r.name in ev["figure4"]}
    figures.update(figure4_plots(ev, rows_sweeps, p.out))
    figures.update(signals_plots(subset, {r.name: data["sweeps"].get(_method_key(r), {}) for r in p.rows}, p.out))
    md = ["# adamms compare", "", f"base `{p.cfg['base']}` ← other `{p.cfg['other']}`; scores 0-100; "
          "(gain over the originals' average); **best** per column (oracle excluded).", "", TOP2_RULE,
          "", table1_markdown(t1, p.tasks, labels, kinds)]
    if t4:
        md += ["## Chosen vs oracle coefficient (paper Table 4)", "", table4_markdown(t4, coef)]
    if t8:
        md += ["## Unlabeled choice vs α chosen on the labeled search subset (paper Table 8)", "",
               table8_markdown(t8)]
    if figures:
        md += ["## Figures", ""] + [f"- {t}: `{f}`" for t, f in figures.items()]
    write_json_atomic(p.out / "comparison.json", data)
    for name, text in (("comparison.md", "\n".join(md) + "\n"), ("comparison.csv", table1_csv(t1, p.tasks, labels)),
                       ("table4.md", table4_markdown(t4, coef)), ("table8.md", table8_markdown(t8)),
                       ("evidence.md", evidence_markdown(ev, p.tasks))) + _config_copy(p):
        tmp = p.out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, p.out / name)
    return data


def _config_copy(p: Plan) -> tuple:
    """config.yaml beside comparison.json: the exact config that ran (never written over the config itself)."""
    if p.source is None or (p.out / "config.yaml").resolve() == p.source:
        return ()
    return (("config.yaml", p.source.read_text()),)


def figures(p, subset, sweeps, coef) -> dict:
    """Per auto row and task: D (unlabeled) and the full task score against the coefficient (paper Figure 2)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = {}
    for r in p.rows:
        if r.rule != "auto":
            continue
        for task, rec in subset.get(r.name, {}).items():
            sw = sweeps.get(_method_key(r), {}).get(task, {})
            fig, ax = plt.subplots(figsize=(5, 3.2))
            d = {float(a): v for a, v in rec.get("scores", {}).items()}
            signal = rec.get("signal", "consistency")  # the value the search minimised (search/signals.py)
            name = "D" if signal == "consistency" else signal
            ax.plot(sorted(d), [d[a] for a in sorted(d)], "o-", color="tab:blue", label=f"{name} (lower wins)")
            ax.set_xlabel(coef.get(r.name, "alpha"))
            ax.set_ylabel(name, color="tab:blue")
            ax.axvline(rec["alpha"], color="tab:blue", ls=":", lw=1)
            if sw:
                ax2 = ax.twinx()
                ax2.plot(sorted(sw), [sw[a] for a in sorted(sw)], "s-", color="tab:red", label="task score")
                ax2.set_ylabel(f"{p.metrics[task]} (0-100)", color="tab:red")
            ax.set_title(f"{r.name}: {task}", fontsize=9)
            fig.tight_layout()
            f = p.out / "figures" / f"{safe_name(r.name, collapse=True)}_{safe_name(task)}.png"  # never a path
            f.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(f, dpi=90)
            plt.close(fig)
            out[f"{r.name}/{task}"] = str(f.relative_to(p.out))
    return out


def summary(data: dict) -> str:
    """The console table: one column per task under its full name, rows under their full labels."""
    rows = data["table1"]["rows"]
    width = {t: max(len(t), 6) for t in data["tasks"]}
    label = max([len("row")] + [len(r["label"]) for r in data["rows"]])
    lines = [f"{'row':{label}} " + " ".join(f"{t:>{width[t]}}" for t in data["tasks"]) + f" {'SUM':>8}"]
    for r in data["rows"]:
        s = rows[r["name"]]
        lines.append(f"{r['label']:{label}} " + " ".join(f"{s['scores'].get(t, float('nan')):>{width[t]}.1f}"
                                                       for t in data["tasks"])
                     + f" {s['sum'] if s['sum'] is not None else float('nan'):>8.1f}")
    return "\n".join(lines)
