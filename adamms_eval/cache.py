"""On-disk cache of search generations, so a rerun or a crash resumes without regenerating.

One JSONL file per (model pair + method, task); each line is one finished response for one
(candidate, input). Lines are appended and flushed as answers arrive. An unreadable file is set
aside (renamed *.corrupt), reported, and regenerated.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

log = logging.getLogger("adamms_eval")


def default_cache_dir() -> Path:
    root = os.environ.get("ADAMMS_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "adamms-eval")
    return Path(root).expanduser() / "generations"


def digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class GenerationCache:
    def __init__(self, root, identity: dict, task: str):
        safe_task = re.sub(r"[^A-Za-z0-9_.-]", "_", task)
        self.path = Path(root) / digest(identity) / f"{safe_task}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        identity_file = self.path.parent / "identity.json"
        if not identity_file.exists():
            identity_file.write_text(json.dumps(identity, indent=2, default=str))
        self.entries: dict[tuple[str, str], str] = {}
        self.note = ""
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            with self.path.open() as fh:
                for line in fh:
                    if line.strip():
                        rec = json.loads(line)
                        self.entries[(rec["alpha"], rec["input"])] = rec["response"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            bad = self.path.with_suffix(".corrupt")
            self.path.replace(bad)
            self.entries = {}
            self.note = f"unreadable generation cache {self.path} ({type(e).__name__}); set aside as {bad.name}, regenerating"
            log.warning(self.note)

    @staticmethod
    def key(alpha: float) -> str:
        return repr(round(float(alpha), 10))

    def get(self, alpha: float, input_key: str):
        return self.entries.get((self.key(alpha), input_key))

    def put(self, alpha: float, responses: dict[str, str]) -> None:
        if not responses:
            return
        with self.path.open("a") as fh:
            for input_key, resp in responses.items():
                self.entries[(self.key(alpha), input_key)] = resp
                fh.write(json.dumps({"alpha": self.key(alpha), "input": input_key, "response": resp}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
