"""Test helpers that read checkpoints independently of adamms_eval.checkpoint."""
from pathlib import Path

import torch
from safetensors.torch import load_file


def state_dict(d: Path) -> dict[str, torch.Tensor]:
    d = Path(d)
    sd = {}
    for f in sorted(d.glob("*.safetensors")):
        sd.update(load_file(f))
    for f in sorted(d.glob("pytorch_model*.bin")):
        sd.update(torch.load(f, map_location="cpu", weights_only=True))
    return sd


def lerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Equation (1) in fp32: (1 - α)·a + α·b."""
    return (1 - alpha) * a.float() + alpha * b.float()
