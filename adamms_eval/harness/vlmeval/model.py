"""VLMEvalKit model `AdammsVLM`: the base architecture's own VLMEvalKit wrapper, with weights AdaMMS moves in place.

Prompts, message preparation, generation settings and answer post-processing are the built-in wrapper's
(Qwen2-VL: `Qwen2VLChat` with its prompt mixin; LLaVA-OneVision hf: `LLaVA_OneVision_HF`; LLaVA-1.5 hf:
`LLaVA_Next`, whose hf code path serves `LlavaForConditionalGeneration`), inherited, not copied. Only
loading differs: we load the model (any device, any dtype; the wrappers assume one CUDA GPU, fp16 and
flash-attention), send the processor's inputs to the model's device and dtype instead of their hard-coded
`'cuda'`, and hand the weights to a `LazyMerge` (adamms_eval.session).

With alpha=auto, VLMEvalKit's `infer_data` calls `set_dump_image(dataset.dump_image)` before the first
`generate` of every dataset: there the whole dataset is visible (`dump_image.__self__.data`, after
`--limit`, the same on every rank), so the seeded subset is drawn from its rows, each subset prompt is
built as the inference loop builds it, answered at every candidate, and the dataset then runs at the
chosen coefficient. The record goes beside VLMEvalKit's prediction files.
"""
from __future__ import annotations

import copy
import inspect
import logging
import tempfile
from pathlib import Path

import torch
import transformers

from ...errors import AdammsError
from ...fingerprints import digest
from ...runtime import default_device
from ...session import MergeSession, default_output_dir
from .importing import vlmeval_modules

vlmeval_modules()  # quiet import, or a one-line error naming the extra
from vlmeval.smp import dump, get_rank_and_world_size  # noqa: E402
from vlmeval.vlm import LLaVA_Next, LLaVA_OneVision_HF, Qwen2VLChat, Qwen3VLChat  # noqa: E402
from vlmeval.vlm.qwen2_vl.prompt import Qwen2VLPromptMixin  # noqa: E402
from vlmeval.vlm.qwen3_vl.prompt import Qwen3VLPromptMixin  # noqa: E402

log = logging.getLogger("adamms_eval")
HARNESS = "vlmeval"  # the session's and the search cache's name for VLMEvalKit
# what a wrapper that passes its leftover keywords to `generate` accepts: transformers' generation settings (a typo
# is refused before loading, instead of by `generate` at the first row)
GENERATION_KEYS = frozenset(k for k in transformers.GenerationConfig().to_dict()
                            if not k.startswith("_") and k != "transformers_version")


def _signature_defaults(cls) -> dict:
    """The wrapper's own constructor defaults (generation settings), so ours stay VLMEvalKit's."""
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


class _OnModelDevice:
    """The wrapper's processor, except that `inputs.to('cuda'[, torch.float16])` goes to the model's device
    (and, where a dtype is asked for, the model's dtype): the wrapper's generation code runs unchanged."""

    def __init__(self, processor, model):
        self._processor, self._model = processor, model

    def __getattr__(self, name):
        return getattr(self._processor, name)

    def __call__(self, *args, **kwargs):
        if args and isinstance(args[0], str):  # LLaVA_Next calls (prompt, images): transformers 4's order
            kwargs.update(zip(("text", "images"), args))
            args = ()
        out = self._processor(*args, **kwargs)
        move, model = out.to, self._model

        def to(*targs, **tkwargs):
            wants_dtype = any(isinstance(a, torch.dtype) for a in targs) or "dtype" in tkwargs
            return move(model.device, model.dtype) if wants_dtype else move(model.device)
        out.to = to
        return out


class _GenerateOverrides:
    """The model, except that `generate` applies the user's settings over a wrapper's literal ones
    (LLaVA_OneVision_HF passes max_new_tokens=2048 in its call)."""

    def __init__(self, model, overrides: dict):
        self._model, self._overrides = model, overrides

    def __getattr__(self, name):
        return getattr(self._model, name)

    def generate(self, *args, **kwargs):
        return self._model.generate(*args, **{**kwargs, **self._overrides})


def _work_dir_of_caller() -> Path | None:
    """`work_dir` of the calling `vlmeval.inference.infer_data`: where VLMEvalKit writes this model's files."""
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code.co_name == "infer_data" and "work_dir" in frame.f_locals:
            return Path(frame.f_locals["work_dir"])
        frame = frame.f_back
    return None


def message_key(message: list[dict]) -> list:
    """A prompt's identity for the cache: its texts, and its images by file name (the folder is VLMEvalKit's)."""
    return [(m["type"], Path(m["value"]).name if m["type"] != "text" else m["value"]) for m in message]


