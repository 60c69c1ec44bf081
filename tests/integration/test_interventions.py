"""Interventions checked against hand computations on the Hugging Face modules, for every arch."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from lapelens import ActivationStats, LanguageNeurons, LapelensError, load_model, neuron_spec
from lapelens.interventions import deactivate, pin_to_median, set_activations, steer, zero_parameters
from tiny import ARCHS, hf_mlp

TOKENS = torch.tensor([[0, 5, 17, 42, 99, 120, 7, 64], [0, 3, 250, 11, 19, 88, 140, 2]])


@pytest.fixture(scope="module")
def models(tiny_dirs):
    return {arch: load_model(tiny_dirs[arch]) for arch in ARCHS}


def random_mask(spec, share=0.25, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(spec.n_layers, spec.d_mlp, generator=gen) < share


def capture(model, names):
    store = {}

    def grab(name):
        def hook(act, hook):
            store[name] = act.detach().clone()

        return hook

    return store, [(n, grab(n)) for n in names]


def temporary_hooks(model):
    """Hooks other than the permanent ones the bridge itself installs (OPT has some)."""
    return sum(not h.is_permanent for hp in model.hook_dict.values() for h in hp.fwd_hooks)


def neurons_for(spec, masks: dict, values=None):
    langs = tuple(masks)
    return LanguageNeurons(langs, torch.stack([masks[l] for l in langs]), "test", {}, values or {})


@pytest.mark.parametrize("arch", ARCHS)
def test_deactivated_neurons_contribute_nothing_downstream(models, arch):
    """hook_mlp_out equals the HF down projection of the activations with the masked columns zeroed."""
    model = models[arch]
    spec = neuron_spec(model)
    mask = random_mask(spec)
    hf = model.original_model
    names = []
    for i in range(spec.n_layers):
        names += [spec.hook_pre(i), spec.hook_post(i), f"blocks.{i}.hook_mlp_out"]
        if spec.gated:
            names.append(spec.hook_pre_linear(i))
    store, grabs = capture(model, names)
    with torch.no_grad(), deactivate(model, mask):
        model.run_with_hooks(TOKENS, fwd_hooks=grabs)
        for i in range(spec.n_layers):
            act = spec.activation(store[spec.hook_pre(i)])
            if spec.gated:
                act = act * store[spec.hook_pre_linear(i)]
            act[..., mask[i]] = 0
            assert torch.equal(store[spec.hook_post(i)][..., mask[i]], torch.zeros_like(act[..., mask[i]]))
            # allclose, not equal: BLOOM's own GELU formula differs from ACT2FN's in the last bits.
            assert torch.allclose(store[spec.hook_post(i)], act, atol=1e-6)
            _, _, down = hf_mlp(hf, arch, i)
            out = store[f"blocks.{i}.hook_mlp_out"]  # OPT runs its MLP on flattened tokens
            assert torch.allclose(out, down(act).reshape(out.shape), atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_deactivation_equals_hf_with_zeroed_down_columns(models, tiny_dirs, arch):
    """Independent check: zero the down projection's input columns in a fresh HF model."""
    model = models[arch]
    spec = neuron_spec(model)
    mask = random_mask(spec, seed=1)
    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch]).eval()
    handles = []
    for i in range(spec.n_layers):
        _, _, down = hf_mlp(hf, arch, i)
        cols = mask[i]
        handles.append(down.register_forward_pre_hook(lambda mod, args, cols=cols: (args[0].masked_fill(cols, 0),)))
    with torch.no_grad():
        expected = hf(TOKENS).logits
        with deactivate(model, mask):
            got = model(TOKENS)
    for h in handles:
        h.remove()
    assert torch.allclose(got, expected, atol=1e-4)
    with torch.no_grad():
        assert not torch.allclose(model(TOKENS), expected, atol=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_set_value_lands_at_the_activation(models, arch):
    model = models[arch]
    spec = neuron_spec(model)
    mask = random_mask(spec, seed=2)
    values = torch.linspace(-1.5, 2.5, spec.n_layers * spec.d_mlp).reshape(spec.n_layers, spec.d_mlp)
    names = [spec.hook_pre(i) for i in range(spec.n_layers)] + [spec.hook_post(i) for i in range(spec.n_layers)]
    if spec.gated:
        names += [spec.hook_pre_linear(i) for i in range(spec.n_layers)]
    store, grabs = capture(model, names)
    with torch.no_grad(), set_activations(model, mask, values):
        model.run_with_hooks(TOKENS, fwd_hooks=grabs)
    for i in range(spec.n_layers):
        expected = spec.activation(store[spec.hook_pre(i)])
        v = values[i].expand_as(expected)
        if spec.gated:
            up = store[spec.hook_pre_linear(i)]
            expected, v = expected * up, v * up
        got = store[spec.hook_post(i)]
        assert torch.equal(got[..., mask[i]], v[..., mask[i]])  # exactly v (times up, gated)
        assert torch.allclose(got[..., ~mask[i]], expected[..., ~mask[i]], atol=1e-6)  # the rest untouched


@pytest.mark.parametrize("arch", ARCHS)
def test_exit_restores_logits_bit_for_bit(models, arch):
    model = models[arch]
    spec = neuron_spec(model)
    mask = random_mask(spec, seed=3)
    with torch.no_grad():
        before = model(TOKENS)
        with deactivate(model, mask):
            inside = model(TOKENS)
        with set_activations(model, mask, 1.0):
            inside_set = model(TOKENS)
        after = model(TOKENS)
    assert not torch.allclose(inside, before) and not torch.allclose(inside_set, before)
    assert torch.equal(before, after)
    assert temporary_hooks(model) == 0


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_exit_on_exception_removes_hooks(models, arch):
    model = models[arch]
    spec = neuron_spec(model)
    with torch.no_grad():
        before = model(TOKENS)
        with pytest.raises(RuntimeError, match="boom"):
            with deactivate(model, random_mask(spec)):
                raise RuntimeError("boom")
        assert torch.equal(model(TOKENS), before)


@pytest.mark.parametrize("arch", ["opt", "mistral"])
def test_contexts_compose_as_union(models, arch):
    model = models[arch]
    spec = neuron_spec(model)
    a, b = random_mask(spec, 0.1, seed=4), random_mask(spec, 0.1, seed=5)
    neurons = neurons_for(spec, {"fr": a, "es": b})
    with torch.no_grad():
        with deactivate(model, neurons, "fr"), deactivate(model, neurons, "es"):
            nested = model(TOKENS)
        with deactivate(model, a | b):
            union = model(TOKENS)
        with deactivate(model, neurons, ["fr", "es"]):
            both = model(TOKENS)
        with deactivate(model, a):
            only_a = model(TOKENS)
    assert torch.equal(nested, union) and torch.equal(both, union)
    assert not torch.allclose(only_a, union)


@pytest.mark.parametrize("arch", ["bloom", "qwen2"])
def test_set_then_deactivate_same_neuron_ends_at_zero(models, arch):
    model = models[arch]
    spec = neuron_spec(model)
    mask = random_mask(spec, seed=6)
    store, grabs = capture(model, [spec.hook_post(0)])
    with torch.no_grad(), set_activations(model, mask, 3.0), deactivate(model, mask):
        model.run_with_hooks(TOKENS, fwd_hooks=grabs)
    assert torch.equal(store[spec.hook_post(0)][..., mask[0]], torch.zeros_like(store[spec.hook_post(0)][..., mask[0]]))


def greedy_by_hand(hf, arch, prompt, n_new, mask=None, values=None, gated=False):
    """Greedy decoding without KV cache on a fresh HF model, intervening with torch hooks."""
    handles = []
    if mask is not None:
        for i in range(mask.shape[0]):
            up_mod, gate_mod, down = hf_mlp(hf, arch, i)
            cols = mask[i]
            if values is None:
                handles.append(down.register_forward_pre_hook(lambda m, a, c=cols: (a[0].masked_fill(c, 0),)))
            else:
                v = values[i]
                ups = {}
                handles.append(up_mod.register_forward_hook(lambda m, a, out, ups=ups: ups.__setitem__("u", out)))

                def pre(m, a, c=cols, v=v, ups=ups):
                    new = v * ups["u"] if gated else v.expand_as(a[0])
                    return (torch.where(c, new, a[0]),)

                handles.append(down.register_forward_pre_hook(pre))
    toks = prompt.clone()
    with torch.no_grad():
        for _ in range(n_new):
            nxt = hf(toks).logits[:, -1].argmax(-1, keepdim=True)
            toks = torch.cat([toks, nxt], dim=1)
    for h in handles:
        h.remove()
    return toks


@pytest.mark.parametrize("use_cache", [False, True])
@pytest.mark.parametrize("arch", ARCHS)
def test_interventions_act_inside_generate(models, tiny_dirs, arch, use_cache):
    """Bridge generate under an intervention equals greedy decoding by hand on a fresh HF model.

    With the KV cache this needs lapelens._compat.fix_bridge_kv_cache (TL 4.3 + transformers 5.x).
    """
    from lapelens._compat import fix_bridge_kv_cache

    assert fix_bridge_kv_cache()
    model = models[arch]
    spec = neuron_spec(model)
    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch]).eval()
    prompt = TOKENS[:1, :4]
    mask = random_mask(spec, 0.5, seed=7)
    kw = dict(max_new_tokens=8, do_sample=False, verbose=False, stop_at_eos=False, use_past_kv_cache=use_cache)
    with torch.no_grad():
        plain = model.generate(prompt, **kw)
        with deactivate(model, mask):
            off = model.generate(prompt, **kw)
        values = torch.full((spec.n_layers, spec.d_mlp), 2.0)
        with set_activations(model, mask, values):
            pinned = model.generate(prompt, **kw)
    assert torch.equal(plain, greedy_by_hand(hf, arch, prompt, 8))
    assert torch.equal(off, greedy_by_hand(hf, arch, prompt, 8, mask))
    assert torch.equal(pinned, greedy_by_hand(hf, arch, prompt, 8, mask, values, gated=spec.gated))
    assert not torch.equal(off, plain) and not torch.equal(pinned, plain)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_steer_sets_scaled_mean_and_pin_sets_median(models, arch):
    model = models[arch]
    spec = neuron_spec(model)
    mask = random_mask(spec, seed=8)
    stats = ActivationStats.zeros(("en", "fr"), spec.n_layers, spec.d_mlp)
    stats.n[:] = torch.tensor([10, 4])
    stats.act_sum[1] = (
        torch.arange(spec.n_layers * spec.d_mlp, dtype=torch.float64).reshape(spec.n_layers, spec.d_mlp) / 100
    )
    neurons = neurons_for(
        spec,
        {"en": ~mask, "fr": mask},
        values={
            "median": torch.stack(
                [torch.zeros(spec.n_layers, spec.d_mlp), -0.5 * torch.ones(spec.n_layers, spec.d_mlp)]
            )
        },
    )
    with torch.no_grad():
        with steer(model, neurons, "fr", stats, scale=2.0):
            steered = model(TOKENS)
        with set_activations(model, mask, (2.0 * (stats.act_sum[1] / 4)).float()):
            by_hand = model(TOKENS)
        with pin_to_median(model, neurons, "fr"):
            pinned = model(TOKENS)
        with set_activations(model, mask, -0.5):
            pinned_by_hand = model(TOKENS)
    assert torch.equal(steered, by_hand)
    assert torch.equal(pinned, pinned_by_hand)


