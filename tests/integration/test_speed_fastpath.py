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
