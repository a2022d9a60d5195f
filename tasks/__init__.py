"""The project's offline tasks, installed as `adamms_eval_tasks`: lmms-eval task folders (`adamms_shapes`,
`adamms_zoo`: YAMLs and their hook modules, no data) and the generators of their data and of the VLMEvalKit TSV
datasets. `adamms tasks OUT` / `adamms zoo tasks` write a folder with both, for `--include_path` / `LMUData`."""
