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


class AdammsCogVlm(_PortMixin, CogVlm):
    PORT, WRAPPER = CogVLMForCausalLM, CogVlm
    KWARGS = GENERATION_KEYS | {"tokenizer"}

    def __init__(self, base, session=None, load_kwargs=None, tokenizer=None, **kwargs):
        super(CogVlm, self).__init__()  # BaseModel's; CogVlm.__init__ loads remote code on 'cuda'
        self.tokenizer = load_tokenizer(base, tokenizer, "CogVLM", "Vicuna-7B-v1.5 (lmsys/vicuna-7b-v1.5)")
        self.kwargs = {**kwargs, "max_length": 2048, "do_sample": False}  # CogVlm's v1 settings win, as there
        self.end_text_token = "</s>"
        self._adamms_init(base, session, load_kwargs, {**kwargs, "tokenizer": tokenizer})

    def generate_inner(self, message, dataset=None):
        prompt, image_path = self.message_to_promptimg(message, dataset=dataset)
        if dataset is not None and DATASET_TYPE(dataset) in ["MCQ", "Y/N"]:
            prompt += "\nShort Answer."
        config = self.raw_model.config
        inputs = cogvlm.model_inputs(config, self.tokenizer, cogvlm.history_to_prompt(config.template_version, [], prompt),
                                     [Image.open(image_path).convert("RGB")], self._input_device, self.raw_model.dtype)
        with torch.no_grad():
            out = self.model.generate(**inputs, **self.kwargs)[:, inputs["input_ids"].shape[1]:]
        return self.tokenizer.decode(out[0]).split(self.end_text_token)[0].strip()


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

    def generate_inner(self, message, dataset=None):
        kwargs = copy.deepcopy(self.kwargs)
        if dataset in ["MMVet", "LLaVABench"] or (dataset is not None and DATASET_TYPE(dataset) == "VQA"):
            kwargs["length_penalty"] = 0
        elif dataset is not None and DATASET_TYPE(dataset) == "MCQ":
            kwargs["max_new_tokens"] = 10
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
        pics = [p.resize((max(p.size), max(p.size))) for p in pics]  # stretched to a square, as the wrapper
        inputs = mplug_owl2.model_inputs(self.tokenizer, prompt_full, pics, self.image_size, self.mean, self.std,
                                         self._input_device, self.raw_model.dtype)
        with torch.no_grad():
            out = self.model.generate(**inputs, use_cache=True, **kwargs)
        new = out[0] if images else out[0, inputs["input_ids"].shape[1]:]  # with an image, only new tokens come back
        return self.tokenizer.decode(new).strip().split("</s>")[0]

