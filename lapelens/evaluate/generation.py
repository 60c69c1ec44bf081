"""Generation under interventions, scored by the language of the output.

- :func:`unconditional_steering` — Kojima et al.'s setting: samples from BOS alone, before and
  after activating a target language's neurons; share of outputs detected as the target.
- :func:`kojima_pinning` — the same with AP neurons pinned to their target-language medians.
- :func:`prompted_steering` — Tang et al., Tables 4 and 5: prompts in a source language (from a
  parallel corpus), the target language's neurons activated (optionally the source's
  deactivated); share of outputs in the target language.
- :func:`generation_under_deactivation` — Tang et al., Tables 1 and 2: prompts in a language,
  normally / with its neurons deactivated / with random neurons of the same sizes deactivated;
  share of outputs in the prompt's language and their perplexity under the unperturbed model.

The language of a text is :func:`lapelens.langid.detect_language` (langdetect, the paper's tool).
Sampling is seeded, and every condition of an experiment uses the same seed, so conditions differ
by the intervention and not by the random draws.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Int64
from torch import Tensor
from tqdm.auto import tqdm

import lapelens.langid as langid
from lapelens._compat import fix_bridge_kv_cache
from lapelens.constants import GENERATION_META, GENERATION_SAMPLES, GENERATION_SUMMARY, PAIR_SEPARATOR
from lapelens.defaults import defaults_for
from lapelens.errors import LapelensError
from lapelens.evaluate._registry import Context, Setting, experiment, finite, positive
from lapelens.figures.generation import deactivation_figure, generation_figure, share_bars, steering_heatmaps
from lapelens.neurons import LanguageNeurons
from lapelens.results import Result
from lapelens.stats import ActivationStats
from lapelens.tokens import separator_id
from lapelens.types import HookedModel

BEFORE = "before"


@dataclass(frozen=True)
class Sampling:
    """How to generate. The defaults sample (Kojima et al.'s unconditional setting);
    ``Sampling.greedy()`` is the official generation script's (greedy, repetition penalty 1.1).
    ``batch_size``: sequences generated at once; None (the default) generates all of a
    condition's at once."""

    max_new_tokens: int = 48
    do_sample: bool = True
    temperature: float | int = 1.0
    top_k: int | None = None
    top_p: float | int | None = None
    repetition_penalty: float | int = 1.0
    seed: int = 0
    batch_size: int | None = None

    @classmethod
    def greedy(cls, **kw: Any) -> "Sampling":
        return cls(**{"do_sample": False, "repetition_penalty": 1.1, **kw})

    def generation_config(self, eos: int | None, pad: int) -> Any:
        """The Hugging Face ``GenerationConfig`` of these settings, every sampling option set, so
        that neither a model's own generation config nor transformers' defaults (``top_k=50``) apply."""
        from transformers import GenerationConfig

        sample = (
            {
                "temperature": float(self.temperature),
                "top_k": self.top_k or 0,
                "top_p": 1.0 if self.top_p is None else float(self.top_p),
            }
            if self.do_sample
            else {}
        )
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=self.do_sample,
            repetition_penalty=float(self.repetition_penalty),
            eos_token_id=eos,
            pad_token_id=pad,
            num_beams=1,
            **sample,
        )


#: The official generation script's decoding (greedy, repetition penalty 1.1): a frozen default.
GREEDY = Sampling.greedy()


# ---- generating --------------------------------------------------------------------------------
def _special_ids(tokenizer: Any) -> tuple[int, int | None, int]:
    bos = separator_id(tokenizer)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else bos)
    return bos, eos, pad


def encode_prompts(model: HookedModel, prompts: Sequence[str], max_tokens: int | None = None) -> list[list[int]]:
    """BOS + the first ``max_tokens`` tokens of each prompt (``[BOS]`` alone for an empty prompt)."""
    bos, _, _ = _special_ids(model.tokenizer)
    ids = model.tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
    return [[bos] + (list(i)[:max_tokens] if max_tokens else list(i)) for i in ids]


