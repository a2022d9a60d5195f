"""Harness integrations of adamms-eval (installed as `adamms_eval_adapters`)."""
