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

# Files of the official RUCAIBox/Language-Specific-Neurons scripts.
OFFICIAL_ACTIVATION: Final = "activation.{lang}.train.{tag}"

#: Name under which the model and corpus that ship inside the package are addressed.
EMBEDDED: Final = "embedded"
