"""LAPE against an independent re-implementation of the official identify.py, plus hand-worked cases."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from lapelens import identify
from lapelens.errors import LapelensError
from lapelens.methods.lape import lape
from lapelens.stats import ActivationStats


# ---- reference: the official RUCAIBox identify.py logic, written out step by step -------------
def official_identify(
    over_zero, n, top_rate=0.01, filter_rate=0.95, activation_bar_ratio=0.95, ranking="stable", skip_inf=True
):
    """The official script's ``activation()`` as a function returning its ``final_indice`` list.

    Two switches isolate lapelens' documented deviations:
    ``ranking="topk"`` is the script's ``flattened_entropy.topk(largest=False)`` (tie order
    unspecified); ``"stable"`` replaces it by a stable ascending sort (ties -> lower flat index).
    ``skip_inf=False`` keeps the script's fill-up with infinite-entropy neurons.
    Like the script, it drops trailing languages with no neurons (bincount length).
    """
    num_layers, intermediate_size, lang_num = over_zero.size()
    activation_probs = over_zero / n
    normed_activation_probs = activation_probs / activation_probs.sum(dim=-1, keepdim=True)
    normed_activation_probs[torch.isnan(normed_activation_probs)] = 0
    log_probs = torch.where(normed_activation_probs > 0, normed_activation_probs.log(), 0)
    entropy = -torch.sum(normed_activation_probs * log_probs, dim=-1)
    assert not torch.isnan(entropy).any()

    flattened_probs = activation_probs.flatten()
    top_prob_value = flattened_probs.kthvalue(round(len(flattened_probs) * filter_rate)).values.item()
    top_position = (activation_probs > top_prob_value).sum(dim=-1)
    entropy[top_position == 0] = torch.inf

    flattened_entropy = entropy.flatten()
    top_entropy_value = round(len(flattened_entropy) * top_rate)
    if ranking == "topk":
        _, index = flattened_entropy.topk(top_entropy_value, largest=False)
    else:
        index = torch.sort(flattened_entropy, stable=True).indices[:top_entropy_value]
    if skip_inf:
        index = index[torch.isfinite(flattened_entropy[index])]
    row_index = index // entropy.size(1)
    col_index = index % entropy.size(1)
    selected_probs = activation_probs[row_index, col_index].transpose(0, 1)
    activation_bar = flattened_probs.kthvalue(round(len(flattened_probs) * activation_bar_ratio)).values.item()
    lang, indice = torch.where(selected_probs > activation_bar)

    merged_index = torch.stack((row_index, col_index), dim=-1)
    final_indice = []
    for index in indice.split(torch.bincount(lang).tolist()):
        lang_index = sorted(tuple(row.tolist()) for row in merged_index[index])
        layer_index = [[] for _ in range(num_layers)]
        for l, h in lang_index:
            layer_index[l].append(h)
        final_indice.append([torch.tensor(h).long() for h in layer_index])
    return final_indice


def over_zero(stats):
    """The script's input: one ``over_zero[layer, neuron]`` file per language (``stats.count[k]``),
    stacked on a last axis (``torch.stack(..., dim=-1)``)."""
    return torch.stack(list(stats.count), dim=-1)


def as_official(neurons):
    return [neurons.layer_indices(lang) for lang in neurons.languages]


def assert_same(ours, ref, n_lang):
    """Our per-language lists equal the reference's; languages the script dropped are empty here."""
    assert len(ours) == n_lang and len(ref) <= n_lang
    for k in range(n_lang):
        for i, got in enumerate(ours[k]):
            want = ref[k][i] if k < len(ref) else torch.tensor([]).long()
            assert got.dtype == want.dtype == torch.int64
            assert torch.equal(got, want), (k, i, got, want)


def random_stats(seed, layers, neurons, langs, sparsity, max_n=200):
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(1, max_n, (langs,), generator=g)
    p = torch.rand(layers, neurons, langs, generator=g) ** 3
    p[torch.rand(layers, neurons, langs, generator=g) < sparsity] = 0
    p[torch.rand(layers, neurons, generator=g) < sparsity / 4] = 0  # whole neurons that never fire
    count = (p * n).floor().to(torch.int64).permute(2, 0, 1).contiguous()  # drawn as layer x neuron x lang
    zeros = torch.zeros(langs, layers, neurons, dtype=torch.float64)
    return ActivationStats(tuple(f"l{k}" for k in range(langs)), n, count, zeros, zeros.clone())


