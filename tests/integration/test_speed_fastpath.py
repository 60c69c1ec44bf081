"""lapelens.fastpath: unobserved attention runs fused and equals the plain Hugging Face model; an
attention hook brings TransformerLens' attention back, with its values; unobserved norm hooks are
not computed, and the output is the same bit for bit."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from lapelens import load_model
from lapelens.errors import LapelensError
from lapelens.fastpath import use_sdpa, uses_sdpa
from tiny import ARCHS

#: The Hugging Face classes with an SDPA path whose attention bridge computes attention itself.
FUSED = {"gpt2", "llama", "mistral", "qwen2"}


def _inputs():
    tokens = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(tokens)
    mask[0, :4] = 0  # left padding
    return tokens, mask


@pytest.mark.parametrize("arch", ARCHS)
def test_fused_attention_matches_hf_and_eager(tiny_dirs, arch):
    folder = tiny_dirs[arch]
    fused, eager = load_model(folder), load_model(folder, attention="eager")
    assert uses_sdpa(fused) == (arch in FUSED) and not uses_sdpa(eager)
    hf = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="sdpa" if arch in FUSED else "eager"
    ).eval()
    tokens, mask = _inputs()
    with torch.inference_mode():
        a, b = fused(tokens), eager(tokens)
        am, bm = fused(tokens, attention_mask=mask), eager(tokens, attention_mask=mask)
        ref = hf(tokens).logits
    torch.testing.assert_close(a, b, rtol=0, atol=2e-5)
    torch.testing.assert_close(am[0, 4:], bm[0, 4:], rtol=0, atol=2e-5)
    torch.testing.assert_close(am[1], bm[1], rtol=0, atol=2e-5)
    if arch in FUSED - {"gpt2"}:  # the same modules, the same kernels: bit for bit
        assert torch.equal(a, ref)
    else:
        torch.testing.assert_close(a, ref, rtol=0, atol=2e-5)


@pytest.mark.parametrize("arch", sorted(FUSED))
def test_an_attention_hook_brings_back_transformer_lens_attention(tiny_dirs, arch):
    fused, eager = load_model(tiny_dirs[arch]), load_model(tiny_dirs[arch], attention="eager")
    tokens, mask = _inputs()
    names = lambda n: n.endswith("hook_pattern") or n.endswith("hook_attn_scores")  # noqa: E731
    with torch.inference_mode():
        for kw in ({}, {"attention_mask": mask}):
            logits, cache = fused.run_with_cache(tokens, names_filter=names, **kw)
            ref_logits, ref = eager.run_with_cache(tokens, names_filter=names, **kw)
            assert torch.equal(logits, ref_logits)  # every layer is observed: eager everywhere
            for name in ref.cache_dict:
                assert torch.equal(cache[name], ref[name]), name
            if not kw:
                assert float(cache["blocks.0.attn.hook_pattern"].triu(1).abs().max()) == 0  # causal
    # One observed layer: that layer eager, the other fused -- the logits still agree.
    seen = []
    with (
        torch.inference_mode(),
        fused.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", lambda p, hook: seen.append(p.shape))]),
    ):
        out = fused(tokens)
    assert seen == [(2, fused.cfg.n_heads, 12, 12)]
    with torch.inference_mode():
        torch.testing.assert_close(out, eager(tokens), rtol=0, atol=2e-5)


def test_switching_back_and_forth(tiny_dirs):
    model = load_model(tiny_dirs["llama"])
    tokens, _ = _inputs()
    with torch.inference_mode():
        fused = model(tokens)
        assert use_sdpa(model, False) is False and not uses_sdpa(model)
        eager = model(tokens)
        assert use_sdpa(model) is True
        assert torch.equal(model(tokens), fused)
    assert not torch.equal(fused, eager)  # the two do round differently


def test_unknown_attention_is_refused():
    with pytest.raises(LapelensError, match="attention='flash' is unknown"):
        load_model("embedded", attention="flash")


@pytest.mark.parametrize("arch", ARCHS)
def test_unobserved_norm_hooks_are_skipped_with_the_same_output(tiny_dirs, arch):
    model = load_model(tiny_dirs[arch], attention="eager")
    tokens, mask = _inputs()
    scales = lambda n: n.endswith("hook_scale")  # noqa: E731
    with torch.inference_mode():
        for kw in ({}, {"attention_mask": mask}):
            skipped = model(tokens, **kw)
            observed, cache = model.run_with_cache(tokens, names_filter=scales, **kw)  # the bridge's own norm path
            assert torch.equal(skipped, observed)
            assert (
                len(cache.cache_dict) >= 2 * model.cfg.n_layers + 1
            )  # ln1, ln2 per block, ln_final (and BLOOM's embedding norm)


def test_cached_kwargs_filter_equals_transformer_lens_and_follows_a_new_forward(tiny_dirs):
    """The block's keyword filter with the signature cached gives TransformerLens' own answer,
    for every argument set, and reads the signature again when the layer's forward is replaced."""
    from transformer_lens.model_bridge.generalized_components.block import BlockBridge

    from lapelens.fastpath import _filter_kwargs_for_forward

    model = load_model(tiny_dirs["llama"])  # patches the bridge's classes
    original = BlockBridge.__dict__["_filter_kwargs_for_forward"].__wrapped_original__
    block = model.blocks[0]
    cases = [
        ({"attention_mask": 1, "position_ids": 2, "encoder_attention_mask": 3}, 0),
        ({"hidden_states": 0, "attention_mask": 1}, 1),  # given by position: dropped
        ({"not_a_parameter": 5}, 0),
    ]
    for kwargs, n in cases:
        assert _filter_kwargs_for_forward(block, dict(kwargs), n) == original(block, dict(kwargs), n)
    layer = block.original_component
    saved = layer.forward
    try:
        layer.forward = lambda hidden_states, only_this=None: hidden_states  # a forward with other parameters
        assert _filter_kwargs_for_forward(block, {"only_this": 1, "attention_mask": 2}, 1) == {"only_this": 1}
        layer.forward = lambda hidden_states, **kw: hidden_states  # takes anything
        assert _filter_kwargs_for_forward(block, {"x": 1, "attention_mask": 2}, 1) == {"x": 1, "attention_mask": 2}
    finally:
        layer.forward = saved
    for kwargs, n in cases:  # the layer's own forward again (LLaMA's takes **kwargs: everything passes)
        assert _filter_kwargs_for_forward(block, dict(kwargs), n) == original(block, dict(kwargs), n) == kwargs


