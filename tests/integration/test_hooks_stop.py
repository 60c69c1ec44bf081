"""``hooks.layer_hooks`` and ``run_until``: a pass that reads activations up to a layer stops there.

On a fake model (plain Python): the hooks run in layer order with their layer's key, the deepest
one ends the pass (nothing after it runs), and a pass that is never stopped is an error, not a
silent result."""

from __future__ import annotations

import pytest
import torch

from lapelens.hooks import layer_hooks, run_until


class FakeModel:
    """Calls ``by_name[name](activation, hook)`` at each of its layers in order, then "unembeds"
    (and has the rest of the ``HookedModel`` interface, unused here)."""

    cfg = None

    def __init__(self, names):
        self.names, self.by_name, self.ran = names, {}, []

    def hooks(self, *args, **kwargs):
        raise NotImplementedError

    def run_with_hooks(self, *args, **kwargs):
        raise NotImplementedError

    def parameters(self, *args, **kwargs):
        return iter(())

    def __call__(self, tokens, return_type=None, **kwargs):
        for i, name in enumerate(self.names):
            self.ran.append(name)
            if name in self.by_name:
                self.by_name[name](tokens + i, None)
        self.ran.append("unembed")


def test_the_deepest_hooked_layer_stops_the_pass():
    model = FakeModel([f"blocks.{i}.mlp.hook_pre" for i in range(5)])
    seen = []
    hooks = layer_hooks(
        {3: "blocks.3.mlp.hook_pre", 1: "blocks.1.mlp.hook_pre"}, lambda layer, act: seen.append((layer, int(act)))
    )
    model.by_name = dict(hooks)
    run_until(model, torch.tensor([[10]]), use_cache=False)
    assert seen == [(1, 11), (3, 13)]  # in the model's order, each with its layer and activation
    assert model.ran == [f"blocks.{i}.mlp.hook_pre" for i in range(4)]  # blocks 4 and the unembedding never ran


def test_a_pass_that_is_never_stopped_is_an_error():
    model = FakeModel(["blocks.0.mlp.hook_pre"])  # the hooked layer does not exist: nothing stops the pass
    model.by_name = dict(layer_hooks({1: "blocks.1.mlp.hook_pre"}, lambda layer, act: None))
    with pytest.raises(RuntimeError, match="never ran"):
        run_until(model, torch.tensor([[0]]))
    assert model.ran[-1] == "unembed"
