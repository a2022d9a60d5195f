"""`adamms compare CONFIG.yaml`: the paper's comparison tables through lmms-eval's own evaluator."""
from .runner import Row, Runner, plan, run_compare

__all__ = ["Row", "Runner", "plan", "run_compare"]