CASES = [
    # seed, layers, neurons, languages, sparsity, top_rate, filter_rate, activation_bar_ratio
    (0, 2, 50, 7, 0.0, 0.01, 0.95, 0.95),
    (1, 4, 64, 7, 0.5, 0.01, 0.95, 0.95),
    (2, 3, 100, 6, 0.9, 0.05, 0.95, 0.95),
    (3, 1, 30, 2, 0.3, 0.2, 0.9, 0.9),
    (4, 5, 20, 3, 0.97, 0.1, 0.95, 0.95),  # very sparse: fewer neurons pass than the budget
    (5, 2, 40, 4, 0.2, 0.1, 0.95, 0.99),  # stricter bar: some selected neurons get no language
    (6, 2, 40, 4, 0.2, 0.1, 0.95, 0.8),  # looser bar: languages below the filter too
    (7, 6, 33, 5, 0.6, 0.03, 0.8, 0.95),
    (8, 1, 7, 7, 0.0, 1.0, 0.5, 0.5),  # keep everything that passes
    (9, 3, 128, 7, 0.8, 0.01, 0.95, 0.95),
]


@pytest.mark.parametrize("case", CASES, ids=[f"seed{c[0]}" for c in CASES])
def test_lape_matches_official_algorithm(case):
    seed, layers, neurons, langs, sparsity, top_rate, filter_rate, bar = case
    stats = random_stats(seed, layers, neurons, langs, sparsity)
    opts = dict(top_rate=top_rate, filter_rate=filter_rate, activation_bar_ratio=bar)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = identify(stats, "lape", **opts)
    ref = official_identify(over_zero(stats), stats.n, **opts)
    assert_same(as_official(ours), ref, langs)

    # Where the budget does not run past the finite entropies, or the bar is no lower than the
    # filter, the script's fill-up with inf neurons changes nothing: full agreement.
    ref_fill = official_identify(over_zero(stats), stats.n, skip_inf=False, **opts)
    if bar >= filter_rate or ours.selected == ours.budget:
        assert_same(as_official(ours), ref_fill, langs)

    # Without a tie at the cut, torch.topk (the script's call) picks the same neurons.
    probs = stats.count / stats.n[:, None, None]
    from lapelens.stats import entropy

    h = entropy(probs)
    h[(probs > ours.meta["threshold"]).sum(0) == 0] = torch.inf
    s = torch.sort(h.flatten()).values
    b = ours.budget
    if 0 < b < len(s) and s[b - 1] < s[b] and math.isfinite(s[b - 1]):
        assert_same(as_official(ours), official_identify(over_zero(stats), stats.n, ranking="topk", **opts), langs)


def test_lape_is_float32_like_the_script():
    stats = random_stats(11, 2, 50, 3, 0.2)
    ours = lape(stats, top_rate=0.1)
    assert ours.meta["threshold"] == (over_zero(stats) / stats.n).flatten().kthvalue(round(300 * 0.95)).values.item()


# ---- hand-worked example ----------------------------------------------------------------------
# 2 layers x 5 neurons, en / zh, n = (10, 20). Firing probabilities p = count / n:
#   L0N0 (1.0, 0)   L0N1 (0.9, 0.1)  L0N2 (0, 0)    L0N3 (0.5, 0.5)  L0N4 (0, 0.95)
#   L1N0 (0.1, 0.9) L1N1 (0.8, 0)    L1N2 (0.2, 0.2) L1N3 (0.3, 0)   L1N4 (0, 1.0)
# The 20 values sorted: 7 zeros, 0.1 0.1, 0.2 0.2, 0.3, 0.5 0.5, 0.8, 0.9 0.9, 0.95, 1.0 1.0.
# filter_rate 0.75 -> k = round(20 * 0.75) = 15 -> thr = 15th smallest = 0.8.
# Passing (some p > 0.8): L0N0 (en 1.0), L0N1 (en 0.9), L0N4 (zh 0.95), L1N0 (zh 0.9), L1N4 (zh 1.0).
# Entropies: L0N0 = L0N4 = L1N4 = 0;  L0N1 = L1N0 = -(0.9 ln 0.9 + 0.1 ln 0.1) = 0.3251.
# L1N1 (0.8, 0) and L1N3 also have H = 0 but do not pass (0.8 is not > 0.8): H = inf.
# L0N2 fires nowhere: H = 0/0 -> 0, then inf.
def golden_stats():
    count = torch.tensor(
        [  # language, layer, neuron
            [[10, 9, 0, 5, 0], [1, 8, 2, 3, 0]],  # en
            [[0, 2, 0, 10, 19], [18, 0, 4, 0, 20]],  # zh
        ]
    )
    zeros = torch.zeros(2, 2, 5, dtype=torch.float64)
    return ActivationStats(("en", "zh"), torch.tensor([10, 20]), count, zeros, zeros.clone())


