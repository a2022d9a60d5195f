"""The offline tasks shipped with the package, written out with their generated data for a harness to read.

The task folders (`tasks/` in the checkout, installed as `adamms_eval_tasks`) hold YAMLs and hook modules only;
their data is generated. `write_task_folder` copies one folder next to fresh data into a folder of the caller's
(never into the installed package), so `--include_path OUT` works the same from a wheel and from a checkout.

    shipped_folder("adamms_zoo") -> Path                 # the installed YAMLs and hooks
    write_shapes_tasks(out, rows=40) -> out/adamms_shapes  (lmms-eval: --include_path out)
    write_vlmeval_datasets(out, rows=40) -> {name: tsv}    (VLMEvalKit: LMUData=out)
    write_zoo_tasks(out, rows=100) -> out/adamms_zoo
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from .errors import AdammsError


def shipped_folder(name: str) -> Path:
    folder = Path(str(files("adamms_eval_tasks") / name))
    if not (folder / "_default_template.yaml").is_file():
        raise AdammsError(f"the installed package has no task folder {name} ({folder}); reinstall adamms-eval")
    return folder


def default_tasks_dir() -> Path:
    """Where `adamms zoo tasks` writes by default: beside the zoo and the search cache ($ADAMMS_CACHE)."""
    from .runtime import cache_root
    return cache_root() / "tasks"


def write_task_folder(out: str | Path, name: str, write_data: Callable[[Path], object]) -> Path:
    """out/name: the shipped YAMLs and hooks of task folder `name` plus `write_data(folder / "data")`. Built in a
    temporary sibling and renamed, so the folder is complete or absent; an existing one is replaced."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final, tmp = out / name, out / f".{name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(shipped_folder(name), tmp, ignore=shutil.ignore_patterns("data", "__pycache__", "__init__.py"))
    write_data(tmp / "data")
    if final.exists():
        old = out / f".{name}.old{os.getpid()}"
        final.rename(old)
        shutil.rmtree(old)
    tmp.rename(final)
    return final


def write_shapes_tasks(out: str | Path, rows: int = 40, size: int = 112, seed: int = 0) -> Path:
    """The `adamms_shapes` lmms-eval tasks (colour, yes/no, multiple choice, MME-shaped) over `rows` shapes."""
    from adamms_eval_tasks.make_offline_tasks import make_rows, write_parquet
    return write_task_folder(out, "adamms_shapes",
                             lambda data: write_parquet(make_rows(rows, size, seed), data / "shapes.parquet"))


def write_vlmeval_datasets(out: str | Path, rows: int = 40, size: int = 112, seed: int = 0) -> dict[str, Path]:
    """AdammsShapes_{YN,MCQ,GQA}.tsv over the same shapes, in VLMEvalKit's TSV layout."""
    from adamms_eval_tasks.make_offline_tasks import make_rows
    from adamms_eval_tasks.make_vlmeval_datasets import tables, write_tsv
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, table in tables(make_rows(rows, size, seed)).items():
        write_tsv(table, paths.setdefault(name, out / f"{name}.tsv"))
    return paths


def write_zoo_tasks(out: str | Path, rows: int = 100, seed: int = 0) -> Path:
    """The `adamms_zoo` lmms-eval tasks: one per skill of the trained zoo's world, `rows` questions each."""
    from .zoo.tasks import write_task_data
    return write_task_folder(out, "adamms_zoo", lambda data: write_task_data(data, n=rows, seed=seed))
