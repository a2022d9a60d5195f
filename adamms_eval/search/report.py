"""Plots of a search: difference score D against α (and, with search_report=full, task score against α).

Only scored candidates have a D (Algorithm 1: the two ends are neighbours only); the ends are drawn as
grey ticks on the axis so the plot shows the whole grid that was generated.
"""
from __future__ import annotations

from pathlib import Path


def plot_search(task: str, record: dict, path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = {float(a): s for a, s in record["scores"].items()}
    alphas = sorted(scores)
    task_scores = record.get("task_scores") or {}
    fig, axes = plt.subplots(1, 2 if task_scores else 1, figsize=(10 if task_scores else 5.5, 3.8), squeeze=False)
    ax = axes[0][0]
    ax.plot(alphas, [scores[a] for a in alphas], "o-", color="tab:blue", label="D (scored)")
    ends = [float(a) for a in record.get("neighbours_only", [])]
    if ends:
        ax.plot(ends, [0] * len(ends), "|", color="grey", markersize=14, mew=2, label="neighbours only (not scored)")
    ax.axvline(record["alpha"], color="tab:red", ls="--", label=f"chosen α = {record['alpha']:g}")
    ax.set_xlabel(f"{record.get('coefficient', 'alpha')}")
    ax.set_ylabel(f"difference score D ({record['metric']})")
    ax.set_title(f"{task}: generation consistency (n={record['subset_size']})")
    ax.legend()
    if task_scores:
        ax2 = axes[0][1]
        for metric, values in task_scores.items():
            pts = sorted((float(a), v) for a, v in values.items())
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], "s-", label=metric)
        ax2.axvline(record["alpha"], color="tab:red", ls="--")
        ax2.set_xlabel(record.get("coefficient", "alpha"))
        ax2.set_ylabel("task score on the search subset")
        ax2.set_title("score (uses labels; report only)")
        ax2.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
