"""The zoo's synthetic visual-question world: scenes of coloured shapes and short words, one question per skill.

Everything is a function of an integer seed (``random.Random``), so a seed names a fixed list of examples.
Images are 56×56 RGB (Qwen2-VL sees 4 merged tokens, LLaVA-OneVision a 28-px base view plus 4 crops).

    examples(skill, n, seed) -> [Example]      the image, the question, the short answer
    caption(example) -> str                    the scene in words (θ0's text-only pretraining)
    SKILLS, GROUP_A, GROUP_B
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

SIZE = 56
COLOURS = {"red": (220, 30, 30), "green": (30, 160, 40), "blue": (30, 60, 220), "yellow": (235, 200, 20),
           "purple": (140, 40, 170), "orange": (245, 130, 20)}
SHAPES = ("circle", "square", "triangle")
POSITIONS = ("left", "right", "top", "bottom")
SIZES = {"small": 10, "big": 24}
WORDS = ("cat", "dog", "sun", "box", "hat", "pen")
COUNT_WORDS = ("one", "two", "three", "four")
POST_PROMPT = "\nAnswer the question using a single word or phrase."

QUESTIONS = {
    "colour": "What colour is the shape?",
    "shape": "What shape is in the image?",
    "count": "How many shapes are there?",
    "position": "Where is the shape?",
    "size": "Is the shape big or small?",
    "word": "What word is written?",
}
SKILLS = tuple(QUESTIONS)
# model A (Qwen2-VL) and model B (LLaVA-OneVision) are fine-tuned on overlapping but different groups
GROUP_A = ("colour", "shape", "count", "word")
GROUP_B = ("shape", "count", "position", "size")
ANSWERS = {"colour": tuple(COLOURS), "shape": SHAPES, "count": COUNT_WORDS, "position": POSITIONS,
           "size": tuple(SIZES), "word": WORDS}
# seed spaces: training draws seeds below 10**9, the lmms-eval tasks at TASK_SEED and above (disjoint)
TASK_SEED = 10**9


@dataclass
class Example:
    skill: str
    image: Image.Image
    question: str
    answer: str
    scene: dict


def _draw(d: ImageDraw.ImageDraw, shape: str, rgb, x: int, y: int, s: int) -> None:
    box = [x, y, x + s - 1, y + s - 1]
    if shape == "circle":
        d.ellipse(box, fill=rgb)
    elif shape == "square":
        d.rectangle(box, fill=rgb)
    else:
        d.polygon([(x + s // 2, y), (x, y + s - 1), (x + s - 1, y + s - 1)], fill=rgb)


def _where(x: int, y: int, s: int, rng: random.Random, position: str | None):
    """Top-left corner of an s-sized object; with a position, its centre lies clearly in that part of the image."""
    lo, hi, mid = 1, SIZE - s - 1, (SIZE - s) // 2
    if position is None:
        return rng.randint(lo, hi), rng.randint(lo, hi)
    jitter = rng.randint(-4, 4)
    edge = rng.randint(lo, max(lo, SIZE // 4 - s // 2))
    far = SIZE - s - edge
    return {"left": (edge, mid + jitter), "right": (far, mid + jitter),
            "top": (mid + jitter, edge), "bottom": (mid + jitter, far)}[position]


def _font(size: int):
    return ImageFont.load_default(size=size)


def scene(skill: str, rng: random.Random) -> dict:
    """Random scene attributes for one question of `skill`."""
    sc = {"colour": rng.choice(list(COLOURS)), "shape": rng.choice(SHAPES), "size": rng.choice(list(SIZES))}
    if skill == "count":
        sc.update(size="small", count=rng.randint(1, 4))
    elif skill == "position":
        sc.update(position=rng.choice(POSITIONS), size="small")
    elif skill == "word":
        sc.update(word=rng.choice(WORDS))
    return sc


def render(sc: dict, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    d = ImageDraw.Draw(img)
    rgb, s = COLOURS[sc["colour"]], SIZES[sc["size"]]
    if "word" in sc:
        d.text((SIZE // 2 + rng.randint(-4, 4), SIZE // 2 + rng.randint(-6, 6)), sc["word"], fill=(0, 0, 0),
               font=_font(18), anchor="mm")
    elif "count" in sc:
        cells = rng.sample([(i, j) for i in range(3) for j in range(3)], sc["count"])  # 3×3 grid, no overlap
        for i, j in cells:
            _draw(d, sc["shape"], rgb, 2 + 18 * i + rng.randint(0, 5), 2 + 18 * j + rng.randint(0, 5), s)
    else:
        _draw(d, sc["shape"], rgb, *_where(0, 0, s, rng, sc.get("position")), s)
    return img


def answer(skill: str, sc: dict) -> str:
    if skill == "count":
        return COUNT_WORDS[sc["count"] - 1]
    return sc[skill]


def example(skill: str, seed: int) -> Example:
    rng = random.Random(f"{skill}:{seed}")
    sc = scene(skill, rng)
    return Example(skill, render(sc, rng), QUESTIONS[skill], answer(skill, sc), sc)


def examples(skill: str, n: int, seed: int) -> list[Example]:
    """n examples of `skill` drawn with seeds seed, seed+1, ... (each example is reproducible on its own)."""
    if skill not in QUESTIONS:
        raise ValueError(f"unknown skill {skill!r}; choose from {', '.join(SKILLS)}")
    return [example(skill, seed + i) for i in range(n)]


def caption(sc: dict) -> str:
    """The scene in words: what θ0 learns to read before it ever sees an image."""
    if "word" in sc:
        return f"the word {sc['word']} is written in black"
    if "count" in sc:
        n = sc["count"]
        plural = "s" if n > 1 else ""
        return f"{COUNT_WORDS[n - 1]} {sc['size']} {sc['colour']} {sc['shape']}{plural}"
    where = f" on the {sc['position']}" if "position" in sc else ""
    return f"a {sc['size']} {sc['colour']} {sc['shape']}{where}"


CHAT_STYLES = (
    # (Qwen2-VL's prompt as lmms-eval's qwen2_vl sends it, LLaVA-OneVision's as llava_hf sends it) with the caption
    # where the image will be: θ0 learns to answer from a description in the place its MLLMs put the image
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{caption}. {question}{post}"
    "<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>",
    "<|im_start|>user\n{caption}.\n{question}{post}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>",
)


def text_document(skill: str, seed: int) -> str:
    """θ0's pretraining text: a caption, a question about it and its answer, as plain text or in a chat turn."""
    rng = random.Random(f"text:{skill}:{seed}")
    sc = scene(skill, rng)
    style = seed % 3
    if style == 2:
        return f"{caption(sc)}. {QUESTIONS[skill]} {answer(skill, sc)}."
    return CHAT_STYLES[style].format(caption=caption(sc), question=QUESTIONS[skill], post=POST_PROMPT,
                                     answer=answer(skill, sc))
