"""VLMEvalKit wrappers for our CogVLM-chat and mPLUG-Owl2 ports, used by `AdammsVLM` for cogvlm / mplug_owl2 bases.

Prompt building (`use_custom_prompt`, `build_prompt`) and generation settings are inherited from VLMEvalKit's
`CogVlm` / `mPLUG_Owl2`. Their `__init__` and `generate_inner` cannot run here (remote code on 'cuda', the
`mplug_owl2` package), so loading goes through our ports and `generate_inner` repeats the wrappers' steps —
CogVlm: `\\nShort Answer.` after MCQ / Y/N prompts, `build_conversation_input_ids` in chat mode, text cut at
`</s>`; mPLUG_Owl2: `USER: <|image|>{prompt} \\nASSISTANT: `, images stretched to a square, max_new_tokens 10
for MCQ and length_penalty 0 for VQA — on the model's own device and dtype.
"""
from __future__ import annotations

import copy

import torch
from PIL import Image

from .importing import vlmeval_modules

vlmeval_modules()  # quietly, keeping the caller's grad mode
from vlmeval.dataset import DATASET_TYPE  # noqa: E402
from vlmeval.smp import get_rank_and_world_size  # noqa: E402
from vlmeval.vlm.cogvlm import CogVlm  # noqa: E402
from vlmeval.vlm.mplug_owl2 import mPLUG_Owl2  # noqa: E402

from ...ports import CogVLMForCausalLM, MPLUGOwl2LlamaForCausalLM, cogvlm, mplug_owl2
from ...ports.common import load_tokenizer
from ...runtime import default_device

from .model import GENERATION_KEYS, AdammsMixin


class _PortMixin(AdammsMixin):
    PORT = None
    KWARGS = GENERATION_KEYS  # leftover keywords are generation settings, as for the wrappers

    def _adamms_init(self, base, session, load_kwargs, wrapper_kwargs):
        """As AdammsMixin's, with our port class instead of a transformers one (and no processor)."""
        load_kwargs = dict(load_kwargs or {})
        device_map = load_kwargs.get("device_map") or default_device()
        self.raw_model = self.model = self.PORT.from_pretrained(str(base), dtype=load_kwargs.get("dtype", "auto"),
                                                                device_map=device_map).eval()
        self.model_path, self.session = str(base), session
        if session is not None:
            session.attach(self.raw_model, rank=get_rank_and_world_size()[0], base_tokenizer=str(base),
                           backend_args={**load_kwargs, **wrapper_kwargs}, code_files=[__file__])

    @property
    def _input_device(self):
        return self.raw_model.get_input_embeddings().weight.device

    def generation_settings(self) -> dict:
        return dict(self.kwargs)

    def generate_batch(self, messages: list, dataset=None) -> list[str]:
        """`generate` for several messages, answered as one left-padded batch (the search's batches): each
        message is checked and prepared as BaseModel.generate does."""
        prepared = []
        for message in messages:
            assert self.check_content(message) in ["str", "dict", "liststr", "listdict"], f"Invalid input type: {message}"
            prepared.append(self.preproc_content(message))
        return self.generate_many(prepared, dataset)

    def generate_inner(self, message, dataset=None):
        return self.generate_many([message], dataset)[0]


def _max_length_per_row(kwargs: dict, lengths: list[int], config) -> tuple[dict, list[int] | None]:
    """A `max_length` limit counts a row's own prompt, not the batch's padded width: a batch generates up to the
    limit of its shortest prompt, and each row's new tokens are cut at its own limit afterwards (a greedy row does
    not depend on how long the others run). Returns the batch's settings and each row's new-token limit."""
    new_tokens = kwargs.get("max_new_tokens", getattr(config, "max_new_tokens", None))
    if len(lengths) == 1 or "max_length" not in kwargs or new_tokens is not None:  # max_new_tokens wins
        return kwargs, None
    kwargs = dict(kwargs)
    limit = kwargs.pop("max_length")
    kwargs["max_new_tokens"] = limit - min(lengths)
    return kwargs, [limit - n for n in lengths]


