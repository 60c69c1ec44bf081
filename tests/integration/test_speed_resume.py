"""lapelens.resume: a forward started at block l from the captured residual stream equals the full
forward (bit for bit on these models), with and without interventions above l, with padding."""

import pytest
import torch

from lapelens import load_model
from lapelens.errors import LapelensError
from lapelens.interventions import deactivate
from lapelens.models import neuron_spec
from lapelens.resume import capture, first_layer, forward_from, starting_at
from tiny import ARCHS, make_tiny_model


@pytest.fixture(scope="module")
def deep_dirs(tmp_path_factory):
    """Four-layer tiny models of every architecture (start layers 0..3)."""
    root = tmp_path_factory.mktemp("deep")
    return {arch: make_tiny_model(arch, root / arch, n_layers=4) for arch in ARCHS}


def _batches(vocab: int):
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, vocab, (3, 11), generator=gen)
    mask = torch.ones_like(tokens)
    mask[0, 8:] = 0  # right padding
    mask[2, :3] = 0  # left padding
    return tokens, ({}, {"attention_mask": mask})


def _check_model(model):
    spec = neuron_spec(model)
    tokens, kwargs = _batches(min(300, model.cfg.d_vocab))
    for kw in kwargs:
        with torch.inference_mode():
            full, resid = capture(model, tokens, range(spec.n_layers), **kw)
            for layer in range(spec.n_layers):
                assert torch.equal(forward_from(model, tokens, layer, resid[layer], **kw), full), (layer, kw)
                mask = torch.zeros(spec.n_layers, spec.d_mlp, dtype=torch.bool)
                mask[layer:, ::3] = True  # every third neuron of this layer and those above
                with deactivate(model, mask):
                    perturbed = model(tokens, **kw)
                    resumed = forward_from(model, tokens, layer, resid[layer], **kw)
                assert not torch.equal(perturbed, full)
                assert torch.equal(resumed, perturbed), (layer, kw)


@pytest.mark.parametrize("arch", ARCHS)
def test_resumed_forward_equals_full_forward(deep_dirs, arch):
    _check_model(load_model(deep_dirs[arch]))


def test_resumed_forward_on_the_embedded_model():
    _check_model(load_model("embedded"))


def test_blocks_below_the_start_do_not_run(deep_dirs):
    model = load_model(deep_dirs["llama"])
    tokens = torch.randint(3, 300, (2, 8), generator=torch.Generator().manual_seed(1))
    fired: list[int] = []

    def count(layer):
        def hook(pre, hook):
            fired.append(layer)

        return hook

    with torch.inference_mode():
        _, resid = capture(model, tokens, [2])
        with model.hooks(fwd_hooks=[(f"blocks.{i}.mlp.hook_pre", count(i)) for i in range(4)]):
            forward_from(model, tokens, 2, resid[2])
    assert fired == [2, 3]
    # and the model is whole again afterwards
    with torch.inference_mode(), model.hooks(fwd_hooks=[(f"blocks.{i}.mlp.hook_pre", count(i)) for i in range(4)]):
        fired.clear()
        model(tokens)
    assert fired == [0, 1, 2, 3]


def test_layers_are_restored_after_an_error(deep_dirs):
    model = load_model(deep_dirs["gpt2"])
    tokens = torch.randint(3, 300, (2, 8), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        full, resid = capture(model, tokens, [3])
        with pytest.raises(LapelensError, match="pass the tokens it was captured on"):
            with starting_at(model, 3, resid[3]):
                model(tokens[:1])  # another batch than the residual's
        assert torch.equal(model(tokens), full)


def test_bad_start_layers_are_refused(deep_dirs):
    model = load_model(deep_dirs["llama"])
    tokens = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(LapelensError, match="blocks 0 .. 3"):
        with starting_at(model, 4, torch.zeros(1, 4, 32)):
            pass
    with pytest.raises(LapelensError, match="not all blocks"):
        capture(model, tokens, [5])


def test_first_layer():
    mask = torch.zeros(5, 7, dtype=torch.bool)
    assert first_layer(mask) == 5
    mask[3, 2] = True
    assert first_layer(mask) == 3
    mask[1, 6] = True
    assert first_layer(mask) == 1


def test_the_explorers_loss_change_started_at_the_neurons_layer_equals_a_full_forward():
    from lapelens.explorer.loss import deactivated_nll

    model = load_model("embedded")
    spec = neuron_spec(model)
    tokens = torch.randint(3, model.cfg.d_vocab, (2, 9), generator=torch.Generator().manual_seed(1))
    neurons = torch.tensor([0, 5, 700])
    for layer in (1, spec.n_layers - 1):
        with torch.inference_mode():
            _, kept = capture(model, tokens, [layer], return_type=None, use_cache=False)
        full = deactivated_nll(model, layer, neurons, tokens)
        started = deactivated_nll(model, layer, neurons, tokens, kept[layer])
        assert torch.equal(started, full), layer
        assert (full.shape == (3, 2)) and not torch.equal(full[0], full[2])  # each copy has its own neuron zeroed
