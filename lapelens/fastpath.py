"""The plain Hugging Face computation for the parts of a bridge that nobody is looking into.

**Attention.** TransformerLens forces eager attention on every bridge and recomputes attention
step by step, so that ``hook_attn_scores`` and ``hook_pattern`` can fire: the scores and the
softmax are materialised as ``batch x heads x pos x pos`` tensors in every layer. When no hook
reads or edits anything inside a layer's attention -- lapelens' own hooks sit on the MLPs -- that
is pure overhead (on a 576-wide model at 256 tokens, about a tenth of the forward).
:func:`use_sdpa` switches a bridged model's Hugging Face attention to ``"sdpa"`` and wraps the
forward of its attention bridges: an attention bridge with no hook on any hook point inside it
(``hook_in``, ``hook_q`` ... ``hook_pattern``, ``hook_z``, ``hook_out``), no processed weights
and no compatibility mode runs the wrapped Hugging Face module itself, with fused attention --
the same computation as the plain Hugging Face model. As soon as one of its hook points carries
a hook (``run_with_cache``, a patching experiment), that layer runs TransformerLens' own
attention again, on the same mask, and every hook in it fires as with eager attention. Models
whose Hugging Face class has no SDPA path (BLOOM), or whose attention bridge hands the attention
to Hugging Face instead of computing it (OPT's: its ``hook_pattern`` reads the weights eager
attention returns), are left as they are. Fused and eager attention add in other orders: the
numbers differ at float rounding.

**Norms.** A normalisation bridge on Hugging Face's own norm computes the variance, the scale and
the normalised input for ``hook_scale`` and ``hook_normalized`` and then, when no hook changed
them, returns the Hugging Face norm of its input. :func:`skip_unobserved_norm_hooks` makes it skip
that work while neither hook point carries a hook: the same output, bit for bit.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from torch import nn

from lapelens.types import HookedModel

#: Marks a forward this module wrapped, so wrapping is idempotent.
_WRAPPED = "_lapelens_fastpath_wrapped"
#: attention bridge -> (its hook points, the bridges whose weights it computes with), found once.
_PARTS: "weakref.WeakKeyDictionary[nn.Module, tuple[list[nn.Module], list[nn.Module]]]" = weakref.WeakKeyDictionary()


def _attention_bridges(model: HookedModel) -> list[nn.Module]:
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    return [m for m in model.modules() if isinstance(m, AttentionBridge)]


def _recomputes_attention(bridge: nn.Module) -> bool:
    """Bridges that compute the attention themselves, from whatever mask Hugging Face made (and
    their own causal mask when it made none): only they keep every hook when a layer is observed."""
    from transformer_lens.model_bridge.generalized_components.joint_qkv_attention import JointQKVAttentionBridge
    from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (
        PositionEmbeddingsAttentionBridge,
    )

    return type(bridge) in (PositionEmbeddingsAttentionBridge, JointQKVAttentionBridge)


def _parts(bridge: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    parts = _PARTS.get(bridge)
    if parts is None:
        from transformer_lens.hook_points import HookPoint

        hook_points = [m for m in bridge.modules() if isinstance(m, HookPoint)]
        components = [m for m in bridge.modules() if not isinstance(m, HookPoint)]
        parts = _PARTS[bridge] = (hook_points, components)
    return parts


def _observed(bridge: nn.Module) -> bool:
    """Whether anything must see or change what happens inside this attention."""
    hook_points, components = _parts(bridge)
    if _hooked(*hook_points):
        return True
    # Folded or centred weights live in the bridge, not in the Hugging Face module.
    return any(
        getattr(c, "compatibility_mode", False) or getattr(c, "_use_processed_weights", False) for c in components
    )


def _fused(hf_attention: nn.Module | None) -> bool:
    config = getattr(hf_attention, "config", None)
    return getattr(config, "_attn_implementation", None) == "sdpa"


def _wrap(forward: Callable[..., Any]) -> Callable[..., Any]:
    def fast_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        hf_attention = self._modules.get("_original_component")
        if hf_attention is not None and _fused(hf_attention) and not _observed(self):
            return hf_attention(*args, **kwargs)
        return forward(self, *args, **kwargs)

    setattr(fast_forward, _WRAPPED, True)
    fast_forward.__doc__ = forward.__doc__
    return fast_forward


def use_sdpa(model: HookedModel, enabled: bool = True) -> bool:
    """Let unobserved attention layers of ``model`` run fused (``enabled``), or TransformerLens'
    eager attention everywhere (``enabled=False``). Returns whether fused attention is on.

    Idempotent. A model whose Hugging Face class has no SDPA attention stays eager (returns False).
    """
    hf = getattr(model, "original_model", None)
    bridges = _attention_bridges(model)
    if hf is None or not bridges or not all(_recomputes_attention(b) for b in bridges):
        return False
    for cls in {type(b) for b in bridges}:
        if not getattr(cls.forward, _WRAPPED, False):
            cls.forward = _wrap(cls.forward)
    if enabled:
        try:
            hf.set_attn_implementation("sdpa")
        except (ValueError, ImportError, NotImplementedError):
            pass
    if not enabled or hf.config._attn_implementation != "sdpa":
        hf.set_attn_implementation("eager")
        return False
    return True


def skip_unobserved_norm_hooks(model: HookedModel) -> None:
    """Let every normalisation bridge of ``model`` that runs the Hugging Face norm skip computing
    ``hook_scale`` and ``hook_normalized`` while no hook is on them (its output is the same). Idempotent."""
    from transformer_lens.model_bridge.generalized_components.normalization import NormalizationBridge

    # The base class's forward: subclasses with a forward of their own keep it.
    if any(isinstance(m, NormalizationBridge) for m in model.modules()) and not getattr(
        NormalizationBridge.forward, _WRAPPED, False
    ):
        NormalizationBridge.forward = _wrap_norm(NormalizationBridge.forward)


def _hooked(*hook_points: nn.Module) -> bool:
    return any(
        hp._forward_hooks or hp._forward_pre_hooks or hp._backward_hooks or hp._backward_pre_hooks for hp in hook_points
    )


def _wrap_norm(forward: Callable[..., Any]) -> Callable[..., Any]:
    def fast_forward(self: Any, hidden_states: Any, **kwargs: Any) -> Any:
        norm = self._modules.get("_original_component")
        # The cases in which the bridge's own forward returns norm(hook_in(x)), cast back.
        native = self.use_native_layernorm_autograd or getattr(self.config, "layer_norm_folding", False)
        if (
            norm is None
            or not native
            or isinstance(norm, nn.Identity)
            or kwargs
            or _hooked(self.hook_scale, self.hook_normalized)
        ):
            return forward(self, hidden_states, **kwargs)
        x = self.hook_in(hidden_states)
        return self.hook_out(norm(x).to(x.dtype))

    setattr(fast_forward, _WRAPPED, True)
    fast_forward.__doc__ = forward.__doc__
    return fast_forward


def uses_sdpa(model: HookedModel) -> bool:
    """Whether ``model``'s unobserved attention layers run fused."""
    bridges = _attention_bridges(model)
    return bool(bridges) and all(_fused(b._modules.get("_original_component")) for b in bridges)