@pytest.mark.parametrize("arch", ["gpt2", "bloom", "llama", "qwen2"])
def test_zero_parameters_zeroes_and_restores_exactly(models, tiny_dirs, arch):
    model = models[arch]
    hf_names = {
        "gpt2": [
            "transformer.h.0.mlp.c_fc.weight",
            "transformer.h.1.attn.c_attn.weight",
            "transformer.h.0.mlp.c_fc.bias",
        ],
        "bloom": ["transformer.h.0.mlp.dense_h_to_4h.weight", "transformer.h.1.self_attention.dense.weight"],
        "llama": [
            "model.layers.0.mlp.gate_proj.weight",
            "model.layers.1.mlp.down_proj.weight",
            "model.layers.1.self_attn.q_proj.weight",
        ],
        "qwen2": ["model.layers.0.mlp.up_proj.weight", "model.layers.1.self_attn.q_proj.bias"],
    }[arch]
    ref = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch]).eval()
    gen = torch.Generator().manual_seed(9)
    masks = {n: torch.rand(ref.get_parameter(n).shape, generator=gen) < 0.3 for n in hf_names}
    before = {n: p.detach().clone() for n, p in model.original_model.named_parameters()}
    with torch.no_grad():
        logits_before = model(TOKENS)
        for n, m in masks.items():
            ref.get_parameter(n)[m] = 0
        expected = ref(TOKENS).logits
        with zero_parameters(model, masks):
            for n, m in masks.items():
                assert not bool(model.original_model.get_parameter(n)[m].any())
            inside = model(TOKENS)
        after = model(TOKENS)
    assert torch.allclose(inside, expected, atol=1e-5)
    assert not torch.allclose(inside, logits_before, atol=1e-4)
    assert torch.equal(after, logits_before)
    for n, p in model.original_model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_zero_parameters_accepts_a_parameter_mask_and_restores_on_error(models):
    from lapelens.methods.pv import ParameterMask

    model = models["llama"]
    name = "model.layers.1.mlp.gate_proj.weight"
    p = model.original_model.get_parameter(name)
    original = p.detach().clone()
    m = torch.zeros(2, *p.shape, dtype=torch.bool)
    m[1, :3] = True
    pm = ParameterMask(("en", "fr"), {name: m})
    with pytest.raises(RuntimeError):
        with zero_parameters(model, pm, "fr"):
            assert bool((p[:3] == 0).all()) and torch.equal(p[3:], original[3:])
            raise RuntimeError("inside")
    assert torch.equal(p, original)
    with pytest.raises(LapelensError, match="language"):
        with zero_parameters(model, pm):
            pass