class AdammsCogVlm(_PortMixin, CogVlm):
    PORT, WRAPPER = CogVLMForCausalLM, CogVlm
    KWARGS = GENERATION_KEYS | {"tokenizer"}

    def __init__(self, base, session=None, load_kwargs=None, tokenizer=None, **kwargs):
        super(CogVlm, self).__init__()  # BaseModel's; CogVlm.__init__ loads remote code on 'cuda'
        self.tokenizer = load_tokenizer(base, tokenizer, "CogVLM", "Vicuna-7B-v1.5 (lmsys/vicuna-7b-v1.5)")
        self.kwargs = {**kwargs, "max_length": 2048, "do_sample": False}  # CogVlm's v1 settings win, as there
        self.end_text_token = "</s>"
        self._adamms_init(base, session, load_kwargs, {**kwargs, "tokenizer": tokenizer})

    def generate_many(self, messages, dataset=None):
        config, texts, images = self.raw_model.config, [], []
        for message in messages:
            prompt, image_path = self.message_to_promptimg(message, dataset=dataset)
            if dataset is not None and DATASET_TYPE(dataset) in ["MCQ", "Y/N"]:
                prompt += "\nShort Answer."
            texts.append(cogvlm.history_to_prompt(config.template_version, [], prompt))
            images.append([Image.open(image_path).convert("RGB")])
        if len(texts) == 1:
            inputs = cogvlm.model_inputs(config, self.tokenizer, texts[0], images[0], self._input_device,
                                         self.raw_model.dtype)
        else:
            inputs = cogvlm.batch_inputs(config, self.tokenizer, texts, images, self._input_device, self.raw_model.dtype)
        kwargs, limits = _max_length_per_row(self.kwargs, inputs["attention_mask"].sum(1).tolist(),
                                             self.raw_model.generation_config)
        with torch.no_grad():
            out = self.model.generate(**inputs, **kwargs)[:, inputs["input_ids"].shape[1]:]
        rows = [r[:n] for r, n in zip(out, limits)] if limits else list(out)
        return [self.tokenizer.decode(r).split(self.end_text_token)[0].strip() for r in rows]


class AdammsMplugOwl2(_PortMixin, mPLUG_Owl2):
    PORT, WRAPPER = MPLUGOwl2LlamaForCausalLM, mPLUG_Owl2

    def __init__(self, base, session=None, load_kwargs=None, **kwargs):
        super(mPLUG_Owl2, self).__init__()  # BaseModel's; mPLUG_Owl2.__init__ needs the mplug_owl2 package
        self.tokenizer = load_tokenizer(base, None, "mPLUG-Owl2", "LLaMA-2 (shipped with mplug-owl2-llama2-7b)")
        self.tokenizer.padding_side = "left"
        self.kwargs = {**dict(max_new_tokens=512, do_sample=False, num_beams=1, min_new_tokens=1, length_penalty=1,
                              num_return_sequences=1), **kwargs}
        self._adamms_init(base, session, load_kwargs, kwargs)
        self.image_size, self.mean, self.std = mplug_owl2.image_settings(base, self.raw_model.config)

    def generate_many(self, messages, dataset=None):
        kwargs = copy.deepcopy(self.kwargs)
        if dataset in ["MMVet", "LLaVABench"] or (dataset is not None and DATASET_TYPE(dataset) == "VQA"):
            kwargs["length_penalty"] = 0
        elif dataset is not None and DATASET_TYPE(dataset) == "MCQ":
            kwargs["max_new_tokens"] = 10
        prompts, pictures = [], []
        for message in messages:
            images, prompt_full = [], "USER: "
            if sum(m["type"] == "image" for m in message) == 1:
                prompt, image = self.message_to_promptimg(message, dataset=dataset)
                prompt_full += f"<|image|>{prompt} \nASSISTANT: "
                images.append(image)
            else:
                for m in message:
                    images += [m["value"]] if m["type"] == "image" else []
                    prompt_full += "<|image|>" if m["type"] == "image" else m["value"] if m["type"] == "text" else ""
                prompt_full += "\nASSISTANT: "
            pics = [Image.open(f).convert("RGB") for f in images]
            prompts.append(prompt_full)
            pictures.append([p.resize((max(p.size), max(p.size))) for p in pics])  # stretched to a square, as there
        if len(prompts) == 1:
            inputs = mplug_owl2.model_inputs(self.tokenizer, prompts[0], pictures[0], self.image_size, self.mean,
                                             self.std, self._input_device, self.raw_model.dtype)
        else:
            inputs = mplug_owl2.batch_inputs(self.tokenizer, prompts, pictures, self.image_size, self.mean, self.std,
                                             self._input_device, self.raw_model.dtype)
        with torch.no_grad():
            out = self.model.generate(**inputs, use_cache=True, **kwargs)
        if not any(pictures):  # with an image in the batch, only new tokens come back
            out = out[:, inputs["input_ids"].shape[1]:]
        return [self.tokenizer.decode(r).strip().split("</s>")[0] for r in out]
