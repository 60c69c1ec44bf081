"""lapelens: find language-specific neurons (LAPE and baselines) and intervene on them."""

from importlib import import_module
from typing import Any

from lapelens._version import __version__  # noqa: F401 (public: lapelens.__version__)

# Public names -> the module that defines them. Imported on first use, so that
# `import lapelens` stays cheap and has no side effects. A public function must not share its
# name with a submodule: importing the submodule would rebind the package attribute to it.
# The experiments' functions are not listed: each experiment exports its own names
# (``lapelens.evaluate``'s registry), found when first asked for.
_EXPORTS = {
    "load_model": "lapelens.models",
    "neuron_spec": "lapelens.models",
    "NeuronSpec": "lapelens.models",
    "ActivationStats": "lapelens.stats",
    "LanguageNeurons": "lapelens.neurons",
    "ParameterMask": "lapelens.parameters",
    "LapelensError": "lapelens.errors",
    "collect": "lapelens.activations",
    "collect_sentence_means": "lapelens.activations",
    "PAPER_LANGUAGES": "lapelens.constants",
    "defaults_for": "lapelens.defaults",
    "load_corpus": "lapelens.corpus",
    "load_parallel": "lapelens.corpus",
    "identify": "lapelens.methods",
    "METHODS": "lapelens.methods",
    "EXPERIMENTS": "lapelens.evaluate",
    "load_neurons": "lapelens.neurons",
    "load": "lapelens.loader",
    "Run": "lapelens.run",
    # interventions (context managers)
    "deactivate": "lapelens.interventions",
    "set_activations": "lapelens.interventions",
    "steer": "lapelens.interventions",
    "pin_to_median": "lapelens.interventions",
    "zero_parameters": "lapelens.interventions",
    "reproduce": "lapelens.pipeline",
    "ReproduceConfig": "lapelens.pipeline",
    "explore": "lapelens.explorer",
    "train_model": "lapelens.embedded.train",
    "TrainConfig": "lapelens.embedded.train",
    "notebook_setup": "lapelens._notebook",
}

#: Public names whose defining module calls them something else.
_ALIASES = {"train_model": "train"}


def _experiment_exports() -> dict[str, Any]:
    return import_module("lapelens.evaluate").exported()


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), _ALIASES.get(name, name))
    if name == "__all__":
        return [*_EXPORTS, *_experiment_exports(), "__version__"]
    # A submodule being imported (``from lapelens import corpus``) is not a public name: asking
    # the registry for it would import every experiment while that submodule is half-initialized.
    if not name.startswith("_") and not _is_submodule(name):
        exported = _experiment_exports()
        if name in exported:
            return exported[name]
    raise AttributeError(f"module 'lapelens' has no attribute {name!r}")


def _is_submodule(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(f"{__name__}.{name}") is not None


def __dir__() -> list[str]:
    return sorted([*_EXPORTS, *_experiment_exports(), "__version__"])
