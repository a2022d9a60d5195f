"""VLMEvalKit integration: `AdammsVLM` over the base's own wrapper (model.py, ports.py), its registration with
VLMEvalKit (registry.py) and the `adamms-vlmeval` launcher. Importing this package does not import VLMEvalKit."""

# loading arguments AdammsVLM takes besides the settings and the wrapper's own (name -> help)
LOADING = {"dtype": "model dtype (auto: the checkpoint's)",
           "device_map": "transformers device_map (default cuda if available, else cpu)",
           "attn_implementation": "e.g. sdpa, flash_attention_2"}
