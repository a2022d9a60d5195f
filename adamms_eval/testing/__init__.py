"""Test support, shipped so that `adamms tiny`, the benchmarks and the zoo can build models offline: tiny random
checkpoints in the real layouts (`tiny`) and the tokenizers they and the zoo use (`tokenizers`). Nothing in the
merge engine imports this package."""