def test_misfits_are_refused(models):
    model = models["llama"]
    spec = neuron_spec(model)
    wrong_width = LanguageNeurons(("fr",), torch.zeros(1, spec.n_layers, spec.d_mlp + 1, dtype=torch.bool))
    wrong_depth = LanguageNeurons(("fr",), torch.zeros(1, spec.n_layers + 3, spec.d_mlp, dtype=torch.bool))
    for bad in (wrong_width, wrong_depth):
        with pytest.raises(LapelensError, match="layers"):
            with deactivate(model, bad, "fr"):
                pass
    with pytest.raises(LapelensError, match="layers"):
        with set_activations(model, torch.zeros(spec.n_layers, 7, dtype=torch.bool), 1.0):
            pass
    ok = LanguageNeurons(("fr",), torch.ones(1, spec.n_layers, spec.d_mlp, dtype=torch.bool))
    with pytest.raises(LapelensError, match="de"):
        with deactivate(model, ok, "de"):
            pass
    with pytest.raises(LapelensError, match="pass a language"):
        with deactivate(model, ok):
            pass
    with pytest.raises(LapelensError, match="median"):
        with pin_to_median(model, ok, "fr"):
            pass
    small_stats = ActivationStats.zeros(("fr",), spec.n_layers, spec.d_mlp - 1)
    with pytest.raises(LapelensError, match="statistics"):
        with steer(model, ok, "fr", small_stats):
            pass
    with pytest.raises(LapelensError, match="no parameter"):
        with zero_parameters(model, {"model.layers.9.mlp.gate_proj.weight": torch.zeros(3, dtype=torch.bool)}):
            pass
    with pytest.raises(LapelensError, match="another size"):
        with zero_parameters(model, {"model.layers.0.mlp.gate_proj.weight": torch.zeros(3, 3, dtype=torch.bool)}):
            pass
    assert temporary_hooks(model) == 0
