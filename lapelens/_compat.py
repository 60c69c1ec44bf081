"""Work-arounds for version mismatches between TransformerLens and transformers.

**Cached generation ignores the context** (TransformerLens 4.3 with transformers >= 5.2x):
the bridge's attention reads the KV cache from the keyword ``past_key_values`` (or
``layer_past``), but the decoder layers of recent transformers pass it as ``cache=``. The cache
is then never read or filled, every decoding step after the first attends to the new token
alone, and ``model.generate`` (``use_past_kv_cache=True``, the default) returns text that does not
follow from the prompt, without any error. :func:`fix_bridge_kv_cache` hands ``cache`` on under
the name the bridge reads; it changes nothing when ``past_key_values`` is given.
"""

from __future__ import annotations

from typing import Any

_PATCHED = "_lapelens_reads_cache_kwarg"


def fix_bridge_kv_cache() -> bool:
    """Make the bridge's attention use a KV cache passed as ``cache=``; idempotent.

    Returns True if the patch is in place (now or from an earlier call), False if this
    TransformerLens has no ``AttentionBridge._update_kv_cache`` to patch.
    """
    try:
        from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge
    except ImportError:
        return False
    original = getattr(AttentionBridge, "_update_kv_cache", None)
    if original is None:
        return False
    if getattr(original, _PATCHED, False):
        return True

    def _update_kv_cache(self: Any, k: Any, v: Any, **kwargs: Any) -> Any:
        if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
            kwargs["past_key_values"] = kwargs["cache"]
        return original(self, k, v, **kwargs)

    setattr(_update_kv_cache, _PATCHED, True)
    _update_kv_cache.__doc__ = original.__doc__
    AttentionBridge._update_kv_cache = _update_kv_cache
    return True
