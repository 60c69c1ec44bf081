"""The paper's pipeline end to end: statistics, every method, every registered experiment, every figure.

``reproduce(ReproduceConfig(out=...))`` runs, on one model and corpus (default: the embedded ones),

1. ``collect`` on the train split (the ``stats`` stage);
2. neuron selection with every requested method (``lapelens.methods``; one ``neurons_NAME``
   stage each, per-sentence means for AP in ``sentences``);
3. every experiment of ``lapelens.evaluate`` (``EXPERIMENTS``, in their order: Table 3 and Fig. 5,
   the PPL-change matrices of Fig. 2, 3 and 8, the sweep of Fig. 4, SES and dominance of Fig. 6
   and 7, steering, Kojima's pinning and generation under deactivation), each a stage (or one per
   method) of ``lapelens.stages``;

and writes each result plus its figures to ``out`` (HTML, PNG, SVG), its tables to
``out/tables`` and its summary entries to ``summary.json``. ``ReproduceConfig`` holds the
pipeline's own settings and every experiment's (``Setting``); all are checked before the first
stage. ``config.json`` (the settings, and every stage's fingerprint), ``summary.json``,
``tables/`` and ``figures/`` describe one complete run: they are removed when a run starts and
written when it ends. ``lapelens.load(out)`` reads the run back (``lapelens.run.Run``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, make_dataclass, replace
from pathlib import Path
from typing import Any

import torch

from lapelens._io import atomic_write_text
from lapelens.activations import collect, collect_sentence_means
from lapelens.artifacts import stamp
from lapelens.checkpoint import current_shard, leave_process_group
from lapelens.checks import check_device, check_languages, check_model_name, check_positive, check_rate
from lapelens.constants import EMBEDDED, PAPER_LANGUAGES, RUN_CONFIG, RUN_SUMMARY
from lapelens.corpus import FLORES, FLORES_CODES, WIKIPEDIA, corpus_languages, load_corpus, load_parallel
from lapelens.defaults import DEFAULT_CHECKPOINT_EVERY, SEQ_LEN, defaults_for
from lapelens.errors import LapelensError
from lapelens.evaluate import EXPERIMENTS, Context, Experiment, all_settings
from lapelens.evaluate._registry import RECORDED, flag
from lapelens.evaluate.perplexity import evaluation_chunks
from lapelens.figures import write_figure
from lapelens.lock import OUTPUT
from lapelens.methods import METHODS, identify
from lapelens.methods.pv import tune_per_language
from lapelens.models import DTYPES, embedded_model_dir, load_model
from lapelens.neurons import LanguageNeurons
from lapelens.parameters import ParameterMask
from lapelens.pretrained import MODEL_HELP  # noqa: F401 (named in a help text)
from lapelens.provenance import corpus_identity, model_identity, parallel_identity
from lapelens.run import Run  # noqa: F401 (registers the "run" kind its config.json is stamped with)
from lapelens.stages import StageCache
from lapelens.stats import ActivationStats, SentenceActivations

#: Every registered method, in registry order (the default of ``--methods``).
METHOD_NAMES = tuple(METHODS)
#: Folder the stats stage keeps ``collect``'s checkpoints in while it runs (removed once it is saved).
STATS_CHECKPOINT = "stats.checkpoint"
#: Written at the end of a run; removed at its start (they describe the whole run).
RUN_FILES = (RUN_CONFIG, RUN_SUMMARY)
RUN_FOLDERS = ("tables", "figures")
#: ``--quick``: the budgets it lowers of the pipeline's own settings (an experiment's ``Setting``
#: says its own; an explicit flag keeps its value).
CORE_QUICK = dict(tokens_per_language=40_000, eval_tokens_per_language=4096, ap_sentences=60, ap_k=30, pv_steps=4)


@dataclass
class BaseConfig:
    """What to run and how big: the pipeline's own settings (``ReproduceConfig`` adds every
    experiment's). The defaults are sized for the embedded model on 2 CPU cores."""

    out: str = field(metadata=OUTPUT)
    """Folder for every result, figure and the summary."""
    model: str = EMBEDDED
    """Model: {MODEL_HELP}."""
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
    def quick(cls, out: str, **overrides: Any) -> "BaseConfig":
        """A smaller run (notebooks, CI): small budgets, same code path, noisier numbers."""
        return cls(out=out, **{**quick_settings(), **overrides})

    def resolved(self) -> "BaseConfig":
        """The same settings with every default that depends on others filled in (what ``config.json`` records)."""
        d = defaults_for(self.model)
        filled = {
            s.name: s.resolve(self)
            for s in all_settings().values()
            if s.resolve is not None and getattr(self, s.name, None) is None
        }
        return replace(
            self,
            top_rate=d.top_rate if self.top_rate is None else self.top_rate,
            **filled,
            languages=tuple(self.languages),
            methods=tuple(self.methods),
        )


