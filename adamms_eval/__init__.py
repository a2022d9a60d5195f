"""adamms-eval: merge heterogeneous multimodal LLMs (AdaMMS) and pick the coefficient without labels."""
from importlib import import_module

from .errors import AdammsError

# the public API, imported on first use: `import adamms_eval` (which every console command runs first) stays free of
# torch, so the commands install their SIGINT / SIGTERM handling before anything heavy loads
_API = {"LazyMerge": ".merging.lazy", "build_plan": ".arch.mapping", "Merger": ".merging.merger",
        "open_merger": ".merging.merger", "write_merged": ".merging.merger", "METHODS": ".merging.methods",
        "make_method": ".merging.methods", "select_alpha": ".search.rule"}
_ORIGINAL = {"METHODS": "REGISTRY"}

__all__ = ["AdammsError", "LazyMerge", "select_alpha", "build_plan", "Merger", "open_merger", "write_merged", "METHODS", "make_method"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _API:
        try:  # a sub-package as an attribute (adamms_eval.merging), as when the API was imported eagerly
            return import_module(f".{name}", __name__)
        except ModuleNotFoundError:
            raise AttributeError(f"module 'adamms_eval' has no attribute {name!r}") from None
    value = getattr(import_module(_API[name], __name__), _ORIGINAL.get(name, name))
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
