"""Generation through Hugging Face's generate on the bridged model: token for token what the plain
HF model generates with the same settings and seed (greedy and sampled), interventions acting at
every cached step, and every sample of a condition in one batch."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from lapelens import load_model
from lapelens.evaluate import generation as gen
from lapelens.interventions import deactivate

SETTINGS = [
    gen.Sampling.greedy(max_new_tokens=8),
    gen.Sampling(max_new_tokens=8, seed=3),
    gen.Sampling(max_new_tokens=8, seed=5, top_k=5, top_p=0.9, temperature=0.7, repetition_penalty=1.2),
]


def _hf_generate(hf, model, prompts, sampling, hooks=()):
    """Plain HF generate on a fresh model (optionally with torch hooks), the same config and seed."""
    _, eos, pad = gen._special_ids(model.tokenizer)
    tokens, mask = gen.left_padded(prompts, pad)
    handles = [module.register_forward_pre_hook(fn) for module, fn in hooks]
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(sampling.seed)
            out = hf.generate(
                input_ids=tokens, attention_mask=mask, generation_config=sampling.generation_config(eos, pad)
            )
    finally:
        for h in handles:
            h.remove()
    return [r[: r.index(eos)] if eos in r else r for r in out[:, tokens.shape[1] :].tolist()]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bloom"])
@pytest.mark.parametrize("sampling", SETTINGS, ids=["greedy", "sampled", "top-k-p"])
def test_generation_equals_plain_hf_generate(tiny_dirs, arch, sampling):
    model = load_model(tiny_dirs[arch])
    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch], dtype=torch.float32).eval()
    prompts = gen.encode_prompts(model, ["Le renard", "The quick brown fox jumps over", "敏捷", ""], 10)
    ours = gen.generate_ids(model, prompts, sampling)
    assert ours == _hf_generate(hf, model, prompts, sampling)
    assert any(len(o) == 8 for o in ours)


def test_deactivation_acts_at_every_cached_step(tiny_dirs):
    model = load_model(tiny_dirs["llama"])
    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"], dtype=torch.float32).eval()
    mask = torch.zeros(model.cfg.n_layers, model.cfg.d_mlp, dtype=torch.bool)
    mask[0, ::2] = mask[1, 1::3] = True
    prompts = gen.encode_prompts(model, ["The quick brown fox", "Le renard brun saute"], 10)
    sampling = gen.Sampling(max_new_tokens=10, seed=7)

    def zero(idx):
        def hook(module, args):
            x = args[0].clone()
            x[..., idx] = 0
            return (x,)

        return hook

    hooks = [(layer.mlp.down_proj, zero(mask[i].nonzero().flatten())) for i, layer in enumerate(hf.model.layers)]
    with deactivate(model, mask):
        off = gen.generate_ids(model, prompts, sampling)
    assert off == _hf_generate(hf, model, prompts, sampling, hooks)
    assert off != gen.generate_ids(model, prompts, sampling)


def test_a_condition_is_one_batch_by_default(tiny_dirs, monkeypatch):
    model = load_model(tiny_dirs["qwen2"])
    calls = []
    original = model.original_model.generate

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(model.original_model, "generate", counting)
    prompts = [[model.tokenizer.bos_token_id]] * 7
    gen.generate_ids(model, prompts, gen.Sampling(max_new_tokens=3))
    gen.generate_ids(model, prompts, gen.Sampling(max_new_tokens=3, batch_size=3))
    assert calls == [7, 3, 3, 1]


def test_the_models_generation_config_does_not_leak(tiny_dirs):
    model = load_model(tiny_dirs["llama"])
    model.original_model.generation_config.top_k = 1  # would make sampling greedy
    model.original_model.generation_config.no_repeat_ngram_size = 1
    prompts = [[model.tokenizer.bos_token_id]] * 6
    sampled = gen.generate_ids(model, prompts, gen.Sampling(max_new_tokens=6, seed=2))
    assert len({tuple(s) for s in sampled}) > 1  # not all the argmax
    assert model.original_model.generation_config.top_k == 1  # and it is back
