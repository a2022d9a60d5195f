#!/usr/bin/env python
"""Generate the tiny offline dataset behind the ``adamms_shapes`` lmms-eval tasks.

Writes ``tasks/adamms_shapes/data/shapes.parquet`` (by default): N rows, each a
small RGB image of one coloured shape on a white background, with

* ``question`` / ``answer``       -- "What colour is the shape?" -> one word (red, green, ...)
* ``yn_question`` / ``yn_answer`` -- "Is the shape <colour>?"    -> yes / no
* ``choices`` / ``answer_index``  -- the colour list and the index of the right colour
* ``shape``, ``colour``, ``question_id``

Everything is derived from ``--seed`` with ``random.Random``; PNG bytes and the parquet
are byte-identical across runs on the same library versions.  The ``image`` column is
stored with the Hugging Face ``datasets.Image()`` feature (schema metadata), so
``datasets.load_dataset("parquet", data_files=...)`` yields PIL images again.

Usage (from the repo root)::

    python tasks/make_offline_tasks.py            # 40 rows -> tasks/adamms_shapes/data/shapes.parquet
    python tasks/make_offline_tasks.py --rows 200 --size 112 --out /tmp/shapes.parquet
"""

from __future__ import annotations

import argparse
import io
import random
from pathlib import Path

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 160, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
}
SHAPES = ("circle", "square", "triangle")
DEFAULT_OUT = Path(__file__).resolve().parent / "adamms_shapes" / "data" / "shapes.parquet"


def draw_shape(shape: str, rgb: tuple[int, int, int], size: int, rng: random.Random):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    # shape occupies 50-80% of the canvas, jittered position
    s = rng.randint(size // 2, (size * 4) // 5)
    x0 = rng.randint(0, size - s)
    y0 = rng.randint(0, size - s)
    if shape == "circle":
        d.ellipse([x0, y0, x0 + s - 1, y0 + s - 1], fill=rgb)
    elif shape == "square":
        d.rectangle([x0, y0, x0 + s - 1, y0 + s - 1], fill=rgb)
    elif shape == "triangle":
        d.polygon([(x0 + s // 2, y0), (x0, y0 + s - 1), (x0 + s - 1, y0 + s - 1)], fill=rgb)
    else:  # pragma: no cover
        raise ValueError(shape)
    return img


def png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def make_rows(n: int, size: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    colour_names = list(COLOURS)
    rows = []
    for i in range(n):
        colour = colour_names[i % len(colour_names)]  # balanced colours
        shape = SHAPES[rng.randrange(len(SHAPES))]
        img = draw_shape(shape, COLOURS[colour], size, rng)
        # yes/no: half the rows ask about the true colour, half about another one
        if i % 2 == 0:
            asked, yn = colour, "yes"
        else:
            asked = rng.choice([c for c in colour_names if c != colour])
            yn = "no"
        rows.append(
            {
                "question_id": f"shapes-{i:04d}",
                "image": {"bytes": png_bytes(img), "path": None},
                "shape": shape,
                "colour": colour,
                "question": f"What colour is the {shape}?",
                "answer": colour,
                "yn_question": f"Is the {shape} {asked}?",
                "yn_answer": yn,
                "choices": colour_names,
                "answer_index": colour_names.index(colour),
            }
        )
    return rows


def write_parquet(rows: list[dict], out: Path) -> None:
    import datasets

    features = datasets.Features(
        {
            "question_id": datasets.Value("string"),
            "image": datasets.Image(),
            "shape": datasets.Value("string"),
            "colour": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "yn_question": datasets.Value("string"),
            "yn_answer": datasets.Value("string"),
            "choices": datasets.Sequence(datasets.Value("string")),
            "answer_index": datasets.Value("int64"),
        }
    )
    ds = datasets.Dataset.from_list(rows, features=features)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(out))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--size", type=int, default=112, help="image side in pixels (default 112)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    rows = make_rows(args.rows, args.size, args.seed)
    write_parquet(rows, args.out)
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
