"""On-disk cache of search generations, so a rerun or a crash resumes without regenerating.

A cache folder per *identity* (everything that can change an answer, see `search_identity`), and in it
one JSONL file per task and rank (`<task>.rank<R>.jsonl`): each line is one finished answer for one
(candidate, input). A rank appends only to its own file, under an exclusive `flock`, one write per
batch; loading reads every rank's file under a shared lock, so concurrent ranks never tear or rename
each other's lines. A torn or corrupt line (a process killed mid-write) costs only that line: it is
skipped, counted in `note`, and regenerated.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
from importlib import metadata
from pathlib import Path

log = logging.getLogger("adamms_eval")

# Package files whose code decides the merged weights (mapping, vocabulary alignment, methods, kernels):
# an edit to any of them must not reuse answers or shards made before it.
WEIGHT_SOURCES = ("checkpoint.py", "adapters.py", "mapping.py", "vocab.py", "methods.py", "chunked.py", "merge.py",
                  "lazy.py", "architectures")
# Libraries whose versions can change a generated answer (numerics, tokenisation, image preprocessing).
ANSWER_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "accelerate", "pillow", "qwen-vl-utils")
HARNESS_DISTRIBUTIONS = {"lmms-eval": ("lmms_eval", "lmms-eval"), "vlmeval": ("vlmeval", "ms-vlmeval")}
SMALL_FILE = 1 << 20  # argument files up to this size are identified by content, larger ones by size + mtime


def default_cache_dir() -> Path:
    root = os.environ.get("ADAMMS_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "adamms-eval")
    return Path(root).expanduser() / "generations"


def digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -- identity --------------------------------------------------------------------------------------------
def dir_stamps(path) -> dict | str | None:
    """Size and mtime of every file at the top of a model folder (weights, config, tokenizer, templates).

    Stat only, no reads. A path that is not a local folder (a hub id) is kept as given."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_dir():
        return str(path)
    return {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(p.iterdir()) if f.is_file()}


def _files_under(root: Path, names) -> list[Path]:
    out = []
    for name in names:
        p = root / name
        out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".py", ".json")) if p.is_dir() else [p]
    return out


def source_digest(extra_files=()) -> str:
    """Hash of the package sources that decide the merged weights, plus the given files (a harness wrapper)."""
    pkg = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in _files_under(pkg, WEIGHT_SOURCES) + sorted(Path(x).resolve() for x in extra_files):
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
    from . import __version__
    return {"base": model(base), "other": model(other), "pretrained": model(pretrained), "method": method,
            "harness": harness, "backend": backend, "backend_args": dict(sorted(args.items())),
            "versions": library_versions(harness), "accelerator": _accelerator(),
            "code": {"adamms_eval": __version__, "sources": source_digest(code_files)}}


def current_rank() -> int:
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:
        pass
    return int(os.environ.get("RANK", "0"))


# -- the cache -------------------------------------------------------------------------------------------
class GenerationCache:
    def __init__(self, root, identity: dict, task: str, rank: int | None = None):
        self.safe_task = re.sub(r"[^A-Za-z0-9_.-]", "_", task)
        self.folder = Path(root) / digest(identity)
        self.rank = current_rank() if rank is None else rank
        self.path = self.folder / f"{self.safe_task}.rank{self.rank}.jsonl"
        self.folder.mkdir(parents=True, exist_ok=True)
        identity_file = self.folder / "identity.json"
        if not identity_file.exists():  # for people reading the folder; written atomically (ranks race here)
            fd, tmp = tempfile.mkstemp(prefix=".identity.", dir=self.folder)
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(identity, indent=2, default=str))
            os.replace(tmp, identity_file)
        self.entries: dict[tuple[str, str], str] = {}
        self.dropped: dict[str, int] = {}  # file name -> torn or corrupt lines skipped
        self.unreadable: list[str] = []
        self.note = ""
        self._load()

    def files(self) -> list[Path]:
        """Every rank's file of this task (and a pre-rank single file, read only)."""
        legacy = self.folder / f"{self.safe_task}.jsonl"
        return sorted(self.folder.glob(f"{self.safe_task}.rank*.jsonl")) + ([legacy] if legacy.is_file() else [])

    def _load(self) -> None:
        for f in self.files():
            try:
                with f.open("rb") as fh:
                    fcntl.flock(fh, fcntl.LOCK_SH)  # a writer holds LOCK_EX while appending: never read half a batch
                    data = fh.read()
            except OSError as e:
                self.unreadable.append(f"{f.name} ({e.strerror or type(e).__name__})")
                continue
            for line in data.split(b"\n"):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    self.entries[(str(rec["alpha"]), str(rec["input"]))] = str(rec["response"])
                except (ValueError, KeyError, TypeError):
                    self.dropped[f.name] = self.dropped.get(f.name, 0) + 1
        notes = []
        if self.dropped:
            where = ", ".join(f"{name}: {n}" for name, n in self.dropped.items())
            notes.append(f"skipped {self.dropped_lines} torn or corrupt line(s) ({where}); only those are regenerated")
        if self.unreadable:
            notes.append(f"could not read {', '.join(self.unreadable)}; its answers are regenerated")
        if notes:
            self.note = f"generation cache {self.folder}: " + "; ".join(notes)
            log.warning(self.note)

    @property
    def dropped_lines(self) -> int:
        return sum(self.dropped.values())

    @staticmethod
    def key(alpha: float) -> str:
        return repr(round(float(alpha), 10))

    def get(self, alpha: float, input_key: str):
        return self.entries.get((self.key(alpha), input_key))

    def put(self, alpha: float, responses: dict[str, str]) -> None:
        """Append one batch of answers to this rank's file: one write, flushed and fsynced under LOCK_EX."""
        if not responses:
            return
        blob = "".join(json.dumps({"alpha": self.key(alpha), "input": k, "response": r}) + "\n"
                       for k, r in responses.items()).encode()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._cut_torn_tail(fd)
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock
        for k, r in responses.items():
            self.entries[(self.key(alpha), k)] = r

    @staticmethod
    def _cut_torn_tail(fd: int) -> None:
        """A writer killed mid-line leaves a tail without newline; under our lock nobody is writing it, so cut
        it off (it was counted when loading) instead of gluing the next line onto it."""
        pos = os.fstat(fd).st_size
        if pos == 0 or os.pread(fd, 1, pos - 1) == b"\n":
            return
        while pos > 0:
            start = max(0, pos - (1 << 16))
            cut = os.pread(fd, pos - start, start).rfind(b"\n")
            if cut >= 0:
                os.ftruncate(fd, start + cut + 1)
                return
            pos = start
        os.ftruncate(fd, 0)
