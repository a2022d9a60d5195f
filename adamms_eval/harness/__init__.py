"""Harness integrations: each fills in the session's small protocol (session.HarnessTask: a task's search inputs,
how to answer them, its scorer, where its record goes) and leaves prompts, processing and scoring to the harness.

- `lmms_eval/`: the lmms-eval model `adamms` (a built-in backend whose weights AdaMMS moves), our ports'
  backends, the model `adamms compare` evaluates through, and `adamms eval`.
- `vlmeval/`: `AdammsVLM` (the base's own VLMEvalKit wrapper), its registration and `adamms-vlmeval`.
"""
