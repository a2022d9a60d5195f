"""Continuation log-likelihood for multiple-choice tasks, with the backend's own prompt and processor.

lmms-eval 0.7.3's built-ins cannot score choices here: Qwen2_VL.loglikelihood raises
NotImplementedError and LlavaHf.loglikelihood passes no images to a transformers-5 processor. We
build the prompt exactly as each backend's generate_until does, append the continuation, and sum
the negative log-probabilities of the continuation tokens (lmms-eval takes the argmin of losses).
"""
from __future__ import annotations

import torch


def _qwen2_vl_prompt(backend, ctx, visuals):
    from qwen_vl_utils import process_vision_info
    content = [{"type": "image", "image": backend._encode_image_data_url(v), "max_pixels": backend.max_pixels,
                "min_pixels": backend.min_pixels} for v in visuals]
    content.append({"type": "text", "text": ctx.replace("<image>", "")})
    messages = [{"role": "system", "content": backend.system_prompt}, {"role": "user", "content": content}]
    prompt = backend.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    images, _ = process_vision_info([messages])
    return backend.processor, prompt, images


def _llava_hf_prompt(backend, ctx, visuals):
    from lmms_eval.models.simple.llava_hf import VICUNA_CHAT_TEMPLATE
    if "<image>" not in ctx and visuals:
        ctx = " ".join(["<image>"] * len(visuals)) + "\n" + ctx
    tok = backend.tokenizer
    template = backend.chat_template or tok.chat_template or VICUNA_CHAT_TEMPLATE
    prompt = tok.apply_chat_template([{"role": "user", "content": ctx}], chat_template=template, tokenize=False,
                                     add_generation_prompt=True)
    return backend._image_processor, prompt, visuals or None


PROMPTS = {"qwen2_vl": _qwen2_vl_prompt, "llava_hf": _llava_hf_prompt}


def continuation_nll(backend, backend_name: str, ctx: str, continuation: str, visuals) -> tuple[float, bool]:
    """(sum of −log p(continuation tokens), whether greedy decoding would produce them). A backend with its own
    `continuation_nll(ctx, continuation, visuals)` is asked directly; else `continuation_stats`."""
    own = getattr(backend, "continuation_nll", None)
    if callable(own):
        return own(ctx, continuation, visuals)
    stats = continuation_stats(backend, backend_name, ctx, continuation, visuals)
    return stats["nll"], stats["greedy"]


def continuation_stats(backend, backend_name: str, ctx: str, continuation: str, visuals) -> dict:
    """`token_stats` of the continuation after the backend's own prompt (choice scoring; signals nll / entropy).

    A backend that scores continuations itself (a `continuation_stats(ctx, continuation, visuals)` method, as the
    project's own ports have) is asked directly; the built-in ones go through PROMPTS."""
    own = getattr(backend, "continuation_stats", None)
    if callable(own):
        return own(ctx, continuation, visuals)
    if backend_name not in PROMPTS:
        raise NotImplementedError(f"no continuation scoring for lmms-eval backend {backend_name!r}: give it a "
                                  "continuation_stats (or, for choices only, continuation_nll) method taking (ctx, "
                                  "continuation, visuals), or add it to PROMPTS")
    return _stats_with_prompt(backend, backend_name, ctx, continuation, visuals)


def can_score(backend, backend_name: str) -> bool:
    """Whether `continuation_stats` can score answers of this backend (class or instance)."""
    return callable(getattr(backend, "continuation_stats", None)) or backend_name in PROMPTS


def token_stats(logits, target) -> dict:
    """From the logits that predict each continuation token: Σ −log p(token), Σ entropy of the next-token
    distribution, the token count and whether greedy decoding would produce every token."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(-1, target[:, None]).sum().item()
    entropy = -(logp.exp() * logp).sum(-1).sum().item()
    return {"nll": nll, "entropy": entropy, "tokens": int(target.numel()),
            "greedy": bool((logp.argmax(-1) == target).all())}


@torch.inference_mode()
def _stats_with_prompt(backend, backend_name: str, ctx: str, continuation: str, visuals) -> dict:
    processor, prompt, images = PROMPTS[backend_name](backend, ctx, visuals)
    kw = {"images": images} if images else {}
    n_prompt = processor(text=[prompt], return_tensors="pt", **kw)["input_ids"].shape[1]
    full = processor(text=[prompt + continuation], return_tensors="pt", **kw).to(backend.model.device)
    if full["input_ids"].shape[1] <= n_prompt:  # an empty answer: no token to score
        return {"nll": 0.0, "entropy": 0.0, "tokens": 0, "greedy": True}
    logits = backend.model(**full).logits[0, n_prompt - 1:-1]
    return token_stats(logits, full["input_ids"][0, n_prompt:])
