"""The paper's pipeline end to end: statistics, every method, every experiment, every figure.

``reproduce(ReproduceConfig(out=...))`` runs, on one model and corpus (default: the embedded ones),

1. ``collect`` on the train split, and per-sentence means for AP;
2. neuron selection with every requested method (LAPE, LAP, LAVE, random, AP, PV);
3. Table 3 / Fig. 5 (neurons per language and layer, overlaps, agreement between methods);
4. the PPL-change matrix of every method (Fig. 2, 3, 8) and their comparison;
5. the selection-ratio sweep (Fig. 4);
6. SES and dominance per layer (Fig. 6, 7);
7. steering (Tables 4, 5), Kojima's pinning, and generation under deactivation (Tables 1, 2);

and writes each result (CSV/JSON/safetensors) plus an HTML figure to ``out``. Every setting is
checked before the first stage. Each stage is saved as soon as it is done, with a ``stage.json``
recording what it was computed from (the settings that affect it, the model's and corpus's
identity, and the fingerprints of the stages it reads); a re-run reuses a stage only when that
record matches, and recomputes it otherwise (saying why), so an interrupted run resumes where it
stopped and a run with other settings recomputes exactly what they change. ``config.json``
(the settings, and every stage's fingerprint), ``summary.json``, ``tables/`` and ``figures/``
describe one complete run: they are removed when a run starts and written when it ends.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from lapelens._io import atomic_write_text
from lapelens._version import __version__
from lapelens.artifacts import PAIR_SEPARATOR, stamp
from lapelens.constants import EMBEDDED, PAPER_LANGUAGES, RUN_CONFIG, RUN_SUMMARY, RUN_TABLES, STAGE_RECORD
from lapelens.defaults import DEFAULT_CHECKPOINT_EVERY, SEQ_LEN
from lapelens.errors import LapelensError
from lapelens.methods import METHODS, with_role
from lapelens.models import DTYPES

#: Every registered method, in registry order (the default of ``--methods``).
METHOD_NAMES = tuple(METHODS)
#: File each stage folder records its inputs in.
STAGE_JSON = STAGE_RECORD
#: Folder the stats stage keeps ``collect``'s checkpoints in while it runs (removed once it is saved).
STATS_CHECKPOINT = "stats.checkpoint"
#: Written at the end of a run; removed at its start (they describe the whole run).
RUN_FILES = (RUN_CONFIG, RUN_SUMMARY)
RUN_FOLDERS = ("tables", "figures")
#: ``--quick``: the budgets it lowers (an explicit flag keeps its value).
QUICK = dict(tokens_per_language=40_000, eval_tokens_per_language=4096, ap_sentences=60, ap_k=30,
             pv_steps=4, ses_texts=40, n_samples=12, n_prompts=4, max_new_tokens=16, unconditional_tokens=16)


@dataclass
class ReproduceConfig:
    """What to run and how big. The defaults are sized for the embedded model on 2 CPU cores."""

    out: str
    """Folder for every result, figure and the summary."""
    model: str = EMBEDDED
    """Model: 'embedded', a hub name or a local HF folder."""
    corpus: str = EMBEDDED
    """Monolingual corpus for statistics (train split) and perplexity (valid split): 'embedded', 'wikipedia' or a
    folder of {lang}.txt files."""
    parallel: str = EMBEDDED
    """Parallel corpus for SES, dominance and prompted steering: 'embedded' or 'flores'."""
    languages: tuple[str, ...] = PAPER_LANGUAGES
    """Languages, at least two, each once (the paper's seven)."""
    methods: tuple[str, ...] = METHOD_NAMES
    """Neuron-selection methods to run, any of those `lapelens identify --help` lists (random draws as many
    neurons as LAPE; pv needs the model as a local folder)."""
    tokens_per_language: int = 100_000
    """Tokens per language for the activation statistics."""
    seq_len: int = SEQ_LEN
    """Tokens per chunk, for the statistics and for every perplexity."""
    top_rate: float | None = None
    """LAPE's (and LAVE's) share of all neurons kept, in (0, 1]. Default: 0.1 on the embedded model, whose 8,192
    neurons need it for deactivation to move perplexity measurably (README); 0.01 (the paper's) on any other."""
    eval_tokens_per_language: int = 8192
    """Held-out tokens per language for every perplexity."""
    ap_sentences: int = 300
    """Sentences per language for AP's per-sentence means."""
    ap_k: int = 100
    """Kojima's top-k and bottom-k AP neurons per language."""
    pv_steps: int = 20
    """Continued-training steps per language for PV's tuned copies."""
    sweep_target: str | None = None
    """Language whose top neurons the selection-ratio sweep deactivates; default: fr (the paper's) if among the
    languages, else the second language; 'none' skips the sweep."""
    ses_texts: int = 200
    """Aligned texts for SES and dominance (at least 2)."""
    n_samples: int = 100
    """Generations from BOS per condition (unconditional steering, Kojima)."""
    n_prompts: int = 10
    """Prompts per language for prompted steering and generation under deactivation."""
    max_new_tokens: int = 24
    """New tokens per prompted generation (prompted steering, generation under deactivation)."""
    unconditional_tokens: int = 64
    """New tokens per generation from BOS (unconditional steering, Kojima): the model drifts
    between languages and langdetect needs text, so 24 tokens read fewer samples as the target
    (measured on the previously shipped model: 3 of 7 languages >= 0.8 at 24 tokens, 5 of 7 at 64,
    same neurons and scale)."""
    steer_scale: float | None = None
    """Steering sets each neuron to scale x its mean activation on the target language. Default: 8 on the
    embedded model (no language reaches a 0.8 target share at 1, 5 of 7 do at 8; README), 1 (the paper's) on
    any other."""
    steer_deactivate_others: bool = True
    """Unconditional steering also deactivates the other languages' neurons."""
    seed: int = 0
    """Seed of the random neurons, the bootstrap, PV's tuning and sampling."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:N or mps (under torchrun, 'cuda' means cuda:LOCAL_RANK for each rank)."""
    dtype: str = field(default="float32", metadata={"choices": DTYPES})
    """Model dtype for every stage. bfloat16: float32's range at half the memory; float16: a run whose activations
    overflow stops with an error. Firing counts are taken in this dtype, sums accumulate in float64."""
    checkpoint_every: float = DEFAULT_CHECKPOINT_EVERY
    """Seconds between checkpoints of the statistics' running sums (in OUT/stats.checkpoint; 0: after every
    batch): a run killed while counting resumes there when re-run with the same command."""

    @classmethod
    def quick(cls, out: str, **overrides: Any) -> "ReproduceConfig":
        """A smaller run (notebooks, CI): small budgets, same code path, noisier numbers."""
        return cls(out=out, **{**QUICK, **overrides})

    def resolved(self) -> "ReproduceConfig":
        """The same settings with every model-dependent default filled in (what ``config.json`` records)."""
        from lapelens.defaults import defaults_for

        d = defaults_for(self.model)
        target = self.sweep_target
        if target is None:
            target = "fr" if "fr" in self.languages else (self.languages[1] if len(self.languages) > 1 else "none")
        return replace(self, top_rate=d.top_rate if self.top_rate is None else self.top_rate,
                       steer_scale=d.steer_scale if self.steer_scale is None else self.steer_scale,
                       sweep_target=target, languages=tuple(self.languages), methods=tuple(self.methods))


def flag(name: str) -> str:
    """The CLI flag of a config field (error messages name what the user typed)."""
    return "--" + name.replace("_", "-")


def _pv_base_dir(model: str) -> Path | None:
    """The local HF folder PV fine-tunes copies of, or None when the model is not one."""
    from lapelens.models import embedded_model_dir

    base = embedded_model_dir() if model == EMBEDDED else Path(model).expanduser()
    return base if (base / "config.json").is_file() else None  # an HF model folder's config


def validate(cfg: ReproduceConfig) -> ReproduceConfig:
    """Check every setting (cheaply, before any model is loaded); returns ``cfg.resolved()``."""
    from lapelens.checks import check_device, check_languages, check_model_name, check_positive, check_rate
    from lapelens.corpus import FLORES, FLORES_CODES, WIKIPEDIA, load_corpus, load_parallel

    cfg = cfg.resolved()
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise LapelensError(f"--methods: unknown method(s) {', '.join(unknown)}; choose from {','.join(METHODS)}.")
    if not cfg.methods:
        raise LapelensError(f"--methods is empty: give one or more of {','.join(METHODS)}.")
    check_languages(cfg.methods, "--methods")
    check_languages(cfg.languages, "--languages", minimum=2,
                    why="LAPE compares languages (its entropy over one language means nothing): give at least two")
    check_rate(cfg.top_rate, "--top-rate")
    check_positive(cfg.seq_len, "--seq-len", minimum=2)
    for name in ("tokens_per_language", "eval_tokens_per_language"):
        value = getattr(cfg, name)
        check_positive(value, flag(name))
        if value < cfg.seq_len:
            raise LapelensError(f"{flag(name)} {value} is less than one chunk of --seq-len {cfg.seq_len}: "
                                f"give at least {cfg.seq_len} (or a smaller --seq-len).")
    for name in ("ap_sentences", "ap_k", "pv_steps", "n_samples", "n_prompts", "max_new_tokens", "unconditional_tokens"):
        check_positive(getattr(cfg, name), flag(name))
    check_positive(cfg.ses_texts, "--ses-texts", minimum=2)
    if not math.isfinite(cfg.steer_scale):
        raise LapelensError(f"--steer-scale must be a finite number, got {cfg.steer_scale}.")
    if cfg.sweep_target != "none" and cfg.sweep_target not in cfg.languages:
        raise LapelensError(f"--sweep-target {cfg.sweep_target} is not among --languages {','.join(cfg.languages)}: "
                            "pick one of them, or 'none' to skip the sweep.")
    check_device(cfg.device)
    if cfg.dtype not in DTYPES:
        raise LapelensError(f"--dtype {cfg.dtype} is not supported: use one of {', '.join(DTYPES)}.")
    check_model_name(cfg.model)
    tuning = [m for m in cfg.methods if METHODS[m].source == "models"]
    if tuning and _pv_base_dir(cfg.model) is None:
        raise LapelensError(f"method {tuning[0]} fine-tunes copies of the model, so it needs --model as a local HF folder "
                            f"(got {cfg.model!r}): pass --model DIR, or leave {tuning[0]} out of --methods.")
    # Corpora: bad names and language codes fail here, before the slow model load.
    load_corpus(cfg.corpus, split="valid", languages=list(cfg.languages))
    if cfg.corpus != WIKIPEDIA:  # the train split of Wikipedia is streamed only when it is needed
        load_corpus(cfg.corpus, split="train", languages=list(cfg.languages))
    if cfg.parallel == EMBEDDED:
        load_parallel(cfg.parallel, split="valid", languages=list(cfg.languages))
    elif cfg.parallel == FLORES:
        missing = [l for l in cfg.languages if l not in FLORES_CODES]
        if missing:
            raise LapelensError(f"--parallel flores has no code for {', '.join(missing)}: leave them out of --languages.")
    else:
        raise LapelensError(f"--parallel {cfg.parallel!r} is unknown: use {EMBEDDED} or {FLORES}.")
    return cfg


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """What changed between two stage records, in words."""
    out = []
    for key in sorted(set(old) | set(new), key=lambda k: (list(new) + list(old)).index(k)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if prefix == "depends":
            out.append(f"its input {key} changed" if a is not None and b is not None else f"its inputs changed ({key})")
        elif isinstance(a, dict) and isinstance(b, dict) and key == "settings":
            out += _differences(a, b, key)
        elif isinstance(a, dict) and isinstance(b, dict) and key == "depends":
            out += _differences(a, b, key)
        elif key in ("model", "corpus", "parallel", "eval_corpus"):
            out.append(f"the {key.replace('_', ' ')} changed")
        else:
            out.append(f"{key} {a!r} -> {b!r}")
    return out


class _Stages:
    """Runs named stages once: a stage whose output exists and was computed from the same inputs is
    loaded; otherwise it is computed (again), and the log says why."""

    def __init__(self, out: Path, log: Callable[[str], None] = print, seed: int = 0, lead: bool = True):
        # ``lead``: this process writes (rank 0 under torchrun); the others compute and keep nothing.
        self.out, self.log, self.seed, self.lead = out, log if lead else (lambda _: None), seed, lead
        self.timings: dict[str, float] = {}
        self.fingerprints: dict[str, str] = {}
        self.recomputed: dict[str, str] = {}
        self.reused: list[str] = []

    def __call__(self, name: str, inputs: dict, compute: Callable[[], Any], load: Callable[[Path], Any],
                 save: Callable[[Any, Path], Any]) -> Any:
        import torch

        from lapelens.provenance import digest

        path = self.out / name
        fingerprint = digest(inputs)
        self.fingerprints[name] = fingerprint
        reason = "not computed yet"
        if path.exists():
            try:
                record = json.loads((path / STAGE_JSON).read_text())
                old = record["inputs"] if record["fingerprint"] != fingerprint else None
            except (OSError, ValueError, KeyError, TypeError):
                old, reason = {}, "no record of the settings it was computed from"
            if old is None:
                try:
                    result = load(path)
                except LapelensError as exc:
                    reason = f"unreadable ({exc})"
                else:
                    self.log(f"[reproduce] {name}: reusing {path} (computed with the same settings)")
                    self.reused.append(name)
                    return result
            elif old:
                reason = "; ".join(_differences(old, inputs)) or "its record differs"
        self.log(f"[reproduce] {name}: computing ({reason}) ...")
        self.recomputed[name] = reason
        start = time.time()
        torch.manual_seed(self.seed)  # each stage as in a fresh run, whatever ran before it
        result = compute()
        if not self.lead:
            return result
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        save(result, tmp)
        record = {"stage": name, "fingerprint": fingerprint, "lapelens_version": __version__, "inputs": inputs}
        atomic_write_text(tmp / STAGE_JSON, json.dumps(record, indent=2, ensure_ascii=False, default=str))
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
        self.timings[name] = round(time.time() - start, 1)
        self.log(f"[reproduce] {name}: {self.timings[name]} s")
        return result


def _collect_resumably(out: Path, fingerprint: str, collect: Callable[[Path], Any], lead: bool = True) -> Any:
    """The stats stage with ``collect``'s checkpoints in ``out/stats.checkpoint/FINGERPRINT``:
    an interrupted collection resumes; one made with other settings is discarded, not refused
    (the stage's record already says the settings changed)."""
    folder = out / STATS_CHECKPOINT
    if lead and folder.is_dir():
        for old in folder.iterdir():
            if old.name != fingerprint:
                shutil.rmtree(old, ignore_errors=True)
    return collect(folder / fingerprint)


def _method_stages(cfg: ReproduceConfig, stage: Callable[..., Any], inputs: Callable[..., dict], stats: Any, model: Any,
                   out: Path, train_id: dict, langs: list[str]) -> dict[str, Any]:
    """The selection of every method in ``cfg.methods`` (in that order), each a stage ``neurons_NAME``.

    Computed in registry order, with the methods they reference (random: LAPE) before them. A
    stage reads the input its method declares: ``stats`` (stage 1), ``sentences`` (per-sentence
    means, a stage of its own, made once) or ``models`` (copies tuned per language inside the
    stage); a method with a reference depends on the reference's stage instead of its input's.
    """
    from lapelens.activations import collect_sentence_means
    from lapelens.corpus import load_corpus
    from lapelens.methods import identify
    from lapelens.methods.pv import ParameterMask, tune_per_language
    from lapelens.neurons import LanguageNeurons
    from lapelens.stats import SentenceActivations

    wanted = set(cfg.methods)
    for name in reversed(list(METHODS)):  # a referenced method runs whenever a method that needs it does
        if name in wanted and METHODS[name].reference:
            wanted.add(METHODS[name].reference)
    sources: dict[str, Any] = {"stats": stats}
    neurons: dict[str, Any] = {}

    def sentence_means() -> Any:
        docs = load_corpus(cfg.corpus, split="train", languages=langs)
        sentences = {l: [s for d in docs[l] for s in d.split("\n") if s.strip()][: cfg.ap_sentences] for l in langs}
        return collect_sentence_means(model, sentences)

    for name, spec in METHODS.items():
        if name not in wanted:
            continue
        options = {option: getattr(cfg, field) for option, field in spec.pipeline.items()}
        settings = {field: getattr(cfg, field) for field in spec.pipeline.values()}
        extra: dict[str, Any] = {}
        if spec.source == "sentences" and "sentences" not in sources:
            sources["sentences"] = stage("sentences", {**inputs(ap_sentences=cfg.ap_sentences), "corpus": train_id},
                                         sentence_means, SentenceActivations.load, lambda r, p: r.save(p))
        if spec.source == "models":
            base_dir = _pv_base_dir(cfg.model)
            settings = {"pv_steps": cfg.pv_steps, "seed": cfg.seed, **settings}
            extra = {"corpus": train_id}

            def compute(name: str = name, options: dict = options, base_dir: Path | None = base_dir) -> Any:
                docs = load_corpus(cfg.corpus, split="train", languages=langs)
                tuned = tune_per_language(base_dir, docs, out / f"{name}_tuned", steps=cfg.pv_steps, seed=cfg.seed)
                return identify(str(base_dir), name, tuned=tuned, **options)
        else:
            if spec.reference:
                options["reference"] = neurons[spec.reference]
            source = sources[spec.source]

            def compute(name: str = name, options: dict = options, source: Any = source) -> Any:
                return identify(source, name, **options)
        depends = (spec.input_stage,) if spec.input_stage else ()
        load = ParameterMask.load if spec.returns == "parameters" else LanguageNeurons.load
        neurons[name] = stage(spec.stage, {**inputs(depends, **settings), **extra}, compute, load, lambda r, p: r.save(p))
    return {m: neurons[m] for m in cfg.methods if m in neurons}


def _write_figure(fig: Any, path: Path) -> None:
    """``path`` as HTML (offline: plotly.min.js beside it), PNG and SVG (needs Chromium)."""
    from lapelens.figures import write_figure

    write_figure(fig, path)


def reproduce(cfg: ReproduceConfig, log: Callable[[str], None] = print) -> dict:
    """Run the pipeline; returns the headline numbers (also written to ``summary.json``).

    Under ``torchrun`` every rank counts its share of the statistics, then all ranks leave the
    default process group (it is destroyed) and rank 0 alone runs the later stages; the other
    ranks return ``{}``.
    """
    import torch

    from lapelens.activations import collect
    from lapelens.checkpoint import current_shard, leave_process_group
    from lapelens.corpus import load_corpus, load_parallel
    from lapelens.evaluate.generation import (GenerationResult, Sampling, generation_under_deactivation,
                                              kojima_pinning, prompted_steering, unconditional_steering)
    from lapelens.evaluate.perplexity import PerturbationResult, compare, compare_figure, evaluation_chunks, perturbation_matrix
    from lapelens.evaluate.sweep import SweepResult, selection_ratio_sweep
    from lapelens.models import load_model
    from lapelens.neurons import LanguageNeurons
    from lapelens.evaluate.similarity import DominanceResult, SimilarityResult, sentence_embeddings
    from lapelens.provenance import corpus_identity, model_identity, parallel_identity
    from lapelens.stats import ActivationStats

    cfg = validate(cfg)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    lead = current_shard().rank == 0
    if lead:
        out.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:  # they describe a complete run: written again at its end
            (out / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            shutil.rmtree(out / name, ignore_errors=True)
    stage = _Stages(out, log, cfg.seed, lead)
    langs = list(cfg.languages)
    model = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx and cfg.seq_len > n_ctx:
        raise LapelensError(f"--seq-len {cfg.seq_len} is longer than the model's context of {n_ctx} tokens: "
                            f"give --seq-len {n_ctx} or less.")
    figs = out / "figures"
    summary: dict[str, Any] = {"model": cfg.model, "languages": langs}
    # What every stage is computed from, besides the stages it reads.
    model_id = model_identity(cfg.model)
    if cfg.dtype != "float32":  # float32 runs keep the fingerprints they always had
        model_id["dtype"] = cfg.dtype
    train_id = corpus_identity(cfg.corpus, "train", langs)
    eval_id = {**corpus_identity(cfg.corpus, "valid", langs), "tokens_per_language": cfg.eval_tokens_per_language,
               "seq_len": cfg.seq_len}
    parallel_split = "valid" if cfg.parallel == EMBEDDED else "all"
    parallel_id = parallel_identity(cfg.parallel, parallel_split)
    fp = stage.fingerprints

    def inputs(depends: tuple[str, ...] = (), **settings: Any) -> dict:
        record: dict[str, Any] = {"model": model_id, "languages": langs, "settings": settings}
        record["depends"] = {d: fp.get(d) for d in depends}
        return record

    # 1. statistics -------------------------------------------------------------------------
    stats_inputs = {**inputs(tokens_per_language=cfg.tokens_per_language, seq_len=cfg.seq_len), "corpus": train_id}
    stats = stage("stats", stats_inputs, lambda: _collect_resumably(out, fp["stats"], lambda checkpoint: collect(
                      model, load_corpus(cfg.corpus, split="train", languages=langs), tokens_per_language=cfg.tokens_per_language,
                      seq_len=cfg.seq_len, corpus=cfg.corpus, checkpoint=checkpoint,
                      checkpoint_every=cfg.checkpoint_every), lead),
                  ActivationStats.load, lambda r, p: r.save(p))
    # Under torchrun the other ranks only help count the statistics: once rank 0 saved them, all
    # ranks leave the process group together and rank 0 goes on alone.
    leave_process_group()
    if not lead:
        return {}
    shutil.rmtree(out / STATS_CHECKPOINT, ignore_errors=True)

    # 2. methods: one stage per registered method in --methods (and the methods they reference) ---
    neurons = _method_stages(cfg, stage, inputs, stats, model, out, train_id, langs)

    # 3. tables: Table 3, Fig. 5, overlaps, agreement between methods ---------------------------
    # The experiments ask the registry which method plays which role (LAPE is the primary one).
    primary, baseline, pinned = (with_role(r, neurons) for r in ("primary", "baseline", "pinned"))
    chosen = neurons[primary] if primary else None
    (out / "tables").mkdir(exist_ok=True)
    if chosen is not None:
        table_path = lambda key: out / "tables" / RUN_TABLES[key].format(method=primary)  # noqa: E731
        chosen.per_language().to_csv(table_path("per_language"))
        chosen.per_layer().to_csv(table_path("per_layer"))
        chosen.jaccard().to_csv(table_path("jaccard"))
        agreement = {m: chosen.compare(n)["jaccard"] for m, n in neurons.items()
                     if m != primary and isinstance(n, LanguageNeurons)}
        if agreement:
            import pandas as pd

            table = pd.DataFrame(agreement)
            table.to_csv(table_path("jaccard_vs_methods"))
            summary[f"jaccard_{primary}_vs"] = table.mean().round(4).to_dict()
        summary[f"{primary}_per_language"] = chosen.per_language()["neurons"].to_dict()
        summary[f"{primary}_per_layer"] = chosen.per_layer().sum(axis=1).to_dict()
        _write_figure(chosen.figure(), figs / "fig5_layers.html")

    # 4. perturbation matrices ----------------------------------------------------------------
    chunks = evaluation_chunks(model, cfg.corpus, langs, cfg.eval_tokens_per_language, cfg.seq_len)
    matrices = {}
    for m, sel in neurons.items():
        matrices[m] = stage(f"perturb_{m}", {**inputs((f"neurons_{m}",), seed=cfg.seed), "eval_corpus": eval_id},
                            lambda sel=sel: perturbation_matrix(model, sel, chunks, seed=cfg.seed),
                            PerturbationResult.load, lambda r, p: r.save(p))
        _write_figure(matrices[m].figure(), figs / f"fig2_perturb_{m}.html")
    if matrices:
        table = compare(matrices, reference=baseline)
        table.to_csv(out / "tables" / RUN_TABLES["perturbation_summary"])
        summary["perturbation"] = json.loads(table.to_json(orient="index"))
        _write_figure(compare_figure(matrices), figs / "fig3_perturb_methods.html")

    # 5. sweep --------------------------------------------------------------------------------
    if cfg.sweep_target != "none":
        sweep = stage("sweep", {**inputs(("stats",), target=cfg.sweep_target, seed=cfg.seed), "eval_corpus": eval_id},
                      lambda: selection_ratio_sweep(model, stats, cfg.sweep_target, chunks, seed=cfg.seed),
                      SweepResult.load, lambda r, p: r.save(p))
        _write_figure(sweep.figure(), figs / "fig4_sweep.html")

    # 6. SES and dominance ----------------------------------------------------------------------
    par = load_parallel(cfg.parallel, split=parallel_split, languages=langs)
    emb = None

    def embeddings() -> Any:
        nonlocal emb
        if emb is None:
            emb = sentence_embeddings(model, par.head(cfg.ses_texts), langs)
        return emb

    text_inputs = {"parallel": parallel_id}
    ses = stage("ses", {**inputs((METHODS[primary].stage,) if chosen is not None else (), ses_texts=cfg.ses_texts), **text_inputs},
                lambda: embeddings().similarity(chosen), SimilarityResult.load, lambda r, p: r.save(p))
    dom = stage("dominance", {**inputs(ses_texts=cfg.ses_texts), **text_inputs},
                lambda: embeddings().dominance(), DominanceResult.load, lambda r, p: r.save(p))
    _write_figure(ses.figure(), figs / "fig6_ses.html")
    _write_figure(dom.figure(), figs / "fig7_dominance.html")

    # 7. generation -----------------------------------------------------------------------------
    sampling = Sampling(max_new_tokens=cfg.unconditional_tokens, seed=cfg.seed)
    greedy = Sampling.greedy(max_new_tokens=cfg.max_new_tokens)
    gens: dict[str, Any] = {}
    if chosen is not None:
        primary_stage = METHODS[primary].stage
        gens["steer_unconditional"] = stage(
            "steer_unconditional",
            inputs((primary_stage, "stats"), n_samples=cfg.n_samples, scale=cfg.steer_scale, sampling=asdict(sampling),
                   deactivate_others=cfg.steer_deactivate_others),
            lambda: unconditional_steering(model, chosen, stats, langs, cfg.n_samples, cfg.steer_scale, sampling,
                                           deactivate_others=cfg.steer_deactivate_others),
            GenerationResult.load, lambda r, p: r.save(p))
        gens["steer_prompted"] = stage(
            "steer_prompted",
            {**inputs((primary_stage, "stats"), n_prompts=cfg.n_prompts, scale=cfg.steer_scale, sampling=asdict(greedy)),
             **text_inputs},
            lambda: prompted_steering(model, chosen, stats, par, n_prompts=cfg.n_prompts, scale=cfg.steer_scale, sampling=greedy),
            GenerationResult.load, lambda r, p: r.save(p))
        prompts = {l: par[l].head(cfg.n_prompts).tolist() for l in langs}
        gens["deactivated_generation"] = stage(
            "deactivated_generation",
            {**inputs((primary_stage, METHODS[baseline].stage) if baseline else (primary_stage,),
                      n_prompts=cfg.n_prompts, sampling=asdict(greedy)), **text_inputs},
            lambda: generation_under_deactivation(model, chosen, prompts, neurons.get(baseline), sampling=greedy),
            GenerationResult.load, lambda r, p: r.save(p))
    else:
        log(f"[reproduce] steering and generation under deactivation use the primary method's neurons: skipped "
            f"({with_role('primary', METHODS)} is not in --methods)")
    if pinned:
        gens["kojima"] = stage("kojima", inputs((METHODS[pinned].stage,), n_samples=cfg.n_samples, sampling=asdict(sampling)),
                               lambda: kojima_pinning(model, neurons[pinned], langs, cfg.n_samples, sampling),
                               GenerationResult.load, lambda r, p: r.save(p))
    for name, g in gens.items():
        g.summary.to_csv(out / "tables" / f"{name}.csv")
        _write_figure(g.figure(), figs / f"{name}.html")
        summary[name] = json.loads(_pair_keyed(g.summary).to_json(orient="index"))

    summary["timings_seconds"] = stage.timings
    summary["recomputed"] = stage.recomputed
    if stage.recomputed:
        log("[reproduce] computed: " + "; ".join(f"{n} ({why})" for n, why in stage.recomputed.items()))
    if stage.reused:
        log(f"[reproduce] reused (same settings): {', '.join(stage.reused)}")
    config = stamp("run", {**asdict(cfg), "stages": dict(stage.fingerprints)})
    atomic_write_text(out / RUN_SUMMARY, json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    atomic_write_text(out / RUN_CONFIG, json.dumps(config, indent=2, ensure_ascii=False))  # last: the run is complete
    return summary


def _pair_keyed(frame: Any) -> Any:
    """``frame`` with a tuple row index (source, target) relabelled ``"en->zh"``, for JSON keys."""
    if frame.index.nlevels == 1:
        return frame
    out = frame.copy()
    out.index = [PAIR_SEPARATOR.join(map(str, i)) for i in frame.index]
    return out