_CONFIGS: dict[tuple, type] = {}  # settings (kept alive by the key) -> their class
_CONFIG_DOC = """What to run and how big: the pipeline's own settings and every registered experiment's.
The defaults are sized for the embedded model on 2 CPU cores."""


def reproduce_config() -> type:
    """``ReproduceConfig``: ``BaseConfig`` plus one field per registered experiment setting.

    Made again when the registry changes (``lapelens.ReproduceConfig`` is always the current one):
    an experiment registered later, as a test's toy experiment, gets its flags too.
    """
    settings = all_settings()
    key = tuple(settings.values())  # Setting compares by identity (eq=False): a setting replaced is a new key
    if key not in _CONFIGS:
        core = {f.name for f in fields(BaseConfig)}
        taken = [name for name in settings if name in core]
        if taken:
            raise LapelensError(f"Experiment setting(s) {taken} are names of reproduce's own settings: rename them.")
        extra = [
            (
                s.name,
                s.value_type | None if s.default is None else s.value_type,
                field(default=s.default, metadata={"help": s.help}),
            )
            for s in settings.values()
        ]
        cls = make_dataclass("ReproduceConfig", extra, bases=(BaseConfig,))
        cls.__module__, cls.__doc__ = __name__, _CONFIG_DOC
        _CONFIGS[key] = cls
    return _CONFIGS[key]


def quick_settings() -> dict[str, Any]:
    """``--quick``'s values: the pipeline's budgets, then each experiment setting's ``quick``."""
    return {**CORE_QUICK, **{s.name: s.quick for s in all_settings().values() if s.has_quick}}


def __getattr__(name: str) -> Any:
    # ReproduceConfig and QUICK follow the experiment registry (see reproduce_config).
    if name == "ReproduceConfig":
        return reproduce_config()
    if name == "QUICK":
        return quick_settings()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _pv_base_dir(model: str) -> Path | None:
    """The local HF folder PV fine-tunes copies of, or None when the model is not one."""
    base = embedded_model_dir() if model == EMBEDDED else Path(model).expanduser()
    return base if (base / "config.json").is_file() else None  # an HF model folder's config


