"""Interventions on MLP neurons and on parameters, as context managers.

Each one adds hooks (or edits weights) on entry and removes them (or restores the weights
bit for bit) on exit, so they stack and work inside ``model.generate``::

    with deactivate(model, neurons, "fr"), steer(model, neurons, "es", stats):
        model.generate(...)

What each does to neuron j of layer i (``NeuronSpec`` says which hook holds what):

==================  ===============================  =========================================
intervention        plain MLP                        gated MLP
==================  ===============================  =========================================
deactivate          ``hook_post[..., j] = 0``        ``hook_post[..., j] = 0``
set to value v      ``hook_post[..., j] = v``        ``hook_post[..., j] = v * hook_pre_linear[..., j]``
==================  ===============================  =========================================

i.e. "set" makes the neuron's *activation* ``act_fn(hook_pre)`` equal v; for gated MLPs the up
projection still multiplies it. Hooks of several contexts on the same layer run in the order the
contexts were entered, each on the output of the previous one (a neuron that one context sets
and a later one deactivates ends up at 0). There is one hook per touched layer, which edits all
of that layer's neurons at once with an index tensor.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from typing import Any, Iterator, Mapping, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from lapelens.errors import LapelensError
from lapelens.methods.pv import ParameterMask
from lapelens.models import NeuronSpec, neuron_spec
from lapelens.neurons import LanguageNeurons
from lapelens.resume import first_layer
from lapelens.stats import ActivationStats
from lapelens.types import BoundSelection, HookedModel, Selection

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
            raise LapelensError(f"A neuron mask must be a bool tensor (layer, neuron); got {neurons.dtype} {tuple(neurons.shape)}.")
        mask, what = neurons, "neuron mask"
    neuron_spec(model).check_fits(mask.shape[0], mask.shape[1], what)
    return mask


def _by_layer(mask: Tensor) -> dict[int, Tensor]:
    """Layer -> LongTensor of that layer's selected neurons, for the layers that have any."""
    return {i: row.nonzero().flatten() for i, row in enumerate(mask.cpu()) if bool(row.any())}


class _Placed:
    """A tensor copied to an activation's device and dtype once, then reused on every forward."""

    def __init__(self, t: Tensor):
        self.t = t

    def like(self, act: Tensor) -> Tensor:
        if self.t.device != act.device or (self.t.is_floating_point() and self.t.dtype != act.dtype):
            self.t = self.t.to(device=act.device, dtype=act.dtype if self.t.is_floating_point() else self.t.dtype)
        return self.t


# ---- hook factories ----------------------------------------------------------------------------
# Edits are out of place (index_fill / index_copy, not their in-place forms): a hook registered
# earlier on the same point (run_with_cache, a probe) may hold a reference to the tensor, and an
# in-place edit would rewrite what it recorded.
def _zero_hook(idx: Tensor):
    placed = _Placed(idx)

    def hook(act: Tensor, hook: Any) -> Tensor:
        return act.index_fill(-1, placed.like(act), 0.0)

    return hook


def _set_plain_hook(idx: Tensor, values: Tensor):
    placed_idx, placed_val = _Placed(idx), _Placed(values)

    def hook(act: Tensor, hook: Any) -> Tensor:
        i = placed_idx.like(act)
        src = placed_val.like(act).expand(*act.shape[:-1], len(i))
        return act.index_copy(-1, i, src)

    return hook


def _set_gated_hooks(idx: Tensor, values: Tensor):
    """Two hooks: one keeps the up projection of this forward, the other uses it."""
    placed_idx, placed_val = _Placed(idx), _Placed(values)
    up: dict[str, Tensor] = {}

    def keep_up(act: Tensor, hook: Any) -> None:
        up["t"] = act

    def set_post(act: Tensor, hook: Any) -> Tensor:
        if "t" not in up:
            raise LapelensError(f"{hook.name}: the up projection (hook_pre_linear) did not run before hook_post in this forward.")
        i = placed_idx.like(act)
        src = up.pop("t").index_select(-1, i) * placed_val.like(act)
        return act.index_copy(-1, i, src)

    return keep_up, set_post


@contextmanager
def _with_hooks(model: HookedModel, fwd_hooks: list) -> Iterator[Any]:
    if not fwd_hooks:  # nothing to do (e.g. a language without neurons): no context level either
        yield model
        return
    with model.hooks(fwd_hooks=fwd_hooks):
        yield model


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
    with _zeroed(model, neuron_mask(model, neurons)):
        yield model


def _no_language(selection: Selection) -> str:
    raise LapelensError(f"Say whose {selection.unit} to use: pass a language (one of {list(selection.languages)}).")


def _zeroed(model: HookedModel, mask: Bool[Tensor, "layer neuron"]) -> AbstractContextManager:
    """Deactivate the neurons of a mask already checked against ``model``."""
    return _with_hooks(model, [(NeuronSpec.hook_post(i), _zero_hook(idx)) for i, idx in _by_layer(mask).items()])


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
    with _set(model, mask, values):
        yield model