def left_padded(
    prompts: Sequence[Sequence[int]], pad: int
) -> tuple[Int64[Tensor, "batch pos"], Int64[Tensor, "batch pos"]]:
    """Token ids left-padded to the longest prompt, and their attention mask."""
    if any(not p for p in prompts):
        raise LapelensError("Every prompt needs at least one token (BOS).")
    width = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        tokens[row, width - len(p) :] = torch.tensor(list(p))
        mask[row, width - len(p) :] = 1
    return tokens, mask


@contextmanager
def _own_generation_config(hf: Any) -> Iterator[None]:
    """The model's generation config set aside: it fills every option a call leaves unset."""
    from transformers import GenerationConfig

    saved = hf.generation_config
    hf.generation_config = GenerationConfig()
    try:
        yield
    finally:
        hf.generation_config = saved


@torch.inference_mode()
def generate_ids(
    model: HookedModel,
    prompts: Sequence[Sequence[int]],
    sampling: Sampling = Sampling(),
    on_batch: Callable[[int], Any] | None = None,
) -> list[list[int]]:
    """New token ids for each prompt (token ids), up to and excluding the first EOS.

    Prompts are left-padded into batches of ``sampling.batch_size`` (all at once by default),
    with an attention mask, and decoded by Hugging Face's ``generate`` on the bridged model: a KV
    cache, logits of the last position only, its logits processors and sampling. Every hook of
    the bridge fires at every step, so whatever interventions are active on ``model`` apply.
    Seeded: the same prompts, settings and batches give the same tokens; the global torch RNG is
    left as it was.
    ``on_batch(n)`` is called after each batch of ``n`` prompts (a progress bar's ``update``).
    """
    fix_bridge_kv_cache()  # a layer with an attention hook runs TransformerLens' attention: it must read the cache
    _, eos, pad = _special_ids(model.tokenizer)
    hf = model.original_model
    device = next(model.parameters()).device
    size = sampling.batch_size or max(1, len(prompts))
    config = sampling.generation_config(eos, pad)
    out: list[list[int]] = []
    with torch.random.fork_rng(devices=[]), _own_generation_config(hf):
        torch.manual_seed(sampling.seed)
        for start in range(0, len(prompts), size):
            tokens, mask = left_padded(prompts[start : start + size], pad)
            result = hf.generate(input_ids=tokens.to(device), attention_mask=mask.to(device), generation_config=config)
            for row in result[:, tokens.shape[1] :].tolist():
                out.append(row[: row.index(eos)] if eos is not None and eos in row else row)
            if on_batch is not None:
                on_batch(len(result))
    return out


def _decode(model: HookedModel, ids: Sequence[Sequence[int]]) -> list[str]:
    return [model.tokenizer.decode(i, skip_special_tokens=True).strip() for i in ids]


