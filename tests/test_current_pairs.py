"""The current pairs end to end on CPU with the tiny checkpoints (adamms_eval.testing.tiny_current): Qwen2.5-VL <-
InternVL3 (θ0 qwen2_lm) and Qwen3-VL <- LLaVA-OneVision-1.5 (θ0 qwen3_lm), through LazyMerge, lmms-eval's own
qwen2_5_vl / qwen3_vl backends and VLMEvalKit's Qwen2VLChat / Qwen3VLChat."""
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_lmms_eval import BIN, answers, lmms_eval, search_record, tasks_dir  # noqa: F401  (tasks_dir: a fixture)
from test_real_layouts import layouts
from test_vlmeval import env, lmu, predictions, run_ok  # noqa: F401  (env, lmu: fixtures)
from transformers import AutoModelForImageTextToText

from adamms_eval.errors import AdammsError
from adamms_eval.merging.lazy import LazyMerge
from adamms_eval.merging.merger import open_merger, write_merged
from adamms_eval.testing.tiny import build_zoo

# tiny checkpoint -> the released checkpoint whose layout it has (tests/fixtures/released)
CONFIGS = Path(__file__).parents[1] / "configs"
RELEASED = {"qwen2_5_vl": "qwen2.5-vl-7b-instruct", "internvl_hf": "internvl3-8b-hf", "internvl3": "internvl3-8b",
            "qwen3_vl": "qwen3-vl-8b-instruct", "llava_ov_1_5": "llava-onevision-1.5-8b-instruct",
            "qwen3_lm": "qwen3-8b-base"}