def indices(neurons, lang):
    return [t.tolist() for t in neurons.layer_indices(lang)]


def test_golden_budget_three():
    # budget = round(10 * 0.3) = 3: the three H = 0 neurons. Assigned with bar = thr = 0.8.
    n = lape(golden_stats(), top_rate=0.3, filter_rate=0.75, activation_bar_ratio=0.75)
    assert n.meta["threshold"] == pytest.approx(0.8) and n.budget == 3
    assert indices(n, "en") == [[0], []]
    assert indices(n, "zh") == [[4], [4]]


def test_golden_tie_at_the_cut_goes_to_lower_index():
    # budget = round(10 * 0.4) = 4: after the three H = 0 neurons, L0N1 and L1N0 tie at 0.3251;
    # the stable ranking takes L0N1 (flat index 1 < 5). It fires on en (0.9 > 0.8), not zh (0.1).
    n = lape(golden_stats(), top_rate=0.4, filter_rate=0.75, activation_bar_ratio=0.75)
    assert indices(n, "en") == [[0, 1], []]
    assert indices(n, "zh") == [[4], [4]]


def test_golden_fewer_pass_than_budget_warns_and_skips_inf():
    # budget = round(10 * 0.6) = 6 but only 5 neurons pass: select those 5, never an inf one.
    with pytest.warns(UserWarning, match="selecting 5"):
        n = lape(golden_stats(), top_rate=0.6, filter_rate=0.75, activation_bar_ratio=0.75)
    assert n.selected == 5 and n.short_of_budget
    assert indices(n, "en") == [[0, 1], []]
    assert indices(n, "zh") == [[4], [0, 4]]
    with pytest.warns(UserWarning):  # everything: the all-zero L0N2 and sub-threshold ones stay out
        n = lape(golden_stats(), top_rate=1.0, filter_rate=0.75, activation_bar_ratio=0.75)
    assert not n.mask[:, 0, 2].any() and not n.mask[:, 1, 1].any() and not n.mask[:, 1, 3].any()


def test_golden_activation_bar_ratio_is_the_assignment_quantile():
    # activation_bar_ratio 0.9 -> k = round(20 * 0.9) = 18 -> bar = 18th smallest = 0.95.
    # All 5 passing neurons are kept (budget 5); only p > 0.95 assigns: L0N0 (en 1.0), L1N4 (zh 1.0).
    # L0N4 (0.95) is not > 0.95; L0N1, L1N0 (0.9) neither: 3 kept neurons with no language.
    n = lape(golden_stats(), top_rate=0.5, filter_rate=0.75, activation_bar_ratio=0.9)
    assert n.meta["activation_bar"] == pytest.approx(0.95)
    assert indices(n, "en") == [[0], []]
    assert indices(n, "zh") == [[], [4]]
    assert n.meta["unassigned"] == 3


def test_golden_threshold_uses_python_round_half_even():
    # 10 entries, filter_rate 0.95: round(9.5) = 10 (half to even) -> thr = the maximum -> no
    # neuron has p > thr -> nothing selected, with a warning (the budget is round(5 * 0.2) = 1).
    count = torch.tensor([[[1, 3, 5, 7, 9]], [[2, 4, 6, 8, 10]]])  # en, zh: 1 layer x 5 neurons
    zeros = torch.zeros(2, 1, 5, dtype=torch.float64)
    stats = ActivationStats(("en", "zh"), torch.tensor([10, 10]), count, zeros, zeros.clone())
    with pytest.warns(UserWarning, match="selecting 0"):
        n = lape(stats, top_rate=0.2)
    assert n.meta["threshold"] == 1.0 and not n.mask.any()
    assert n.short_of_budget  # 0 of a budget of 1: what the sweep marks as short


