"""Architecture adapters: each JSON file in `architectures/` describes one checkpoint layout alone.

An adapter says, for every tensor name of its checkpoint, which canonical language-model slot it is
(slot names are those of a plain LLaMA/Qwen2 decoder: `layers.3.self_attn.q_proj.weight`,
`embed_tokens.weight`, `lm_head.weight`, ...), whether it is a duplicated multimodal copy of a slot
(`duplicate_of` names the modality the copy processes, e.g. "vision" for CogVLM's vision expert and
mPLUG-Owl2's multiway.1, so copies match across architectures; `branch` is the copy's own name), a
modality-only tensor with no counterpart (`group`: vision, projector, ...), or a non-parameter buffer
that is never merged (`ignore`: rotary `inv_freq` saved by old transformers). A fused tensor lists
several `slots`, concatenated along dim 0 (CogVLM's QKV = rows of q, k, v).

Every file is checked against the schema below when read (an unknown key or a malformed rule names the file and
the fix). `_shared.json` holds rules every adapter applies before its own (old transformers' `inv_freq` buffers).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import AdammsError

ARCH_DIR = Path(__file__).with_name("architectures")
SLOT_RE = re.compile(
    r"^(embed_tokens\.weight|norm\.weight|lm_head\.weight|"
    r"layers\.\d+\.(self_attn\.[qkvo]_proj\.(weight|bias)|mlp\.(gate|up|down)_proj\.weight|"
    r"self_attn\.[qk]_norm\.weight|(input|post_attention)_layernorm\.weight))$")  # q/k_norm: Qwen3
VOCAB_SLOTS = ("embed_tokens.weight", "lm_head.weight")


@dataclass(frozen=True)
class KeyRole:
    """What one checkpoint tensor is, according to its adapter."""
    slots: tuple[str, ...] = ()          # canonical LM slots (several = fused along dim 0)
    duplicate_of: str | None = None      # modality a duplicated multimodal copy processes ("vision")
    branch: str | None = None            # the copy's own name ("vision_expert", "multiway_vision")
    group: str = "unrecognised"          # plan group
    ignored: bool = False                # a buffer the model recomputes: never merged, base copy kept

    @property
    def is_lm(self) -> bool:
        return bool(self.slots)


def slot_group(slot: str) -> str:
    if slot.startswith("layers."):
        return "language model layers"
    return {"embed_tokens.weight": "embeddings", "lm_head.weight": "lm_head", "norm.weight": "final norm"}[slot]


# LMShape's fields after `family`: what a config.json must write out to be read without its config class
SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "head_dim", "vocab_size")
# config classes whose head_dim is hidden_size // num_attention_heads when the file omits it (Llama, Mistral
# derive it; the Qwen2 ones have none, so lm_shape derives it; Qwen3's default is 128, so it is not here)
HEAD_DIM_FROM_HIDDEN = frozenset({"llama", "mistral", "qwen2", "qwen2_vl", "qwen2_5_vl"})


@dataclass(frozen=True)
class LMShape:
    """Language-model hyperparameters that must agree between merged models."""
    family: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    head_dim: int
    vocab_size: int | None

    def rows(self, slot: str) -> int:
        """Rows of a q/k/v slot, to split fused tensors."""
        kind = slot.split(".")[-2]
        heads = self.num_attention_heads if kind == "q_proj" else self.num_key_value_heads
        return heads * self.head_dim

    def mismatches(self, other: "LMShape") -> list[str]:
        fields = ("family", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "intermediate_size", "head_dim")
        return [f"{f} {getattr(self, f)} vs {getattr(other, f)}" for f in fields if getattr(self, f) != getattr(other, f)]


class Adapter:
    def __init__(self, spec: dict, rules: list[dict]):
        self.name = spec["name"]
        self.title = spec.get("title", self.name)
        self.detect_spec = spec.get("detect", {})
        self.family = spec.get("family")
        self.family_by_architecture = spec.get("family_by_architecture", {})
        self.text_config_key = spec.get("text_config")
        # transformers model_type whose config class reads a flat config.json of this checkpoint (remote-code
        # models such as CogVLM and mPLUG-Owl2 are LLaMA underneath), or the nested text config whose own
        # model_type transformers does not know (LLaVA-OneVision-1.5's is Qwen3's); default: the LM family
        self.config_model_type = spec.get("config_model_type")
        self.rules = [(re.compile(r["match"]), r) for r in rules]

    def classify(self, key: str) -> KeyRole:
        for pattern, rule in self.rules:
            m = pattern.match(key)
            if not m:
                continue
            templates = rule.get("slots") or ([rule["slot"]] if "slot" in rule else [])
            slots = tuple(m.expand(t) for t in templates)
            bad = [s for s in slots if not SLOT_RE.match(s)]
            if bad:  # a rule that maps to a non-canonical name is a bug in the adapter file
                raise AdammsError(f"adapter {self.name}: key {key} maps to unknown slot {bad[0]}")
            if slots:
                dup = rule.get("duplicate_of")
                group = "duplicated multimodal copies" if dup else slot_group(slots[0])
                return KeyRole(slots, dup, rule.get("branch", dup) if dup else None, group)
            return KeyRole(group=rule.get("group", "other"), ignored=bool(rule.get("ignore")))
        return KeyRole()

    def family_of(self, config: dict) -> str:
        if self.family:
            return self.family
        archs = " ".join(config.get("architectures") or [])
        family = next((f for sub, f in self.family_by_architecture.items() if sub in archs), None)
        text = config.get(self.text_config_key) if self.text_config_key else None
        return family or (text or {}).get("model_type") or config.get("model_type", "unknown")

    def text_config(self, config: dict):
        """The language model's config as transformers reads it: fields the published config.json omits
        (llava-hf's text_config omits every LlamaConfig default) take the config class's defaults."""
        from transformers import CONFIG_MAPPING
        nested = self.text_config_key and isinstance(config.get(self.text_config_key), dict)
        # nested (llava-hf, transformers 5): the wrapper class builds its text config with the text class's
        # defaults; flat (liuhaotian, lmms-lab, remote code): the LM family's own class reads the raw JSON
        model_type = config.get("model_type") if nested else (self.config_model_type or self.family_of(config))
        if nested and model_type not in CONFIG_MAPPING:
            # a remote-code wrapper transformers does not know (InternVL's internvl_chat, LLaVA-OneVision-1.5's
            # llavaonevision1_5): its nested text config, read by the language model's own config class
            text = config[self.text_config_key]
            model_type = text.get("model_type")
            if model_type not in CONFIG_MAPPING:  # LLaVA-OneVision-1.5's LLaVAOneVision1_5_text is Qwen3's
                model_type = self.config_model_type or self.family_of(config)
            config = {k: v for k, v in text.items() if k != "model_type"}
        if model_type not in CONFIG_MAPPING:
            raise AdammsError(f"config.json of this {self.name} model has model_type {model_type!r}, which "
                              "transformers does not know; is this the right architecture (see --base-arch/--other-arch)?")
        try:
            return CONFIG_MAPPING[model_type].from_dict(dict(config)).get_text_config()
        except (TypeError, ValueError, KeyError) as e:
            raise AdammsError(f"config.json does not read as a {model_type} config ({e}); "
                              "is this the right architecture (see --base-arch/--other-arch)?") from None

    def _written_shape(self, config: dict) -> LMShape | None:
        """The LM shape read from config.json as written, where that gives what the config class would: every
        field present, head_dim aside where the class derives it. None: the class must fill defaults in."""
        text = config.get(self.text_config_key) if self.text_config_key else None
        fields = text if isinstance(text, dict) else config
        if any(fields.get(f) is None for f in SHAPE_FIELDS if f != "head_dim"):
            return None
        # no CONFIG_MAPPING lookup: importing transformers' top level scans its model tree (~1 s); a type name
        # outside HEAD_DIM_FROM_HIDDEN, known or not, leaves head_dim to the class
        text_type = (fields.get("model_type") if isinstance(text, dict) else None) \
            or self.config_model_type or self.family_of(config)
        head_dim = fields.get("head_dim")
        if head_dim is None:
            if text_type not in HEAD_DIM_FROM_HIDDEN:
                return None
            head_dim = fields["hidden_size"] // fields["num_attention_heads"]
        values = {f: int(fields[f]) for f in SHAPE_FIELDS if f != "head_dim"}
        return LMShape(self.family_of(config), head_dim=int(head_dim), **values)

    def lm_shape(self, config: dict) -> LMShape:
        # Building the config class would import transformers' image and video utilities (torchvision): over
        # a second of every `adamms merge`. Read the written fields where they say all (tests/test_written_shape.py).
        return self._written_shape(config) or self._class_shape(config)

    def _class_shape(self, config: dict) -> LMShape:
        cfg = self.text_config(config)
        heads, hidden = cfg.num_attention_heads, cfg.hidden_size
        return LMShape(self.family_of(config), hidden, cfg.num_hidden_layers, heads,
                       getattr(cfg, "num_key_value_heads", None) or heads, cfg.intermediate_size,
                       getattr(cfg, "head_dim", None) or hidden // heads, getattr(cfg, "vocab_size", None))

    def matches(self, config: dict) -> int:
        """2 = matched by architectures, 1 = by model_type, 0 = no match; an adapter that also names config fields
        (Yi-VL: LLaVA's classes, told apart by its projector type) matches only with one of them, and then wins
        over the adapters it shares the architecture with (+2)."""
        if set(config.get("architectures") or []) & set(self.detect_spec.get("architectures", [])):
            score = 2
        else:
            score = 1 if config.get("model_type") in self.detect_spec.get("model_type", []) else 0
        fields = self.detect_spec.get("config")
        if not fields or not score:
            return score
        return score + 2 if any(config.get(k) in values for k, values in fields.items()) else 0


SHARED = "_shared"
SPEC_KEYS = {"name", "title", "detect", "family", "family_by_architecture", "text_config", "config_model_type",
             "extends", "rules"}
DETECT_KEYS = {"architectures", "model_type", "config"}
RULE_KEYS = {"match", "slot", "slots", "duplicate_of", "branch", "group", "ignore"}


def _check_spec(spec, file: Path, known: set[str]) -> None:
    """The adapter schema; a violation is a bug in the file, reported with its name and the fix."""
    def bad(what: str):
        raise AdammsError(f"architecture file {file.name}: {what}")
    if not isinstance(spec, dict):
        bad("must be a JSON object")
    allowed = {"title", "rules"} if file.stem == SHARED else SPEC_KEYS
    unknown = sorted(set(spec) - allowed)
    if unknown:
        bad(f"unknown key {unknown[0]!r}{suggest_key(unknown[0], allowed)}; allowed: {', '.join(sorted(allowed))}")
    if file.stem != SHARED:
        if spec.get("name") != file.stem:
            bad(f"name {spec.get('name')!r} must be the file's stem {file.stem!r}")
        if not isinstance(spec.get("detect"), dict) or set(spec["detect"]) - DETECT_KEYS:
            bad(f"detect must be an object with {' and/or '.join(sorted(DETECT_KEYS))}")
        if "extends" in spec and spec["extends"] not in known:
            bad(f"extends {spec['extends']!r}, which is not an architecture file here")
        if "rules" not in spec and "extends" not in spec:
            bad("needs rules (or extends another architecture)")
    for i, rule in enumerate(spec.get("rules", [])):
        where = f"rules[{i}]"
        if not isinstance(rule, dict) or "match" not in rule:
            bad(f"{where} needs a match regex")
        unknown = sorted(set(rule) - RULE_KEYS)
        if unknown:
            bad(f"{where}: unknown key {unknown[0]!r}{suggest_key(unknown[0], RULE_KEYS)}")
        try:
            re.compile(rule["match"])
        except re.error as e:
            bad(f"{where}: match is not a regex ({e})")
        maps = ("slot" in rule) + ("slots" in rule)
        if maps > 1 or (maps and ("group" in rule or "ignore" in rule)) or (not maps and "group" not in rule):
            bad(f"{where} needs exactly one of slot, slots (a language-model tensor) or group (kept)")
        if ("duplicate_of" in rule or "branch" in rule) and not maps:
            bad(f"{where}: duplicate_of / branch describe a copy of a slot: give slot or slots")


def suggest_key(name: str, vocabulary) -> str:
    import difflib
    close = difflib.get_close_matches(name, sorted(vocabulary), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@lru_cache(maxsize=None)
def adapters() -> dict[str, Adapter]:
    """The shipped adapters, by name (read once)."""
    return load_adapters(ARCH_DIR)


def load_adapters(folder: Path) -> dict[str, Adapter]:
    """Every adapter file of `folder`, checked against the schema, with the shared rules in front of each's own."""
    files = sorted(folder.glob("*.json"))
    specs = {}
    for p in files:
        try:
            specs[p.stem] = json.loads(p.read_text())
        except ValueError as e:
            raise AdammsError(f"architecture file {p.name} is not valid JSON ({e})") from None
    for p in files:
        _check_spec(specs[p.stem], p, set(specs) - {SHARED})
    shared = specs.pop(SHARED, {}).get("rules", [])

    def rules_of(spec: dict) -> list[dict]:
        return spec.get("rules", []) + (rules_of(specs[spec["extends"]]) if "extends" in spec else [])

    return {s["name"]: Adapter(s, shared + rules_of(s)) for s in specs.values()}


def detect(config: dict, override: str | None = None, what: str = "model") -> Adapter:
    known = adapters()
    names = ", ".join(sorted(known))
    if override:
        if override not in known:
            raise AdammsError(f"unknown architecture '{override}' for the {what}; supported: {names}")
        return known[override]
    scored = sorted(((a.matches(config), a.name) for a in known.values()), reverse=True)
    if not scored or scored[0][0] == 0:
        found = config.get("architectures") or config.get("model_type")
        flag = {"base": "--base-arch", "other": "--other-arch", "pretrained": "--pretrained-arch"}.get(what, "the arch override")
        raise AdammsError(f"unsupported architecture {found!r} for the {what}; supported: {names} "
                          f"(force one with {flag} NAME)")
    return known[scored[0][1]]
