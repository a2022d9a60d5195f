"""`adamms zoo build`: θ0, model A (Qwen2-VL) and model B (LLaVA-OneVision) trained on one of the zoo's worlds.

    build(out=None, seed=0, size="full", force=False, world="disjoint") -> Path   # out/{theta0,model_a,model_b,zoo.json}
    default_zoo_dir(size, seed, world) -> ~/.cache/adamms-eval/zoo/v<VERSION>-<world>-<size>-seed<seed>

The folder appears only when complete (built in a temporary sibling, then renamed); a finished zoo is reused.
A full seed-0 build is compared with the weights shipped in the repository (zoo_weights/<world>, adamms_eval.zoo.shipped).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..runtime import cache_root
from ..errors import AdammsError

from . import world

VERSION = 3  # bump when the world or the training changes: the cache folder name includes it


@dataclass(frozen=True)
class Spec:
    hidden: int = 96
    layers: int = 3
    intermediate: int = 256
    vision: int = 48
    bpe_vocab: int = 512
    lm_docs: int = 600  # per skill
    lm_steps: int = 300
    lm_batch: int = 48
    ft_examples: int = 600  # per skill
    ft_steps: int = 1100
    ft_batch: int = 24
    lr: float = 3e-3
    lm_lr: float = 1e-3
    eval_n: int = 64  # per skill, for the report


SPECS = {"full": Spec(), "ci": Spec(hidden=64, layers=2, intermediate=128, vision=32, bpe_vocab=400, lm_docs=300,
                                     lm_steps=200, lm_batch=32, ft_examples=200, ft_steps=400, ft_batch=16, eval_n=24)}


def default_zoo_dir(size: str = "full", seed: int = 0, world_name: str = "disjoint") -> Path:
    return cache_root() / "zoo" / f"v{VERSION}-{world_name}-{size}-seed{seed}"


def _vocab_round(n: int) -> int:
    return (n + 63) // 64 * 64


def _text_config(spec: Spec, vocab_size: int) -> dict:
    heads = 4
    return dict(vocab_size=vocab_size, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                num_hidden_layers=spec.layers, num_attention_heads=heads, num_key_value_heads=2,
                max_window_layers=spec.layers, tie_word_embeddings=False, bos_token_id=None,
                max_position_embeddings=512, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


def _seeded(seed: int, make):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def _load_lm(model, theta0: dict) -> None:
    """θ0's LM into an MLLM (rows past θ0's vocabulary keep their init)."""
    sd = model.state_dict()
    for k, v in theta0.items():
        key = "lm_head.weight" if k == "lm_head.weight" else k.replace("model.", "model.language_model.", 1)
        sd[key] = torch.cat([v, sd[key][len(v):]]) if k in ("model.embed_tokens.weight", "lm_head.weight") else v
    model.load_state_dict(sd)


def _save(model, processor, path: Path, eos: int, pad: int) -> None:
    from transformers import GenerationConfig
    model.generation_config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=8, eos_token_id=eos,
                                               pad_token_id=pad)
    model.save_pretrained(path)
    processor.save_pretrained(path)


def _corpus(seed: int, spec: Spec, w: world.World) -> tuple[list[str], list[str]]:
    """θ0's documents (its text skills only) and the tokenizer's corpus (those plus every question and answer of
    the world, so every answer is in the vocabulary even where θ0 never learns to give it)."""
    docs = [world.text_document(s, seed * 100_000 + i) for s in w.text_skills for i in range(spec.lm_docs)]
    chat = ["system\nYou are a helpful assistant.", "user\n", "assistant\n"]
    prompts = [world.QUESTIONS[s] + world.POST_PROMPT for s in w.skills]
    answers = ["\n" + a for s in w.skills for a in world.ANSWERS[s]]
    return docs, docs + 20 * (chat + prompts + answers)


def _build(out: Path, seed: int, spec: Spec, world_name: str, log) -> dict:
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor,
                              Qwen2Config, Qwen2ForCausalLM, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                              Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor)
    from transformers.utils import logging as hf_logging

    from ..testing.tiny import OV_EXTRA, PINPOINTS, QWEN2VL_EXTRA

    from . import tokenizer as ztok
    from .train import accuracy, finetune, pretrain_lm
    hf_logging.disable_progress_bar()
    w = world.get_world(world_name)
    report: dict = {"version": VERSION, "world": world_name, "seed": seed, "spec": asdict(spec),
                    "groups": {"model_a": list(w.model_a.mixture), "model_b": list(w.model_b.mixture)},
                    "mixtures": {"model_a": w.model_a.mixture, "model_b": w.model_b.mixture}, "timings": {}}
    t_start = time.perf_counter()
    steps = {m: round(spec.ft_steps * t.steps_scale) for m, t in (("model_a", w.model_a), ("model_b", w.model_b))}

    docs, corpus = _corpus(seed, spec, w)
    vocab, merges = ztok.train_bpe(corpus, spec.bpe_vocab)
    n_words = len(vocab) + len(ztok.CHAT_SPECIALS)
    eos, pad = len(vocab) + 2, len(vocab)  # <|im_end|>, <|endoftext|>

    # θ0: a Qwen2 causal LM pretrained on the world's text
    base_tok = ztok.make_tokenizer(vocab, merges, [])
    theta_vocab = _vocab_round(n_words + len(QWEN2VL_EXTRA))
    lm = _seeded(seed, lambda: Qwen2ForCausalLM(Qwen2Config(**_text_config(spec, theta_vocab), eos_token_id=eos,
                                                            pad_token_id=pad)))
    log(f"θ0: Qwen2 LM {sum(p.numel() for p in lm.parameters()):,} parameters, {len(docs)} documents")
    report["theta0"] = pretrain_lm(lm, base_tok, docs, spec.lm_steps, spec.lm_batch, spec.lr, seed, "θ0")
    _save(lm, base_tok, out / "theta0", eos, pad)
    theta0 = {k: v.detach().clone() for k, v in lm.state_dict().items()}
    del lm

    # model A: Qwen2-VL (own vision tower), LM from θ0
    qtok = ztok.qwen2vl_tokenizer(vocab, merges)
    ids = {t: n_words + i for i, t in enumerate(QWEN2VL_EXTRA)}
    head = spec.hidden // 4 // 2
    qcfg = Qwen2VLConfig(
        text_config=dict(_text_config(spec, theta_vocab), eos_token_id=eos, pad_token_id=pad,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": [head // 4, (head - head // 4) // 2,
                                                            head - head // 4 - (head - head // 4) // 2]}),
        vision_config=dict(depth=2, embed_dim=spec.vision, hidden_size=spec.hidden, num_heads=2, mlp_ratio=2,
                           patch_size=14, spatial_merge_size=1, temporal_patch_size=2),  # 16 tokens per image
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False)
    pixels = world.SIZE * world.SIZE
    qproc = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(min_pixels=pixels, max_pixels=pixels, merge_size=1),
                             video_processor=Qwen2VLVideoProcessor(min_pixels=pixels, max_pixels=pixels, merge_size=1),
                             tokenizer=qtok, chat_template=qtok.chat_template)
    model_a = _seeded(seed + 1, lambda: Qwen2VLForConditionalGeneration(qcfg))
    _load_lm(model_a, theta0)
    log(f"model A: Qwen2-VL {sum(p.numel() for p in model_a.parameters()):,} parameters, mixture {w.model_a.mixture}")
    report["model_a"] = finetune("qwen2_vl", model_a, qproc, w.model_a.mixture, spec.ft_examples, steps["model_a"],
                                 spec.ft_batch, spec.lr, spec.lm_lr, seed + 1, "model A")
    _save(model_a, qproc, out / "model_a", eos, pad)

    # model B: LLaVA-OneVision (SigLIP tower + projector of its own), LM from the same θ0, a larger vocabulary
    otok = ztok.onevision_tokenizer(vocab, merges)
    ocfg = LlavaOnevisionConfig(
        text_config=dict(_text_config(spec, theta_vocab + 64), model_type="qwen2", eos_token_id=eos, pad_token_id=pad),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=spec.vision,
                           intermediate_size=2 * spec.vision, num_hidden_layers=2, num_attention_heads=2,
                           image_size=28, patch_size=14, vision_use_head=False),
        image_token_index=n_words, video_token_index=n_words + 1, vision_feature_layer=-1, tie_word_embeddings=False,
        vision_feature_select_strategy="full", image_grid_pinpoints=PINPOINTS, vision_aspect_ratio="anyres_max_9")
    size = {"height": 28, "width": 28}
    oproc = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=PINPOINTS),
        video_processor=LlavaOnevisionVideoProcessor(size=size), tokenizer=otok, num_image_tokens=4,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9", chat_template=otok.chat_template)
    assert otok.convert_tokens_to_ids(OV_EXTRA[0]) == n_words
    model_b = _seeded(seed + 2, lambda: LlavaOnevisionForConditionalGeneration(ocfg))
    _load_lm(model_b, theta0)
    log(f"model B: LLaVA-OneVision {sum(p.numel() for p in model_b.parameters()):,} parameters, "
        f"mixture {w.model_b.mixture}")
    report["model_b"] = finetune("llava_onevision", model_b, oproc, w.model_b.mixture, spec.ft_examples,
                                 steps["model_b"],
                                 spec.ft_batch, spec.lr, spec.lm_lr, seed + 2, "model B")
    _save(model_b, oproc, out / "model_b", eos, pad)

    # per-skill accuracy of both models on fresh examples (seeds of neither training nor the lmms-eval tasks)
    t_eval = time.perf_counter()
    report["accuracy"] = {
        name: {s: round(accuracy(kind, m, p, s, spec.eval_n, world.TASK_SEED // 2 + 1000 * seed), 3)
               for s in w.skills}
        for name, kind, m, p in (("model_a", "qwen2_vl", model_a, qproc), ("model_b", "llava_onevision", model_b, oproc))}
    report["chance"] = {s: round(1 / len(world.ANSWERS[s]), 3) for s in w.skills}
    report["timings"] = {"eval_seconds": round(time.perf_counter() - t_eval, 1),
                         "total_seconds": round(time.perf_counter() - t_start, 1)}
    report["versions"] = {"torch": torch.__version__, "python": platform.python_version(),
                          "threads": torch.get_num_threads()}
    return report


def build(out: str | Path | None = None, seed: int = 0, size: str = "full", force: bool = False,
          threads: int = 1, log=print, world_name: str = "disjoint") -> Path:
    """Build (or reuse) the zoo of `world_name`; returns its folder. One thread by default: on a shared 2-core
    machine, two torch threads measured 10x slower per step than one (they spin while the other core is busy).
    A full seed-0 build ends by saying whether it reproduced the shipped weights bit for bit."""
    if size not in SPECS:
        raise AdammsError(f"zoo size {size!r} unknown; choose {' or '.join(SPECS)}")
    if world_name not in world.WORLDS:
        raise AdammsError(f"zoo world {world_name!r} unknown; choose {' or '.join(world.WORLDS)}")
    out = Path(out) if out else default_zoo_dir(size, seed, world_name)
    if (out / "zoo.json").is_file() and not force:
        log(f"zoo ready: {out}")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        report = _build(tmp, seed, SPECS[size], world_name, log)
        (tmp / "zoo.json").write_text(json.dumps(report, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        torch.set_num_threads(threads_before)
        shutil.rmtree(tmp, ignore_errors=True)
    log(format_report(report))
    log(f"zoo written: {out}")
    if size == "full" and seed == 0:
        from .shipped import compare_with_shipped
        log(compare_with_shipped(out, world_name))
    return out


def format_report(report: dict) -> str:
    acc, chance = report["accuracy"], report["chance"]
    mix = report["mixtures"]
    lines = [f"world {report['world']}; mixture weights A {mix['model_a']}, B {mix['model_b']}",
             f"{'skill':10} {'chance':>7} {'model A':>8} {'model B':>8}"]
    for s in acc["model_a"]:
        mark = lambda m: "*" if s in mix[m] else " "
        lines.append(f"{s:10} {chance[s]:>7.2f} {acc['model_a'][s]:>7.2f}{mark('model_a')} "
                     f"{acc['model_b'][s]:>7.2f}{mark('model_b')}")
    t = report["timings"]
    lines.append(f"trained in {report['theta0']['seconds'] + report['model_a']['seconds'] + report['model_b']['seconds']:.0f} s "
                 f"(θ0 {report['theta0']['seconds']} s, A {report['model_a']['seconds']} s, B {report['model_b']['seconds']} s); "
                 f"build {t['total_seconds']} s in all; * = trained skill")
    return "\n".join(lines)
