"""lm_shape reads a config.json's written fields without building the config class where they say all; the
numbers must be the class's, on every published config."""
import json
from pathlib import Path

import pytest

from adamms_eval.arch.adapters import detect

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "released").glob("*/config.json"))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.parent.name)
def test_written_shape_equals_the_config_class_on_published_configs(path):
    config = json.loads(path.read_text())
    adapter = detect(config)
    assert adapter.lm_shape(config) == adapter._class_shape(config)


def test_most_published_configs_are_read_without_their_class():
    """The fast path must apply where the fields are written (else the test above checks nothing new)."""
    read = [p.parent.name for p in FIXTURES if detect(c := json.loads(p.read_text()))._written_shape(c)]
    assert {"qwen2-vl-7b-instruct", "llava-v1.5-7b", "qwen3-vl-8b-instruct", "mplug-owl2-llama2-7b"} <= set(read)
    # fields left to the class's defaults: the class path
    assert "llava-1.5-7b-hf" not in read and "cogvlm-chat-hf" not in read


def test_head_dim_of_a_class_with_its_own_default_is_not_derived():
    """Qwen3Config's head_dim defaults to 128, not hidden // heads: a file that omits it goes to the class."""
    path = next(p for p in FIXTURES if p.parent.name == "qwen3-8b-base")
    config = json.loads(path.read_text())
    config.pop("head_dim")
    config["hidden_size"], config["num_attention_heads"] = 2048, 32  # hidden // heads = 64
    adapter = detect(config)
    assert adapter._written_shape(config) is None
    assert adapter.lm_shape(config).head_dim == 128