@torch.inference_mode()
def continuation_nll(
    model: HookedModel, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]], batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Summed NLL and token count of each continuation given its prompt, under ``model`` as it is
    now (call it outside any intervention for the unperturbed model)."""
    _, _, pad = _special_ids(model.tokenizer)
    device = next(model.parameters()).device
    nll, count = np.zeros(len(prompts)), np.zeros(len(prompts), dtype=np.int64)
    for start in range(0, len(prompts), batch_size):
        group = list(zip(prompts[start : start + batch_size], continuations[start : start + batch_size]))
        width = max(len(p) + len(c) for p, c in group)
        # Right padding needs no attention mask: real tokens never attend to later positions.
        tokens = torch.full((len(group), width), pad, dtype=torch.long)
        targets = torch.full((len(group), width), -100, dtype=torch.long)
        for row, (p, c) in enumerate(group):
            seq = list(p) + list(c)
            tokens[row, : len(seq)] = torch.tensor(seq)
            if c:  # position t predicts token t + 1: the continuation's tokens are predicted from len(p) - 1 on
                targets[row, len(p) - 1 : len(seq) - 1] = torch.tensor(list(c))
        logits = model(tokens.to(device), return_type="logits", use_cache=False)
        token_nll = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), targets.to(device).reshape(-1), reduction="none"
        ).view(targets.shape)
        nll[start : start + len(group)] = token_nll.double().sum(dim=1).cpu().numpy()
        count[start : start + len(group)] = (targets != -100).sum(dim=1).numpy()
    return nll, count


def _bar(total: int, desc: str, progress: bool) -> Any:
    """One bar over every generation of an experiment (all conditions), with its total and ETA."""
    return tqdm(total=total, desc=desc, unit="gen", disable=not progress)


def _run(
    model: HookedModel,
    condition: Callable[[], AbstractContextManager],
    prompts: list[list[int]],
    sampling: Sampling,
    bar: Any = None,
) -> tuple[list[list[int]], list[str], list[str]]:
    with condition():
        ids = generate_ids(model, prompts, sampling, on_batch=None if bar is None else bar.update)
    texts = _decode(model, ids)
    return ids, texts, langid.detect_languages(texts)


# ---- results -----------------------------------------------------------------------------------
@dataclass
class GenerationResult(Result):
    """A summary table (rows named, e.g. by target language) and every generated text."""

    summary: pd.DataFrame
    samples: pd.DataFrame
    meta: dict = field(default_factory=dict)
    share_columns: list = field(default_factory=list)
    """The summary's columns that are shares in a language (what ``figure`` draws)."""

    kind: ClassVar[str] = "generation"
    marker: ClassVar[str] = GENERATION_META
    make: ClassVar[str] = "`lapelens steer` or `lapelens generate`"
    files: ClassVar[tuple[str, ...]] = (GENERATION_SUMMARY, GENERATION_SAMPLES)

    def __post_init__(self) -> None:
        # JSON has no tuples: a MultiIndex column such as ("normal", "share_in_language") comes back a list.
        self.share_columns = [tuple(c) if isinstance(c, list) else c for c in self.share_columns]

    def figure(self) -> Any:
        """The figure that fits the summary (``lapelens.figures.generation``): Table 5's heatmaps
        for (source, target) rows, share and perplexity panels for generation under deactivation,
        else bars of the share columns; shares with Wilson 95% intervals."""
        return generation_figure(self)

    # ---- persistence: ``summary.csv``, ``samples.jsonl`` (one generated text per line) and
    # ``generation.json`` -------------------------------------------------------------------------
    def _tables(self) -> dict:
        # 17 digits: read back, the summary is the computed one, so a reused stage writes the same tables.
        return {GENERATION_SUMMARY: (self.summary, {"float_format": "%.17g"})}

    def _write(self, tmp: Path) -> None:
        super()._write(tmp)
        self.samples.to_json(tmp / GENERATION_SAMPLES, orient="records", lines=True, force_ascii=False)

    def _meta(self) -> dict:
        return {
            **self.meta,
            "share_columns": self.share_columns,
            "index": list(self.summary.index.names),
            "header_rows": self.summary.columns.nlevels,
        }

    @classmethod
    def _read(cls, folder: Path, meta: dict) -> "GenerationResult":
        index, header = meta.pop("index"), meta.pop("header_rows")
        summary = pd.read_csv(
            folder / GENERATION_SUMMARY,
            index_col=list(range(len(index))),
            header=list(range(header)),
            keep_default_na=False,
            na_values=[""],
        )
        samples = pd.read_json(folder / GENERATION_SAMPLES, orient="records", lines=True, dtype=False)
        return cls(summary, samples, meta, meta.pop("share_columns", []))


def _sampling_meta(model: HookedModel, sampling: Sampling, **kw: Any) -> dict:
    return {"model": str(getattr(model.cfg, "model_name", "?")), "sampling": dataclasses.asdict(sampling), **kw}


