"""`import adamms_eval_adapters.vlmeval`: the documented way to register AdaMMS with VLMEvalKit, kept as an alias of
`adamms_eval.harness.vlmeval.registry` (the same module object, so its registry and classes are shared)."""
import sys

from adamms_eval.harness.vlmeval import registry

sys.modules[__name__] = registry
