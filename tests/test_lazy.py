"""LazyMerge: in-place coefficient switching equals `adamms merge` bit for bit."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import AutoModelForImageTextToText

from adamms_eval.merging import lazy as lazy_mod
from adamms_eval.errors import AdammsError
from adamms_eval.merging.lazy import LazyMerge
from adamms_eval.merging.merger import open_merger, write_merged

METHODS = [("linear", {}, 0.3), ("task_arithmetic", {"weight": "0.6,0.4"}, 0.9), ("ties", {"density": 0.5}, 1.0),
           ("dare_linear", {"density": 0.5, "seed": 3}, 0.7), ("dare_ties", {"density": 0.7}, 1.0),
           ("metagpt", {}, 1.0)]


def load(path):
    return AutoModelForImageTextToText.from_pretrained(path)


def merged_state(zoo, tmp_path, method, params, lam, base="qwen2_vl", other="llava_ov_hf"):
    pre = zoo["qwen2_lm"] if method != "linear" else None
    out = write_merged(open_merger(zoo[base], zoo[other], method, params, pre), lam, tmp_path / method, progress=False)
    return load(out).state_dict(), out


def assert_same_bits(a: dict, b: dict):
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, diff[:5]


@pytest.mark.parametrize("method,params,lam", METHODS)
def test_set_equals_adamms_merge_bits(zoo, tmp_path, method, params, lam):
    model = load(zoo["qwen2_vl"])
    merged = LazyMerge(model, zoo["llava_ov_hf"], method, zoo["qwen2_lm"] if method != "linear" else None, params,
                       progress=False)
    merged.set(lam)
    assert merged.value == lam
    ref, _ = merged_state(zoo, tmp_path, method, params, lam)
    assert_same_bits(model.state_dict(), ref)


def test_no_drift_and_back_to_base(zoo):
    model = load(zoo["qwen2_vl"])
    base = {k: v.clone() for k, v in model.state_dict().items()}
    merged = LazyMerge(model, zoo["llava_ov_hf"], progress=False)
    once = {k: v.clone() for k, v in merged.set(0.3).model.state_dict().items()}
    for a in (0.5, 0.1, 0.6, 0.3):
        merged.set(a)
    assert_same_bits(model.state_dict(), once)
    merged.set(0.0)
    assert_same_bits(model.state_dict(), base)


def test_generation_after_set_equals_merged_checkpoint(zoo, tmp_path):
    from transformers import AutoProcessor
    proc = AutoProcessor.from_pretrained(zoo["qwen2_vl"])
    ids = proc.tokenizer("hello world", return_tensors="pt").input_ids
    model = load(zoo["qwen2_vl"])
    LazyMerge(model, zoo["llava_ov_hf"], progress=False).set(0.4)
    _, out = merged_state(zoo, tmp_path, "linear", {}, 0.4)
    a = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False)
    b = load(out).generate(input_ids=ids, max_new_tokens=6, do_sample=False)
    assert torch.equal(a, b)
    base = load(zoo["qwen2_vl"])
    with torch.no_grad():  # the merge changed the model: logits differ from the base
        assert not torch.equal(model(input_ids=ids).logits, base(input_ids=ids).logits)


def test_tied_embeddings_moved_once(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "a")
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "b")
    model = LlamaForCausalLM.from_pretrained(tmp_path / "a")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    merged = LazyMerge(model, tmp_path / "b", progress=False)
    assert sum("embed_tokens" in k or "lm_head" in k for k in merged.paths) == 1
    before = model.model.embed_tokens.weight.clone()
    other = LlamaForCausalLM.from_pretrained(tmp_path / "b").model.embed_tokens.weight
    merged.set(0.5)
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    assert torch.equal(model.model.embed_tokens.weight, torch.lerp(before, other, 0.5))


def test_bad_inputs_leave_model_at_last_point(zoo, tmp_path):
    import shutil
    other = tmp_path / "other"
    shutil.copytree(zoo["llava_ov_hf"], other)
    model = load(zoo["qwen2_vl"])
    merged = LazyMerge(model, other, progress=False).set(0.2)
    at = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AdammsError, match="outside"):
        merged.set(1.2)
    st = os.stat(other / "model.safetensors")
    os.utime(other / "model.safetensors", (st.st_atime, st.st_mtime + 5))
    with pytest.raises(AdammsError, match="changed on disk"):
        merged.set(0.4)
    assert merged.value == 0.2
    assert_same_bits(model.state_dict(), at)
    with pytest.raises(AdammsError, match="language models differ"):
        LazyMerge(model, zoo["llava15_hf"], progress=False)


def test_storage_choice_and_memory_error(zoo, monkeypatch):
    model = load(zoo["qwen2_vl"])
    merged = LazyMerge(model, zoo["llava_ov_hf"], progress=False)
    mem = merged.memory()
    assert mem["storage"] == "device" and mem["bytes_per_parameter"] == 8.0  # fp32: A and B, 4 bytes each
    monkeypatch.setattr(lazy_mod, "_free_bytes", lambda device: 1000)
    with pytest.raises(AdammsError, match=r"need .* GiB .* free"):
        LazyMerge(model, zoo["llava_ov_hf"], progress=False)


def _rank_worker(rank, world, init_file, base, other, result_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = AutoModelForImageTextToText.from_pretrained(base)
    LazyMerge(model, other, progress=False).set(0.35)
    flat = torch.cat([p.detach().flatten().double() for p in model.state_dict().values()])
    gathered = [torch.zeros_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        torch.save(gathered, result_file)
    dist.destroy_process_group()


def test_two_rank_gloo_every_rank_moves_its_copy(zoo, tmp_path):
    result = tmp_path / "gathered.pt"
    mp.spawn(_rank_worker, args=(2, str(tmp_path / "init"), str(zoo["qwen2_vl"]), str(zoo["llava_ov_hf"]), str(result)),
             nprocs=2, join=True)
    g = torch.load(result)
    ref, _ = merged_state(zoo, tmp_path, "linear", {}, 0.35)
    expected = torch.cat([t.flatten().double() for t in ref.values()])
    assert torch.equal(g[0], g[1]) and torch.equal(g[0], expected)


def test_set_follows_swapped_storage_and_refuses_a_cast(zoo, tmp_path):
    """`model.to(device)` gives every parameter new storage: set() must write the model's current tensors."""
    model = load(zoo["qwen2_vl"])
    merged = LazyMerge(model, zoo["llava_ov_hf"], progress=False)
    merged.set(0.5)
    with torch.no_grad():  # what module._apply does on a device move: new storage behind the same names
        for p in model.parameters():
            p.data = p.data.clone()
    merged.set(0.3)
    ref, _ = merged_state(zoo, tmp_path, "linear", {}, 0.3)
    assert_same_bits(model.state_dict(), ref)

    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.to(torch.float64)
    with pytest.raises(AdammsError, match="was cast from torch.float32 to torch.float64"):
        merged.set(0.1)
    model.to(torch.float32)
    assert_same_bits(model.state_dict(), before)  # nothing was written by the refused set()
    assert merged.value == 0.3
    merged.set(0.3)
    assert_same_bits(model.state_dict(), ref)
