"""Every name that lapelens writes to or reads from disk, and the paper's defaults, in one place."""

from typing import Final

#: The seven languages of Tang et al. (2024), in the order of the official mask files.
PAPER_LANGUAGES: Final = ("en", "zh", "fr", "es", "vi", "id", "ja")

# lapelens artifacts: tensors in safetensors, metadata in JSON next to them.
STATS_TENSORS: Final = "stats.safetensors"
STATS_META: Final = "stats.json"
NEURONS_TENSORS: Final = "neurons.safetensors"
NEURONS_META: Final = "neurons.json"
#: Parameter masks (the PV method selects parameters, not neurons).
PARAMS_TENSORS: Final = "params.safetensors"
PARAMS_META: Final = "params.json"
#: Per-sentence mean activations (the AP method's input).
SENTENCES_TENSORS: Final = "sentences.safetensors"
SENTENCES_META: Final = "sentences.json"
#: A perturbation (PPL-change) matrix: raw per-chunk numbers, derived table, metadata.
PERTURBATION_CHUNKS: Final = "chunks.csv"
PERTURBATION_TABLE: Final = "table.csv"
PERTURBATION_META: Final = "perturbation.json"
#: A selection-ratio sweep: a perturbation result in the same folder plus these two.
SWEEP_TABLE: Final = "sweep.csv"
SWEEP_META: Final = "sweep.json"
#: Sentence-embedding similarity (Fig. 6) and dominance (Fig. 7): ``{stem}{suffix}.csv`` + ``{stem}.json``.
SES_STEM: Final = "ses"
DOMINANCE_STEM: Final = "dominance"
SES_META: Final = f"{SES_STEM}.json"
DOMINANCE_META: Final = f"{DOMINANCE_STEM}.json"
#: Sentence embeddings per layer (``lapelens ses --embeddings-out``), to recompute SES without the model.
EMBEDDINGS_TENSORS: Final = "embeddings.safetensors"
EMBEDDINGS_META: Final = "embeddings.json"
#: Figures ``lapelens ses`` writes beside its CSVs.
SES_HTML: Final = f"{SES_STEM}.html"
DOMINANCE_HTML: Final = f"{DOMINANCE_STEM}.html"
#: A generation experiment (steering, deactivated generation, Kojima pinning).
GENERATION_SUMMARY: Final = "summary.csv"
GENERATION_SAMPLES: Final = "samples.jsonl"
GENERATION_META: Final = "generation.json"

# A `lapelens reproduce` run folder.
RUN_CONFIG: Final = "config.json"
RUN_SUMMARY: Final = "summary.json"
#: Marks a published run folder (``lapelens figures RUN_DIR --out DIR``): the run's results, tables and
#: figures without its statistics; ``lapelens.load`` reads it as a run.
RUN_PUBLISHED: Final = "published.json"
#: A run's tables, and its figures (a published folder keeps its figures at the top).
RUN_TABLES_DIR: Final = "tables"
RUN_FIGURES_DIR: Final = "figures"
STAGE_RECORD: Final = "stage.json"
#: Tables a run writes to ``tables/`` (besides one per generation stage, named after it).
RUN_TABLES: Final = {  # {method}: the primary method's name (``lapelens.methods.with_role``), "lape"
    "per_language": "{method}_per_language.csv",
    "per_layer": "{method}_per_layer.csv",
    "jaccard": "{method}_jaccard_between_languages.csv",
    "jaccard_vs_methods": "jaccard_{method}_vs_methods.csv",
    "perturbation_summary": "perturbation_summary.csv",
}
#: Row label of the unperturbed model in a perturbation matrix (PPL changes are measured against it).
UNPERTURBED: Final = "none"
#: How ``summary.json`` names a pair of languages (source, target): ``"en->zh"``.
PAIR_SEPARATOR: Final = "->"
#: ``lapelens perturb`` with several neuron sets: their side-by-side summary.
COMPARE_TABLE: Final = "compare.csv"

#: The lock a command holds on its output folder while it runs (``lapelens.lock``); beside a file
#: output ``F`` it is ``.F`` + this.
LOCK_FILE: Final = ".lapelens.lock"

#: A collection checkpoint: one file per rank inside the checkpoint folder.
CHECKPOINT_FILE: Final = "rank{rank}-of-{world}.safetensors"
#: Written into every folder converted from a GGUF file; its presence marks a finished conversion.
GGUF_SOURCE: Final = "lapelens_gguf_source.json"

# Files of the official RUCAIBox/Language-Specific-Neurons scripts.
OFFICIAL_ACTIVATION: Final = "activation.{lang}.train.{tag}"
#: Suffix of the official mask files (``torch.save`` of ``[language][layer] -> LongTensor``).
OFFICIAL_MASK_SUFFIX: Final = ".pth"

#: Name under which the model and corpus that ship inside the package are addressed.
EMBEDDED: Final = "embedded"