def test_language_without_neurons_keeps_its_slot():
    # zh and ja never pass the threshold: both keep empty slots (the script would keep zh's, in
    # the middle, as a list of empty tensors, and drop ja's, at the end).
    count = torch.zeros(3, 1, 6, dtype=torch.int64)
    count[0, 0] = torch.tensor([10, 9, 8, 0, 0, 0])  # en fires on 3 neurons
    count[1, 0] = 1
    n = lape(
        ActivationStats(
            ("en", "zh", "ja"),
            torch.tensor([10, 10, 10]),
            count,
            torch.zeros(3, 1, 6, dtype=torch.float64),
            torch.zeros(3, 1, 6, dtype=torch.float64),
        ),
        top_rate=0.5,
        filter_rate=0.8,
        activation_bar_ratio=0.8,
    )
    # 18 values: 9 zeros, 6 x 0.1, 0.8, 0.9, 1.0; k = round(14.4) = 14 -> thr = bar = 0.1: en's three
    # pass (budget round(6 * 0.5) = 3); zh's 0.1 is not > 0.1; neurons 3-5 (H = 0) do not pass.
    assert n.languages == ("en", "zh", "ja")
    assert indices(n, "en") == [[0, 1, 2]]
    assert indices(n, "zh") == [[]] and indices(n, "ja") == [[]]
    ref = official_identify(
        torch.stack(list(count), dim=-1),
        torch.tensor([10, 10, 10]),
        top_rate=0.5,
        filter_rate=0.8,
        activation_bar_ratio=0.8,
    )
    assert len(ref) == 1  # the script's file would have lost zh and ja
    assert_same(as_official(n), ref, 3)


def test_lape_bad_inputs():
    zeros = torch.zeros(2, 1, 2, dtype=torch.float64)
    empty = ActivationStats(
        ("en", "zh"), torch.tensor([10, 0]), torch.zeros(2, 1, 2, dtype=torch.int64), zeros, zeros.clone()
    )
    with pytest.raises(LapelensError, match="No tokens"):
        lape(empty)
    no_neurons = ActivationStats.zeros(("en", "zh"), 0, 0)
    with pytest.raises(LapelensError, match="empty"):
        lape(no_neurons)
    too_many = ActivationStats(("en", "zh"), torch.tensor([1, 1]), torch.full((2, 1, 2), 2), zeros, zeros.clone())
    with pytest.raises(LapelensError, match="count > n"):
        lape(too_many)
    ok = golden_stats()
    with pytest.raises(LapelensError, match="filter_rate"):
        lape(ok, filter_rate=1.5)
    with pytest.raises(LapelensError, match="filter_rate"):
        lape(ok, filter_rate=0.01)  # round(20 * 0.01) = 0: no 0-th smallest value
    with pytest.raises(LapelensError, match="top_rate"):
        lape(ok, top_rate=-0.1)


def test_golden_never_fills_the_budget_with_inf_neurons():
    # top_rate 1.0 -> budget 10, but only 5 neurons pass thr = 0.8. activation_bar_ratio 0.5 ->
    # k = 10 -> bar = 10th smallest = 0.2. The script would fill the budget with the 5 inf neurons
    # and, as bar < thr, hand some of them languages: L0N3 (0.5, 0.5) -> en and zh, L1N1 (0.8, 0)
    # -> en, L1N3 (0.3, 0) -> en. lapelens keeps only the 5 that pass.
    with pytest.warns(UserWarning, match="selecting 5"):
        n = lape(golden_stats(), top_rate=1.0, filter_rate=0.75, activation_bar_ratio=0.5)
    assert n.meta["activation_bar"] == pytest.approx(0.2)
    assert indices(n, "en") == [[0, 1], []]
    assert indices(n, "zh") == [[4], [0, 4]]
    s = golden_stats()
    script = official_identify(
        over_zero(s), s.n, top_rate=1.0, filter_rate=0.75, activation_bar_ratio=0.5, skip_inf=False
    )
    assert [[t.tolist() for t in lang] for lang in script] == [[[0, 1, 3], [1, 3]], [[3, 4], [0, 4]]]
    assert_same(
        as_official(n),
        official_identify(over_zero(s), s.n, top_rate=1.0, filter_rate=0.75, activation_bar_ratio=0.5),
        2,
    )