def validate(cfg: BaseConfig) -> BaseConfig:
    """Check every setting (cheaply, before any model is loaded); returns ``cfg.resolved()`` (a
    config of an older ``ReproduceConfig`` class gets the settings of experiments registered since)."""
    current = reproduce_config()
    if type(cfg) is not current:
        cfg = current(**{f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name in current.__dataclass_fields__})
    cfg = cfg.resolved()
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise LapelensError(f"--methods: unknown method(s) {', '.join(unknown)}; choose from {','.join(METHODS)}.")
    if not cfg.methods:
        raise LapelensError(f"--methods is empty: give one or more of {','.join(METHODS)}.")
    check_languages(cfg.methods, "--methods")
    check_languages(
        cfg.languages,
        "--languages",
        minimum=2,
        why="LAPE compares languages (its entropy over one language means nothing): give at least two",
    )
    check_rate(cfg.top_rate, "--top-rate")
    check_positive(cfg.seq_len, "--seq-len", minimum=2)
    for name in ("tokens_per_language", "eval_tokens_per_language"):
        value = getattr(cfg, name)
        check_positive(value, flag(name))
        if value < cfg.seq_len:
            raise LapelensError(
                f"{flag(name)} {value} is less than one chunk of --seq-len {cfg.seq_len}: "
                f"give at least {cfg.seq_len} (or a smaller --seq-len)."
            )
    for name in ("ap_sentences", "ap_k", "pv_steps"):
        check_positive(getattr(cfg, name), flag(name))
    for setting in all_settings().values():
        if setting.check is not None:
            setting.check(getattr(cfg, setting.name), flag(setting.name), cfg)
    check_device(cfg.device)
    if cfg.dtype not in DTYPES:
        raise LapelensError(f"--dtype {cfg.dtype} is not supported: use one of {', '.join(DTYPES)}.")
    check_model_name(cfg.model)
    tuning = [m for m in cfg.methods if METHODS[m].source == "models"]
    if tuning and _pv_base_dir(cfg.model) is None:
        others = [m for m in cfg.methods if m not in tuning]
        fix = (
            f"to run the other methods on it, add --methods {','.join(others)}"
            if others
            else "pass a local HF folder as --model"
        )
        raise LapelensError(
            f"method {tuning[0]} fine-tunes copies of the model, so it needs --model as a local HF folder "
            f"(got {cfg.model!r}; --methods includes it{' by default' if cfg.methods == METHOD_NAMES else ''}): {fix}."
        )
    # Corpora: bad names and language codes fail here, before the slow model load.
    load_corpus(cfg.corpus, split="valid", languages=list(cfg.languages))
    if cfg.corpus != WIKIPEDIA:  # the train split of Wikipedia is streamed only when it is needed
        load_corpus(cfg.corpus, split="train", languages=list(cfg.languages))
    if cfg.parallel == EMBEDDED:
        have = corpus_languages(EMBEDDED)
        missing = [l for l in cfg.languages if l not in have]
        if missing:  # the parallel texts are embedded by default, whatever --corpus is
            fix = (
                "pass --parallel flores (FLORES-200, from the Hugging Face hub)"
                if all(l in FLORES_CODES for l in missing)
                else f"leave {','.join(missing)} out of --languages"
            )
            raise LapelensError(
                f"--parallel embedded (the default: aligned texts for SES, dominance and prompted steering) "
                f"has no {','.join(missing)} (it has {','.join(have)}): {fix}."
            )
        load_parallel(cfg.parallel, split="valid", languages=list(cfg.languages))
    elif cfg.parallel == FLORES:
        missing = [l for l in cfg.languages if l not in FLORES_CODES]
        if missing:
            raise LapelensError(
                f"--parallel flores has no code for {', '.join(missing)}: leave them out of --languages."
            )
    else:
        raise LapelensError(f"--parallel {cfg.parallel!r} is unknown: use {EMBEDDED} or {FLORES}.")
    return cfg


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


def _method_stages(
    cfg: BaseConfig,
    stage: Callable[..., Any],
    inputs: Callable[..., dict],
    stats: Any,
    model: Any,
    out: Path,
    train_id: dict,
    langs: list[str],
) -> dict[str, Any]:
    """The selection of every method in ``cfg.methods`` (in that order), each a stage ``neurons_NAME``.

    Computed in registry order, with the methods they reference (random: LAPE) before them. A
    stage reads the input its method declares: ``stats`` (stage 1), ``sentences`` (per-sentence
    means, a stage of its own, made once) or ``models`` (copies tuned per language inside the
    stage); a method with a reference depends on the reference's stage instead of its input's.
    """
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
            sources["sentences"] = stage(
                "sentences",
                {**inputs(ap_sentences=cfg.ap_sentences), "corpus": train_id},
                sentence_means,
                SentenceActivations.load,
                lambda r, p: r.save(p),
            )
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
        neurons[name] = stage(
            spec.stage, {**inputs(depends, **settings), **extra}, compute, load, lambda r, p: r.save(p)
        )
    return {m: neurons[m] for m in cfg.methods if m in neurons}


def _write_figure(fig: Any, path: Path) -> None:
    """``path`` as HTML (offline: plotly.min.js beside it), PNG and SVG (needs Chromium)."""
    write_figure(fig, path)


