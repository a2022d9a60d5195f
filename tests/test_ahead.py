"""Whole-tensor merges on worker threads (merging/ahead.py): results in order, within the byte budget, errors at
their own tensor, one intra-op thread per worker; a TIES / DARE merge with two workers writes the bytes of a
one-worker merge, and an interrupt while workers run keeps the finished shards and leaves no worker behind."""
import signal
import threading

import pytest
import torch

from adamms_eval.cli import main
from adamms_eval.merging import ahead as ahead_module
from adamms_eval.merging import merger as merge_module
from adamms_eval.merging.ahead import TensorsAhead
from adamms_eval.merging.merger import open_merger, write_merged
from helpers import same_output


def test_results_come_in_order_within_the_byte_budget():
    threads_seen = []

    def compute(i):
        threads_seen.append(torch.get_num_threads())
        return torch.full((i + 1,), float(i))
    order = [(i, 10) for i in range(12)]
    main_threads = torch.get_num_threads()
    with TensorsAhead(order, compute, workers=2, ahead_bytes=30) as ahead:
        for i in range(12):
            assert i in ahead
            assert torch.equal(ahead.take(i), torch.full((i + 1,), float(i)))
            assert i not in ahead
            assert sum(n for _, n, _ in ahead.started) <= 30  # started and not taken: 3 of 10 bytes at most
    assert threads_seen == [1] * 12 and torch.get_num_threads() == main_threads


def test_out_of_order_take_and_a_failed_computation_are_errors():
    def compute(i):
        if i == 2:
            raise ValueError("tensor 2 is damaged")
        return torch.zeros(1)
    with TensorsAhead([(i, 1) for i in range(4)], compute) as ahead:
        with pytest.raises(RuntimeError, match="1 asked for out of order"):
            ahead.take(1)
        ahead.take(0), ahead.take(1)
        with pytest.raises(ValueError, match="tensor 2 is damaged"):
            ahead.take(2)
        assert torch.equal(ahead.take(3), torch.zeros(1))


@pytest.mark.parametrize("method,params", [("ties", {"density": 0.4}), ("dare_ties", {"density": 0.5, "seed": 3})])
def test_two_workers_write_the_bytes_of_one(zoo, tmp_path, monkeypatch, method, params):
    def merge(name, workers):
        monkeypatch.setattr(ahead_module, "WORKERS", workers)
        m = open_merger(zoo["llava_ov_hf"], zoo["qwen2_vl"], method, params, zoo["qwen2_lm"])
        return write_merged(m, 1.0, tmp_path / name, max_shard_size="200KB", progress=False)
    calls = []
    real = ahead_module.TensorsAhead.take
    monkeypatch.setattr(ahead_module.TensorsAhead, "take", lambda self, k: calls.append(k) or real(self, k))
    one, two = merge("one", 1), merge("two", 2)
    assert len(calls) > 20  # the merged tensors did go through the workers, in both runs
    same_output(one, two)


def test_interrupt_while_workers_merge_keeps_finished_shards_and_stops_them(zoo, tmp_path, monkeypatch, capsys,
                                                                           python_sigint_handler):
    out = tmp_path / "m"
    real, calls = merge_module.write_safetensors, [0]

    def write_safetensors(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:  # workers are merging the tensors of this shard and the next ones
            signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)
    monkeypatch.setattr(merge_module, "write_safetensors", write_safetensors)
    code = main(["merge", "--base", str(zoo["llava_ov_hf"]), "--other", str(zoo["qwen2_vl"]), "--pretrained",
                 str(zoo["qwen2_lm"]), "--method", "ties", "--param", "density=0.4", "--out", str(out),
                 "--max-shard-size", "200KB", "--quiet"])
    err = capsys.readouterr().err
    assert code == 130 and "2 finished shard(s)" in err, err
    assert not any(t.name.startswith("merge-ahead") for t in threading.enumerate())


@pytest.fixture(scope="module")
def wide_trio(tmp_path_factory):
    """θ0 and two fine-tunes of a 1-layer LLaMA whose tensors exceed torch's grain size (32768 entries), fp32."""
    from transformers import LlamaConfig, LlamaForCausalLM
    root = tmp_path_factory.mktemp("wide")
    cfg = LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=1000)
    dirs = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        dirs.append(root / f"m{seed}")
        LlamaForCausalLM(cfg).save_pretrained(dirs[-1])
    return dirs


def test_dare_bytes_do_not_depend_on_the_callers_thread_count(wide_trio, tmp_path):
    """DARE's l1 rescale sums |τ| in fp32 chunks; torch splits a sum by its intra-op thread count, so a merge in the
    caller's thread depends on the machine's cores (checked below). Workers use one intra-op thread each."""
    t0, m1, m2 = wide_trio
    params = {"density": 0.5, "seed": 1}
    entry = next(e for e in open_merger(m1, m2, "dare_ties", params, t0).plan.merged if "mlp.up_proj" in e.key)
    outputs, in_caller = [], []
    for threads in (1, 2):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            m = open_merger(m1, m2, "dare_ties", params, t0)
            in_caller.append(m.whole(entry, 1.0))
            outputs.append(write_merged(m, 1.0, tmp_path / f"t{threads}", progress=False))
        finally:
            torch.set_num_threads(previous)
    assert not torch.equal(*in_caller)  # the premise: without the workers the bytes would follow the cores
    same_output(*outputs)
