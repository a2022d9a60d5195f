"""Data of the zoo's lmms-eval tasks (tasks/adamms_zoo/): one parquet per skill, from seeds no training run uses.

    write_task_data(out_dir, n=100, seed=0) -> {skill: Path}

`adamms zoo tasks` writes it beside a copy of the task YAMLs (adamms_eval.task_folders.write_zoo_tasks).
"""
from __future__ import annotations

import io
import os
from pathlib import Path

from . import world



def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def write_task_data(out_dir: str | Path, n: int = 100, seed: int = 0) -> dict[str, Path]:
    """Write <skill>.parquet (n rows each) with the datasets Image feature; each file appears complete or not at all."""
    import datasets
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    features = datasets.Features({"question_id": datasets.Value("string"), "image": datasets.Image(),
                                  "question": datasets.Value("string"), "answer": datasets.Value("string"),
                                  "skill": datasets.Value("string")})
    paths = {}
    for skill in world.SKILLS:
        rows = [{"question_id": f"{skill}-{i:04d}", "image": {"bytes": _png(e.image), "path": None},
                 "question": e.question, "answer": e.answer, "skill": skill}
                for i, e in enumerate(world.examples(skill, n, world.TASK_SEED + seed * n))]
        path = paths[skill] = out_dir / f"{skill}.parquet"
        tmp = out_dir / f".{skill}.parquet.tmp{os.getpid()}"
        datasets.Dataset.from_list(rows, features=features).to_parquet(str(tmp))
        os.replace(tmp, path)
    return paths
