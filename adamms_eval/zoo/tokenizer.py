"""The zoo's tokenizer: byte-level BPE trained on the world's text, built the way transformers' Qwen2Tokenizer is.

transformers 5 rebuilds any ``model_type: qwen2`` tokenizer as Qwen2Tokenizer from its vocab and merges, so the
pre-tokenizer, normaliser and decoder here are Qwen2's (adamms_eval.testing.tokenizers'); only the vocabulary is the world's.
"""
from __future__ import annotations

import json

from ..testing.tokenizers import OV_EXTRA, QWEN2VL_EXTRA, chat_template, qwen2_pipeline

CHAT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # real Qwen2 ids 151643-151645


def train_bpe(corpus: list[str], vocab_size: int) -> tuple[list[str], list[tuple[str, str]]]:
    """BPE over the 256 byte symbols plus merges learned from `corpus` (deterministic for a given corpus)."""
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers.models import BPE
    tok = qwen2_pipeline(Tokenizer(BPE()))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)  # repeats count: frequent strings become single tokens
    model = json.loads(tok.to_str())["model"]
    vocab = sorted(model["vocab"], key=model["vocab"].get)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return vocab, merges


def make_tokenizer(vocab: list[str], merges, extra: list[str], image: str = "", video: str = ""):
    """A PreTrainedTokenizerFast: the world's BPE, then the chat specials, then the model's own special tokens."""
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    words = vocab + CHAT_SPECIALS + extra
    tok = qwen2_pipeline(Tokenizer(BPE({w: i for i, w in enumerate(words)}, list(merges), fuse_unk=False,
                                  byte_fallback=False)))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=CHAT_SPECIALS[1:] + extra,
                                   eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = chat_template(image, video, chatml=True)
    return fast


def qwen2vl_tokenizer(vocab, merges):
    return make_tokenizer(vocab, merges, QWEN2VL_EXTRA, "<|vision_start|><|image_pad|><|vision_end|>",
                          "<|vision_start|><|video_pad|><|vision_end|>")


def onevision_tokenizer(vocab, merges):
    return make_tokenizer(vocab, merges, OV_EXTRA, "<image>\n", "<video>\n")