def reproduce(cfg: BaseConfig, log: Callable[[str], None] = print) -> dict:
    """Run the pipeline; returns the headline numbers (also written to ``summary.json``).

    Under ``torchrun`` every rank counts its share of the statistics, then all ranks leave the
    default process group (it is destroyed) and rank 0 alone runs the later stages; the other
    ranks return ``{}``.
    """
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
    langs = list(cfg.languages)
    model = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx and cfg.seq_len > n_ctx:
        raise LapelensError(
            f"--seq-len {cfg.seq_len} is longer than the model's context of {n_ctx} tokens: "
            f"give --seq-len {n_ctx} or less."
        )
    # What every stage is computed from, besides the stages it reads.
    model_id = model_identity(cfg.model)
    if cfg.dtype != "float32":  # float32 runs keep the fingerprints they always had
        model_id["dtype"] = cfg.dtype
    stage = StageCache(out, log, cfg.seed, lead, identity={"model": model_id, "languages": langs})
    train_id = corpus_identity(cfg.corpus, "train", langs)
    parallel_split = "valid" if cfg.parallel == EMBEDDED else "all"
    texts = {
        "eval_corpus": {
            **corpus_identity(cfg.corpus, "valid", langs),
            "tokens_per_language": cfg.eval_tokens_per_language,
            "seq_len": cfg.seq_len,
        },
        "parallel": parallel_identity(cfg.parallel, parallel_split),
    }

    # 1. statistics -------------------------------------------------------------------------
    stats_inputs = {
        **stage.inputs(tokens_per_language=cfg.tokens_per_language, seq_len=cfg.seq_len),
        "corpus": train_id,
    }
    stats = stage(
        "stats",
        stats_inputs,
        lambda: _collect_resumably(
            out,
            stage.fingerprints["stats"],
            lambda checkpoint: collect(
                model,
                load_corpus(cfg.corpus, split="train", languages=langs),
                tokens_per_language=cfg.tokens_per_language,
                seq_len=cfg.seq_len,
                corpus=cfg.corpus,
                checkpoint=checkpoint,
                checkpoint_every=cfg.checkpoint_every,
            ),
            lead,
        ),
        ActivationStats.load,
        lambda r, p: r.save(p),
    )
    # Under torchrun the other ranks only help count the statistics: once rank 0 saved them, all
    # ranks leave the process group together and rank 0 goes on alone.
    leave_process_group()
    if not lead:
        return {}
    shutil.rmtree(out / STATS_CHECKPOINT, ignore_errors=True)

    # 2. methods: one stage per registered method in --methods (and the methods they reference) ---
    selections = _method_stages(cfg, stage, stage.inputs, stats, model, out, train_id, langs)

    # 3. experiments: each a stage (or one per method), its tables, summary entries and figures ------
    ctx = Context(
        cfg,
        model,
        stats,
        selections,
        chunks=lambda: evaluation_chunks(model, cfg.corpus, langs, cfg.eval_tokens_per_language, cfg.seq_len),
        parallel=lambda: load_parallel(cfg.parallel, split=parallel_split, languages=langs),
    )
    (out / "tables").mkdir(exist_ok=True)
    summary: dict[str, Any] = {"model": cfg.model, "languages": langs}
    for exp in EXPERIMENTS.values():
        why = exp.missing(list(selections))
        if why is None and exp.runs_if is not None and not exp.runs_if(cfg):
            why = "its settings turn it off"
        if why is not None:
            log(f"[reproduce] {exp.name}: skipped ({why})")
            continue
        result = _run(exp, ctx, stage, texts)
        for name, table in (exp.tables(result) if exp.tables else {}).items():
            table.to_csv(out / "tables" / name)
        summary.update(exp.summary(result) if exp.summary else {})
        for name, fig in exp.draw(result).items():
            _write_figure(fig, out / "figures" / f"{name}.html")

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


def _run(exp: Experiment, ctx: Context, stage: StageCache, texts: dict[str, dict]) -> Any:
    """The experiment's result: computed (or reused) as its stage, one per method for a per-method one."""
    if not exp.cached:
        return exp.compute(ctx)
    reads = [r.rstrip("?") for r in exp.reads]
    depends = [d for r in reads for d in _stages_read(r, ctx)]
    recorded = {RECORDED[r]: texts[RECORDED[r]] for r in reads if r in RECORDED}
    settings = exp.settings_record(ctx.cfg)

    def run(method: str | None = None) -> Any:
        own = (METHODS[method].stage,) if method is not None else ()
        inputs = {**stage.inputs((*own, *depends), **settings), **recorded}
        compute = (lambda: exp.compute(ctx, method)) if method is not None else (lambda: exp.compute(ctx))
        return stage(exp.stage(method), inputs, compute, exp.result.load, lambda r, p: r.save(p))

    if exp.per_method:
        return {m: run(m) for m in ctx.selections}
    return run()


def _stages_read(read: str, ctx: Context) -> tuple[str, ...]:
    """The stages whose fingerprints a stage that reads ``read`` records."""
    if read == "stats":
        return ("stats",)
    if read == "selections":
        return tuple(METHODS[m].stage for m in ctx.selections)
    if read in ("primary", "baseline", "pinned"):
        method = ctx.role(read)
        return (METHODS[method].stage,) if method is not None else ()
    return ()
