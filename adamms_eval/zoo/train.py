"""Training of the zoo: θ0 on the world's text, then model A (Qwen2-VL) and model B (LLaVA-OneVision) from θ0.

Prompts are exactly what lmms-eval's backends send (qwen2_vl: system prompt + [image, text] through the processor's
chat template; llava_hf: "<image>\\n" + text as one user string through the tokenizer's template), so the models
answer the harness the way they were trained. Only the answer and <|im_end|> carry loss.
"""
from __future__ import annotations

import random
import time

import torch
from tqdm import tqdm

from . import world

QWEN_SYSTEM = "You are a helpful assistant."  # lmms-eval qwen2_vl's default system_prompt


def qwen2vl_prompt(processor, question: str) -> str:
    msgs = [{"role": "system", "content": QWEN_SYSTEM},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question + world.POST_PROMPT}]}]
    return processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def onevision_prompt(processor, question: str) -> str:
    msgs = [{"role": "user", "content": f"<image>\n{question}{world.POST_PROMPT}"}]
    return processor.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


PROMPTS = {"qwen2_vl": qwen2vl_prompt, "llava_onevision": onevision_prompt}


def _lr_lambda(steps: int, warmup: int):
    return lambda s: min(1.0, (s + 1) / warmup) * max(0.05, 1 - s / steps)


def _optimizer(model, lr: float, lm_lr: float | None = None):
    lm, rest = [], []
    for n, p in model.named_parameters():
        (lm if "language_model" in n or n.startswith("lm_head") else rest).append(p)
    groups = [{"params": rest, "lr": lr}] + ([{"params": lm, "lr": lm_lr or lr}] if lm else [])
    return torch.optim.AdamW(groups, weight_decay=0.0, betas=(0.9, 0.98))


def pretrain_lm(model, tokenizer, docs: list[str], steps: int, batch: int, lr: float, seed: int, desc: str) -> dict:
    """Next-token training on the world's text documents (θ0)."""
    rng, t0 = random.Random(seed), time.perf_counter()
    opt = _optimizer(model, lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps, max(1, steps // 20)))
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.train()
    loss = None
    with torch.enable_grad():  # another library may have turned autograd off process-wide
        for _ in tqdm(range(steps), desc=desc, leave=False):
            texts = [d for d in rng.sample(docs, batch)]
            enc = tokenizer(texts, padding=True, return_tensors="pt")
            ids = torch.cat([torch.full((batch, 1), eos), enc.input_ids], 1)
            mask = torch.cat([torch.ones(batch, 1, dtype=torch.long), enc.attention_mask], 1)
            labels = ids.masked_fill(mask == 0, -100)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
    model.eval()
    return {"steps": steps, "final_loss": round(float(loss.detach()), 4), "seconds": round(time.perf_counter() - t0, 1)}


def encode_one(kind: str, processor, ex, with_answer: bool) -> dict:
    """Processor inputs for one example; with the answer, labels cover the answer + <|im_end|>."""
    prompt = PROMPTS[kind](processor, ex.question)
    text = prompt + ex.answer + "<|im_end|>" if with_answer else prompt
    enc = dict(processor(text=[text], images=[ex.image], return_tensors="pt"))
    enc.pop("batch_num_images", None)
    if with_answer:
        n = len(processor.tokenizer(ex.answer + "<|im_end|>", add_special_tokens=False).input_ids)
        enc["labels"] = torch.full_like(enc["input_ids"], -100)
        enc["labels"][0, -n:] = enc["input_ids"][0, -n:]
    return enc


def collate(items: list[dict], pad_id: int, left: bool = False) -> dict:
    """Pad the token-aligned fields (right for training, left for generation); concatenate the image fields."""
    width = max(it["input_ids"].shape[1] for it in items)
    out = {}
    for key in items[0]:
        if items[0][key].dim() == 2 and items[0][key].shape[1] == items[0]["input_ids"].shape[1] and key != "image_sizes":
            fill = {"input_ids": pad_id, "labels": -100}.get(key, 0)
            rows = []
            for it in items:
                v = it[key]
                pad = torch.full((1, width - v.shape[1]), fill, dtype=v.dtype)
                rows.append(torch.cat([pad, v] if left else [v, pad], 1))
            out[key] = torch.cat(rows)
        else:
            out[key] = torch.cat([it[key] for it in items])
    return out


def finetune(kind: str, model, processor, mixture: dict, n_per_unit: int, steps: int, batch: int, lr: float,
             lm_lr: float, seed: int, desc: str, align_fraction: float = 0.4) -> dict:
    """Visual instruction tuning on the skills of `mixture` (skill -> weight: round(weight × n_per_unit) distinct
    examples each, batches drawn uniformly from the pool); all parameters, the LM at its own, smaller rate."""
    rng, t0 = random.Random(seed), time.perf_counter()
    counts = {s: round(w * n_per_unit) for s, w in mixture.items()}
    data = [encode_one(kind, processor, e, True)
            for k, s in enumerate(mixture) for e in world.examples(s, counts[s], seed * 100_000 + k * 10_000)]
    pad = processor.tokenizer.pad_token_id
    t_encode = time.perf_counter() - t0
    opt = _optimizer(model, lr, lm_lr)
    # LLaVA's recipe in one run: first the vision tower and projector learn to feed θ0 (the LM frozen: θ0 already
    # answers from captions placed where the image goes), then everything is tuned together
    align = int(steps * align_fraction)
    vision = _lr_lambda(steps, max(1, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, [vision, lambda s: 0.0 if s < align else vision(s)])
    model.train()
    loss = None
    with torch.enable_grad():  # another library may have turned autograd off process-wide
        for _ in tqdm(range(steps), desc=desc, leave=False):
            loss = model(**collate(rng.sample(data, batch), pad)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
    model.eval()
    return {"skills": list(mixture), "examples_per_skill": counts, "examples": len(data), "steps": steps, "align_steps": align, "batch": batch,
            "final_loss": round(float(loss.detach()), 4), "encode_seconds": round(t_encode, 1),
            "seconds": round(time.perf_counter() - t0, 1)}


@torch.no_grad()
def accuracy(kind: str, model, processor, skill: str, n: int, seed: int, batch: int = 32) -> float:
    """Greedy exact-match accuracy on n fresh examples of `skill` (the build's own check)."""
    exs, right = world.examples(skill, n, seed), 0
    for i in range(0, n, batch):
        chunk = exs[i:i + batch]
        enc = collate([encode_one(kind, processor, e, False) for e in chunk], processor.tokenizer.pad_token_id,
                      left=True)
        out = model.generate(**enc, max_new_tokens=6, do_sample=False)
        texts = processor.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        right += sum(t.strip().lower() == e.answer for t, e in zip(texts, chunk))
    return right / n