def test_a_component_with_an_accelerate_hook_still_aligns_its_device(tiny_dirs, monkeypatch):
    """Only modules Accelerate hooked go through align_module_device; the others are called directly."""
    import transformer_lens.model_bridge.generalized_components.base as base

    calls = []
    real = base.align_module_device

    def spy(module, *a, **k):
        calls.append(module)
        return real(module, *a, **k)

    monkeypatch.setattr(base, "align_module_device", spy)
    tokens, _ = _inputs()
    with torch.inference_mode():
        ref = load_model(tiny_dirs["llama"])(tokens)
        assert calls == []  # no module carries an Accelerate hook
        model = load_model(tiny_dirs["llama"])
        q = model.blocks[0].attn.q.original_component
        q._hf_hook = object()  # what accelerate.hooks.add_hook_to_module sets, at loading
        out = model(tokens)
    assert calls and all(m is q for m in calls)  # that layer runs the bridge's way, q aligned
    assert torch.equal(out, ref)


#: Gated MLPs and rotary attention: layers that run as the plain Hugging Face layer while nothing is hooked in them.
PLAIN = ("llama", "mistral", "qwen2")


def _count_projections(monkeypatch) -> list:
    """Every call of a bridge's projection (``LinearBridge.forward``); a plain layer makes none."""
    from transformer_lens.model_bridge.generalized_components.linear import LinearBridge

    calls, forward = [], LinearBridge.forward

    def counting(self, *args, **kwargs):
        calls.append(self)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LinearBridge, "forward", counting)
    return calls


def _bridged(monkeypatch) -> None:
    """Every layer the bridge's way from now on (the reference)."""
    import lapelens.fastpath as fastpath

    monkeypatch.setattr(fastpath, "_plain_layer", lambda block: None)


