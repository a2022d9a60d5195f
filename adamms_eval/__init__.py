"""adamms-eval: merge heterogeneous multimodal LLMs (AdaMMS) and pick the coefficient without labels."""
from .errors import AdammsError
from .lazy import LazyMerge
from .mapping import build_plan
from .merge import Merger, open_merger, write_merged
from .methods import REGISTRY as METHODS, make_method
from .search import select_alpha

__all__ = ["AdammsError", "LazyMerge", "select_alpha", "build_plan", "Merger", "open_merger", "write_merged", "METHODS", "make_method"]
__version__ = "0.1.0"
