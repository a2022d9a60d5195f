"""The published evidence (docs/evidence/<world>/) stands on the weights shipped in zoo_weights/<world>: their
sha256 hashes match the files, and compare rows rerun on them give the published numbers exactly."""
import json
from pathlib import Path

import pytest
import yaml

from adamms_eval.zoo import shipped, world

WORLDS = tuple(world.WORLDS)
EVIDENCE = shipped.REPO / "docs" / "evidence"


@pytest.mark.parametrize("name", WORLDS)
def test_shipped_hashes_match_the_files(name):
    folder = shipped.shipped_dir(name)
    published = shipped.read_hashes(shipped.hashes_file(name))
    assert set(published) == {f"{m}/model.safetensors" for m in shipped.MODELS}
    assert shipped.weight_hashes(folder) == published
    report = json.loads((folder / "zoo.json").read_text())
    assert report["world"] == name and report["seed"] == 0 and report["versions"]["threads"] == 1


def test_shipped_generalists_meet_the_design_criteria():
    """DESIGN.md's criteria on the originals (O1-O4), on the shipped build's own check."""
    report = json.loads((shipped.shipped_dir("generalists") / "zoo.json").read_text())
    a, b, chance = report["accuracy"]["model_a"], report["accuracy"]["model_b"], report["chance"]
    assert all(m[s] >= chance[s] + 0.15 for m in (a, b) for s in chance)  # O1
    assert sum(abs(a[s] - b[s]) <= 0.20 for s in chance) >= 4  # O2
    assert sum(a.values()) > sum(b.values())  # O3
    lang = world.get_world("generalists").language_side
    assert any(a[s] > b[s] for s in chance) and any(b[s] > a[s] for s in lang)  # O4


def test_whole_zoo_is_small():
    size = sum(f.stat().st_size for f in shipped.SHIPPED_ROOT.rglob("*") if f.is_file())
    assert size < 40e6, f"the shipped zoo is {size / 1e6:.1f} MB"


def test_compare_with_shipped_tells_a_difference(tmp_path):
    import shutil
    from safetensors.torch import load_file, save_file
    name = WORLDS[0]
    for m in shipped.MODELS:
        shutil.copytree(shipped.shipped_dir(name) / m, tmp_path / m)
    assert "bit for bit" in shipped.compare_with_shipped(tmp_path, name)
    f = tmp_path / "model_b" / "model.safetensors"
    sd = load_file(str(f))
    key = sorted(sd)[0]
    sd[key] = sd[key] + 0.25
    save_file(sd, str(f), metadata={"format": "pt"})
    msg = shipped.compare_with_shipped(tmp_path, name)
    assert "did NOT reproduce" in msg and "model_b/model.safetensors: 1 of" in msg and "0.25" in msg
    assert "model_a/model.safetensors: identical" in msg


@pytest.fixture(scope="module")
def task_root(tmp_path_factory):
    from adamms_eval.task_folders import write_zoo_tasks
    root = tmp_path_factory.mktemp("tasks")
    write_zoo_tasks(root, rows=100)  # the published tasks: 100 questions per skill
    return root


@pytest.mark.parametrize("name", WORLDS)
def test_compare_rows_on_shipped_weights_reproduce_published_numbers(name, task_root, tmp_path):
    """A baseline row and the linear merge at AdaMMS's published α, on one task, rerun from the evidence config."""
    from adamms_eval import compare
    published = json.loads((EVIDENCE / name / "comparison.json").read_text())
    cfg = yaml.safe_load((EVIDENCE / name / "config.yaml").read_text())
    task = f"adamms_zoo_{world.get_world(name).skills[-1]}"  # word (disjoint), composite (generalists)
    alpha = published["chosen"]["AdaMMS"][task]
    root = EVIDENCE / name
    cfg.update(base=str((root / cfg["base"]).resolve()), other=str((root / cfg["other"]).resolve()),
               pretrained=str((root / cfg["pretrained"]).resolve()), tasks=[task], include_path=[str(task_root)],
               chance={task: cfg["chance"][task]}, granularity_alphas=None,
               output=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"),
               rows=[{"name": "Task Arithmetic", "method": "paper_task_arithmetic"},
                     {"name": "AdaMMS at its α", "method": "linear", "coefficient": float(alpha)}])
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    data = compare.run_compare(path, log=lambda *_: None)
    assert data["scores"]["Task Arithmetic"][task] == published["scores"]["Task Arithmetic"][task]
    assert data["scores"]["AdaMMS at its α"][task] == published["scores"]["AdaMMS"][task]
