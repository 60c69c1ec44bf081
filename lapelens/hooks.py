"""Hooks that edit or read MLP activations, and forward passes that stop early.

The edits every intervention is built from (``NeuronSpec`` says which hook holds what):

==================  ===============================  =========================================
edit                plain MLP                        gated MLP
==================  ===============================  =========================================
zero                ``hook_post[..., j] = 0``        ``hook_post[..., j] = 0``
set to value v      ``hook_post[..., j] = v``        ``hook_post[..., j] = v * hook_pre_linear[..., j]``
==================  ===============================  =========================================

i.e. "set" makes the neuron's *activation* ``act_fn(hook_pre)`` equal v; for gated MLPs the up
projection still multiplies it. There is one hook per touched layer, which edits all of that
layer's neurons at once with an index tensor. Masks reaching this module were checked against
the model by the caller (``Selection.on``, ``interventions.neuron_mask``).

A pass that only reads activations up to some layer ends there: :func:`layer_hooks` makes the
hook of the deepest layer stop the forward pass, and :func:`run_until` runs one such pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from lapelens.errors import LapelensError
from lapelens.models import NeuronSpec, neuron_spec
from lapelens.types import HookedModel


# ---- which neurons ---------------------------------------------------------------------------
def by_layer(mask: Bool[Tensor, "layer neuron"]) -> dict[int, Tensor]:
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
            raise LapelensError(
                f"{hook.name}: the up projection (hook_pre_linear) did not run before hook_post in this forward."
            )
        i = placed_idx.like(act)
        src = up.pop("t").index_select(-1, i) * placed_val.like(act)
        return act.index_copy(-1, i, src)

    return keep_up, set_post


@contextmanager
def with_hooks(model: HookedModel, fwd_hooks: list) -> Iterator[Any]:
    """``model.hooks(fwd_hooks)``; no context level at all when there is nothing to hook."""
    if not fwd_hooks:  # nothing to do (e.g. a language without neurons)
        yield model
        return
    with model.hooks(fwd_hooks=fwd_hooks):
        yield model


# ---- edits of a checked mask -------------------------------------------------------------------
def zeroed(model: HookedModel, mask: Bool[Tensor, "layer neuron"]) -> AbstractContextManager:
    """Deactivate the neurons of a mask already checked against ``model``."""
    return with_hooks(model, [(NeuronSpec.hook_post(i), _zero_hook(idx)) for i, idx in by_layer(mask).items()])


def set_to(
    model: HookedModel, mask: Bool[Tensor, "layer neuron"], values: float | int | Tensor
) -> AbstractContextManager:
    """Set the activation of the neurons of a mask already checked against ``model`` to ``values``
    (same shape as ``mask``, read where it is True; or one number for all)."""
    spec = neuron_spec(model)
    if not isinstance(values, Tensor):
        values = torch.full(mask.shape, float(values))
    if not bool(torch.isfinite(values[mask]).all()):
        raise LapelensError("set_activations: some values of the selected neurons are NaN or infinite.")
    values = values.detach().cpu()
    hooks: list = []
    for i, idx in by_layer(mask).items():
        v = values[i, idx].float()
        if spec.gated:
            keep_up, set_post = _set_gated_hooks(idx, v)
            hooks += [(NeuronSpec.hook_pre_linear(i), keep_up), (NeuronSpec.hook_post(i), set_post)]
        else:
            hooks.append((NeuronSpec.hook_post(i), _set_plain_hook(idx, v)))
    return with_hooks(model, hooks)


# ---- reading up to a layer ---------------------------------------------------------------------
class _Stop(Exception):
    """Raised by the hook of the deepest layer a pass reads: nothing after it (later blocks, the
    unembedding) is needed."""


def layer_hooks(names: Mapping[int, str], take: Callable[[int, Tensor], None]) -> list[tuple[str, Any]]:
    """One hook per ``{layer: hook name}`` calling ``take(layer, activation)``; the hook of the
    deepest layer then stops the forward pass (run it with :func:`run_until`)."""
    last = max(names)

    def make(layer: int):
        def hook(act: Tensor, hook: Any) -> None:
            take(layer, act)
            if layer == last:
                raise _Stop

        return hook

    return [(name, make(layer)) for layer, name in names.items()]


def run_until(model: HookedModel, tokens: Int[Tensor, "batch pos"], **kwargs: Any) -> None:
    """``model(tokens)`` under hooks of :func:`layer_hooks`, up to the deepest hooked layer."""
    try:
        model(tokens, return_type=None, **kwargs)
    except _Stop:
        return
    raise RuntimeError("The deepest hooked layer never ran: the model's hooks are not wired as expected.")