# ---- unconditional (Kojima et al.) ---------------------------------------------------------------
def unconditional_shares(
    model: HookedModel,
    conditions: Mapping[str, Callable[[], AbstractContextManager]],
    n_samples: int = 100,
    sampling: Sampling = Sampling(),
    experiment: str = "unconditional",
    meta: dict | None = None,
    progress: bool = True,
) -> GenerationResult:
    """``n_samples`` generations from BOS alone without intervention and under each condition
    (keyed by its target language); share of outputs detected as the target, before and after."""
    if n_samples < 1:
        raise LapelensError(f"n_samples must be at least 1, got {n_samples}.")
    prompts = encode_prompts(model, [""] * n_samples)
    bar = _bar(n_samples * (1 + len(conditions)), experiment, progress)
    _, base_texts, base_langs = _run(model, nullcontext, prompts, sampling, bar)
    rows, samples = [], []
    samples += [
        {"condition": BEFORE, "sample": i, "text": t, "detected": d}
        for i, (t, d) in enumerate(zip(base_texts, base_langs))
    ]
    for target, condition in conditions.items():
        _, texts, langs = _run(model, condition, prompts, sampling, bar)
        samples += [
            {"condition": target, "sample": i, "text": t, "detected": d} for i, (t, d) in enumerate(zip(texts, langs))
        ]
        rows.append(
            {
                "target": target,
                BEFORE: float(np.mean([l == target for l in base_langs])),
                "after": float(np.mean([l == target for l in langs])),
                "n_samples": n_samples,
            }
        )
    bar.close()
    summary = pd.DataFrame(rows).set_index("target")
    summary.columns.name = "share in target"
    return GenerationResult(
        summary,
        pd.DataFrame(samples),
        _sampling_meta(model, sampling, experiment=experiment, n_samples=n_samples, **(meta or {})),
        [BEFORE, "after"],
    )


def unconditional_steering(
    model: HookedModel,
    neurons: LanguageNeurons,
    stats: ActivationStats,
    languages: Sequence[str] | None = None,
    n_samples: int = 100,
    scale: float | int = 1.0,
    sampling: Sampling = Sampling(),
    deactivate_others: bool = False,
    progress: bool = True,
) -> GenerationResult:
    """Generations from BOS with each target's neurons set to ``scale`` x their mean activation
    (``steer``). With ``deactivate_others`` the neurons of every other language of ``neurons``
    (those not also the target's) are deactivated at the same time: the unconditional analogue of
    the paper's cross-lingual setting (deactivate the source, activate the target)."""
    langs = list(languages or neurons.languages)
    bound = neurons.on(model)
    for lang in langs:
        bound.mask(lang)
        stats.lang_index(lang)

    def condition(lang: str) -> AbstractContextManager:
        others = [o for o in neurons.languages if o != lang]
        if not (deactivate_others and others):
            return bound.steer(lang, stats, scale)
        off = bound.mask(others) & ~bound.mask(lang)
        return _both(bound.deactivate_mask(off), bound.steer(lang, stats, scale))

    conditions = {l: (lambda l=l: condition(l)) for l in langs}
    return unconditional_shares(
        model,
        conditions,
        n_samples,
        sampling,
        "unconditional steering",
        {
            "method": neurons.method,
            "scale": scale,
            "deactivate_others": deactivate_others,
            "neurons": {l: neurons.count(l) for l in langs},
        },
        progress,
    )


def kojima_pinning(
    model: HookedModel,
    ap_neurons: LanguageNeurons,
    languages: Sequence[str] | None = None,
    n_samples: int = 100,
    sampling: Sampling = Sampling(),
    progress: bool = True,
) -> GenerationResult:
    """Kojima et al.: each target's top-k and bottom-k AP neurons pinned to their medians."""
    langs = list(languages or ap_neurons.languages)
    if "median" not in ap_neurons.values:
        raise LapelensError("kojima_pinning needs AP neurons with 'median' values (identify(sentences, 'ap')).")
    bound = ap_neurons.on(model)
    for lang in langs:
        bound.mask(lang)
    conditions = {l: (lambda l=l: bound.pin_to_median(l)) for l in langs}
    return unconditional_shares(
        model,
        conditions,
        n_samples,
        sampling,
        "Kojima median pinning",
        {"method": ap_neurons.method, "neurons": {l: ap_neurons.count(l) for l in langs}},
        progress,
    )