class AdammsMixin:
    """Loading, merging and the per-dataset search; the VLMEvalKit wrapper after it in the MRO does the rest."""

    MODEL_CLASS = PROCESSOR_CLASS = WRAPPER = None  # transformers class names and the VLMEvalKit wrapper
    session: MergeSession | None = None

    def _adamms_init(self, base, session: MergeSession | None, load_kwargs: dict | None, wrapper_kwargs: dict):
        """Load the base (any device and dtype), wrap its processor, and let the session own its weights.
        Everything given to the wrapper and the loader is part of the search cache's identity."""
        import transformers
        load_kwargs = dict(load_kwargs or {})
        dtype, device_map = load_kwargs.get("dtype", "auto"), load_kwargs.get("device_map")
        attn_implementation = load_kwargs.get("attn_implementation")
        device_map = device_map or default_device()
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        model = getattr(transformers, self.MODEL_CLASS).from_pretrained(str(base), dtype=dtype,
                                                                       device_map=device_map, **extra)
        self.raw_model = self.model = model.eval()
        self.processor = _OnModelDevice(getattr(transformers, self.PROCESSOR_CLASS).from_pretrained(str(base)),
                                        self.raw_model)
        self.model_path = str(base)
        self.session = session
        if session is not None:
            session.attach(self.raw_model, rank=get_rank_and_world_size()[0], base_tokenizer=str(base),
                           backend_args={**load_kwargs, **wrapper_kwargs}, code_files=[__file__])

    # -- VLMEvalKit hooks ------------------------------------------------------------------------------
    def set_dump_image(self, dump_image_func):
        """Where VLMEvalKit hands over the dataset before its first row: the session's per-task sequence runs here.
        A resumed run (same settings, same rows) takes the dataset's α from the earlier record instead of searching:
        under torchrun a rank whose rows are all done never reaches this point, and the others must not wait for it
        in the search's gather."""
        super().set_dump_image(dump_image_func)
        if self.session is None:
            return
        dataset = getattr(dump_image_func, "__self__", None)
        folder = (Path(self.session.settings.search_output) if self.session.settings.search_output
                  else _work_dir_of_caller() or default_output_dir(self.session.run_name))
        rank = get_rank_and_world_size()[0]
        if not self.session.auto:
            if rank == 0:
                self.session.write_records(folder)
            return
        if dataset is None or not hasattr(dataset, "data"):
            raise AdammsError("alpha=auto needs the dataset: set_dump_image got a function that is not a VLMEvalKit "
                              "dataset's bound dump_image; give a fixed alpha")
        self.session.resume(folder, dataset.dataset_name, len(dataset.data))  # a resumed run: no search
        self.session.run_task(_Dataset(self, dataset, folder))

    def _prompt(self, dataset, row):
        """The prompt `vlmeval.inference.infer_data` builds for this row (its three-way choice, in its order)."""
        name = dataset.dataset_name
        if getattr(dataset, "force_use_dataset_prompt", False):
            return dataset.build_prompt(row)
        if self.use_custom_prompt(name):
            return self.build_prompt(row, dataset=name)
        return dataset.build_prompt(row)

    def _search_inputs(self, dataset):
        """This rank's rows (infer_data's sharding) as SearchInputs carrying their prompts. The cache key is
        the prompt; the wrapper's arguments and versions are in the cache's identity (session.attach)."""
        from ...search.runner import SearchInput
        rank, world = get_rank_and_world_size()
        rows = dataset.data.iloc[list(range(rank, len(dataset.data), world))]
        out = []
        for i in range(len(rows)):
            index, message = rows.iloc[i]["index"], self._prompt(dataset, rows.iloc[i])
            out.append(SearchInput(index, f"{index}:{digest(message_key(message))}", message))
        return out

    def _scorer(self, dataset):
        """search_report=full: the dataset's own scorer (exact-matching judge) on the subset at each candidate."""
        def score(alpha, answers: dict) -> dict:
            data = dataset.data[dataset.data["index"].isin(list(answers))].copy()
            data["prediction"] = [answers[i] for i in data["index"]]
            data = data.drop(columns=[c for c in ("image",) if c in data])
            with tempfile.TemporaryDirectory() as tmp:
                f = str(Path(tmp) / f"adamms_{dataset.dataset_name}.xlsx")
                dump(data, f)
                result = dataset.evaluate(f, model="exact_matching", nproc=1)
            return _numbers(result)
        return score


class _Dataset:
    """One VLMEvalKit dataset as a session.HarnessTask: its rows' prompts (this rank's), answered by the wrapper."""

    def __init__(self, model: AdammsMixin, dataset, output_dir: Path):
        self.model, self.dataset, self.output_dir = model, dataset, output_dir
        self.name = dataset.dataset_name
        self.score = model._scorer(dataset)
        # signals nll / entropy: VLMEvalKit's generate() returns text only, and scoring an answer would need each
        # wrapper's own prompt and processor; the session says so in one line when such a signal is asked for
        self.confidence = None

    def search_inputs(self):
        return self.model._search_inputs(self.dataset)

    def answer(self, todo):
        if hasattr(self.model, "generate_batch"):  # our ports' wrappers answer a search batch as one padded batch
            return [str(a) for a in self.model.generate_batch([copy.deepcopy(i.payload) for i in todo], self.name)]
        return [str(self.model.generate(message=copy.deepcopy(i.payload), dataset=self.name)) for i in todo]


