"""The adamms command: plan output, merge records, and bad input (one line, non-zero exit, nothing written)."""
import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from adamms_eval.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_plan_json_counts(zoo, capsys):
    code, out, _ = run(capsys, "plan", "--base", zoo["cogvlm"], "--other", zoo["llava15_hf"], "--json")
    assert code == 0
    s = json.loads(out)
    assert s["base"]["architecture"] == "cogvlm" and s["other"]["architecture"] == "llava"
    groups = s["groups"]
    assert groups["duplicated multimodal copies"]["merged"] == 10  # 2 layers x (qkv, dense, 3 mlp)
    assert groups["vision"]["merged"] == 0 and groups["vision"]["kept"]
    assert groups["language model layers"]["merged"] == 14
    # 96 rows (CogVLM's vocabulary): by token strings when both folders hold a tokenizer, else the common prefix
    assert "96 of 96 common rows merged" in s["vocabulary"] or "common prefix of 96 rows" in s["vocabulary"]


def test_merge_writes_sharded_checkpoint_with_record(zoo, tmp_path, capsys):
    out = tmp_path / "m"
    code, stdout, _ = run(capsys, "merge", "--base", zoo["qwen2_vl"], "--other", zoo["llava_ov_hf"], "--alpha", 0.4,
                          "--out", out, "--max-shard-size", "200KB", "--quiet")
    assert code == 0, stdout
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    record = json.loads((out / "adamms_merge.json").read_text())
    assert record["alpha"] == 0.4 and record["method"]["method"] == "linear"
    for f in ("config.json", "tokenizer.json", "chat_template.jinja", "processor_config.json"):
        assert (out / f).read_bytes() == (zoo["qwen2_vl"] / f).read_bytes()
    assert not list(tmp_path.glob(".m.partial-*"))


@pytest.fixture
def nan_copy(zoo, tmp_path):
    bad = tmp_path / "nan_model"
    shutil.copytree(zoo["llava15_hf"], bad)
    sd = load_file(bad / "model.safetensors")
    sd["language_model.model.layers.1.mlp.up_proj.weight"][3, 4] = float("nan")
    save_file(sd, bad / "model.safetensors", metadata={"format": "pt"})
    return bad


@pytest.fixture
def truncated_copy(zoo, tmp_path):
    bad = tmp_path / "truncated"
    shutil.copytree(zoo["llava15_hf"], bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    return bad


@pytest.fixture
def unknown_arch(zoo, tmp_path):
    bad = tmp_path / "unknown"
    shutil.copytree(zoo["llava15_hf"], bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg.update(model_type="fuyu", architectures=["FuyuForCausalLM"])
    (bad / "config.json").write_text(json.dumps(cfg))
    return bad


BAD = {
    "missing directory": (lambda z, t: ["--base", t / "nope", "--other", z["llava15_hf"], "--alpha", 0.3],
                          "no such model directory"),
    "missing config": (lambda z, t: ["--base", t, "--other", z["llava15_hf"], "--alpha", 0.3], "no config.json"),
    "incompatible pair": (lambda z, t: ["--base", z["qwen2_vl"], "--other", z["llava15_hf"], "--alpha", 0.3],
                          "language models differ"),
    "alpha out of range": (lambda z, t: ["--base", z["cogvlm"], "--other", z["llava15_hf"], "--alpha", 1.5],
                           "outside"),
    "density out of range": (lambda z, t: ["--base", z["cogvlm"], "--other", z["llava15_hf"], "--method", "ties",
                                           "--param", "density=0", "--pretrained", z["llama_lm"]], "density"),
    "task vectors without pretrained": (lambda z, t: ["--base", z["cogvlm"], "--other", z["llava15_hf"],
                                                      "--method", "ties"], "--pretrained"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_error_nothing_written(zoo, tmp_path, capsys, case):
    make_args, needle = BAD[case]
    out = tmp_path / "out"
    code, _, err = run(capsys, "merge", *make_args(zoo, tmp_path), "--out", out, "--quiet")
    assert code == 2
    assert needle in err and err.count("\n") == 1, err
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


@pytest.mark.parametrize("fixture,needle", [("nan_copy", "NaN or Inf"), ("truncated_copy", "corrupt or truncated"),
                                            ("unknown_arch", "--other-arch")])
def test_bad_checkpoint_files(zoo, tmp_path, capsys, request, fixture, needle):
    bad = request.getfixturevalue(fixture)
    before = {p.name: p.read_bytes() for p in bad.iterdir()}
    out = tmp_path / "out"
    code, _, err = run(capsys, "merge", "--base", zoo["cogvlm"], "--other", bad, "--alpha", 0.3, "--out", out, "--quiet")
    assert code == 2 and needle in err and err.count("\n") == 1, err
    if fixture == "nan_copy":
        assert "layers.1.mlp.up_proj.weight" in err  # the tensor is named
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))
    assert before == {p.name: p.read_bytes() for p in bad.iterdir()}  # inputs untouched


def test_existing_output_needs_force_and_output_inside_input_refused(zoo, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    args = ["merge", "--base", zoo["cogvlm"], "--other", zoo["llava15_hf"], "--alpha", 0.3, "--quiet"]
    code, _, err = run(capsys, *args, "--out", out)
    assert code == 2 and "--force" in err
    assert run(capsys, *args, "--out", out, "--force")[0] == 0
    assert (out / "model.safetensors").is_file()
    code, _, err = run(capsys, *args, "--out", zoo["cogvlm"] / "merged")
    assert code == 2 and "overlaps the input" in err


def test_console_script_exit_code(zoo, tmp_path):
    r = subprocess.run([sys.executable, "-m", "adamms_eval.cli", "merge", "--base", str(zoo["cogvlm"]), "--other",
                        str(zoo["llava15_hf"]), "--alpha", "2", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("adamms: error:")


def test_torch_bin_checkpoint_matches_its_safetensors_twin(zoo, tmp_path, capsys):
    """llava15_orig (sharded .bin) and llava15_hf (safetensors) hold the same LM: merging either into CogVLM agrees."""
    outs = []
    for other in ("llava15_orig", "llava15_hf"):
        out = tmp_path / other
        assert run(capsys, "merge", "--base", zoo["cogvlm"], "--other", zoo[other], "--alpha", 0.5, "--out", out,
                   "--quiet")[0] == 0
        outs.append(load_file(out / "model.safetensors"))
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])
