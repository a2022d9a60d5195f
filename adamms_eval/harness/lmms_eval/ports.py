"""lmms-eval backends for our ports: `adamms_cogvlm` (CogVLM-chat) and `adamms_mplug_owl2` (mPLUG-Owl2).

Simple models: prompts exactly as the originals build them (CogVLM's conversation template and image
placeholders, mPLUG-Owl2's `USER: <|image|>... ASSISTANT:`), greedy or sampled decoding with the task's
max_new_tokens / until / temperature / top_p / num_beams, and `continuation_nll` for multiple-choice tasks
(the `adamms` model asks it directly). Model args: pretrained, tokenizer (CogVLM: Vicuna-7B-v1.5's when the
checkpoint has none), dtype (auto/bfloat16/float16/float32), device_map (cpu, cuda, auto = split over GPUs),
template (CogVLM: base/chat/vqa; default from config.json).
"""
from __future__ import annotations

from pathlib import Path

import torch
from lmms_eval.api.instance import GenerationResult
from lmms_eval.api.model import lmms
from tqdm import tqdm

from ...errors import AdammsError
from ...ports import CogVLMForCausalLM, MPLUGOwl2LlamaForCausalLM, cogvlm, mplug_owl2
from ...ports.common import load_tokenizer
from ...runtime import default_device
from .loglikelihood import token_stats

