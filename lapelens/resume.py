"""A forward pass that starts at block ``l`` from a residual stream computed before.

An intervention on layers ``l`` and above leaves blocks ``0 .. l-1`` as they were, so the
residual stream entering block ``l`` is the unperturbed one: computed once (:func:`capture`)
it serves every intervention that starts there, and their forwards run only blocks ``l ..``
(:func:`starting_at`, :func:`forward_from`). For a neuron set in the top layers that is a
fraction of a forward; the losses are those of a full forward (the same tensors enter the same
blocks: equal up to kernels that round differently for other shapes, usually bit for bit).

TransformerLens' own ``start_at_layer`` injects the residual at block ``l`` but still computes
blocks ``0 .. l-1`` and throws them away. Here the blocks below ``l`` are taken out of the
Hugging Face layer list for the duration of the call (a pass-through stands in) and put back
afterwards, whatever happens; the residual is handed to block ``l`` as its input, so every hook
from ``blocks.{l}.hook_resid_pre`` on sees what a full forward would. Token ids (and an
attention mask, if any) are still passed: they set the positions and the mask, and the embedding
they cost is negligible. Hooks on blocks below ``l`` do not fire.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from lapelens.errors import LapelensError
from lapelens.hooks import layer_hooks, run_until
from lapelens.types import HookedModel


def first_layer(mask: Bool[Tensor, "layer neuron"]) -> int:
    """The lowest layer with a selected neuron (the number of layers if there is none): a forward
    that intervenes on ``mask`` can start there."""
    rows = mask.reshape(mask.shape[0], -1).any(dim=1).nonzero()
    return int(rows[0]) if len(rows) else int(mask.shape[0])


def _hook_name(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"


def capture(
    model: HookedModel, tokens: Int[Tensor, "batch pos"], layers: Sequence[int], **forward_kwargs: Any
) -> tuple[Any, dict[int, Float[Tensor, "batch pos d_model"]]]:
    """One forward of ``model(tokens, **forward_kwargs)`` (with whatever hooks are active, in the
    caller's grad mode); returns its output and the residual stream entering each of ``layers``
    (``hook_resid_pre``). With ``return_type=None`` nothing after the deepest of ``layers`` is read, so
    the forward stops there (:func:`lapelens.hooks.run_until`) and the output is None."""
    n_layers = _n_layers(model)
    wanted = sorted({int(l) for l in layers})
    if any(not 0 <= l < n_layers for l in wanted):
        raise LapelensError(f"Layers {wanted} are not all blocks of this {n_layers}-layer model.")
    saved: dict[int, Tensor] = {}

    def keep(layer: int, resid: Tensor) -> None:
        saved[layer] = resid.clone()  # a later in-place edit must not reach the copy

    handle = model.blocks[0].register_forward_hook(_record_output(model))  # for starting_at, free here
    try:
        if "return_type" in forward_kwargs and forward_kwargs["return_type"] is None:
            rest = {k: v for k, v in forward_kwargs.items() if k != "return_type"}
            with model.hooks(fwd_hooks=layer_hooks({l: _hook_name(l) for l in wanted}, keep)):
                run_until(model, tokens, **rest)
            return None, saved
        with model.hooks(fwd_hooks=[(_hook_name(l), lambda resid, hook, l=l: keep(l, resid)) for l in wanted]):
            out = model(tokens, **forward_kwargs)
    finally:
        handle.remove()
    return out, saved


@contextmanager
def starting_at(model: HookedModel, layer: int, residual: Float[Tensor, "batch pos d_model"]) -> Iterator[HookedModel]:
    """Inside the block, every forward of ``model`` starts at block ``layer`` with ``residual`` as
    the residual stream entering it; blocks below ``layer`` are not run. The forward must be
    over tokens of ``residual``'s batch and length."""
    n_layers = _n_layers(model)
    if not 0 <= layer < n_layers:
        raise LapelensError(f"Cannot start at layer {layer}: the model has blocks 0 .. {n_layers - 1}.")
    blocks = model.blocks
    layer_list = _hf_layer_list(model) if layer > 0 else None
    skip = _Skip(*_block_output(model)) if layer > 0 else None

    def inject(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        current = args[0] if args and isinstance(args[0], Tensor) else kwargs.get("hidden_states")
        if current is None or current.shape != residual.shape:
            got = None if current is None else tuple(current.shape)
            raise LapelensError(
                f"The residual to start at layer {layer} is {tuple(residual.shape)}, but this "
                f"forward's residual stream is {got}: pass the tokens it was captured on."
            )
        value = residual.to(device=current.device, dtype=current.dtype)
        if args and isinstance(args[0], Tensor):
            return (value,) + args[1:], kwargs
        return args, {**kwargs, "hidden_states": value}

    handle = blocks[layer].register_forward_pre_hook(inject, with_kwargs=True)
    originals = [layer_list[i] for i in range(layer)] if layer_list is not None else []
    try:
        for i in range(len(originals)):
            layer_list[i] = skip
        yield model
    finally:
        for i, block in enumerate(originals):
            layer_list[i] = block
        handle.remove()


def forward_from(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    layer: int,
    residual: Float[Tensor, "batch pos d_model"],
    **forward_kwargs: Any,
) -> Any:
    """``model(tokens, **forward_kwargs)`` started at block ``layer`` from ``residual`` (see
    :func:`starting_at`): the output of a full forward whose residual stream entering ``layer``
    is ``residual``."""
    with starting_at(model, layer, residual):
        return model(tokens, **forward_kwargs)


# ---- the Hugging Face layer list and what its blocks return ----------------------------------
class _Skip(nn.Module):
    """Stands in for a block below the start: hands its input on, in the shape blocks return."""

    def __init__(self, as_tuple: bool, length: int):
        super().__init__()
        self.as_tuple, self.length = as_tuple, length

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden,) + (None,) * (self.length - 1) if self.as_tuple else hidden


_LAYER_LISTS: "weakref.WeakKeyDictionary[Any, nn.ModuleList]" = weakref.WeakKeyDictionary()
_OUTPUTS: "weakref.WeakKeyDictionary[Any, tuple[bool, int]]" = weakref.WeakKeyDictionary()


def _n_layers(model: HookedModel) -> int:
    blocks = getattr(model, "blocks", None)
    if blocks is None or getattr(model, "original_model", None) is None:
        raise LapelensError(
            "Starting a forward at a layer needs a TransformerBridge (model.blocks over a Hugging "
            "Face model): load the model with lapelens.load_model."
        )
    return len(blocks)


def _hf_layer_list(model: HookedModel) -> nn.ModuleList:
    """The Hugging Face ``ModuleList`` the model's forward loops over (holding the bridge's blocks)."""
    found = _LAYER_LISTS.get(model)
    if found is None:
        blocks = list(model.blocks)
        for module in model.original_model.modules():
            if (
                isinstance(module, nn.ModuleList)
                and len(module) == len(blocks)
                and all(a is b for a, b in zip(module, blocks))
            ):
                found = _LAYER_LISTS[model] = module
                break
        else:
            raise LapelensError(
                f"Cannot find the layer list of {type(model.original_model).__name__} that holds the "
                "bridge's blocks: starting at a layer is not supported for this model."
            )
    return found


def _record_output(model: HookedModel):
    def hook(module: nn.Module, args: Any, out: Any) -> None:
        if model not in _OUTPUTS:
            _OUTPUTS[model] = (isinstance(out, tuple), len(out) if isinstance(out, tuple) else 1)

    return hook


def _block_output(model: HookedModel) -> tuple[bool, int]:
    """Whether a block returns a tuple (BLOOM's do) and how long: recorded by :func:`capture`, or
    else read off a one-token forward (before the caller's forward, with its hooks active)."""
    if model not in _OUTPUTS:
        handle = model.blocks[0].register_forward_hook(_record_output(model))
        try:
            with torch.inference_mode():
                model(torch.zeros(1, 1, dtype=torch.long, device=next(model.parameters()).device), return_type=None)
        finally:
            handle.remove()
    return _OUTPUTS[model]
