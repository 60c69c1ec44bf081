"""Where the primary method's neurons are (Tang et al., Table 3 and Fig. 5, Tables 6 and 8-10).

Neurons per language and per layer (the skewed U shape), the overlap between languages, and how
the other methods' neuron sets agree with it. Read off the selections a run already holds, so it
is never saved as a stage of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lapelens.constants import RUN_TABLES
from lapelens.evaluate._registry import Context, experiment
from lapelens.neurons import LanguageNeurons


@dataclass
class NeuronLayout:
    """The primary method's ``neurons``, beside the other methods' neuron sets."""

    method: str
    neurons: LanguageNeurons
    others: dict[str, LanguageNeurons] = field(default_factory=dict)

    def agreement(self) -> pd.DataFrame | None:
        """Jaccard index of each language's neurons with every other method's (rows: languages)."""
        if not self.others:
            return None
        return pd.DataFrame({m: self.neurons.compare(n)["jaccard"] for m, n in self.others.items()})

    def tables(self) -> dict[str, pd.DataFrame]:
        """The run's tables, by file name (``RUN_TABLES``)."""
        name = lambda key: RUN_TABLES[key].format(method=self.method)  # noqa: E731
        out = {
            name("per_language"): self.neurons.per_language(),
            name("per_layer"): self.neurons.per_layer(),
            name("jaccard"): self.neurons.jaccard(),
        }
        agreement = self.agreement()
        if agreement is not None:
            out[name("jaccard_vs_methods")] = agreement
        return out

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        agreement = self.agreement()
        if agreement is not None:
            out[f"jaccard_{self.method}_vs"] = agreement.mean().round(4).to_dict()
        out[f"{self.method}_per_language"] = self.neurons.per_language()["neurons"].to_dict()
        out[f"{self.method}_per_layer"] = self.neurons.per_layer().sum(axis=1).to_dict()
        return out

    def figure(self) -> Any:
        return self.neurons.figure()


@experiment(
    "layers",
    result=NeuronLayout,
    reads=("primary", "selections"),
    cached=False,
    figure="fig5_layers",
    tables=NeuronLayout.tables,
    summary=NeuronLayout.summary,
    paper="Table 3, Fig. 5",
    order=10,
)
def neuron_layout(ctx: Context) -> NeuronLayout:
    """The primary method's neurons per language and layer, and the other neuron sets' agreement."""
    method = ctx.role("primary")
    others = {m: n for m, n in ctx.selections.items() if m != method and isinstance(n, LanguageNeurons)}
    return NeuronLayout(method, ctx.selections[method], others)