def tensors(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def patterns(keys) -> set[str]:
    return {re.sub(r"\.\d+\.", ".N.", k) for k in keys}


@pytest.fixture(scope="module")
def bf16(tmp_path_factory):
    """lmms-eval's qwen2_5_vl / qwen3_vl load in bfloat16 whatever the file holds: checkpoints in bfloat16, so that
    LazyMerge on the loaded base and `adamms merge` of the files start from the same bits."""
    return build_zoo(tmp_path_factory.mktemp("bf16"), ["qwen3_lm", "qwen2_5_vl", "internvl3", "qwen3_vl",
                                                       "llava_ov_1_5"], dtype=torch.bfloat16)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_tiny_checkpoints_have_the_released_key_layout(zoo, name):
    """Every tensor name of the tiny checkpoint, layer numbers aside, is one of the released 7B/8B checkpoint's
    (tests/fixtures/released), and every released name occurs: the same layout at another size."""
    _, index = layouts.load(RELEASED[name])
    assert patterns(tensors(zoo[name])) == patterns(index["weight_map"])


def test_internvl3_remote_layout_is_the_hf_model_under_its_remote_names(zoo, tmp_path):
    """The two InternVL3 layouts are one model: merged into Qwen2.5-VL they give the same tensors bit for bit."""
    a = write_merged(open_merger(zoo["qwen2_5_vl"], zoo["internvl3"]), 0.4, tmp_path / "remote", progress=False)
    b = write_merged(open_merger(zoo["qwen2_5_vl"], zoo["internvl_hf"]), 0.4, tmp_path / "hf", progress=False)
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    remote, hf = tensors(zoo["internvl3"]), tensors(zoo["internvl_hf"])
    qkv = remote["vision_model.encoder.layers.1.attn.qkv.weight"]
    assert torch.equal(qkv, torch.cat([hf[f"vision_tower.encoder.layer.1.attention.{x}_proj.weight"] for x in "qkv"]))


def test_vocabulary_aligned_by_token_string_keeps_internvl_rows(zoo, tmp_path):
    """InternVL3's 9 added tokens (ids 119-127 here, 151665-151673 in the release) sit where Qwen2.5-VL has padding
    rows: with both tokenizers they are not merged and keep the base's values; without, the common prefix is."""
    merger = open_merger(zoo["qwen2_5_vl"], zoo["internvl_hf"])
    assert merger.plan.vocab_note.startswith("tokenizers compared: 119 of 128 common rows merged")
    out = write_merged(merger, 0.5, tmp_path / "m", progress=False)
    base, other, merged = tensors(zoo["qwen2_5_vl"]), tensors(zoo["internvl_hf"]), tensors(out)
    emb = "model.embed_tokens.weight"
    assert torch.equal(merged[emb][119:], base[emb][119:])
    want = 0.5 * base[emb][:119] + 0.5 * other["language_model.model.embed_tokens.weight"][:119]
    assert torch.allclose(merged[emb][:119], want, atol=1e-6)


@pytest.mark.parametrize("base,other,theta0,method,params,lam", [
    ("qwen3_vl", "llava_ov_1_5", "qwen3_lm", "task_arithmetic", {}, 0.7),
    ("qwen2_5_vl_tf5", "internvl3", None, "linear", {}, 0.3),
])
def test_lazy_merge_moves_the_loaded_base_in_place(zoo, tmp_path, base, other, theta0, method, params, lam):
    model = AutoModelForImageTextToText.from_pretrained(zoo[base]).eval()
    before = {k: (v.data_ptr(), v.clone()) for k, v in model.state_dict().items()}
    merged = LazyMerge(model, zoo[other], method, zoo[theta0] if theta0 else None, params, progress=False)
    merged.set(lam)
    after = model.state_dict()
    assert all(after[k].data_ptr() == ptr for k, (ptr, _) in before.items())  # the base's own storage, moved
    moved = {k for k in after if not torch.equal(after[k], before[k][1])}
    assert moved == {e.key for e in merged.plan.merged}
    assert not any(".visual." in k for k in moved)  # vision tower, merger and DeepStack mergers are the base's
    pre = zoo[theta0] if theta0 else None
    ref = AutoModelForImageTextToText.from_pretrained(
        write_merged(open_merger(zoo[base], zoo[other], method, params, pre), lam, tmp_path / "m", progress=False))
    want = ref.state_dict()
    assert all(torch.equal(after[k], want[k]) for k in want)


def test_bases_without_a_runnable_backend_say_why_in_one_line(zoo):
    from adamms_eval.harness.lmms_eval.backends import choose_backend
    assert choose_backend(str(zoo["qwen2_5_vl"])) == "qwen2_5_vl"
    assert choose_backend(str(zoo["qwen3_vl"])) == "qwen3_vl"
    for name, needle in (("llava_ov_1_5", "does not import under transformers 5"),
                         ("internvl3", "remote-code layout"), ("internvl_hf", "chat model internvl_hf")):
        with pytest.raises(AdammsError, match=needle) as e:
            choose_backend(str(zoo[name]))
        assert "\n" not in str(e.value) and "as the other model" in str(e.value)
    assert choose_backend(str(zoo["internvl3"]), backend="internvl3") == "internvl3"  # forced: the user's call


@pytest.mark.parametrize("base,other,theta0,method,params,lam,args", [
    ("qwen2_5_vl", "internvl3", None, "linear", {}, 0.3, "alpha=0.3"),
    ("qwen3_vl", "llava_ov_1_5", "qwen3_lm", "ties", {"density": 0.5}, 0.8, "method=ties,density=0.5,lambda=0.8"),
])
def test_lmms_eval_backend_on_the_merged_checkpoint_equals_adamms(bf16, tasks_dir, tmp_path, base, other,  # noqa: F811
                                                                   theta0, method, params, lam, args):
    """`--model adamms` wraps lmms-eval's simple qwen2_5_vl / qwen3_vl class; the reference runs it on what `adamms
    merge` wrote with --force_simple (without it lmms-eval picks the chat class, which has no default system prompt)."""
    pre = bf16[theta0] if theta0 else None
    merged = write_merged(open_merger(bf16[base], bf16[other], method, params, pre), lam, tmp_path / "merged",
                          progress=False)
    model_args = f"base={bf16[base]},other={bf16[other]},{args},cache_dir={tmp_path / 'c'}" + \
        (f",pretrained={pre}" if pre else "")
    ours, _ = lmms_eval(tasks_dir, tmp_path / "ours", "adamms", model_args, limit=4)
    ref, _ = lmms_eval(tasks_dir, tmp_path / "ref", base, f"pretrained={merged},device=cpu,device_map=cpu", limit=4,
                       launcher=[str(BIN / "lmms-eval"), "--force_simple"])
    assert len(answers(ours)) == 4 and answers(ours) == answers(ref)
    run = search_record(ours)["run"]
    assert run["backend"] == base and run["alpha"] == lam


@pytest.mark.parametrize("base,other,wrapper", [("qwen2_5_vl", "internvl3", "Qwen2VLChat"),
                                                ("qwen3_vl", "llava_ov_1_5", "Qwen3VLChat")])
def test_vlmeval_wrapper_on_the_merged_checkpoint_equals_adamms(zoo, env, tmp_path, base, other, wrapper):  # noqa: F811
    merged = write_merged(open_merger(zoo[base], zoo[other]), 0.3, tmp_path / "merged", progress=False)
    ours = run_ok(tmp_path / "ours", "--base", zoo[base], "--other", zoo[other], "--alpha", "0.3",
                  "--cache-dir", tmp_path / "c", data=("AdammsShapes_MCQ",))
    ref = run_ok(tmp_path / "ref", "--base", merged, data=("AdammsShapes_MCQ",))
    assert predictions(ours, "AdammsShapes_MCQ") == predictions(ref, "AdammsShapes_MCQ")
    assert json.loads((ours / "adamms_search.json").read_text())["run"]["backend"] == wrapper


@pytest.mark.parametrize("config,base,other,theta0", [
    ("current_qwen2_5vl_internvl3.yaml", "qwen2_5_vl", "internvl3", "qwen2_lm"),
    ("current_qwen3vl_llava_ov_1_5.yaml", "qwen3_vl", "llava_ov_1_5", "qwen3_lm")])
def test_example_compare_configs_plan_without_a_backend_for_the_other(zoo, tasks_dir, tmp_path, config, base,  # noqa: F811
                                                                       other, theta0):
    """The shipped configs, pointed at the tiny checkpoints and a shipped task, pass every check made before a model
    loads; the other model needs a backend only for an `original: other` row, which then fails in one line."""
    from adamms_eval.compare.config import plan
    cfg = yaml.safe_load((CONFIGS / config).read_text())
    cfg.update(base=str(zoo[base]), other=str(zoo[other]), pretrained=str(zoo[theta0]), tasks=["adamms_shapes_color"],
               include_path=[str(tasks_dir)], output=str(tmp_path / "out"))
    cfg.pop("backend_args", None)
    path = tmp_path / config
    path.write_text(yaml.safe_dump(cfg))
    p = plan(path)
    assert (p.backend, p.other_backend, len(p.rows)) == (base, None, 8)
    path.write_text(yaml.safe_dump({**cfg, "rows": cfg["rows"] + [{"name": "other", "original": "other"}]}))
    with pytest.raises(AdammsError, match="no lmms-eval backend runs a") as e:
        plan(path)
    assert "\n" not in str(e.value)
