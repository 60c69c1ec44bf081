"""lapelens: find language-specific neurons (LAPE and baselines) and intervene on them."""

from importlib import import_module
from typing import Any

from lapelens._version import __version__

# Public names -> the module that defines them. Imported on first use, so that
# `import lapelens` stays cheap and has no side effects. A public function must not share its
# name with a submodule: importing the submodule would rebind the package attribute to it.
_EXPORTS = {
    "load_model": "lapelens.models",
    "neuron_spec": "lapelens.models",
    "NeuronSpec": "lapelens.models",
    "ActivationStats": "lapelens.stats",
    "LanguageNeurons": "lapelens.neurons",
    "LapelensError": "lapelens.errors",
    "collect": "lapelens.activations",
    "collect_sentence_means": "lapelens.activations",
    "PAPER_LANGUAGES": "lapelens.constants",
    "defaults_for": "lapelens.defaults",
    "load_corpus": "lapelens.corpus",
    "load_parallel": "lapelens.corpus",
    "identify": "lapelens.methods",
    "METHODS": "lapelens.methods",
    "load_neurons": "lapelens.neurons",
    "load": "lapelens.artifacts",
    # interventions (context managers)
    "deactivate": "lapelens.interventions",
    "set_activations": "lapelens.interventions",
    "steer": "lapelens.interventions",
    "pin_to_median": "lapelens.interventions",
    "zero_parameters": "lapelens.interventions",
    # experiments
    "evaluation_chunks": "lapelens.evaluate.perplexity",
    "perturbation_matrix": "lapelens.evaluate.perplexity",
    "compare_perturbations": "lapelens.evaluate.perplexity",
    "selection_ratio_sweep": "lapelens.evaluate.sweep",
    "Sampling": "lapelens.evaluate.generation",
    "unconditional_steering": "lapelens.evaluate.generation",
    "prompted_steering": "lapelens.evaluate.generation",
    "kojima_pinning": "lapelens.evaluate.generation",
    "generation_under_deactivation": "lapelens.evaluate.generation",
    "sentence_embeddings": "lapelens.evaluate.embeddings",
    "SentenceEmbeddings": "lapelens.evaluate.embeddings",
    "reproduce": "lapelens.pipeline",
    "explore": "lapelens.explorer",
    "ReproduceConfig": "lapelens.pipeline",
    "train_model": "lapelens.embedded.train",
    "TrainConfig": "lapelens.embedded.train",
    "notebook_setup": "lapelens._notebook",
}

#: Public names whose defining module calls them something else.
_ALIASES = {"compare_perturbations": "compare", "train_model": "train"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), _ALIASES.get(name, name))
    raise AttributeError(f"module 'lapelens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*_EXPORTS, "__version__"])


__all__ = [*_EXPORTS, "__version__"]
