"""RS (Tang et al., 2024, §3.1): random neurons, as many per language as a reference set."""

from __future__ import annotations

import torch

from lapelens.errors import LapelensError
from lapelens.methods._common import check_stats, settings
from lapelens.methods._registry import register
from lapelens.methods.lape import lape
from lapelens.neurons import LanguageNeurons
from lapelens.stats import ActivationStats


@register(
    "random",
    source="stats",
    summary="Random neurons, as many per language as a reference set.",
    options={"seed": "seed of the draw (0)"},
    reference="lape",
    baseline=True,
    pipeline={"seed": "seed"},
    order=40,
)
def random_neurons(
    source: ActivationStats | LanguageNeurons,
    *,
    reference: LanguageNeurons | None = None,
    seed: int = 0,
) -> LanguageNeurons:
    """For each language, ``count`` neurons drawn uniformly without replacement over the model.

    ``count`` is the reference's number of neurons for that language. The reference defaults to
    ``source`` itself when it is a ``LanguageNeurons``, and to LAPE with the paper's defaults when
    it is ``ActivationStats`` (the paper's RS baseline matches LAPE's counts). Languages are drawn
    one after the other, in the reference's order, from one ``torch.Generator`` seeded with
    ``seed``: the same seed gives the same neurons. Different languages are drawn independently,
    so their random sets may overlap.
    """
    if isinstance(source, ActivationStats):
        check_stats(source)
        if reference is None:
            reference = lape(source)
        shape = (source.n_layers, source.d_mlp)
        if (reference.n_layers, reference.d_mlp) != shape:
            raise LapelensError(
                f"The reference neuron set is for a {reference.n_layers}x{reference.d_mlp} model, but the "
                f"statistics are of a {shape[0]}x{shape[1]} model: use a reference from the same model."
            )
        model = source.meta.get("model")
    elif isinstance(source, LanguageNeurons):
        if reference is None:
            reference = source
        elif (reference.n_layers, reference.d_mlp) != (source.n_layers, source.d_mlp):
            raise LapelensError(
                "The reference neuron set and the source neuron set come from models of different shapes."
            )
        model = source.meta.get("model")
    else:
        raise LapelensError(f"Random selection needs ActivationStats or LanguageNeurons, got {type(source).__name__}.")

    n_units = reference.n_layers * reference.d_mlp
    gen = torch.Generator().manual_seed(int(seed))
    mask = torch.zeros(len(reference.languages), n_units, dtype=torch.bool)
    for k in range(len(reference.languages)):
        count = int(reference.mask[k].sum())
        mask[k, torch.randperm(n_units, generator=gen)[:count]] = True
    meta = {
        "settings": settings(seed=int(seed), reference_method=reference.method),
        "model": model if model is not None else reference.meta.get("model"),
    }
    return LanguageNeurons(reference.languages, mask.reshape(-1, reference.n_layers, reference.d_mlp), "random", meta)
