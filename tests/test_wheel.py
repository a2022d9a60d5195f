"""The project as users install it: a wheel built from the sources, installed without -e into a fresh virtual
environment, used from a folder outside the checkout.

The dependencies come from this test environment (a .pth file adds its site-packages behind the new
environment's own), so nothing is downloaded; what is checked is what the wheel itself carries.
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "adamms_eval", "model_adapters", "tasks")
# source folder -> installed package name (pyproject's package-dir)
ROOTS = {"adamms_eval": "adamms_eval", "model_adapters": "adamms_eval_adapters", "tasks": "adamms_eval_tasks"}


def _source_files() -> set[str]:
    """Every file a user needs at run time, as installed paths: modules, architecture JSON, task YAMLs."""
    out = set()
    for folder, package in ROOTS.items():
        for f in (REPO / folder).rglob("*"):
            rel = f.relative_to(REPO / folder)
            if f.is_file() and f.suffix in (".py", ".json", ".yaml") and "data" not in rel.parts \
                    and "__pycache__" not in rel.parts:
                out.add(f"{package}/{rel.as_posix()}")
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, venv bin, wheel path, a work folder outside the checkout)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:  # a copy, so that building leaves nothing in the checkout
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("data", "__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(root / "dist"), str(src)], check=True, capture_output=True, cwd=root)
    (wheel,) = (root / "dist").glob("adamms_eval-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages")]  # the checkout's .venv too, never its sources
    (Path(site) / "_test_environment.pth").write_text("".join(f"{p}\n" for p in ours))
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True,
                   capture_output=True)
    work = root / "work"
    work.mkdir()
    return py, venv / "bin", wheel, work


def _run(installed, *cmd, **kw):
    py, bin_dir, _, work = installed
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ADAMMS_CACHE": str(work / "cache"),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    r = subprocess.run(list(cmd), cwd=work, env=env, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, (cmd, r.stdout[-2000:], r.stderr[-4000:])
    return r.stdout


def test_wheel_carries_every_module_and_data_file(installed):
    names = set(zipfile.ZipFile(installed[2]).namelist())
    missing = sorted(_source_files() - names)
    assert not missing, f"the wheel lacks {missing[:10]} (add the sub-package to pyproject's packages)"
    assert "adamms_eval_tasks/adamms_zoo/_default_template.yaml" in names
    assert not [n for n in names if "/data/" in n]  # generated task data is never shipped


def test_installed_package_runs_outside_the_checkout(installed):
    py, bin_dir, _, work = installed
    where = _run(installed, str(py), "-c", "import adamms_eval, adamms_eval_adapters, adamms_eval_tasks as t; "
                                           "print(adamms_eval.__file__, adamms_eval_adapters.__file__, t.__file__)")
    assert str(REPO) not in where and str(work.parent / "venv") in where  # the wheel's copy, not the sources
    assert "merge" in _run(installed, str(bin_dir / "adamms"), "--help")
    assert "qwen2_vl" in _run(installed, str(bin_dir / "adamms"), "architectures")
    assert "--other" in _run(installed, str(bin_dir / "adamms-vlmeval"), "--help")
    out = _run(installed, str(bin_dir / "adamms"), "tiny", "models", "qwen2_vl", "llava_ov_hf")
    assert "llava_ov_hf" in out and (work / "models" / "qwen2_vl" / "config.json").is_file()
    plan = json.loads(_run(installed, str(bin_dir / "adamms"), "plan", "--base", "models/qwen2_vl",
                           "--other", "models/llava_ov_hf", "--json"))
    assert plan["merged"] > 0 and plan["base"]["architecture"] == "qwen2_vl"


def test_installed_task_commands_write_complete_folders(installed):
    _, bin_dir, _, work = installed
    out = _run(installed, str(bin_dir / "adamms"), "zoo", "tasks", "--rows", "3")
    zoo_tasks = work / "cache" / "tasks" / "adamms_zoo"
    assert str(zoo_tasks) in out and (zoo_tasks / "adamms_zoo_count.yaml").is_file()
    from adamms_eval.zoo.world import SKILLS  # every skill of every world: one parquet each
    assert sorted(f.stem for f in (zoo_tasks / "data").glob("*.parquet")) == sorted(SKILLS)
    _run(installed, str(bin_dir / "adamms"), "tasks", "offline", "--rows", "3")
    assert (work / "offline" / "adamms_shapes" / "data" / "shapes.parquet").is_file()
    assert (work / "offline" / "adamms_shapes" / "utils.py").is_file()
    assert {p.name for p in (work / "offline" / "LMUData").glob("*.tsv")} == {
        "AdammsShapes_YN.tsv", "AdammsShapes_MCQ.tsv", "AdammsShapes_GQA.tsv"}


def test_installed_lmms_eval_entry_points_load(installed):
    py = installed[0]
    code = ("from importlib.metadata import entry_points\n"
            "import adamms_eval, adamms_eval_adapters\n"
            "eps = [e for e in entry_points(group='lmms_eval.models') if e.value.startswith('adamms_eval.')]\n"
            "names = set()\n"
            "for e in eps:\n"
            "    found = e.load()()\n"
            "    for m in (found if isinstance(found, (list, tuple)) else [found]):\n"
            "        names.add(m.model_id)\n"
            "        module, _, cls = m.simple_class_path.rpartition('.')\n"
            "        getattr(__import__(module, fromlist=[cls]), cls)\n"
            "print(sorted(names), adamms_eval_adapters.__file__, adamms_eval.__file__)\n")
    out = _run(installed, str(py), "-c", code)
    assert "'adamms'" in out and "'adamms_cogvlm'" in out and "'adamms_mplug_owl2'" in out and str(REPO) not in out