def _numbers(result) -> dict:
    """A VLMEvalKit score (dict or one-row / one-column DataFrame) as {metric: number}."""
    import pandas as pd
    if isinstance(result, pd.DataFrame):
        one_row = len(result) == 1
        result = result.iloc[0].to_dict() if one_row else result.set_index(result.columns[0]).iloc[:, 0].to_dict()
    out = {}
    for k, v in dict(result).items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            pass
    return out


class _QwenChat(AdammsMixin):
    """Qwen2VLChat / Qwen3VLChat: their __init__ asserts a GPU and loads with flash-attention, so set what it sets,
    from its own defaults: the attributes `ATTRS` and the generation settings `GENERATE`."""
    PROMPT_MIXIN, ATTRS, GENERATE = None, (), ()

    def __init__(self, base, session=None, load_kwargs=None, **kwargs):
        s = {**_signature_defaults(self.WRAPPER), **kwargs}
        self.PROMPT_MIXIN.__init__(self, use_custom_prompt=s["use_custom_prompt"])  # then BaseModel.__init__
        for k in self.ATTRS:
            setattr(self, k, s[k])
        self.generate_kwargs = {k: s[k] for k in self.GENERATE}
        self.fps, self.nframe, self.FRAME_FACTOR = s.get("fps", 2), s.get("nframe", 128), 2
        self.use_vllm = self.use_lmdeploy = False
        self._adamms_init(base, session, load_kwargs, kwargs)


_QWEN_ATTRS = ("min_pixels", "max_pixels", "total_pixels", "max_new_tokens", "system_prompt", "verbose",
               "post_process", "use_audio_in_video")
_QWEN_GENERATE = ("max_new_tokens", "top_p", "top_k", "temperature", "repetition_penalty")


class AdammsQwen2VL(_QwenChat, Qwen2VLChat):
    MODEL_CLASS, PROCESSOR_CLASS, WRAPPER = "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", Qwen2VLChat
    KWARGS = set(_signature_defaults(Qwen2VLChat)) | {"fps", "nframe"}
    PROMPT_MIXIN, ATTRS, GENERATE = Qwen2VLPromptMixin, _QWEN_ATTRS, _QWEN_GENERATE + ("do_sample",)


class AdammsQwen2_5VL(AdammsQwen2VL):  # noqa: N801  VLMEvalKit serves Qwen2.5-VL with Qwen2VLChat too
    MODEL_CLASS, PROCESSOR_CLASS = "Qwen2_5_VLForConditionalGeneration", "AutoProcessor"


class AdammsQwen3VL(_QwenChat, Qwen3VLChat):
    MODEL_CLASS, PROCESSOR_CLASS, WRAPPER = "Qwen3VLForConditionalGeneration", "AutoProcessor", Qwen3VLChat
    KWARGS = set(_signature_defaults(Qwen3VLChat)) | {"fps", "nframe"}
    PROMPT_MIXIN, GENERATE = Qwen3VLPromptMixin, _QWEN_GENERATE  # no do_sample: the generation config decides
    ATTRS = _QWEN_ATTRS + ("top_p", "top_k", "temperature", "repetition_penalty", "presence_penalty")


class AdammsLlavaOneVision(AdammsMixin, LLaVA_OneVision_HF):
    MODEL_CLASS, PROCESSOR_CLASS = "LlavaOnevisionForConditionalGeneration", "AutoProcessor"
    WRAPPER, KWARGS = LLaVA_OneVision_HF, GENERATION_KEYS | {"video_kwargs", "nframe"}  # the rest: generate's

    def __init__(self, base, session=None, load_kwargs=None, **kwargs):
        super(LLaVA_OneVision_HF, self).__init__()  # BaseModel's; LLaVA_OneVision_HF.__init__ loads fp16 on 'cuda'
        self.video_kwargs = kwargs.pop("video_kwargs", {})
        self.force_sample = self.video_kwargs.get("force_sample", False)
        self.nframe, self.fps = kwargs.pop("nframe", 8), 1
        self._adamms_init(base, session, load_kwargs, kwargs)
        self.model = _GenerateOverrides(self.raw_model, kwargs)


class AdammsLlava(AdammsMixin, LLaVA_Next):
    MODEL_CLASS, PROCESSOR_CLASS, WRAPPER = "LlavaForConditionalGeneration", "AutoProcessor", LLaVA_Next
    KWARGS = GENERATION_KEYS  # LLaVA_Next passes them to generate

    def __init__(self, base, session=None, load_kwargs=None, **kwargs):
        super(LLaVA_Next, self).__init__()  # BaseModel's; LLaVA_Next.__init__ loads fp16 on 'cuda'
        self.kwargs = {**dict(do_sample=False, temperature=0, max_new_tokens=2048, top_p=None, num_beams=1),
                       **kwargs}  # LLaVA_Next's generation defaults, user kwargs over them (as it does)
        self._adamms_init(base, session, load_kwargs, kwargs)