# ---- prompted steering (Tang et al., Tables 4 and 5) ----------------------------------------------
def prompted_steering(
    model: HookedModel,
    neurons: LanguageNeurons,
    stats: ActivationStats,
    parallel: pd.DataFrame,
    sources: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    n_prompts: int = 20,
    prompt_tokens: int = 32,
    scale: float | int = 1.0,
    sampling: Sampling = Sampling(),
    progress: bool = True,
) -> GenerationResult:
    """For each (source, target): the share of outputs in the target language when prompting in
    the source language ``before`` any intervention, ``steered`` (target's neurons activated) and
    ``deactivated_and_steered`` (source's neurons also deactivated, the cross-lingual setting).

    ``parallel`` has one column per language (``load_parallel``); the first ``n_prompts`` rows,
    cut to ``prompt_tokens`` tokens, are the prompts, so every source uses the same content.
    """
    langs = [l for l in parallel.columns if l in neurons.languages]
    sources = list(sources or langs)
    targets = list(targets or langs)
    bound = neurons.on(model)
    for lang in set(sources) | set(targets):
        if lang not in parallel.columns:
            raise LapelensError(f"The parallel corpus has no {lang!r} column (it has {list(parallel.columns)}).")
        bound.mask(lang)
        stats.lang_index(lang)
    if len(parallel) < 1 or n_prompts < 1:
        raise LapelensError("No prompts: the parallel corpus is empty or n_prompts < 1.")
    rows, samples = [], []
    per_source = min(n_prompts, len(parallel))
    bar = _bar(sum(per_source * (1 + 2 * sum(t != s for t in targets)) for s in sources), "prompted steering", progress)
    for src in sources:
        texts_in = list(parallel[src].iloc[:n_prompts])
        prompts = encode_prompts(model, texts_in, prompt_tokens)
        _, base_texts, base_langs = _run(model, nullcontext, prompts, sampling, bar)
        samples += [
            {"source": src, "target": None, "condition": BEFORE, "prompt": p, "text": t, "detected": d}
            for p, t, d in zip(texts_in, base_texts, base_langs)
        ]
        for tgt in targets:
            if tgt == src:
                continue
            row = {"source": src, "target": tgt, BEFORE: float(np.mean([l == tgt for l in base_langs]))}
            conditions = {
                "steered": lambda tgt=tgt: bound.steer(tgt, stats, scale),
                "deactivated_and_steered": lambda src=src, tgt=tgt: _both(
                    bound.deactivate(src), bound.steer(tgt, stats, scale)
                ),
            }
            for name, cond in conditions.items():
                _, texts, detected = _run(model, cond, prompts, sampling, bar)
                row[name] = float(np.mean([l == tgt for l in detected]))
                row[f"{name}_in_source"] = float(np.mean([l == src for l in detected]))
                samples += [
                    {"source": src, "target": tgt, "condition": name, "prompt": p, "text": t, "detected": d}
                    for p, t, d in zip(texts_in, texts, detected)
                ]
            row["before_in_source"] = float(np.mean([l == src for l in base_langs]))
            row["n_prompts"] = len(prompts)
            rows.append(row)
    bar.close()
    summary = pd.DataFrame(rows).set_index(["source", "target"])
    summary.columns.name = "share"
    return GenerationResult(
        summary,
        pd.DataFrame(samples),
        _sampling_meta(
            model,
            sampling,
            experiment="prompted steering",
            method=neurons.method,
            scale=scale,
            n_prompts=n_prompts,
            prompt_tokens=prompt_tokens,
            neurons={l: neurons.count(l) for l in dict.fromkeys([*sources, *targets])},
        ),
        [BEFORE, "steered", "deactivated_and_steered"],
    )


@contextmanager
def _both(first: AbstractContextManager, second: AbstractContextManager) -> Iterator[None]:
    """Both contexts, in order: the second's hooks act on the output of the first's."""
    with first, second:
        yield


