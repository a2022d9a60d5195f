"""Our methods against mergekit 0.1.5 on a homogeneous pair of LLaMA causal LMs (fp32)."""
import pytest
import torch
from safetensors.torch import load_file

from adamms_eval.merging.merger import open_merger, write_merged

pytest.importorskip("mergekit")
from mergekit_reference import run_mergekit  # noqa: E402  (the test oracle, beside the tests)


@pytest.fixture(scope="module")
def llama_pair(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM
    root = tmp_path_factory.mktemp("pair")
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False)
    torch.manual_seed(0)
    theta0 = LlamaForCausalLM(cfg)
    theta0.save_pretrained(root / "theta0")
    for i, name in enumerate(("a", "b")):
        g = torch.Generator().manual_seed(10 + i)
        m = LlamaForCausalLM(cfg)
        m.load_state_dict({k: v + 0.02 * torch.randn(v.shape, generator=g) for k, v in theta0.state_dict().items()})
        m.save_pretrained(root / name)
    return root


def _load(d):
    sd = {}
    for f in sorted(d.glob("*.safetensors")):
        sd.update(load_file(f))
    return sd


CASES = [
    ("linear", {"weight": 1.0}, {}),
    ("linear", {"weight": (0.7, 0.3)}, {}),
    ("task_arithmetic", {"weight": (1.0, 1.0)}, {"lambda": 0.8}),
    ("task_arithmetic", {"weight": (0.3, 0.7)}, {"lambda": 1.0, "normalize": True}),
    ("ties", {"weight": (1.0, 1.0), "density": 0.5}, {}),
    ("ties", {"weight": (1.0, 1.0), "density": 1.0}, {"lambda": 0.7, "normalize": False}),
    ("dare_ties", {"weight": (1.0, 1.0), "density": 1.0}, {}),
]


@pytest.mark.parametrize("method,per_model,global_params", CASES)
def test_matches_mergekit(llama_pair, tmp_path, method, per_model, global_params):
    w = per_model["weight"]
    wa, wb = w if isinstance(w, tuple) else (w, w)
    extra = {k: v for k, v in per_model.items() if k != "weight"}
    models = [(llama_pair / "a", {"weight": wa, **extra}), (llama_pair / "b", {"weight": wb, **extra})]
    theta0 = None if method == "linear" else llama_pair / "theta0"
    ref = _load(run_mergekit(method, models, str(tmp_path / "mk"), base_model=theta0, parameters=global_params))

    if method == "linear":  # mergekit: (wa·A + wb·B)/(wa+wb) = lerp(A, B, wb/(wa+wb))
        lam, params = wb / (wa + wb), {}
    else:
        lam = global_params.get("lambda", 1.0)
        params = {"weight": f"{wa},{wb}", **extra, **{k: v for k, v in global_params.items() if k != "lambda"}}
    merger = open_merger(llama_pair / "a", llama_pair / "b", method, params, theta0)
    ours = _load(write_merged(merger, lam, tmp_path / "ours", progress=False))
    assert ours.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], rtol=0, atol=2e-6, msg=k)
