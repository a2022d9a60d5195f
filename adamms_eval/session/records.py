"""The search record of a run: its name, where it goes, `adamms_search.json` with one plot per searched task, and
reading back what an earlier run of the same settings recorded."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..fingerprints import digest
from ..runtime import safe_name
from ..search.rule import write_json_atomic
from .settings import Settings

RECORD_NAME = "adamms_search.json"
DEFAULT_OUTPUT = "adamms_results"  # relative to the working directory; $ADAMMS_OUTPUT overrides


def run_name(settings: Settings) -> str:
    """A folder-safe name that describes the merge: base, other, method, coefficient (value or auto), and a
    short digest of every other setting that changes the answers (so two settings never share a folder)."""
    def short(p):
        return safe_name(Path(p).name, "_.+-", collapse=True) or "model"
    s = settings
    coef = "auto" if s.auto else f"{s.alpha:g}"
    rest = digest([s.pretrained and str(Path(s.pretrained).resolve()), str(Path(s.base).resolve()),
                   str(Path(s.other).resolve()), sorted((k, str(v)) for k, v in s.params.items()),
                   s.alphas if s.auto else None, s.search_samples if s.auto else None,
                   s.search_seed if s.auto else None, s.metric if s.auto else None,
                   s.embedding_model if s.auto else None, s.arch]
                  # a non-default signal picks differently; the default keeps the names runs had before it existed
                  + ([s.signal] if s.auto and s.signal != "consistency" else []))[:8]
    return f"adamms_{short(s.base)}+{short(s.other)}_{s.method}_{s.coefficient}-{coef}_{rest}"


def default_output_dir(name: str) -> Path:
    return (Path(os.environ.get("ADAMMS_OUTPUT") or DEFAULT_OUTPUT).expanduser() / name).resolve()


def write_records(folder, data: dict, records: dict[str, dict]) -> Path:
    """adamms_search.json (+ one D-vs-α plot per searched task) in `folder`. Tasks recorded there earlier by a run
    with the same run name are kept, so runs over different tasks of one merge add up."""
    from ..search.report import plot_search
    folder = Path(folder)
    path = folder / RECORD_NAME
    if path.exists():
        try:
            old = json.loads(path.read_text())
            if old.get("run", {}).get("run_name") == data["run"]["run_name"]:
                data["tasks"] = {**{k: v for k, v in old.get("tasks", {}).items() if k != "*"}, **data["tasks"]}
        except (OSError, ValueError, AttributeError):
            pass
    write_json_atomic(path, data)
    for task, rec in records.items():
        if "scores" in rec:
            plot_search(task, rec, folder / f"adamms_search_{safe_name(task)}.png")
    return path


def recorded(folder, name: str, task: str, task_size: int) -> dict | None:
    """The record of `task` that an earlier run named `name` wrote in `folder`, if it searched the same number of
    inputs (a resumed run takes its α instead of searching again)."""
    try:
        old = json.loads((Path(folder) / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None
    rec = old.get("tasks", {}).get(task) if old.get("run", {}).get("run_name") == name else None
    return rec if rec and rec.get("task_size") == task_size and "alpha" in rec else None
