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

**Bookkeeping at every call.** A decoding step of a batch of a few sequences is a few milliseconds
of arithmetic, and the bridge's Python around it is a tenth of that: every block asks
``inspect.signature`` which keyword arguments its Hugging Face layer takes, and every component
enters Accelerate's ``align_module_device`` to fetch offloaded weights that are not offloaded.
:func:`cache_bridge_bookkeeping` makes a block remember the answer for the forward it asked about
(asked again when that forward is replaced) and lets a component whose module carries no
Accelerate hook call it directly: the same calls with the same arguments.

**Whole layers.** Even so, a block of the bridge makes several times the Python calls of the
Hugging Face layer it wraps (a component and two hook points around every projection and norm,
the block's own checks), which at two threads cost a greedy decoding step of ten sequences on
SmolLM2 about a seventh of its time. :func:`run_quiet_layers_plain` lets a block in which nothing
is hooked -- no hook on any hook point or bridge inside it, no processed weights, no compatibility
mode, no stop or start at that layer, fused attention -- run a copy of its Hugging Face layer whose
children are the Hugging Face modules themselves (the same parameters, buffers and hooks): the plain
Hugging Face computation, which is what the bridge computes there, bit for bit. A layer with a
hook anywhere inside it, or a component that does more than pass its input through hooks, runs
the bridge's way, every hook firing.
"""

from __future__ import annotations

import copy
import inspect
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
    for hp in hook_points:
        if hp._forward_hooks or hp._forward_pre_hooks or hp._backward_hooks or hp._backward_pre_hooks:
            return True
    return False


#: original component -> (its forward function, that forward's parameter names, whether it takes **kwargs).
_SIGNATURES: "weakref.WeakKeyDictionary[nn.Module, tuple[Any, tuple[str, ...], bool]]" = weakref.WeakKeyDictionary()


def _accepted(component: nn.Module) -> tuple[tuple[str, ...], bool]:
    """The parameter names of ``component.forward`` and whether it takes ``**kwargs``, found once per forward."""
    forward = component.forward
    key = getattr(forward, "__func__", forward)
    known = _SIGNATURES.get(component)
    if known is None or known[0] is not key:
        sig = inspect.signature(forward)
        var = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
        known = _SIGNATURES[component] = (key, tuple(sig.parameters), var)
    return known[1], known[2]


def _filter_kwargs_for_forward(self: Any, kwargs: dict[str, Any], num_positional_args: int = 0) -> dict[str, Any]:
    """TransformerLens' filter (the keywords the Hugging Face layer's forward takes, less those given
    by position), with that forward's signature looked up once instead of at every call."""
    component = self.original_component
    if component is None:
        return kwargs
    try:
        params, var = _accepted(component)
    except (ValueError, TypeError):
        return kwargs
    if var:
        return kwargs
    positional = set(params[:num_positional_args])
    return {k: v for k, v in kwargs.items() if k in params and k not in positional}