@pytest.mark.parametrize("arch", ARCHS)
def test_quiet_layers_run_plain_with_the_same_logits_and_tokens(tiny_dirs, arch, monkeypatch):
    from lapelens.evaluate import generation as gen

    model = load_model(tiny_dirs[arch])
    calls = _count_projections(monkeypatch)
    tokens, mask = _inputs()
    prompts = gen.encode_prompts(model, ["The quick brown fox", "Le renard", ""], 10)
    sampling = gen.Sampling(max_new_tokens=6, seed=2)
    with torch.inference_mode():
        plain, plain_masked = model(tokens), model(tokens, attention_mask=mask)
        plain_calls = len(calls)
        plain_ids = gen.generate_ids(model, prompts, sampling)
        _bridged(monkeypatch)
        calls.clear()
        bridged, bridged_masked = model(tokens), model(tokens, attention_mask=mask)
        bridged_calls = len(calls)
        bridged_ids = gen.generate_ids(model, prompts, sampling)
    assert torch.equal(plain, bridged) and torch.equal(plain_masked, bridged_masked)
    assert plain_ids == bridged_ids
    if arch in PLAIN:  # q, k, v, o, gate, up, down in every layer, twice: all skipped
        assert plain_calls == 0 and bridged_calls == 2 * 7 * model.cfg.n_layers
    else:  # GPT-2's joint QKV, BLOOM's and OPT's attention: the bridge's way everywhere
        assert plain_calls == bridged_calls > 0


@pytest.mark.parametrize("arch", PLAIN)
def test_a_hook_anywhere_in_a_layer_runs_that_layer_the_bridge_s_way(tiny_dirs, arch, monkeypatch):
    """A hook on any hook point of block 1 runs block 1 the bridge's way (block 0 stays plain): the
    same points fire with the same values, and the logits are the bridge's."""
    model = load_model(tiny_dirs[arch])
    calls = _count_projections(monkeypatch)
    tokens, mask = _inputs()
    names = sorted(n for n in model.hook_dict if n.startswith("blocks.1."))
    with torch.inference_mode():
        seen, outs = {}, {}
        for name in names:
            calls.clear()

            def record(x, hook, into=seen):
                into.setdefault(hook.name, x.clone())  # returns None: the value goes on unchanged

            try:
                with model.hooks(fwd_hooks=[(name, record)]):
                    out = model(tokens, attention_mask=mask)
            except ValueError as exc:  # a hook point TransformerLens gates behind a flag (hook_attn_in...)
                assert "Call set_" in str(exc)
                continue
            outs[name] = out
            assert {id(c) for c in calls} <= {id(m) for m in model.blocks[1].modules()}, name
            assert len(calls) == 7, name
        assert len(seen) >= 20  # the others are points TransformerLens does not fire on this architecture
        _bridged(monkeypatch)
        ref = {}
        for name, out in outs.items():  # one at a time, as above (a hook can change how TransformerLens computes)
            with model.hooks(fwd_hooks=[(name, lambda x, hook: record(x, hook, ref))]):
                assert torch.equal(model(tokens, attention_mask=mask), out), name
    assert ref.keys() == seen.keys()
    for name, value in seen.items():
        assert torch.equal(value, ref[name]), name


def test_a_torch_hook_or_a_rewired_module_in_a_layer_is_seen(tiny_dirs, monkeypatch):
    model = load_model(tiny_dirs["llama"])
    tokens, _ = _inputs()
    with torch.inference_mode():
        plain = model(tokens)
        fired = []
        handle = model.blocks[1].mlp.register_forward_hook(lambda m, a, o: fired.append(o.shape))
        try:
            assert torch.equal(model(tokens), plain) and fired == [(2, 12, model.cfg.d_model)]
        finally:
            handle.remove()
        # A projection that wraps other weights: the layer is copied again and computes with them.
        down = model.blocks[1].mlp.out
        new = torch.nn.Linear(model.cfg.d_mlp, model.cfg.d_model, bias=False)
        new.weight.copy_(down.original_component.weight * 2)
        saved = down.original_component
        down.set_original_component(new)
        try:
            doubled = model(tokens)
            _bridged(monkeypatch)
            assert torch.equal(doubled, model(tokens)) and not torch.equal(doubled, plain)
        finally:
            down.set_original_component(saved)


def test_plain_layers_follow_train_and_eval(tiny_dirs):
    import lapelens.fastpath as fastpath

    model = load_model(tiny_dirs["qwen2"])
    tokens, _ = _inputs()
    copies = lambda: [out for out, _ in fastpath._PLAIN[model.blocks[0]].copies]  # noqa: E731
    with torch.no_grad():
        model(tokens)
        assert copies() and not any(c.training for c in copies())
        model.train()
        try:
            model(tokens)
            assert all(c.training for c in copies())
        finally:
            model.eval()
        model(tokens)
    assert not any(c.training for c in copies())
