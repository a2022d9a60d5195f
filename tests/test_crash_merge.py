"""Fault injection on `adamms merge`: SIGKILL at several points, SIGINT / SIGTERM, a concurrent second merge,
stale partial folders of another plan, a damaged kept shard. Every resumed result must be byte-identical to an
uninterrupted merge and leave no partial folder or lock behind."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from adamms_eval.merging import merger as merge_module
from adamms_eval.cli import main
from helpers import same_output
from adamms_eval.merging.merger import open_merger, write_merged

SHARD = "3MB"
pytestmark = pytest.mark.usefixtures("python_sigint_handler")  # conftest: SIGINT raises KeyboardInterrupt


@pytest.fixture(scope="module")
def llama_pair(tmp_path_factory):
    """Two random 35M-parameter LLaMA checkpoints (140 MB each in fp32): ~45 output shards of 3 MB."""
    from transformers import LlamaConfig, LlamaForCausalLM
    root = tmp_path_factory.mktemp("llama_pair")
    cfg = LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=6, num_attention_heads=8,
                      num_key_value_heads=8, vocab_size=16000, tie_word_embeddings=False)
    dirs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        d = root / f"m{seed}"
        LlamaForCausalLM(cfg).save_pretrained(d)
        dirs.append(d)
    ref = write_merged(open_merger(*dirs), 0.4, root / "reference", max_shard_size=SHARD, progress=False)
    return dirs[0], dirs[1], ref


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*"))


# A real `adamms merge` whose shard writer stops the process (SIGSTOP) right before writing shard STOP_AT, or, with
# MODE=inside, after writing the first half of it: the test then SIGKILLs / signals it at that exact point.
STOPPER = textwrap.dedent("""
    import os, signal, sys
    import adamms_eval.merging.merger as m
    real, calls = m.write_safetensors, [0]
    def write_safetensors(path, *args, **kwargs):
        calls[0] += 1
        if calls[0] == int(os.environ["STOP_AT"]):
            if os.environ["MODE"] == "inside":
                real(path, *args, **kwargs)
                os.truncate(path, os.path.getsize(path) // 2)
            os.kill(os.getpid(), signal.SIGSTOP)
        return real(path, *args, **kwargs)
    m.write_safetensors = write_safetensors
    from adamms_eval.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def start_stopped(tmp_path, args, stop_at, mode="before"):
    script = tmp_path / "stopper.py"
    script.write_text(STOPPER)
    env = {**os.environ, "STOP_AT": str(stop_at), "MODE": mode, "HF_HUB_OFFLINE": "1"}
    # SIG_DFL: a test run started in the background inherits SIGINT ignored, which Python (and so the merge) keeps
    p = subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _, status = os.waitpid(p.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), p.communicate()
    return p


def finish(p, sig):
    os.kill(p.pid, sig)
    if sig != signal.SIGKILL:
        os.kill(p.pid, signal.SIGCONT)
    out, err = p.communicate(timeout=120)
    return p.returncode, out, err


def manifest(partial: Path) -> dict:
    f = partial / "adamms_partial.json"
    return json.loads(f.read_text())["shards"] if f.exists() else {}


def test_sigkill_at_every_point_then_resume_is_byte_identical(llama_pair, tmp_path, capsys):
    base, other, ref = llama_pair
    out = tmp_path / "out"
    args = ["merge", "--base", base, "--other", other, "--alpha", 0.4, "--out", out, "--max-shard-size", SHARD,
            "--quiet"]
    n_shards = len(set(json.loads((ref / "model.safetensors.index.json").read_text())["weight_map"].values()))
    assert n_shards >= 30

    # 1. before the first shard: killed with the first shard computed but not written
    p = start_stopped(tmp_path, args, stop_at=1)
    (partial,) = out.parent.glob(".out.partial-*")
    assert not list(partial.iterdir())
    # while it holds the lock, a second merge into the same --out is refused at once, naming its PID
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and f"PID {p.pid}" in err and err.count("\n") == 1, err
    assert finish(p, signal.SIGKILL)[0] == -signal.SIGKILL
    assert leftovers(out) == [f".out.lock", partial.name]  # what a SIGKILL leaves: nothing resumable yet

    # 2. between shards: 12 finished shards recorded
    p = start_stopped(tmp_path, args, stop_at=13)
    (partial2,) = out.parent.glob(".out.partial-*")
    assert partial2.name == f".out.partial-{p.pid}" and len(manifest(partial2)) == 12
    code, _, err = finish(p, signal.SIGKILL)
    assert code == -signal.SIGKILL and "removed .out.partial-" in err and "no finished shard recorded" in err

    # 3. inside a shard write: run 3 resumes 12 shards, writes 8 more and dies half way through the 9th
    p = start_stopped(tmp_path, args, stop_at=9, mode="inside")
    (partial3,) = out.parent.glob(".out.partial-*")
    assert len(manifest(partial3)) == 20
    torn = [f for f in partial3.glob("*.safetensors") if f.name not in manifest(partial3)]
    assert len(torn) == 1 and torn[0].stat().st_size > 0
    code, _, err = finish(p, signal.SIGKILL)
    assert code == -signal.SIGKILL and "12 finished shard(s) verified and reused" in err

    # 4. SIGINT between shards: one line, exit 130, finished shards kept
    p = start_stopped(tmp_path, args, stop_at=3)
    code, _, err = finish(p, signal.SIGINT)
    assert code == 130 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("adamms: interrupted (SIGINT): nothing written to") and "22 finished shard(s)" in last
    assert "20 finished shard(s) verified and reused; unfinished files removed" in err  # the torn shard
    assert not out.exists()

    # 5. the final run reuses the 22 shards and completes
    r = subprocess.run([sys.executable, "-m", "adamms_eval.cli", *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert r.returncode == 0 and "22 finished shard(s) verified and reused" in r.stderr, r.stderr
    same_output(out, ref)
    assert json.loads((out / "adamms_merge.json").read_text())["resumed_shards"] == 22
    assert leftovers(out) == []


@pytest.fixture
def small_args(zoo, tmp_path):
    out = tmp_path / "m"
    return out, ["merge", "--base", zoo["qwen2_vl"], "--other", zoo["llava_ov_hf"], "--out", out,
                 "--max-shard-size", "100KB", "--quiet"]


def interrupt_at(monkeypatch, call, action):
    real, calls = merge_module.write_safetensors, [0]

    def write_safetensors(*args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            action()
        return real(*args, **kwargs)
    monkeypatch.setattr(merge_module, "write_safetensors", write_safetensors)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_is_one_line_and_keeps_finished_shards(small_args, monkeypatch, capsys, sig):
    out, args = small_args
    interrupt_at(monkeypatch, 4, lambda: signal.raise_signal(sig))
    code = main([str(a) for a in args + ["--alpha", "0.3"]])
    err = capsys.readouterr().err
    assert code == 128 + sig and err.count("\n") == 1, err
    assert err.startswith(f"adamms: interrupted ({signal.Signals(sig).name}): nothing written to {out};")
    assert "3 finished shard(s)" in err and "rerun the same command" in err
    (partial,) = out.parent.glob(".m.partial-*")
    assert sorted(manifest(partial)) == sorted(f.name for f in partial.glob("*.safetensors"))
    assert not out.exists() and not (out.parent / ".m.lock").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the CLI puts the handler back


def test_interrupt_before_any_shard_leaves_nothing(small_args, monkeypatch, capsys):
    out, args = small_args
    interrupt_at(monkeypatch, 1, lambda: signal.raise_signal(signal.SIGINT))
    assert main([str(a) for a in args + ["--alpha", "0.3"]]) == 130
    assert "nothing kept" in capsys.readouterr().err
    assert leftovers(out) == [] and not out.exists()


def test_partial_of_another_plan_is_removed_and_a_damaged_shard_is_rewritten(small_args, monkeypatch, capsys,
                                                                             tmp_path):
    out, args = small_args
    ref = tmp_path / "ref"
    assert main([str(a) for a in args[:-5] + ["--out", ref, "--max-shard-size", "100KB", "--quiet",
                                               "--alpha", "0.3"]]) == 0
    interrupt_at(monkeypatch, 5, lambda: signal.raise_signal(signal.SIGINT))
    assert main([str(a) for a in args + ["--alpha", "0.6"]]) == 130  # another coefficient: another plan
    monkeypatch.undo()
    interrupt_at(monkeypatch, 6, lambda: signal.raise_signal(signal.SIGINT))
    os.rename(next(out.parent.glob(".m.partial-*")), out.parent / ".m.partial-999999")  # as if another process
    assert main([str(a) for a in args + ["--alpha", "0.3"]]) == 130
    err = capsys.readouterr().err
    assert "removed .m.partial-999999 left by a stopped merge (made by another plan): freed" in err
    monkeypatch.undo()
    (partial,) = out.parent.glob(".m.partial-*")
    shards = sorted(manifest(partial))
    assert len(shards) == 5
    damaged = partial / shards[2]
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert main([str(a) for a in args + ["--alpha", "0.3"]]) == 0
    err = capsys.readouterr().err
    assert "4 finished shard(s) verified and reused, 1 failed verification" in err
    same_output(out, ref)
    assert leftovers(out) == []


def test_error_removes_the_partial_folder_and_the_lock(small_args, monkeypatch, capsys):
    out, args = small_args
    from adamms_eval.errors import AdammsError

    def fail():
        raise AdammsError("disk on fire")
    interrupt_at(monkeypatch, 3, fail)
    assert main([str(a) for a in args + ["--alpha", "0.3"]]) == 2
    assert "disk on fire" in capsys.readouterr().err
    assert leftovers(out) == [] and not out.exists()


def test_write_time_hash_equals_the_file_hash(tmp_path):
    """The hash the streaming writer feeds as it writes is the hash of the file's bytes (resume compares it with a
    re-read of the file), for mixed dtypes, odd sizes, empty tensors and a tensor written in several blocks; and
    the file reads back as written."""
    import torch
    from safetensors.torch import load_file
    from adamms_eval.merging.partial import HASHES, file_hash
    from adamms_eval.merging.stream import write_safetensors
    g = torch.Generator().manual_seed(0)
    tensors = {"b.weight": torch.randn(7, 5, generator=g).to(torch.bfloat16), "a.bias": torch.randn(3, generator=g),
               "c.count": torch.arange(11, dtype=torch.int64), "d.empty": torch.zeros(0, 4, dtype=torch.float16),
               "e.half": torch.randn(13, generator=g).half(), "f.flag": torch.tensor([True, False])}
    blocks = {k: (v.split(2) if v.dim() and len(v) > 2 else [v]) for k, v in tensors.items()}
    f = tmp_path / "s.safetensors"
    for algo in HASHES:
        h = HASHES[algo]()
        write_safetensors(f, [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()], lambda k: iter(blocks[k]),
                          metadata={"format": "pt"}, hasher=h)
        assert h.hexdigest() == file_hash(f, algo)
    back = load_file(str(f))
    assert all(torch.equal(back[k], v) for k, v in tensors.items())
    h = HASHES[next(iter(HASHES))]()
    h.update(b"x")
    assert h.hexdigest() != file_hash(f)  # a hash that saw other bytes differs
