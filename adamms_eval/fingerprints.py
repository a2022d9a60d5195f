"""Fingerprints of what a result depends on: a stable digest of JSON-able values, the stamps of a model folder's
files, the hash of the code that shapes merged weights, and the versions of the libraries that shape answers.

Used by the merge writer (is a partial output folder still valid?) and by the search cache (may an answer be reused?).
"""
from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# Sub-packages whose code decides the merged weights (adapters and their JSON, checkpoint reading, mapping,
# vocabulary alignment, methods, kernels, the writer, LazyMerge): every file in them is hashed, so an edit or a new
# file anywhere in these folders never reuses answers or shards made before it.
WEIGHT_SHAPING = ("arch", "merging")
# Libraries whose versions can change a generated answer (numerics, tokenisation, image preprocessing).
ANSWER_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "accelerate", "pillow", "qwen-vl-utils")
HARNESS_DISTRIBUTIONS = {"lmms-eval": ("lmms_eval", "lmms-eval"), "vlmeval": ("vlmeval", "ms-vlmeval")}


def digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def dir_stamps(path) -> dict | str | None:
    """Size and mtime of every file at the top of a model folder (weights, config, tokenizer, templates).

    Stat only, no reads. A path that is not a local folder (a hub id) is kept as given."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_dir():
        return str(path)
    return {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(p.iterdir()) if f.is_file()}


def weight_shaping_files(package: Path = PACKAGE) -> list[Path]:
    """Every .py and .json file under the weight-shaping sub-packages, in a stable order."""
    return [f for name in WEIGHT_SHAPING for f in sorted((package / name).rglob("*"))
            if f.is_file() and f.suffix in (".py", ".json")]


def source_digest(extra_files=(), package: Path = PACKAGE) -> str:
    """Hash of the weight-shaping sources (by path inside the package and content), plus the given files (a harness
    wrapper's own sources)."""
    h = hashlib.sha256()
    for f in weight_shaping_files(package):
        h.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    for f in sorted(Path(x).resolve() for x in extra_files):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def library_versions(harness: str | None = None) -> dict[str, str | None]:
    names = [(n, (n,)) for n in ANSWER_LIBRARIES]
    if harness:
        names.append((harness, HARNESS_DISTRIBUTIONS.get(harness, (harness,))))
    out = {}
    for key, dists in names:
        out[key] = None
        for d in dists:
            try:
                out[key] = metadata.version(d)
                break
            except metadata.PackageNotFoundError:
                pass
    return out
