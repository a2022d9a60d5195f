"""Block-by-block merging (merging/stream.py): the blocks of every tensor join to the whole-tensor merge, also for
fused tensors whose rows come from several slots (CogVLM's QKV <- mPLUG-Owl2's q / multiway k, v, and back), and
the writer's files read back with safetensors' own loader."""
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import adamms_eval.merging.stream as stream
from adamms_eval.merging.merger import open_merger
from adamms_eval.testing.tiny import build_zoo


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return build_zoo(tmp_path_factory.mktemp("zoo"), ["cogvlm", "mplug_owl2", "llama_lm"])


@pytest.mark.parametrize("base,other,method", [("cogvlm", "mplug_owl2", "linear"),
                                               ("mplug_owl2", "cogvlm", "task_arithmetic")])
def test_blocks_join_to_the_whole_tensor_merge(zoo, monkeypatch, base, other, method):
    m = open_merger(zoo[base], zoo[other], method, {}, zoo["llama_lm"] if method != "linear" else None)
    monkeypatch.setattr(stream, "ROW_BYTES", 3 * 64 * 4)  # 3 rows of the 64-wide tiny models: blocks cross slots
    fused = [e for e in m.plan.merged if len(e.other) > 1 or e.other[0].part is not None]
    assert fused  # the pair has tensors whose rows come from several slots or from a part of one
    for e in m.plan.entries:
        whole = m.tensor(e, 0.3)
        pieces = list(m.blocks(e, 0.3))
        if e in fused:
            assert len(pieces) > 1
        assert torch.equal(torch.cat([p.reshape(-1) for p in pieces]).view(whole.shape), whole), e.key


def test_written_file_reads_back_with_safetensors(tmp_path):
    tensors = {"a": torch.randn(7, 5), "b": torch.randn(3).to(torch.bfloat16), "c": torch.arange(6).to(torch.int64)}
    spec = [(k, tuple(t.shape), t.dtype) for k, t in tensors.items()]
    stream.write_safetensors(tmp_path / "x.safetensors", spec, lambda k: iter(tensors[k].split(2)),
                             metadata={"format": "pt"})
    back = load_file(tmp_path / "x.safetensors")
    assert set(back) == set(tensors) and all(torch.equal(back[k], t) for k, t in tensors.items())
    with safe_open(tmp_path / "x.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_a_block_source_that_falls_short_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="wrote 8 bytes, header says 16"):
        stream.write_safetensors(tmp_path / "x.safetensors", [("a", (4,), torch.float32)],
                                 lambda k: iter([torch.zeros(2)]))


def test_a_failed_write_in_the_writer_thread_reaches_the_caller(tmp_path):
    """Blocks are written on a writer thread while the next one is merged: its error (a full disk, say) must stop
    the writer, not be dropped with the thread."""
    class FullAfterHeader:
        calls = 0

        def update(self, data):
            self.calls += 1
            if self.calls > 2:  # the length and the JSON header went through; the first block does not
                raise OSError(28, "No space left on device")

    pieces = []
    def blocks(name):
        for piece in torch.arange(12.0).split(4):
            pieces.append(name)
            yield piece
    with pytest.raises(OSError, match="No space left"):
        stream.write_safetensors(tmp_path / "x.safetensors", [("a", (12,), torch.float32), ("b", (12,), torch.float32)],
                                 blocks, hasher=FullAfterHeader())
    assert len(pieces) <= 2  # stopped at the next block, not after the whole file


@pytest.mark.parametrize("dtype", [None, torch.float32])
def test_shards_are_the_hubs_split_of_the_output_tensors(zoo, tmp_path, dtype):
    """write_merged splits by byte counts; the shards must be what huggingface_hub's torch split gives for the
    output tensors (shapes and output dtypes), in order."""
    import json
    from huggingface_hub import split_torch_state_dict_into_shards
    from adamms_eval.merging.merger import write_merged
    m = open_merger(zoo["cogvlm"], zoo["mplug_owl2"], "linear", {}, None, dtype=dtype)
    out = write_merged(m, 0.4, tmp_path / "out", max_shard_size="40KB", progress=False)
    meta = {e.key: torch.empty(e.shape, dtype=m.out_dtype(e), device="meta") for e in m.plan.entries}
    want = split_torch_state_dict_into_shards(meta, filename_pattern="model{suffix}.safetensors",
                                              max_shard_size="40KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(want.filename_to_tensors) > 2
    assert index["weight_map"] == want.tensor_to_filename
    for filename, keys in want.filename_to_tensors.items():
        with safe_open(out / filename, "pt") as f:
            assert list(f.keys()) == sorted(keys)
