"""The zoo weights shipped in the repository (zoo_weights/<world>/{theta0,model_a,model_b}), behind the published
tables of docs/evidence/<world>/, so those tables reproduce without training.

    shipped_dir(world) -> Path                      the shipped zoo of a world (an AdammsError when absent)
    weight_hashes(zoo) -> {"model_a/model.safetensors": sha256, ...}
    read_hashes(path) / hashes_file(world)          docs/evidence/<world>/weights.sha256 (`sha256sum -c` format)
    compare_with_shipped(zoo, world) -> str         bit-identical, or the measured difference per tensor file
    ship(zoo, world)                                copy a built zoo into zoo_weights/<world> and write its hashes
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from ..errors import AdammsError

REPO = Path(__file__).resolve().parents[2]
SHIPPED_ROOT = REPO / "zoo_weights"
MODELS = ("theta0", "model_a", "model_b")


def shipped_dir(world_name: str) -> Path:
    folder = SHIPPED_ROOT / world_name
    if not all((folder / m / "config.json").is_file() for m in MODELS):
        raise AdammsError(f"no shipped zoo for world {world_name!r} at {folder} (only a source checkout ships it); "
                          f"train one with `adamms zoo build --world {world_name}`")
    return folder


def hashes_file(world_name: str) -> Path:
    return REPO / "docs" / "evidence" / world_name / "weights.sha256"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weight_hashes(zoo: str | Path) -> dict[str, str]:
    """sha256 of every safetensors file of the three models, keyed by its path inside the zoo folder."""
    zoo = Path(zoo)
    return {f"{m}/{f.name}": _sha256(f) for m in MODELS for f in sorted((zoo / m).glob("*.safetensors"))}


def read_hashes(path: str | Path) -> dict[str, str]:
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.strip()] = digest
    return out


def _max_difference(a: Path, b: Path) -> tuple[float, int, int]:
    """(largest absolute difference, tensors that differ, tensors) between two safetensors files."""
    from safetensors import safe_open
    worst, differ, n = 0.0, 0, 0
    with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
        if set(fa.keys()) != set(fb.keys()):
            return float("inf"), -1, -1
        for k in fa.keys():
            x, y = fa.get_tensor(k).double(), fb.get_tensor(k).double()
            n += 1
            if x.shape != y.shape:
                return float("inf"), -1, -1
            d = (x - y).abs().max().item() if x.numel() else 0.0
            differ += d > 0
            worst = max(worst, d)
    return worst, differ, n


def compare_with_shipped(zoo: str | Path, world_name: str) -> str:
    """One line per model: bit-identical to the shipped weights, or how far it is (largest |difference|)."""
    try:
        shipped = shipped_dir(world_name)
    except AdammsError as e:
        return f"not compared with shipped weights: {e}"
    built, ref = weight_hashes(zoo), weight_hashes(shipped)
    if built == ref:
        return f"reproduced the shipped weights bit for bit ({shipped}; {len(ref)} files, sha256 equal)"
    lines = [f"did NOT reproduce the shipped weights bit for bit ({shipped}); the published tables use the shipped ones:"]
    for name in sorted(set(built) | set(ref)):
        if name not in built or name not in ref:
            lines.append(f"  {name}: present in only one of the two")
        elif built[name] == ref[name]:
            lines.append(f"  {name}: identical")
        else:
            worst, differ, n = _max_difference(Path(zoo) / name, shipped / name)
            lines.append(f"  {name}: {differ} of {n} tensors differ, largest |difference| {worst:.3g}")
    return "\n".join(lines)


def ship(zoo: str | Path, world_name: str) -> Path:
    """Copy a built zoo (models and zoo.json) into zoo_weights/<world> and write docs/evidence/<world>/weights.sha256;
    the folder is replaced as a whole (built in a temporary sibling, then renamed)."""
    zoo, final = Path(zoo), SHIPPED_ROOT / world_name
    tmp = SHIPPED_ROOT / f".{world_name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for m in MODELS:
        shutil.copytree(zoo / m, tmp / m)
    shutil.copy2(zoo / "zoo.json", tmp / "zoo.json")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    hashes = hashes_file(world_name)
    hashes.parent.mkdir(parents=True, exist_ok=True)
    hashes.write_text("".join(f"{d}  {n}\n" for n, d in weight_hashes(final).items()))
    return final
