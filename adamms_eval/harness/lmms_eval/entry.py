"""lmms-eval entry points (group `lmms_eval.models`): `--model adamms`, and `adamms_cogvlm` / `adamms_mplug_owl2`
(our ports' backends).

Kept import-light: lmms-eval calls them while `lmms_eval.models` is still being imported.
"""
HERE = __name__.rpartition(".")[0]


def manifest():
    from lmms_eval.models.registry_v2 import ModelManifest
    return ModelManifest(model_id="adamms", simple_class_path=f"{HERE}.model.Adamms")


def manifests():
    from lmms_eval.models.registry_v2 import ModelManifest
    return [ModelManifest(model_id="adamms_cogvlm", simple_class_path=f"{HERE}.ports.CogVLMBackend"),
            ModelManifest(model_id="adamms_mplug_owl2", simple_class_path=f"{HERE}.ports.MPLUGOwl2Backend")]
