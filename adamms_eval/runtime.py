"""Where this process runs: its rank in a torch.distributed group (torchrun, accelerate launch), collectives that
are no-ops in a single process, the default device, folder-safe names, and the console commands' handling of
SIGINT / SIGTERM. One place for each, used everywhere. Imports nothing heavy: the console commands start here."""
from __future__ import annotations

import os
import re
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable


def process_group():
    """torch.distributed when a group of more than one process is up (torchrun, accelerate launch), else None."""
    import torch.distributed as dist
    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def current_rank() -> int:
    """This process's rank: the process group's when one is up, else the launcher's RANK (0 alone)."""
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:
        pass
    return int(os.environ.get("RANK", "0"))


def all_gather(obj) -> list:
    g = process_group()
    if g is None:
        return [obj]
    out = [None] * g.get_world_size()
    g.all_gather_object(out, obj)
    return out


def from_rank0(obj):
    """Rank 0's `obj` on every rank (every rank must call this at the same point)."""
    g = process_group()
    if g is None:
        return obj
    box = [obj if g.get_rank() == 0 else None]
    g.broadcast_object_list(box, src=0)
    return box[0]


def default_device() -> str:
    """"cuda" when a GPU is visible, else "cpu"."""
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def safe_name(text: str, keep: str = "_.-", collapse: bool = False) -> str:
    """`text` with every character that is not a letter, digit or one of `keep` replaced by "_" (a run of them by one
    "_" with `collapse`): file and folder names made from task, row and model names."""
    return re.sub(rf"[^A-Za-z0-9{re.escape(keep)}]{'+' if collapse else ''}", "_", str(text))


def cache_root() -> Path:
    """Where adamms-eval keeps what it builds and caches (search answers, the zoo, written-out tasks): $ADAMMS_CACHE,
    else $XDG_CACHE_HOME/adamms-eval, else ~/.cache/adamms-eval."""
    root = os.environ.get("ADAMMS_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "adamms-eval")
    return Path(root).expanduser()


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM (a scheduler's stop, `kill`) under `interrupt_handlers`: `signum` says which;
    the console commands clean up, say so in one line and exit 128 + signum."""

    def __init__(self, signum: int = signal.SIGINT, message: str = ""):
        super().__init__(message)
        self.signum = signum


_received: list[int] = []  # signals the handlers turned into Interrupted, in order
_replaced: dict[int, object] = {}  # the handlers ours replaced, while installed


_owner = os.getpid()  # the process that installed the handlers (set again on installing)


def _raise_interrupted(signum, frame):
    if os.getpid() != _owner:  # a forked child that still has our handler: the signal's usual meaning there
        previous = _replaced.get(signum, signal.SIG_DFL)
        if callable(previous):
            return previous(signum, frame)
        signal.signal(signum, previous)
        os.kill(os.getpid(), signum)
        return None
    _received.append(signum)
    raise Interrupted(signum)


def _restore_in_child() -> None:
    """A forked child (multiprocessing's fork workers, a harness's pool) gets the handlers it would have had: its
    parent's cleanup is not its own, and Pool.terminate() must be able to end it with SIGTERM."""
    for sig, handler in _replaced.items():
        try:
            signal.signal(sig, handler)
        except (ValueError, TypeError, OSError):  # the handler itself then acts as the previous one
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restore_in_child)


@contextmanager
def interrupt_handlers():
    """SIGINT and SIGTERM raise `Interrupted` while inside (main thread only; a signal the process inherited as
    ignored stays ignored, as nohup wants; forked children get the previous handlers back); the previous handlers
    come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _owner
    _owner = os.getpid()
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        current = signal.getsignal(sig)
        if current not in (signal.SIG_IGN, _raise_interrupted):
            previous[sig] = signal.signal(sig, _raise_interrupted)
            _replaced[sig] = current if current is not None else signal.SIG_DFL
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            _replaced.pop(sig, None)


def run_console(prog: str, body: Callable[[], int]) -> int:
    """Run a console command's body with the interrupt handlers installed before anything heavy is imported: an
    interrupt, even one in the middle of importing torch (which a library may turn into another error), is one line
    on stderr and exit 128 + signum, never a traceback."""
    with interrupt_handlers():
        seen = len(_received)
        try:
            return body()
        except KeyboardInterrupt as e:
            signum = getattr(e, "signum", signal.SIGINT)
            message = str(e) or "nothing written"
        except Exception:
            if len(_received) == seen:
                raise
            signum, message = _received[-1], "nothing written"
        print(f"{prog}: interrupted ({signal.Signals(signum).name}): {message}", file=sys.stderr)
        return 128 + signum
