"""The package's shape, as docs/ARCHITECTURE.md describes it: layers that import only downwards and no import cycles,
adapter files checked against their schema, and a cache identity that follows every file of the weight-shaping
sub-packages."""
import ast
import json
import shutil
from pathlib import Path

import pytest

from adamms_eval.arch.adapters import adapters, load_adapters
from adamms_eval.errors import AdammsError
from adamms_eval.fingerprints import PACKAGE, WEIGHT_SHAPING, source_digest

# layer of each part of the package; a module may import its own layer and the layers below
LAYERS = {"errors": 0, "runtime": 0, "fingerprints": 0, "arch": 1, "merging": 2, "search": 3, "session": 4,
          "ports": 1, "harness": 5, "compare": 6, "zoo": 6, "testing": 6, "task_folders": 6, "cli": 7, "__init__": 7}
MAX_LINES = 460


def _modules() -> dict[str, Path]:
    return {".".join(f.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): f
            for f in PACKAGE.rglob("*.py")}


def _imports(name: str, file: Path, top_level_only: bool) -> set[str]:
    """The adamms_eval modules `file` imports (relative imports resolved)."""
    tree = ast.parse(file.read_text())
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        out |= {t for t in targets if t.split(".")[0] == "adamms_eval"}
    return out


def _layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else "__init__"
    return LAYERS[part]


def test_every_part_of_the_package_has_a_layer():
    assert {m.split(".")[1] for m in _modules() if "." in m} <= set(LAYERS)


def test_layers_import_only_downwards():
    modules = _modules()
    wrong = []
    for name, file in modules.items():
        for target in _imports(name, file, top_level_only=False):
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]  # `from pkg import name` where name is not a module
            if target in modules and _layer(target) > _layer(name):
                wrong.append(f"{name} imports {target}")
    assert not wrong, wrong


def test_no_import_cycles():
    modules = _modules()
    graph = {}
    for name, file in modules.items():
        deps = set()
        for t in _imports(name, file, top_level_only=True):
            while t not in modules and "." in t:
                t = t.rpartition(".")[0]
            if t in modules and t != name and not name.startswith(t + "."):  # a package's own __init__ runs first
                deps.add(t)
        graph[name] = deps
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"
    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, cycles[:3]


def test_modules_stay_small():
    big = {n: len(f.read_text().splitlines()) for n, f in _modules().items()}
    assert not {n: k for n, k in big.items() if k > MAX_LINES}


def _architectures(tmp_path) -> Path:
    folder = tmp_path / "architectures"
    shutil.copytree(PACKAGE / "arch" / "architectures", folder)
    return folder


@pytest.mark.parametrize("edit, message", [
    (lambda s: {**s, "familly": "qwen2"}, "unknown key 'familly' (did you mean 'family'?)"),
    (lambda s: {**s, "rules": s["rules"] + [{"match": "^x$", "slot": "lm_head.weight", "group": "vision"}]},
     "exactly one of slot, slots"),
    (lambda s: {**s, "rules": [{"match": "(", "group": "vision"}]}, "match is not a regex"),
    (lambda s: {**s, "rules": [{"match": "^x$", "duplicate_of": "vision", "group": "vision"}]}, "duplicate_of"),
    (lambda s: {**s, "name": "qwen3"}, "must be the file's stem"),
])
def test_adapter_files_are_checked_against_the_schema(tmp_path, edit, message):
    folder = _architectures(tmp_path)
    assert "qwen2" in load_adapters(folder)  # the shipped files pass
    spec = json.loads((folder / "qwen2.json").read_text())
    (folder / "qwen2.json").write_text(json.dumps(edit(spec)))
    with pytest.raises(AdammsError, match="architecture file qwen2.json") as e:
        load_adapters(folder)
    assert message in str(e.value)


def test_shared_rules_apply_to_every_adapter():
    shared = json.loads((PACKAGE / "arch" / "architectures" / "_shared.json").read_text())["rules"]
    for ad in adapters().values():
        assert [r for _, r in ad.rules[:len(shared)]] == shared
        assert ad.classify("model.layers.3.self_attn.rotary_emb.inv_freq").ignored


def _package_copy(tmp_path) -> Path:
    pkg = tmp_path / "adamms_eval"
    for name in WEIGHT_SHAPING + ("session",):
        shutil.copytree(PACKAGE / name, pkg / name, ignore=shutil.ignore_patterns("__pycache__"))
    return pkg


def test_identity_covers_every_file_of_the_weight_shaping_folders(tmp_path):
    pkg = _package_copy(tmp_path)
    before = source_digest(package=pkg)
    assert before == source_digest(package=PACKAGE)  # by path inside the package and content, not location
    files = [f for name in WEIGHT_SHAPING for f in (pkg / name).rglob("*") if f.suffix in (".py", ".json")]
    assert len(files) > 20
    for f in files:  # an edit anywhere in arch/ or merging/ (code or adapter JSON) changes the identity
        text = f.read_text()
        f.write_text(text + ("\n" if f.suffix == ".json" else "\n# edited\n"))
        assert source_digest(package=pkg) != before, f
        f.write_text(text)
    (pkg / "merging" / "methods" / "new_method.py").write_text("# a new method module\n")
    assert source_digest(package=pkg) != before
    (pkg / "merging" / "methods" / "new_method.py").unlink()
    (pkg / "session" / "settings.py").write_text("# not weight-shaping\n")
    assert source_digest(package=pkg) == before