# ---- generation with a language deactivated (Tang et al., Tables 1 and 2) -------------------------
def generation_under_deactivation(
    model: HookedModel,
    neurons: LanguageNeurons,
    prompts: Mapping[str, Sequence[str]],
    random_neurons: LanguageNeurons | None = None,
    prompt_tokens: int = 32,
    sampling: Sampling = GREEDY,
    progress: bool = True,
) -> GenerationResult:
    """For each language: prompts in it, generated ``normal``-ly, with its neurons ``deactivated``,
    and (if given) with ``random`` neurons of the same sizes deactivated. Reports the share of
    outputs detected in the prompt's language and the perplexity of the outputs (token-weighted
    over all outputs) under the unperturbed model."""
    bound = {"deactivated": neurons.on(model)}
    if random_neurons is not None:
        bound["random"] = random_neurons.on(model)
    for lang in prompts:
        for b in bound.values():
            b.mask(lang)
    conditions: dict[str, Callable[[str], AbstractContextManager]] = {
        "normal": lambda lang: nullcontext(),
        **{name: b.deactivate for name, b in bound.items()},
    }
    rows, samples = {}, []
    bar = _bar(sum(len(t) for t in prompts.values()) * len(conditions), "generation under deactivation", progress)
    for lang, texts_in in prompts.items():
        ids_in = encode_prompts(model, list(texts_in), prompt_tokens)
        row = {}
        for name, make in conditions.items():
            ids, texts, detected = _run(model, lambda make=make, lang=lang: make(lang), ids_in, sampling, bar)
            nll, count = continuation_nll(model, ids_in, ids)  # outside the intervention: unperturbed model
            row[(name, "share_in_language")] = float(np.mean([d == lang for d in detected]))
            row[(name, "ppl")] = float(np.exp(nll.sum() / count.sum())) if count.sum() else float("nan")
            row[(name, "tokens")] = int(count.sum())
            samples += [
                {"language": lang, "condition": name, "prompt": p, "text": t, "detected": d, "nll": n, "tokens": int(c)}
                for p, t, d, n, c in zip(texts_in, texts, detected, nll, count)
            ]
        rows[lang] = row
    bar.close()
    summary = pd.DataFrame.from_dict(rows, orient="index")
    summary.index.name = "language"
    summary.columns = pd.MultiIndex.from_tuples(summary.columns, names=["condition", "metric"])
    return GenerationResult(
        summary,
        pd.DataFrame(samples),
        _sampling_meta(
            model,
            sampling,
            experiment="generation under deactivation",
            method=neurons.method,
            random=random_neurons is not None,
            prompt_tokens=prompt_tokens,
            n_prompts={lang: len(texts) for lang, texts in prompts.items()},
            neurons={lang: neurons.count(lang) for lang in prompts},
        ),
        [(name, "share_in_language") for name in conditions],
    )


# ---- the experiments (Tables 1, 2, 4, 5 and Kojima's) ----------------------------------------------
N_SAMPLES = Setting(
    "n_samples", 100, "Generations from BOS per condition (unconditional steering, Kojima).", quick=12, check=positive()
)
N_PROMPTS = Setting(
    "n_prompts",
    10,
    "Prompts per language for prompted steering and generation under deactivation.",
    quick=4,
    check=positive(),
)
MAX_NEW_TOKENS = Setting(
    "max_new_tokens",
    24,
    "New tokens per prompted generation (prompted steering, generation under deactivation).",
    quick=16,
    check=positive(),
)
UNCONDITIONAL_TOKENS = Setting(
    "unconditional_tokens",
    64,
    "New tokens per generation from BOS (unconditional steering, Kojima): the model drifts "
    "between languages and langdetect needs text, so 24 tokens read fewer samples as the target.",
    quick=16,
    check=positive(),
)
STEER_SCALE = Setting(
    "steer_scale",
    None,
    "Steering sets each neuron to scale x its mean activation on the target language. Default: 8 "
    "on the embedded model (no language reaches a 0.8 target share at 1, 5 of 7 do at 8; README), 1 (the paper's) on "
    "any other.",
    type=float,
    check=finite,
    resolve=lambda cfg: defaults_for(cfg.model).steer_scale,
)
STEER_DEACTIVATE_OTHERS = Setting(
    "steer_deactivate_others", True, "Unconditional steering also deactivates the other languages' neurons."
)


def _sampling(cfg: Any) -> Sampling:
    """Sampling from BOS (unconditional steering, Kojima)."""
    return Sampling(max_new_tokens=cfg.unconditional_tokens, seed=cfg.seed)


def _greedy(cfg: Any) -> Sampling:
    """Greedy decoding of prompts (prompted steering, generation under deactivation)."""
    return Sampling.greedy(max_new_tokens=cfg.max_new_tokens)


