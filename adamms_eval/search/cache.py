"""On-disk cache of search generations, so a rerun or a crash resumes without regenerating.

A cache folder per *identity* (everything that can change an answer, see `identity.search_identity`), and in it
one JSONL file per task and rank (`<task>.rank<R>.jsonl`): each line is one finished answer for one
(candidate, input). A rank appends only to its own file, under an exclusive `flock`, one write per
batch; loading reads every rank's file under a shared lock, so concurrent ranks never tear or rename
each other's lines. A torn or corrupt line (a process killed mid-write) costs only that line: it is
skipped, counted in `note`, and regenerated.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from pathlib import Path

from ..fingerprints import digest
from ..runtime import cache_root, current_rank, safe_name

log = logging.getLogger("adamms_eval")


def default_cache_dir() -> Path:
    return cache_root() / "generations"


def cache_dir_problem(root) -> str | None:
    """Why answers cannot be kept under `root` (it cannot be created, or nothing can be written in it), or None.
    Asked before the model loads: a run refused then costs nothing."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as e:
        what = "is not a folder" if root.exists() and not root.is_dir() else "cannot be written"
        return f"the search answer cache {root} {what} ({e.strerror or type(e).__name__})"
    return None


class GenerationCache:
    def __init__(self, root, identity: dict, task: str, rank: int | None = None):
        self.safe_task = safe_name(task)
        self.folder = Path(root) / digest(identity)
        self.rank = current_rank() if rank is None else rank
        self.path = self.folder / f"{self.safe_task}.rank{self.rank}.jsonl"
        self.entries: dict[tuple[str, str], str] = {}
        self.dropped: dict[str, int] = {}  # file name -> torn or corrupt lines skipped
        self.unreadable: list[str] = []
        self.note = ""
        # A file this rank cannot append to (a folder in its place, a full disk) costs the cache, never the run: the
        # task runs with a warning and its new answers are not kept. (A cache folder that cannot be written at all
        # is refused before the model loads: cache_dir_problem, asked by the session.)
        self.unwritable = ""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._write_identity(identity)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644))
        except OSError as e:
            self.unwritable = f"{self.path} cannot be appended to ({e.strerror or type(e).__name__})"
        if self.folder.is_dir():
            self._load()
        if self.unwritable:
            self._warn_unwritable()

    def _write_identity(self, identity: dict) -> None:
        identity_file = self.folder / "identity.json"
        if not identity_file.exists():  # for people reading the folder; written atomically (ranks race here)
            fd, tmp = tempfile.mkstemp(prefix=".identity.", dir=self.folder)
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(identity, indent=2, default=str))
            os.replace(tmp, identity_file)

    def _warn_unwritable(self) -> None:
        line = f"generation cache: {self.unwritable}: this task runs without keeping its new answers"
        self.note = f"{self.note}; {line}" if self.note else line
        log.warning(line)

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
        for k, r in responses.items():
            self.entries[(self.key(alpha), k)] = r
        if self.unwritable:
            return
        blob = "".join(json.dumps({"alpha": self.key(alpha), "input": k, "response": r}) + "\n"
                       for k, r in responses.items()).encode()
        try:
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
        except OSError as e:  # a torn tail this leaves is cut by the next writer and skipped by the next reader
            self.unwritable = f"{self.path} cannot be appended to ({e.strerror or type(e).__name__})"
            self._warn_unwritable()

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
