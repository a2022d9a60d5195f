"""Batched search generation: the ports' backends answer a left-padded batch exactly as one request at a time
(position ids, token types and image splicing per row), and the search hands the harness batches of
`search_batch_size`."""
import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("lmms_eval")

QUESTIONS = ["What colour is the square?", "Is there a circle in the picture? Answer yes or no.",
             "How many shapes?", "Describe the image in one short sentence, please, with the colour of each shape.",
             "Red?"]


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    from adamms_eval.harness.lmms_eval.ports import CogVLMBackend, MPLUGOwl2Backend
    from adamms_eval.testing.tiny import build_zoo
    zoo = build_zoo(tmp_path_factory.mktemp("zoo"), ["cogvlm", "mplug_owl2"])
    return {"cogvlm": CogVLMBackend(pretrained=str(zoo["cogvlm"]), device="cpu"),
            "mplug_owl2": MPLUGOwl2Backend(pretrained=str(zoo["mplug_owl2"]), device="cpu")}


def images(n_with: int) -> list[list]:
    rng = np.random.default_rng(1)
    pics = [[Image.fromarray(rng.integers(0, 255, (20 + 7 * i, 30, 3), dtype=np.uint8))] for i in range(n_with)]
    return pics + [[] for _ in range(len(QUESTIONS) - n_with)]  # the last rows are text-only


@pytest.mark.parametrize("name", ["cogvlm", "mplug_owl2"])
def test_batched_logits_equal_one_at_a_time(backends, name):
    """The next-token logits of every row of a padded batch are those of the prompt alone."""
    be, ims = backends[name], images(3)
    batch = be.encode_batch(QUESTIONS, ims)
    assert batch["attention_mask"].min() == 0  # the prompts differ in length: there is padding
    with torch.inference_mode():
        together = be.model(**batch).logits[:, -1]
        for row, (q, im) in enumerate(zip(QUESTIONS, ims)):
            alone = be.model(**be.encode(q, im)).logits[0, -1]
            torch.testing.assert_close(together[row], alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["cogvlm", "mplug_owl2"])
@pytest.mark.parametrize("n_with", [0, 3, 5])
def test_batched_greedy_answers_equal_one_at_a_time(backends, name, n_with):
    be, ims = backends[name], images(n_with)
    gen = {"max_new_tokens": 8}
    one = [be.generate_text(q, im, gen) for q, im in zip(QUESTIONS, ims)]
    assert len(set(one)) > 1  # the prompts lead to different answers: a mix-up between rows would show
    assert be.generate_texts(QUESTIONS, ims, gen) == one


class _Req:
    def __init__(self, ctx, gen, doc):
        self.args = (ctx, gen, lambda d: d, doc, "t", "test")


@pytest.mark.parametrize("name", ["cogvlm", "mplug_owl2"])
def test_generate_until_batches_by_settings_and_keeps_order(backends, name, monkeypatch):
    """Requests go in batches of batch_size, never mixing generation settings; answers come back in order."""
    be, ims = backends[name], images(3)
    be.task_dict = {"t": {"test": {i: im for i, im in enumerate(ims)}}}
    reqs = [_Req(q, {"max_new_tokens": 6 if i % 2 else 4}, i) for i, q in enumerate(QUESTIONS)]
    one = [be.generate_text(r.args[0], ims[i], r.args[1]) for i, r in enumerate(reqs)]
    seen = []
    real = be.generate_texts
    monkeypatch.setattr(be, "generate_texts", lambda c, i, g: seen.append((len(c), g["max_new_tokens"])) or real(c, i, g))
    monkeypatch.setattr(be, "batch_size_per_gpu", 2)
    assert be.generate_until(reqs) == one
    assert sorted(seen) == [(1, 4), (2, 4), (2, 6)]  # docs 0, 2 | 4 at 4 tokens; 1, 3 at 6


def test_cogvlm_position_ids_of_a_padded_row_are_its_own(backends):
    """Each left-padded row's position ids (BOI/EOI as text, one position for the patches) are the prompt's alone."""
    from adamms_eval.ports.cogvlm import build_position_ids
    be, ims = backends["cogvlm"], images(3)
    batch = be.encode_batch(QUESTIONS, ims)
    pos = build_position_ids(batch["token_type_ids"], batch["attention_mask"])
    for row, (q, im) in enumerate(zip(QUESTIONS, ims)):
        alone = be.encode(q, im)
        n = alone["input_ids"].shape[1]
        assert torch.equal(pos[row, -n:], build_position_ids(alone["token_type_ids"])[0])
        assert torch.equal(batch["token_type_ids"][row, -n:], alone["token_type_ids"][0])


@pytest.mark.parametrize("name", ["cogvlm", "mplug_owl2"])
@pytest.mark.parametrize("max_new_tokens", [None, 6])  # None: CogVlm's max_length=2048 counts each row's own prompt
def test_vlmeval_port_wrappers_batch_like_one_at_a_time(backends, tmp_path, name, max_new_tokens):
    import importlib.util
    if importlib.util.find_spec("vlmeval") is None:
        pytest.skip("VLMEvalKit is not installed")
    from adamms_eval.harness.vlmeval.wrappers import AdammsVLM
    if name == "mplug_owl2" and max_new_tokens is None:
        pytest.skip("the mPLUG_Owl2 wrapper always sets max_new_tokens")
    paths = []
    for i, im in enumerate(images(len(QUESTIONS))):
        paths.append(str(tmp_path / f"{i}.png"))
        im[0].save(paths[-1])
    model = AdammsVLM(backends[name].pretrained, **({"max_new_tokens": max_new_tokens} if max_new_tokens else {}))
    if not max_new_tokens:  # only max_length limits the answers: one that a long answer reaches, beyond the image
        model.raw_model.generation_config.max_new_tokens = None
        longest = max(len(model.tokenizer.encode(q)) for q in QUESTIONS) + 8  # the templates' words
        model.kwargs["max_length"] = model.raw_model.config.num_image_positions + longest + 30
    messages = [[{"type": "image", "value": p}, {"type": "text", "value": q}] for p, q in zip(paths, QUESTIONS)]
    one = [model.generate(m) for m in messages]
    assert len(set(one)) > 1
    assert model.generate_batch(messages) == one
