"""lmms-eval entry point (group `lmms_eval.models`): registers `adamms_cogvlm` and `adamms_mplug_owl2`.

Kept import-light: lmms-eval calls it while `lmms_eval.models` is still being imported."""


def manifests():
    from lmms_eval.models.registry_v2 import ModelManifest
    return [ModelManifest(model_id="adamms_cogvlm",
                          simple_class_path="adamms_eval_adapters.lmms_eval_ports.CogVLMBackend"),
            ModelManifest(model_id="adamms_mplug_owl2",
                          simple_class_path="adamms_eval_adapters.lmms_eval_ports.MPLUGOwl2Backend")]
