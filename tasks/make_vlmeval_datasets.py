#!/usr/bin/env python
"""Generate VLMEvalKit TSV datasets over the synthetic shapes of ``make_offline_tasks.py``.

Writes three files into ``$LMUData`` (default ``~/LMUData``, VLMEvalKit's own data root) or ``--out``:

* ``AdammsShapes_YN.tsv``  -- "Is the triangle red?" -> Yes / No       (VLMEvalKit ``ImageYORNDataset``)
* ``AdammsShapes_MCQ.tsv`` -- "What colour is the triangle?" A-D -> letter (``ImageMCQDataset``)
* ``AdammsShapes_GQA.tsv`` -- "What colour is the triangle?" -> one word (``ImageVQADataset``; VLMEvalKit
  picks its scorer by name, and a name containing ``GQA`` selects its exact-match rule "accuracy":
  prediction == answer after strip / lower-case)

Columns are VLMEvalKit's: ``index``, ``image`` (base64 PNG), ``question``, ``answer``, ``category`` (the
shape), and ``A``-``D`` for the MCQ file. The names are not VLMEvalKit built-ins, so no md5 check or
download applies; ``import adamms_eval_adapters.vlmeval`` registers them with those classes.
Rows are byte-identical across runs (same seed and library versions).

    python tasks/make_vlmeval_datasets.py                 # 40 rows each -> $LMUData
    python tasks/make_vlmeval_datasets.py --rows 12 --out /tmp/lmu
"""
from __future__ import annotations

import argparse
import base64
import csv
import os
import string
import sys
from pathlib import Path

try:  # the same synthetic content as the lmms-eval tasks
    from adamms_eval_tasks.make_offline_tasks import make_rows
except ImportError:  # run as a script from a checkout where the package is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_offline_tasks import make_rows

DATASETS = {"AdammsShapes_YN": "Y/N", "AdammsShapes_MCQ": "MCQ", "AdammsShapes_GQA": "VQA"}


def lmu_root() -> Path:
    return Path(os.environ.get("LMUData") or Path.home() / "LMUData")


def tables(rows: list[dict]) -> dict[str, list[dict]]:
    out = {name: [] for name in DATASETS}
    for i, r in enumerate(rows):
        image = base64.b64encode(r["image"]["bytes"]).decode()
        common = {"index": i, "image": image, "category": r["shape"]}
        out["AdammsShapes_YN"].append({**common, "question": r["yn_question"], "answer": r["yn_answer"].capitalize()})
        options = dict(zip(string.ascii_uppercase, r["choices"]))
        out["AdammsShapes_MCQ"].append({**common, "question": r["question"], **options,
                                        "answer": string.ascii_uppercase[r["answer_index"]]})
        out["AdammsShapes_GQA"].append({**common, "question": r["question"], "answer": r["answer"]})
    return out


def write_tsv(rows: list[dict], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)  # a half-written TSV never carries the final name


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--size", type=int, default=112, help="image side in pixels (default 112)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="folder (default: $LMUData, else ~/LMUData)")
    args = ap.parse_args(argv)
    out = args.out or lmu_root()
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in tables(make_rows(args.rows, args.size, args.seed)).items():
        write_tsv(rows, out / f"{name}.tsv")
        print(f"wrote {len(rows)} rows to {out / f'{name}.tsv'} ({DATASETS[name]})")


if __name__ == "__main__":
    main()
