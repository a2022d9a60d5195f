"""Run mergekit in-process on local checkpoint directories (reference outputs for tests and benchmarks).

mergekit is optional: it is imported only when run_mergekit is called.
"""

from __future__ import annotations

from pathlib import Path

METHODS = ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties")


def run_mergekit(
    method: str,
    models: list[tuple[str, dict]],
    out_dir: str,
    base_model: str | None = None,
    parameters: dict | None = None,
    dtype: str = "float32",
    seed: int | None = None,
) -> Path:
    """Merge `models` ([(path, {"weight": 1.0, "density": 0.5, ...}), ...]) with mergekit's `method`.

    base_model is theta_0 (required by the task-vector methods, ignored-but-loaded by linear, so leave
    it None there). `parameters` are the method's global ones (lambda, normalize, rescale, int8_mask).
    `dtype` is the dtype mergekit loads and computes in (and writes: out_dtype is left unset).
    `seed` is mergekit's --random-seed: it calls transformers.set_seed(seed), i.e. reseeds the GLOBAL
    torch/numpy/random generators of this process. Runs on CPU, single process, offline; writes
    safetensors (one shard unless > 5 GB) plus config.json; no tokenizer copy, no model card.
    Returns the output directory.
    """
    try:
        from mergekit.config import MergeConfiguration
        from mergekit.io.tasks import LoaderCache
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "mergekit is not installed: pip install 'adamms-eval[mergekit]'"
        ) from e

    config = {
        "merge_method": method,
        "dtype": dtype,
        "models": [
            {"model": str(path), **({"parameters": dict(p)} if p else {})}
            for path, p in models
        ],
    }
    if base_model is not None:
        config["base_model"] = str(base_model)
    if parameters:
        config["parameters"] = dict(parameters)
    options = MergeOptions(
        device="cpu",
        copy_tokenizer=False,  # models without tokenizer files would log a traceback otherwise
        write_model_card=False,
        lazy_unpickle=False,  # only matters for .bin checkpoints
        low_cpu_memory=False,
        random_seed=seed,
        quiet=True,
        safe_serialization=True,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # mergekit keeps a process-wide loader cache keyed by path (class attribute): clear it so that a
    # directory rewritten between calls is re-indexed, and so that open shards are released afterwards.
    cache = LoaderCache()
    cache.loaders.clear()
    try:
        run_merge(MergeConfiguration.model_validate(config), str(out), options=options)
    finally:
        cache.flush_all()
        cache.loaders.clear()
    return out
