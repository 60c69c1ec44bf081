"""Interventions on MLP neurons and on parameters, as context managers.

Each one adds hooks (or edits weights) on entry and removes them (or restores the weights
bit for bit) on exit, so they stack and work inside ``model.generate``::

    with deactivate(model, neurons, "fr"), steer(model, neurons, "es", stats):
        model.generate(...)

Deactivating neuron j sets ``hook_post[..., j] = 0``; setting it to v makes its *activation*
``act_fn(hook_pre)`` equal v (for a gated MLP the up projection still multiplies it: see
``lapelens.hooks``). Hooks of several contexts on the same layer run in the order the contexts
were entered, each on the output of the previous one (a neuron that one context sets and a later
one deactivates ends up at 0). A selection is checked against the model once (``Selection.on``);
``neurons.BoundNeurons`` and ``parameters.BoundParameters`` hold the checked selection.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from lapelens.errors import LapelensError
from lapelens.hooks import set_to, zeroed
from lapelens.models import neuron_spec
from lapelens.neurons import LanguageNeurons
from lapelens.parameters import ParameterMask, parameters_of, zeroed_entries
from lapelens.stats import ActivationStats
from lapelens.types import HookedModel, Selection

Languages = str | Sequence[str]


# ---- which neurons -----------------------------------------------------------------------------
def neuron_mask(
    model: HookedModel,
    neurons: LanguageNeurons | Bool[Tensor, "layer neuron"],
    lang: Languages | None = None,
) -> Bool[Tensor, "layer neuron"]:
    """The (layer, neuron) mask an intervention acts on, checked against the model's shape.

    ``neurons`` is a ``LanguageNeurons`` with ``lang`` (one language, or several for their union),
    or a bool mask over (layer, neuron) itself.
    """
    if isinstance(neurons, LanguageNeurons):
        if lang is None:
            raise LapelensError(f"Say whose neurons to use: pass a language (one of {list(neurons.languages)}).")
        langs = [lang] if isinstance(lang, str) else list(lang)
        mask = neurons.mask[[neurons.lang_index(l) for l in langs]].any(dim=0)
        what = f"{neurons.method} neuron set"
    else:
        if neurons.dtype != torch.bool or neurons.ndim != 2:
            raise LapelensError(
                f"A neuron mask must be a bool tensor (layer, neuron); got {neurons.dtype} {tuple(neurons.shape)}."
            )
        mask, what = neurons, "neuron mask"
    neuron_spec(model).check_fits(mask.shape[0], mask.shape[1], what)
    return mask


# ---- public interventions ----------------------------------------------------------------------
@contextmanager
def deactivate(
    model: HookedModel,
    neurons: LanguageNeurons | Bool[Tensor, "layer neuron"],
    lang: Languages | None = None,
) -> Iterator[Any]:
    """Deactivate neurons (``hook_post[..., j] = 0``) inside the ``with`` block.

    ``deactivate(model, neurons, "fr")``, ``deactivate(model, neurons, ["fr", "es"])`` (union) or
    ``deactivate(model, mask)`` with a bool (layer, neuron) mask.
    """
    if isinstance(neurons, LanguageNeurons):
        with neurons.on(model).deactivate(lang if lang is not None else _no_language(neurons)):
            yield model
        return
    with zeroed(model, neuron_mask(model, neurons)):
        yield model


def _no_language(selection: Selection) -> str:
    raise LapelensError(f"Say whose {selection.unit} to use: pass a language (one of {list(selection.languages)}).")


@contextmanager
def set_activations(
    model: HookedModel,
    mask: Bool[Tensor, "layer neuron"],
    values: float | int | Float[Tensor, "layer neuron"],
) -> Iterator[Any]:
    """Set the activation ``act_fn(hook_pre)`` of the masked neurons to ``values`` (same shape as
    ``mask``, read where it is True; or one number for all).

    Plain MLP: ``hook_post[..., j] = v``. Gated MLP: ``hook_post[..., j] = v * hook_pre_linear[..., j]``,
    with the up projection of the same forward pass.
    """
    mask = neuron_mask(model, mask)
    with set_to(model, mask, values):
        yield model


@contextmanager
def steer(
    model: HookedModel,
    neurons: LanguageNeurons,
    lang: str,
    stats: ActivationStats,
    scale: float | int = 1.0,
) -> Iterator[Any]:
    """Activate ``lang``'s neurons (Tang et al., Tables 4 and 5).

    Each of ``lang``'s neurons gets the activation ``scale * mean_k``, where ``mean_k`` is
    ``stats.mean_activation()[lang, layer, neuron]``: the mean of ``act_fn(hook_pre)`` over all
    tokens of ``lang`` text in ``stats`` (firing or not). ``scale=1`` is the paper's setting.
    """
    with neurons.on(model).steer(lang, stats, scale):
        yield model


@contextmanager
def pin_to_median(model: HookedModel, neurons: LanguageNeurons, lang: str) -> Iterator[Any]:
    """Pin ``lang``'s neurons (Kojima et al.: its top-k and bottom-k AP neurons) to their median
    activation on ``lang`` text, ``neurons.values["median"]``."""
    with neurons.on(model).pin_to_median(lang):
        yield model


@contextmanager
def zero_parameters(
    model: HookedModel,
    masks: Any,
    lang: str | None = None,
) -> Iterator[Any]:
    """Zero parameter entries inside the ``with`` block (PV, Tang et al. §3.1); restored exactly on exit.

    ``masks`` is a ``ParameterMask`` with ``lang``, or ``{HF parameter name: bool mask}`` for
    ``model.original_model``. Only the masked entries are copied aside and written back.
    """
    if isinstance(masks, ParameterMask):
        with masks.on(model).deactivate(lang if lang is not None else _no_language(masks)):
            yield model
        return
    if not isinstance(masks, Mapping):
        raise LapelensError(
            f"zero_parameters needs a ParameterMask or a dict of bool masks, got {type(masks).__name__}."
        )
    with zeroed_entries(parameters_of(model, masks)):
        yield model