def _direct_call(call: Callable[..., Any]) -> Callable[..., Any]:
    def fast_call(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        component = self._modules.get("_original_component")
        if component is None or getattr(component, "_hf_hook", None) is None:  # nothing Accelerate would fetch
            return nn.Module.__call__(self, *args, **kwargs)
        return call(self, *args, **kwargs)

    setattr(fast_call, _WRAPPED, True)
    fast_call.__doc__ = call.__doc__
    return fast_call


def cache_bridge_bookkeeping() -> bool:
    """Patch the bridge's blocks and components as the module docstring says (idempotent); False
    when this TransformerLens has neither hook to patch."""
    try:
        from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
        from transformer_lens.model_bridge.generalized_components.block import BlockBridge
    except ImportError:
        return False
    patched = False
    if hasattr(BlockBridge, "_filter_kwargs_for_forward"):
        if not getattr(BlockBridge._filter_kwargs_for_forward, _WRAPPED, False):
            setattr(_filter_kwargs_for_forward, _WRAPPED, True)
            _filter_kwargs_for_forward.__wrapped_original__ = BlockBridge._filter_kwargs_for_forward
            BlockBridge._filter_kwargs_for_forward = _filter_kwargs_for_forward
        patched = True
    if "__call__" in vars(GeneralizedComponent):
        if not getattr(GeneralizedComponent.__call__, _WRAPPED, False):
            GeneralizedComponent.__call__ = _direct_call(GeneralizedComponent.__call__)
        patched = True
    return patched


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


# ---- whole layers ------------------------------------------------------------------------------
class _PlainLayer:
    """A block's Hugging Face layer with every bridge inside it replaced by the module it wraps,
    and what must be quiet for it to stand in for the block."""

    __slots__ = ("source", "layer", "modules", "components", "attentions", "copies", "wiring", "hf_modules")

    def __init__(self, block: nn.Module, modules: list[nn.Module]) -> None:
        from transformer_lens.hook_points import HookPoint
        from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge
        from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

        self.source = block._modules["_original_component"]
        # What the plain layer does not call: the bridges and their hook points. (Hooks on the Hugging
        # Face modules fire either way: a copy shares its original's hooks.)
        self.modules = [m for m in modules if isinstance(m, (GeneralizedComponent, HookPoint))]
        self.components = [m for m in self.modules if isinstance(m, GeneralizedComponent)]
        self.hf_modules = [m for m in modules if not isinstance(m, (GeneralizedComponent, HookPoint))]
        self.attentions = [c._modules["_original_component"] for c in self.components if isinstance(c, AttentionBridge)]
        self.copies: list[tuple[nn.Module, nn.Module]] = []
        self.layer = self._unbridged(self.source, {})
        # What the copy was made from: every bridge's and every copied module's children.
        wired = self.components + [module for _, module in self.copies]
        self.wiring = [(m, list(m._modules.values())) for m in wired]

    def current(self, block: nn.Module) -> bool:
        """Whether ``block`` still wraps the modules this copy was made from."""
        return block._modules.get("_original_component") is self.source and all(
            list(m._modules.values()) == children for m, children in self.wiring
        )

    def _unbridged(self, module: nn.Module, seen: dict[int, nn.Module]) -> nn.Module:
        """``module`` with its bridges replaced by what they wrap: itself if no bridge is below it,
        else a shallow copy (the same parameters, buffers and hooks) with unbridged children."""
        from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

        if id(module) in seen:
            return seen[id(module)]
        if isinstance(module, GeneralizedComponent):
            out = self._unbridged(module._modules["_original_component"], seen)
        else:
            children = {k: None if c is None else self._unbridged(c, seen) for k, c in module._modules.items()}
            if all(children[k] is c for k, c in module._modules.items()):
                out = module
            else:
                out = copy.copy(module)
                out.__dict__["_modules"] = children
                self.copies.append((out, module))
        seen[id(module)] = out
        return out

    def stands_in_for(self, block: nn.Module) -> bool:
        """Whether running :attr:`layer` computes what ``block`` would, every hook included (none fires)."""
        if _global_hooks():
            return False
        state = block.__dict__
        if state.get("_stop_at_layer_idx") is not None or state.get("_start_at_layer_idx") is not None:
            return False
        config = state.get("config")
        if config is not None and any(
            getattr(config, flag, False) for flag in ("use_split_qkv_input", "use_attn_in", "use_hook_mlp_in")
        ):
            return False
        if state.get("_use_hook_mlp_in", False):
            return False
        # The block's own capture hooks are inert while those flags are off.
        capture = {h.id for h in state.get("_capture_hook_handles", ())}
        for m in self.modules:
            if m._forward_hooks or m._backward_hooks or m._backward_pre_hooks:
                return False
            if m._forward_pre_hooks and not capture.issuperset(m._forward_pre_hooks):
                return False
        for c in self.components:
            own = c.__dict__
            if own.get("compatibility_mode") or own.get("_use_processed_weights") or own.get("_suppress_next_hook_in"):
                return False
        if not all(_fused(a) for a in self.attentions):
            return False
        if any("_hf_hook" in m.__dict__ for m in self.hf_modules):  # weights Accelerate places: the bridge's way
            return False
        for out, module in self.copies:
            out.__dict__["training"] = module.training
        return True


def _global_hooks() -> bool:
    from torch.nn.modules import module as m

    return bool(
        m._global_forward_hooks
        or m._global_forward_pre_hooks
        or m._global_backward_hooks
        or m._global_backward_pre_hooks
    )


def _passes_through(component: nn.Module) -> bool:
    """Whether a bridge component only wraps its Hugging Face module with hook points, when none is hooked."""
    from transformer_lens.model_bridge.generalized_components.block import BlockBridge
    from transformer_lens.model_bridge.generalized_components.gated_mlp import GatedMLPBridge
    from transformer_lens.model_bridge.generalized_components.linear import LinearBridge
    from transformer_lens.model_bridge.generalized_components.normalization import NormalizationBridge
    from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (
        PositionEmbeddingsAttentionBridge,
    )

    kind = type(component)
    original = component._modules.get("_original_component")
    if original is None:
        return False
    if kind in (BlockBridge, LinearBridge, GatedMLPBridge, PositionEmbeddingsAttentionBridge):
        return True
    if isinstance(component, NormalizationBridge) and kind.forward is NormalizationBridge.forward:
        native = component.use_native_layernorm_autograd or getattr(component.config, "layer_norm_folding", False)
        return bool(native) and not isinstance(original, nn.Identity)
    return False


#: block -> its plain layer (None: some component in it does more than hooks).
_PLAIN: "weakref.WeakKeyDictionary[nn.Module, _PlainLayer | None]" = weakref.WeakKeyDictionary()


def _plain_layer(block: nn.Module) -> _PlainLayer | None:
    plain = _PLAIN.get(block, False)
    if plain is False or (plain is not None and not plain.current(block)):
        from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

        modules = list(block.modules())
        passes = all(_passes_through(m) for m in modules if isinstance(m, GeneralizedComponent))
        plain = _PLAIN[block] = _PlainLayer(block, modules) if passes else None
    return plain


def _wrap_block(forward: Callable[..., Any]) -> Callable[..., Any]:
    def fast_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        plain = _plain_layer(self)
        if plain is None or not plain.stands_in_for(self):
            return forward(self, *args, **kwargs)
        kwargs = self._filter_kwargs_for_forward(kwargs, len(args))
        output = plain.layer(*args, **kwargs)
        return self._apply_output_hook(
            output, force_tuple_for_bare_tensor=self._is_standalone_hidden_state_call(args, kwargs)
        )

    setattr(fast_forward, _WRAPPED, True)
    fast_forward.__doc__ = forward.__doc__
    return fast_forward


def run_quiet_layers_plain() -> bool:
    """Let every block of the bridge in which nothing is hooked run as the plain Hugging Face layer
    (the module docstring says when); idempotent. False when this TransformerLens has no block bridge."""
    try:
        from transformer_lens.model_bridge.generalized_components.block import BlockBridge
    except ImportError:
        return False
    if not getattr(BlockBridge.forward, _WRAPPED, False):
        BlockBridge.forward = _wrap_block(BlockBridge.forward)
    return True