DTYPES = {"auto": "auto", "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
          "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}


def _images(visuals) -> list:
    """The PIL images among a request's visuals (lists flattened; videos and paths are not supported)."""
    from PIL import Image
    flat = []
    for v in visuals or []:
        flat.extend(v if isinstance(v, (list, tuple)) else [v])
    bad = [type(v).__name__ for v in flat if not isinstance(v, Image.Image)]
    if bad:
        raise AdammsError(f"these backends take PIL images only, got {', '.join(sorted(set(bad)))}")
    return flat


class _PortBackend(lmms):
    is_simple = True
    model_cls = None
    model_name = ""
    tokenizer_hint = ""

    def __init__(self, pretrained: str, tokenizer: str | None = None, device: str | None = None,
                 device_map: str | None = None, dtype: str = "auto", batch_size=1, max_new_tokens: int = 256,
                 **kwargs):
        super().__init__()
        kwargs.pop("max_batch_size", None)
        if kwargs:
            raise AdammsError(f"{type(self).__name__}: unknown model_args {', '.join(sorted(kwargs))}")
        if not str(batch_size).isdigit() or int(batch_size) < 1:
            raise AdammsError(f"{type(self).__name__}: batch_size={batch_size}: give a whole number of at least 1")
        if str(dtype) not in DTYPES:
            raise AdammsError(f"dtype={dtype}: choose one of {', '.join(DTYPES)}")
        if not (Path(pretrained) / "config.json").is_file():
            raise AdammsError(f"{pretrained} is not a model folder (no config.json); pass pretrained=PATH")
        device = device or default_device()
        self.tokenizer = load_tokenizer(pretrained, tokenizer, self.model_name, self.tokenizer_hint)
        self.model = self.model_cls.from_pretrained(pretrained, dtype=DTYPES[str(dtype)],
                                                    device_map=device_map or device).eval()
        self._device = torch.device(device)
        self.default_max_new_tokens = int(max_new_tokens)
        self.batch_size_per_gpu = int(batch_size)  # as lmms-eval's built-ins call it (adamms sets it for a search)
        self.pretrained = pretrained

    @property
    def device(self):
        return self._device

    @property
    def input_device(self):
        return self.model.get_input_embeddings().weight.device

    # -- to be provided per model ------------------------------------------------------------------------------------
    def encode(self, ctx: str, images: list, continuation: str = "") -> dict:
        """Model inputs (batch of one) for the prompt built from ctx, with `continuation` appended as text."""
        raise NotImplementedError

    def encode_batch(self, ctxs: list[str], images: list[list]) -> dict:
        """Model inputs for several prompts, left-padded with an attention mask."""
        raise NotImplementedError

    def new_tokens(self, inputs: dict, output: torch.Tensor) -> torch.Tensor:
        """(B, new) generated tokens of a generate() output."""
        return output[:, inputs["input_ids"].shape[1]:]

    # -- lmms API --------------------------------------------------------------------------------------------------------
    def _visuals(self, req):
        ctx, second, doc_to_visual, doc_id, task, split = req.args
        return _images(doc_to_visual(self.task_dict[task][split][doc_id]))

    def _decoding(self, gen_kwargs: dict) -> tuple[dict, list[str]]:
        gen = dict(gen_kwargs or {})
        until = gen.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(gen.pop("temperature", 0) or 0)
        settings = {"max_new_tokens": int(gen.pop("max_new_tokens", self.default_max_new_tokens)),
                    "num_beams": int(gen.pop("num_beams", 1) or 1), "do_sample": temperature > 0,
                    "pad_token_id": self.model.config.pad_token_id, "eos_token_id": self.tokenizer.eos_token_id}
        if temperature > 0:
            settings.update(temperature=temperature, top_p=float(gen.pop("top_p", None) or 1.0))
        return settings, until

    @torch.inference_mode()
    def generate_texts(self, ctxs: list[str], images: list[list], gen_kwargs: dict) -> list[str]:
        """Answers to several prompts with the same decoding settings, generated as one left-padded batch (one
        prompt alone is encoded unpadded, exactly as before)."""
        settings, until = self._decoding(gen_kwargs)
        inputs = self.encode(ctxs[0], images[0]) if len(ctxs) == 1 else self.encode_batch(ctxs, images)
        out = self.new_tokens(inputs, self.model.generate(**inputs, **settings))
        texts = []
        for row in out:
            ends = (row == self.tokenizer.eos_token_id).nonzero()
            row = row[: int(ends[0])] if len(ends) else row  # a finished row is padded after its end in a batch
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            for stop in until:
                if stop:
                    text = text.split(stop)[0]
            texts.append(text.strip())
        return texts

    def generate_text(self, ctx: str, images: list, gen_kwargs: dict) -> str:
        return self.generate_texts([ctx], [images], gen_kwargs)[0]

    def generate_until(self, requests):
        """Requests with the same generation settings go in batches of `batch_size`, in their order; answers come
        back in the requests' order."""
        answers = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(repr(sorted((req.args[1] or {}).items(), key=str)), []).append(i)
        n = max(1, int(self.batch_size_per_gpu))
        with tqdm(total=len(requests), disable=self.rank != 0, desc=f"{self.model_name} responding") as bar:
            for idx in groups.values():
                for j in range(0, len(idx), n):
                    chunk = [requests[i] for i in idx[j:j + n]]
                    texts = self.generate_texts([r.args[0] for r in chunk], [self._visuals(r) for r in chunk],
                                                chunk[0].args[1])
                    for i, t in zip(idx[j:j + n], texts):
                        answers[i] = t
                    bar.update(len(chunk))
        return answers

    def continuation_nll(self, ctx: str, continuation: str, visuals) -> tuple[float, bool]:
        """(sum of −log p(continuation tokens) after the model's own prompt, whether greedy would produce them)."""
        stats = self.continuation_stats(ctx, continuation, visuals)
        if stats["tokens"] == 0:
            raise AdammsError(f"continuation {continuation!r} adds no tokens to the prompt")
        return stats["nll"], stats["greedy"]

    @torch.inference_mode()
    def continuation_stats(self, ctx: str, continuation: str, visuals) -> dict:
        """loglikelihood.token_stats of the continuation after the model's own prompt (an empty one: 0 tokens)."""
        images = _images(visuals)
        prompt, full = self.encode(ctx, images), self.encode(ctx, images, continuation)
        n = full["input_ids"].shape[1] - prompt["input_ids"].shape[1]
        if n <= 0:
            return {"nll": 0.0, "entropy": 0.0, "tokens": 0, "greedy": True}
        logits = self.model(**full, use_cache=False).logits[0, -n - 1:-1]
        return token_stats(logits, full["input_ids"][0, -n:].to(logits.device))

    def loglikelihood(self, requests):
        out = []
        for req in tqdm(requests, disable=self.rank != 0, desc=f"{self.model_name} scoring"):
            out.append(GenerationResult(text=self.continuation_nll(req.args[0], req.args[1], self._visuals(req))))
        return out

    def generate_until_multi_round(self, requests):
        raise NotImplementedError(f"{self.model_name}: multi-round generation is not supported")


class CogVLMBackend(_PortBackend):
    """`--model adamms_cogvlm --model_args pretrained=cogvlm-chat-hf,tokenizer=vicuna-7b-v1.5[,template=chat]`."""
    model_cls = CogVLMForCausalLM
    model_name = "CogVLM"
    tokenizer_hint = "Vicuna-7B-v1.5 (lmsys/vicuna-7b-v1.5)"

    def __init__(self, pretrained: str, template: str | None = None, **kwargs):
        super().__init__(pretrained, **kwargs)
        self.template = template or self.model.config.template_version
        if self.template not in cogvlm.TEMPLATES:
            raise AdammsError(f"template={self.template}: choose one of {', '.join(cogvlm.TEMPLATES)}")

    def encode(self, ctx, images, continuation=""):
        text = self._text(ctx, images) + continuation
        return cogvlm.model_inputs(self.model.config, self.tokenizer, text, images[:1], self.input_device,
                                   self.model.dtype)

    def _text(self, ctx, images):
        if len(images) > 1:
            raise AdammsError(f"CogVLM takes one image per question; this request has {len(images)}")
        return cogvlm.history_to_prompt(self.template, [], ctx.replace("<image>", "").strip())

    def encode_batch(self, ctxs, images):
        return cogvlm.batch_inputs(self.model.config, self.tokenizer, [self._text(c, i) for c, i in zip(ctxs, images)],
                                   images, self.input_device, self.model.dtype)


class MPLUGOwl2Backend(_PortBackend):
    """`--model adamms_mplug_owl2 --model_args pretrained=mplug-owl2-llama2-7b`."""
    model_cls = MPLUGOwl2LlamaForCausalLM
    model_name = "mPLUG-Owl2"
    tokenizer_hint = "LLaMA-2 (shipped with mplug-owl2-llama2-7b)"

    def __init__(self, pretrained: str, **kwargs):
        super().__init__(pretrained, **kwargs)
        self.image_size, self.mean, self.std = mplug_owl2.image_settings(pretrained, self.model.config)

    def _prompt(self, ctx, images):
        question = ctx.replace("<image>", "").strip()
        if images:  # one <|image|> per image, in front of the question as the original's chat does
            return mplug_owl2.build_prompt("<|image|>" * (len(images) - 1) + question, with_image=True)
        return mplug_owl2.build_prompt(question, with_image=False)

    def encode(self, ctx, images, continuation=""):
        return mplug_owl2.model_inputs(self.tokenizer, self._prompt(ctx, images) + continuation, images,
                                       self.image_size, self.mean, self.std, self.input_device, self.model.dtype)

    def encode_batch(self, ctxs, images):
        return mplug_owl2.batch_inputs(self.tokenizer, [self._prompt(c, i) for c, i in zip(ctxs, images)], images,
                                       self.image_size, self.mean, self.std, self.input_device, self.model.dtype)

    def new_tokens(self, inputs, output):
        # with an image in the batch the prompts go in as embeddings and generate() returns only the new tokens
        has_image = bool((inputs["input_ids"] == mplug_owl2.IMAGE_TOKEN_INDEX).any())
        return output if has_image else output[:, inputs["input_ids"].shape[1]:]
