"""One selection protocol: ``LanguageNeurons`` and ``ParameterMask`` are ``Selection``s; an
experiment binds its selection to the model once (``selection.on(model)``) and its conditions
trust the bound object, so the shape check runs once per experiment, not once per condition."""

import pandas as pd
import pytest
import torch

import lapelens.models
from lapelens import LanguageNeurons, LapelensError, load_model, neuron_spec
from lapelens.evaluate import generation as gen
from lapelens.evaluate.perplexity import perturbation_matrix
from lapelens.interventions import deactivate, zero_parameters
from lapelens.neurons import BoundNeurons
from lapelens.parameters import BoundParameters, ParameterMask
from lapelens.stats import ActivationStats
from lapelens.types import BoundSelection, HookedModel, Selection
from tiny import TEXTS


@pytest.fixture(scope="module")
def model(tiny_dirs):
    return load_model(tiny_dirs["gpt2"])


def neurons_of(spec, share=0.3, seed=0, langs=("en", "fr")):
    g = torch.Generator().manual_seed(seed)
    return LanguageNeurons(langs, torch.rand(len(langs), spec.n_layers, spec.d_mlp, generator=g) < share, "test")


def stats_of(spec, langs=("en", "fr")):
    stats = ActivationStats.zeros(langs, spec.n_layers, spec.d_mlp)
    stats.n += 10
    stats.act_sum += torch.linspace(0, 3, spec.n_layers * spec.d_mlp * len(langs), dtype=torch.float64).view(
        stats.act_sum.shape
    )
    return stats


@pytest.fixture()
def count_checks(monkeypatch):
    calls = []
    original = lapelens.models.NeuronSpec.check_fits

    def counting(self, n_layers, d_mlp, what="neuron set"):
        calls.append(what)
        return original(self, n_layers, d_mlp, what)

    monkeypatch.setattr(lapelens.models.NeuronSpec, "check_fits", counting)
    return calls


def test_both_selections_share_the_protocol(model):
    spec = neuron_spec(model)
    neurons = neurons_of(spec)
    hf = model.original_model
    name = "transformer.h.0.mlp.c_fc.weight"
    shape = tuple(hf.get_parameter(name).shape)
    params = ParameterMask(
        ("en", "fr"), {name: torch.rand(2, *shape, generator=torch.Generator().manual_seed(0)) < 0.1}
    )
    assert isinstance(model, HookedModel)
    for sel, unit, bound in ((neurons, "neurons", BoundNeurons), (params, "parameters", BoundParameters)):
        assert isinstance(sel, Selection) and sel.unit == unit
        assert sel.sizes() == {l: sel.count(l) for l in ("en", "fr")}
        b = sel.on(model)
        assert isinstance(b, bound) and isinstance(b, BoundSelection) and b.languages == ("en", "fr")
    # the bound PV mask zeroes exactly what zero_parameters zeroes, and restores it
    before = hf.get_parameter(name).detach().clone()
    with params.on(model).deactivate("fr"):
        zeroed = hf.get_parameter(name).detach().clone()
    with zero_parameters(model, params, "fr"):
        assert torch.equal(hf.get_parameter(name), zeroed)
    assert torch.equal(zeroed[params.masks[name][1]], torch.zeros(int(params.masks[name][1].sum())))
    assert torch.equal(hf.get_parameter(name), before)


def test_misfit_selection_is_refused_when_bound(model):
    spec = neuron_spec(model)
    wrong = LanguageNeurons(("en",), torch.zeros(1, spec.n_layers, spec.d_mlp + 1, dtype=torch.bool), "x")
    with pytest.raises(LapelensError, match="use the x neuron set computed on this model"):
        wrong.on(model)
    params = ParameterMask(("en",), {"no.such.weight": torch.zeros(1, 2, 2, dtype=torch.bool)})
    with pytest.raises(LapelensError, match="no parameter 'no.such.weight'"):
        params.on(model)
    with pytest.raises(LapelensError, match="Say whose neurons"):
        with deactivate(model, neurons_of(spec)):
            pass


def test_bound_deactivation_equals_the_public_one(model):
    spec = neuron_spec(model)
    neurons = neurons_of(spec)
    tokens = torch.tensor([[0, 5, 17, 42, 99, 120]])
    with deactivate(model, neurons, ["en", "fr"]):
        public = model(tokens)
    with neurons.on(model).deactivate(["en", "fr"]):
        bound = model(tokens)
    assert torch.equal(public, bound) and not torch.equal(bound, model(tokens))


def test_an_experiment_checks_its_selection_once(model, count_checks, monkeypatch):
    import lapelens.langid

    monkeypatch.setattr(lapelens.langid, "detect_languages", lambda texts: ["en"] * len(texts))
    spec = neuron_spec(model)
    neurons, stats = neurons_of(spec), stats_of(spec)
    chunks = {
        "en": torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0)),
        "fr": torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(1)),
    }
    perturbation_matrix(model, neurons, chunks, progress=False, n_boot=10)
    assert count_checks == ["test neuron set"]  # 2 rows, one check
    count_checks.clear()
    parallel = pd.DataFrame({"en": [TEXTS["en"]], "fr": [TEXTS["fr"]]})
    gen.prompted_steering(
        model, neurons, stats, parallel, n_prompts=1, prompt_tokens=6, sampling=gen.Sampling.greedy(max_new_tokens=2)
    )
    # 2 pairs x 2 steered conditions: the set once, the statistics once
    assert count_checks == ["test neuron set", "statistics"]
