"""The zoo's synthetic visual-question world: scenes of coloured shapes and short words, one question per skill.

Everything is a function of an integer seed (``random.Random``), so a seed names a fixed list of examples.
Images are 56×56 RGB (Qwen2-VL sees 4 merged tokens, LLaVA-OneVision a 28-px base view plus 4 crops).

    examples(skill, n, seed) -> [Example]      the image, the question, the short answer
    caption(example) -> str                    the scene in words (θ0's text-only pretraining)
    SKILLS                                     every skill of every world (one lmms-eval task each)
    WORLDS[name] -> World                      which skills a world asks, θ0 reads, and A and B are tuned on

Two worlds (docs/evidence/<world>/): "disjoint", the paper's large-gap case (§6.2): A and B tuned on different
skill groups; "generalists", the paper's main case (Table 1): both tuned on every skill with different mixtures,
three skills of which are answered by the language model from the same visual facts (DESIGN.md there).
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
MORE_WORDS = ("two", "three", "four", "five")  # count + 1: arithmetic the language model does on a visual fact
FRUITS = {"red": "apple", "green": "lime", "blue": "berry", "yellow": "banana", "purple": "grape",
          "orange": "orange"}  # knowledge about named objects, keyed by the visual fact (the colour)
POST_PROMPT = "\nAnswer the question using a single word or phrase."

QUESTIONS = {
    "colour": "What colour is the shape?",
    "shape": "What shape is in the image?",
    "count": "How many shapes are there?",
    "position": "Where is the shape?",
    "size": "Is the shape big or small?",
    "word": "What word is written?",
    # language-side skills: the same facts as colour / count / colour+shape, answered with knowledge or reasoning
    "more": "How many shapes would there be with one more?",
    "fruit": "Which fruit has the colour of the shape?",
    "composite": "What colour and shape is it?",
}
SKILLS = tuple(QUESTIONS)
ANSWERS = {"colour": tuple(COLOURS), "shape": SHAPES, "count": COUNT_WORDS, "position": POSITIONS,
           "size": tuple(SIZES), "word": WORDS, "more": MORE_WORDS, "fruit": tuple(FRUITS.values()),
           "composite": tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)}


@dataclass(frozen=True)
class Tuning:
    """One MLLM's instruction data: skill -> weight (weight × Spec.ft_examples distinct examples, sampled
    uniformly from the pool, so the mixture is proportional to the weights) and its steps as a share of
    Spec.ft_steps."""
    mixture: dict
    steps_scale: float = 1.0


@dataclass(frozen=True)
class World:
    skills: tuple  # the world's tasks, in table order
    text_skills: tuple  # what θ0's text pretraining covers (captions + these questions)
    model_a: Tuning  # Qwen2-VL
    model_b: Tuning  # LLaVA-OneVision
    group: str  # the lmms-eval group of its tasks

    @property
    def language_side(self) -> tuple:
        return tuple(s for s in self.skills if s not in self.text_skills)


_DISJOINT_SKILLS = ("colour", "shape", "count", "position", "size", "word")
WORLDS = {
    # the published large-gap zoo: A and B fine-tuned on overlapping but different groups
    "disjoint": World(_DISJOINT_SKILLS, _DISJOINT_SKILLS,
                      Tuning(dict.fromkeys(("colour", "shape", "count", "word"), 1.0)),
                      Tuning(dict.fromkeys(("shape", "count", "position", "size"), 1.0)), "adamms_zoo"),
    # docs/evidence/generalists/DESIGN.md, decisions 3-5 (fixed before the world was built)
    "generalists": World(
        ("colour", "shape", "count", "more", "fruit", "composite"), ("colour", "shape", "count"),
        # calibration attempt 3, the last (DESIGN.md's log: attempts 1 and 2 left B at chance on shape)
        Tuning({"colour": 1.0, "shape": 2.0, "count": 1.5, "more": 0.25, "fruit": 0.25, "composite": 1.5}, 14 / 11),
        Tuning({"colour": 0.7, "shape": 3.0, "count": 1.2, "more": 0.8, "fruit": 0.8, "composite": 1.0}, 12 / 11),
        "adamms_zoo_generalists"),
}
GROUP_A, GROUP_B = tuple(WORLDS["disjoint"].model_a.mixture), tuple(WORLDS["disjoint"].model_b.mixture)


def get_world(name: str) -> World:
    if name not in WORLDS:
        raise ValueError(f"unknown zoo world {name!r}; choose from {', '.join(WORLDS)}")
    return WORLDS[name]
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
    if skill in ("count", "more"):
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
    if skill == "more":
        return MORE_WORDS[sc["count"] - 1]
    if skill == "fruit":
        return FRUITS[sc["colour"]]
    if skill == "composite":
        return f"{sc['colour']} {sc['shape']}"
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


def chance_scores(world_name: str) -> dict[str, float]:
    """Each task's chance score, 0-100 (a uniform guess among its answers), keyed by lmms-eval task name."""
    return {f"adamms_zoo_{s}": round(100 / len(ANSWERS[s]), 2) for s in get_world(world_name).skills}
