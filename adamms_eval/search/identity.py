"""The identity of a search answer: everything that can change it (models, method, harness, backend arguments,
library versions, accelerator, weight-shaping code). The cache folder is its digest, so a change to any of these
never reuses an answer made before it."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..fingerprints import dir_stamps, library_versions, source_digest

SMALL_FILE = 1 << 20  # argument files up to this size are identified by content, larger ones by size + mtime


def _normalise_value(v):
    """Model arguments arrive as strings from a command line or typed from Python: "1024" and 1024, "True"
    and True are one setting. A file argument (a chat template, a system prompt file) is its content."""
    if isinstance(v, (dict, list, tuple)):
        return json.loads(json.dumps(v, default=str, sort_keys=True))
    s = str(v).strip()
    if s.lower() in ("true", "false", "none"):
        return s.lower()
    try:
        return repr(float(s))
    except ValueError:
        pass
    if len(s) < 4096 and os.path.isfile(s):
        f = Path(s).resolve()
        st = f.stat()
        if st.st_size <= SMALL_FILE:
            return {"file": str(f), "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
        return {"file": str(f), "stamp": [st.st_size, st.st_mtime_ns]}
    return s


def _accelerator() -> str:
    try:
        import torch
        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.get_device_name()}"
    except Exception:  # no torch or no driver: answers come from the CPU
        pass
    return "cpu"


def search_identity(*, base, other, pretrained=None, method: dict, harness: str, backend: str,
                    backend_args: dict | None = None, code_files=()) -> dict:
    """Everything that can change a search answer, as a JSON-able dict (the cache folder is its digest).

    base / other / pretrained: model folders (paths and every file's size + mtime); method: the method's
    describe() (name, parameters, preset); harness ("lmms-eval", "vlmeval") and its backend name;
    backend_args: every argument passed on to the backend (max_pixels, dtype, attn_implementation,
    chat template, system prompt, batch size, ...), normalised so "1024" equals 1024; code_files: the
    harness wrapper's own source files (hashed with the weight-shaping package sources)."""
    def model(path):
        return None if path is None else {"path": str(Path(path).resolve()) if Path(path).exists() else str(path),
                                          "files": dir_stamps(path)}
    args = {str(k).strip().lower(): _normalise_value(v) for k, v in (backend_args or {}).items() if v is not None}
    from importlib.metadata import PackageNotFoundError, version
    try:
        __version__ = version("adamms-eval")
    except PackageNotFoundError:  # run from sources that were never installed
        __version__ = "unknown"
    return {"base": model(base), "other": model(other), "pretrained": model(pretrained), "method": method,
            "harness": harness, "backend": backend, "backend_args": dict(sorted(args.items())),
            "versions": library_versions(harness), "accelerator": _accelerator(),
            "code": {"adamms_eval": __version__, "sources": source_digest(code_files)}}


def base_identity(identity: dict) -> dict:
    """The identity of the base model's own answers: the search identity without what only the merge depends on
    (other, pretrained, method). A merge's candidate at the method's `base_at` (linear α = 0) is the base bit for
    bit, so its answers are shared by every search and plain run on this base with these backend settings."""
    return {**{k: v for k, v in identity.items() if k not in ("other", "pretrained", "method")},
            "answers_of": "the base model"}
