"""The public generation path: ``load_model`` then ``model.generate`` must follow the prompt.

TransformerLens 4.3 with transformers 5.x drops the KV cache unless lapelens._compat's fix is in
place; ``load_model`` applies it, so a user's own ``model.generate`` (the README's example, also
inside an intervention) gives the HF model's greedy continuation token for token."""

from __future__ import annotations

import pytest
import torch

import lapelens
from lapelens.models import embedded_model_dir

PROMPTS = ["Le fichier est enregistré dans", "The document is saved in", "文件保存在"]


@pytest.fixture(scope="module")
def models():
    from transformers import AutoModelForCausalLM

    # float32 on both sides: the shipped weights are bf16, and transformers 5 loads them as bf16 by
    # default, where near-tied logits (10.48 vs 10.43 in fp32) round to a tie and greedy decoding differs.
    return lapelens.load_model("embedded"), AutoModelForCausalLM.from_pretrained(
        embedded_model_dir(), dtype=torch.float32
    ).eval()


def _greedy_pair(model, hf, prompt: str, n: int = 20):
    toks = model.to_tokens(prompt)
    ours = model.generate(toks, max_new_tokens=n, do_sample=False, verbose=False)
    with torch.no_grad():
        ref = hf.generate(
            toks,
            attention_mask=torch.ones_like(toks),
            max_new_tokens=n,
            do_sample=False,
            pad_token_id=hf.config.pad_token_id,
        )
    return ours[0].tolist(), ref[0].tolist()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_model_generate_equals_hf_greedy(models, prompt):
    ours, ref = _greedy_pair(*models, prompt)
    assert ours == ref


def test_model_generate_inside_a_no_op_intervention(models):
    """Deactivating no neuron, and setting no neuron, change nothing: generation stays the HF one."""
    model, hf = models
    spec = lapelens.neuron_spec(model)
    none = torch.zeros(spec.n_layers, spec.d_mlp, dtype=torch.bool)
    with lapelens.deactivate(model, none), lapelens.set_activations(model, none, 5.0):
        ours, ref = _greedy_pair(model, hf, PROMPTS[0])
    assert ours == ref


def test_intervention_changes_generation(models):
    """The check above can fail: deactivating every neuron of layer 0 changes the greedy output."""
    model, hf = models
    spec = lapelens.neuron_spec(model)
    layer0 = torch.zeros(spec.n_layers, spec.d_mlp, dtype=torch.bool)
    layer0[0] = True
    with lapelens.deactivate(model, layer0):
        ours, ref = _greedy_pair(model, hf, PROMPTS[0])
    assert ours != ref
