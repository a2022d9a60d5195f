"""lmms-eval entry point (group `lmms_eval.models`): registers `--model adamms`.

Kept import-light: lmms-eval calls it while `lmms_eval.models` is still being imported.
"""


def manifest():
    from lmms_eval.models.registry_v2 import ModelManifest
    return ModelManifest(model_id="adamms", simple_class_path="adamms_eval_adapters.lmms_eval_model.Adamms")
