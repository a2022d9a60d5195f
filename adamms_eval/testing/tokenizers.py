"""Tokenizers of the tiny checkpoints and the zoo, built offline: byte-level BPE as Qwen2's (the Qwen2 family shares
ids [0, 100)) and a LLaMA-style one (ids [0, 96)), with chat templates and each model's added tokens."""
from __future__ import annotations

# ---- vocabularies (byte-level BPE, as Qwen2's): the Qwen2 family shares ids [0, 100), the LLaMA family [0, 96) ----
_CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:?!'\"()") + ["Ġ", "Ċ"]  # 73
_MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n"), ("Ġ", "i"),
           ("r", "e"), ("a", "t"), ("Ġ", "s"), ("e", "n"), ("Ġ", "o"), ("o", "r"), ("Ġ", "c"), ("e", "s"),
           ("i", "s"), ("Ġ", "d"), ("i", "t"), ("a", "n"), ("Ġ", "w"), ("Ġ", "u"), ("Ġ", "A"), ("Ġ", "I")]
QWEN_VOCAB = _CHARS + ["".join(m) for m in _MERGES] + ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # real 151643-5
QWEN2VL_EXTRA = ["<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
                 "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
                 "<|video_pad|>"]  # ids 100-110 (real: 151646-151656)
OV_EXTRA = ["<image>", "<video>"]  # ids 100, 101 (real: 151646, 151647)
QWEN25_EXTRA = QWEN2VL_EXTRA + ["<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                                "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]  # ids 100-118 (real: 151646-151664)
INTERNVL_EXTRA = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>",
                  "</box>"]  # InternVL3's additions to Qwen2.5's: ids 119-127 (real: 151665-151673)
QWEN3_EXTRA = QWEN25_EXTRA + ["<tool_response>", "</tool_response>", "<think>", "</think>"]  # 100-122 (151646-151668)
LLAMA_VOCAB = ["<unk>", "<s>", "</s>"] + _CHARS + ["".join(m) for m in _MERGES[:20]]
LLAVA15_EXTRA = ["<image>", "<pad>"]  # ids 96, 97 (real: 32000, 32001)
assert len(QWEN_VOCAB) == 100 and len(LLAMA_VOCAB) == 96
QWEN_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
               r"""|\s+(?!\S)|\s+""")


def qwen2_pipeline(tok):
    """Qwen2Tokenizer's normaliser, pre-tokenizer and decoder on a `tokenizers.Tokenizer` (transformers 5 rebuilds a
    model_type "qwen2" tokenizer this way, so any vocabulary we ship must be read through the same pipeline)."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers
    tok.normalizer, tok.decoder = normalizers.NFC(), decoders.ByteLevel()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return tok


def chat_template(image: str, video: str, chatml: bool) -> str:
    """A compact chat template: ChatML for the Qwen2 family, 'USER: ... ASSISTANT:' (Vicuna) for LLaVA-1.5."""
    body = ("{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
            f"{{% if c['type'] == 'image' %}}{image}{{% elif c['type'] == 'video' %}}{video}"
            "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}")
    if chatml:
        return ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n" + body + "<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return ("{% for m in messages %}{{ m['role'].upper() }}: " + body + " {% endfor %}"
            "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def build_tokenizer(vocab: list[str], template: str, model_specific: dict | None = None, **named):
    """Byte-level BPE built exactly like transformers' Qwen2Tokenizer, which 5.x forces for model_type "qwen2".
    `model_specific`: named extra tokens a processor reads as tokenizer attributes (InternVL's context_image_token)."""
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    merges = [m for m in _MERGES if "".join(m) in vocab]
    tok = Tokenizer(BPE({w: i for i, w in enumerate(vocab)}, merges, unk_token=named.get("unk_token"),
                        continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    qwen2_pipeline(tok)
    specials = [w for w in vocab if w.startswith("<") and w not in named.values()]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=specials,
                                   model_specific_special_tokens=model_specific or None, **named)
    fast.chat_template = template
    return fast


def qwen_tokenizer(extra: list[str], image: str = "", video: str = "", model_specific: dict | None = None):
    return build_tokenizer(QWEN_VOCAB + extra, chat_template(image, video, chatml=True), model_specific,
                           eos_token="<|im_end|>", pad_token="<|endoftext|>")


def llama_tokenizer(extra: list[str], image: str = "", **named):
    return build_tokenizer(LLAMA_VOCAB + extra, chat_template(image, "", chatml=False),
                      bos_token="<s>", eos_token="</s>", unk_token="<unk>", **named)


def vicuna_tokenizer():
    """The LLaMA tokenizer as CogVLM / mPLUG-Owl2 use it: pad = <unk> and BOS added to every encoded text."""
    from tokenizers.processors import TemplateProcessing
    tok = llama_tokenizer([], pad_token="<unk>")
    tok._tokenizer.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", LLAMA_VOCAB.index("<s>"))])
    return tok
