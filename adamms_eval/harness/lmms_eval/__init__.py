"""lmms-eval integration: `--model adamms` (model.py), the ports' backends (ports.py), the backend table
(backends.py), the entry points lmms-eval discovers (entry.py), the comparison model and `adamms eval`."""
