"""adamms-eval: merge heterogeneous multimodal LLMs (AdaMMS) and pick the coefficient without labels."""
from .errors import AdammsError
from .merging.lazy import LazyMerge
from .arch.mapping import build_plan
from .merging.merger import Merger, open_merger, write_merged
from .merging.methods import REGISTRY as METHODS, make_method
from .search.rule import select_alpha

__all__ = ["AdammsError", "LazyMerge", "select_alpha", "build_plan", "Merger", "open_merger", "write_merged", "METHODS", "make_method"]
__version__ = "0.1.0"