def _pair_keyed(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a tuple row index (source, target) relabelled ``"en->zh"``, for JSON keys."""
    if frame.index.nlevels == 1:
        return frame
    out = frame.copy()
    out.index = [PAIR_SEPARATOR.join(map(str, i)) for i in frame.index]
    return out


def _outputs(name: str, figure: Callable[[GenerationResult], Any]) -> dict[str, Any]:
    """A generation experiment's figure, table (its summary, ``tables/NAME.csv``) and ``summary.json`` entry."""
    return {
        "figures": lambda r: {name: figure(r)},
        "tables": lambda r: {f"{name}.csv": r.summary},
        "summary": lambda r: {name: json.loads(_pair_keyed(r.summary).to_json(orient="index"))},
    }


@experiment(
    "steer_unconditional",
    result=GenerationResult,
    reads=("primary", "stats"),
    settings=(N_SAMPLES, UNCONDITIONAL_TOKENS, STEER_SCALE, STEER_DEACTIVATE_OTHERS),
    record=lambda cfg: dict(
        n_samples=cfg.n_samples,
        scale=cfg.steer_scale,
        sampling=dataclasses.asdict(_sampling(cfg)),
        deactivate_others=cfg.steer_deactivate_others,
    ),
    exports={"Sampling": Sampling, "unconditional_steering": unconditional_steering},
    paper="Tables 4, 5 (from BOS, Kojima's setting)",
    order=60,
    **_outputs(
        "steer_unconditional",
        lambda r: share_bars(
            r,
            "Table 4 from BOS: share of generations in the target language, its neurons steered",
            names={"after": "steered"},
        ),
    ),
)
def steer_unconditional_stage(ctx: Context) -> GenerationResult:
    cfg = ctx.cfg
    return unconditional_steering(
        ctx.model,
        ctx.selection("primary"),
        ctx.stats,
        ctx.languages,
        cfg.n_samples,
        cfg.steer_scale,
        _sampling(cfg),
        deactivate_others=cfg.steer_deactivate_others,
    )


@experiment(
    "steer_prompted",
    result=GenerationResult,
    reads=("primary", "stats", "parallel"),
    settings=(N_PROMPTS, MAX_NEW_TOKENS, STEER_SCALE),
    record=lambda cfg: dict(n_prompts=cfg.n_prompts, scale=cfg.steer_scale, sampling=dataclasses.asdict(_greedy(cfg))),
    exports={"prompted_steering": prompted_steering},
    paper="Tables 4, 5",
    order=70,
    **_outputs("steer_prompted", steering_heatmaps),
)
def steer_prompted_stage(ctx: Context) -> GenerationResult:
    cfg = ctx.cfg
    return prompted_steering(
        ctx.model,
        ctx.selection("primary"),
        ctx.stats,
        ctx.parallel,
        n_prompts=cfg.n_prompts,
        scale=cfg.steer_scale,
        sampling=_greedy(cfg),
    )


@experiment(
    "deactivated_generation",
    result=GenerationResult,
    reads=("primary", "baseline?", "parallel"),
    settings=(N_PROMPTS, MAX_NEW_TOKENS),
    record=lambda cfg: dict(n_prompts=cfg.n_prompts, sampling=dataclasses.asdict(_greedy(cfg))),
    exports={"generation_under_deactivation": generation_under_deactivation},
    paper="Tables 1, 2",
    order=80,
    **_outputs("deactivated_generation", deactivation_figure),
)
def deactivated_generation_stage(ctx: Context) -> GenerationResult:
    prompts = {l: ctx.parallel[l].head(ctx.cfg.n_prompts).tolist() for l in ctx.languages}
    return generation_under_deactivation(
        ctx.model, ctx.selection("primary"), prompts, ctx.selection("baseline"), sampling=_greedy(ctx.cfg)
    )


@experiment(
    "kojima",
    result=GenerationResult,
    reads=("pinned",),
    settings=(N_SAMPLES, UNCONDITIONAL_TOKENS),
    record=lambda cfg: dict(n_samples=cfg.n_samples, sampling=dataclasses.asdict(_sampling(cfg))),
    exports={"kojima_pinning": kojima_pinning},
    paper="Kojima et al.",
    order=90,
    **_outputs(
        "kojima",
        lambda r: share_bars(
            r,
            "Kojima et al.: share of generations in the target language, AP neurons pinned to medians",
            names={"after": "pinned"},
        ),
    ),
)
def kojima_stage(ctx: Context) -> GenerationResult:
    return kojima_pinning(ctx.model, ctx.selection("pinned"), ctx.languages, ctx.cfg.n_samples, _sampling(ctx.cfg))