def _set(model: HookedModel, mask: Bool[Tensor, "layer neuron"], values: float | int | Tensor) -> AbstractContextManager:
    """``set_activations`` for a mask already checked against ``model``."""
    spec = neuron_spec(model)
    if not isinstance(values, Tensor):
        values = torch.full(mask.shape, float(values))
    if not bool(torch.isfinite(values[mask]).all()):
        raise LapelensError("set_activations: some values of the selected neurons are NaN or infinite.")
    values = values.detach().cpu()
    hooks: list = []
    for i, idx in _by_layer(mask).items():
        v = values[i, idx].float()
        if spec.gated:
            keep_up, set_post = _set_gated_hooks(idx, v)
            hooks += [(NeuronSpec.hook_pre_linear(i), keep_up), (NeuronSpec.hook_post(i), set_post)]
        else:
            hooks.append((NeuronSpec.hook_post(i), _set_plain_hook(idx, v)))
    return _with_hooks(model, hooks)


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


def _parameters(model: HookedModel, masks: Mapping[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
    hf = getattr(model, "original_model", model)
    out = []
    for name, mask in masks.items():
        try:
            param = hf.get_parameter(name)
        except AttributeError:
            raise LapelensError(
                f"The model has no parameter {name!r}: the parameter mask was made for another architecture."
            ) from None
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(param.shape):
            raise LapelensError(
                f"The mask for {name!r} is {mask.dtype} {tuple(mask.shape)}, but the parameter is {tuple(param.shape)}: "
                "the parameter mask was made for a model of another size."
            )
        out.append((param, mask.to(param.device)))
    return out


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
        raise LapelensError(f"zero_parameters needs a ParameterMask or a dict of bool masks, got {type(masks).__name__}.")
    with _zeroed_entries(_parameters(model, masks)):
        yield model


@contextmanager
def _zeroed_entries(targets: Sequence[tuple[Tensor, Tensor]]) -> Iterator[None]:
    """Zero ``param[mask]`` for each (parameter, mask) pair, already checked; restore them on exit."""
    saved: list[tuple[Tensor, Tensor, Tensor]] = []
    try:
        with torch.no_grad():
            for param, mask in targets:
                saved.append((param, mask, param[mask].clone()))
                param.masked_fill_(mask, 0)
        yield
    finally:
        with torch.no_grad():
            for param, mask, old in reversed(saved):  # reversed: a parameter listed twice ends as it began
                param[mask] = old


# ---- selections bound to a model: checked once, trusted by every condition -----------------------
class BoundNeurons(BoundSelection):
    """A ``LanguageNeurons`` checked against one model (``neurons.on(model)``)."""

    def __init__(self, neurons: LanguageNeurons, model: HookedModel):
        neuron_spec(model).check_fits(neurons.n_layers, neurons.d_mlp, f"{neurons.method} neuron set")
        self.neurons, self.model, self.languages = neurons, model, neurons.languages
        self._checked_stats: list[ActivationStats] = []

    def mask(self, lang: Languages) -> Bool[Tensor, "layer neuron"]:
        """``lang``'s neurons (several languages: their union)."""
        langs = [lang] if isinstance(lang, str) else list(lang)
        return self.neurons.mask[[self.neurons.lang_index(l) for l in langs]].any(dim=0)

    def deactivate(self, lang: Languages) -> AbstractContextManager:
        return _zeroed(self.model, self.mask(lang))

    def first_layer(self, lang: Languages) -> int:
        return first_layer(self.mask(lang))

    def deactivate_mask(self, mask: Bool[Tensor, "layer neuron"]) -> AbstractContextManager:
        """Deactivate a mask derived from this set's masks (e.g. other languages' neurons minus the target's)."""
        return _zeroed(self.model, mask)

    def steer(self, lang: str, stats: ActivationStats, scale: float | int = 1.0) -> AbstractContextManager:
        """See :func:`steer`; the statistics are checked on first use."""
        if not any(s is stats for s in self._checked_stats):
            neuron_spec(self.model).check_fits(stats.n_layers, stats.d_mlp, "statistics")
            self._checked_stats.append(stats)
        mask = self.mask(lang)
        values = float(scale) * stats.mean_activation()[stats.lang_index(lang)]
        return _set(self.model, mask, values.float())

    def pin_to_median(self, lang: str) -> AbstractContextManager:
        """See :func:`pin_to_median`."""
        neurons = self.neurons
        if "median" not in neurons.values:
            raise LapelensError(
                f"The {neurons.method} neuron set has no 'median' values to pin to (it has {sorted(neurons.values) or 'none'}): "
                "use AP neurons from identify(sentences, 'ap')."
            )
        return _set(self.model, self.mask(lang), neurons.values["median"][neurons.lang_index(lang)])


class BoundParameters(BoundSelection):
    """A ``ParameterMask`` checked against one model (``masks.on(model)``): every parameter it names
    is found and has the mask's shape."""

    def __init__(self, masks: ParameterMask, model: HookedModel):
        self.masks, self.model, self.languages = masks, model, masks.languages
        per_language = {name: m[0] for name, m in masks.masks.items()}
        self._params = [param for param, _ in _parameters(model, per_language)]

    def deactivate(self, lang: Languages) -> AbstractContextManager:
        langs = [lang] if isinstance(lang, str) else list(lang)
        idx = [self.masks.lang_index(l) for l in langs]
        return _zeroed_entries([(param, m[idx].any(dim=0).to(param.device))
                                for param, m in zip(self._params, self.masks.masks.values())])
