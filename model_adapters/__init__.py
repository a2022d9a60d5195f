"""Aliases of the harness integrations' user-facing import paths (installed as `adamms_eval_adapters`).

The integrations live in `adamms_eval.harness` (lmms_eval/, vlmeval/); `import adamms_eval_adapters.vlmeval`,
the import the README's VLMEvalKit recipes use, still registers AdaMMS with VLMEvalKit."""
