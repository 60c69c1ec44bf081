"""The other selection methods (LAP, LAVE, random, AP, PV), the registry and ``lapelens identify``."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import lapelens.methods.pv
from lapelens import METHODS, identify
from lapelens.cli import main
from lapelens.errors import LapelensError
from lapelens.methods.ap import average_precision
from lapelens.methods.pv import ParameterMask, pv, tune_per_language
from lapelens.neurons import LanguageNeurons
from lapelens.stats import ActivationStats, SentenceActivations


def stats_from(count, n, act_sum=None, languages=("en", "zh")):
    """``count[layer][neuron]`` (and ``act_sum``) list each neuron's languages side by side, as the
    comments do; ActivationStats holds them language first."""
    count = torch.tensor(count, dtype=torch.int64).permute(2, 0, 1)
    act = (
        torch.zeros(count.shape, dtype=torch.float64)
        if act_sum is None
        else torch.tensor(act_sum, dtype=torch.float64).permute(2, 0, 1)
    )
    return ActivationStats(languages, torch.tensor(n), count, act, torch.zeros(count.shape, dtype=torch.float64))


def idx(neurons, lang):
    return [t.tolist() for t in neurons.layer_indices(lang)]


# ---- LAP ----------------------------------------------------------------------------------------
def test_lap_golden():
    # n = (20, 10); p = count / n per neuron (en, zh):
    # N0 (19/20 = 0.95, 10/10 = 1.0) -> zh only: 0.95 is not > 0.95
    # N1 (20/20 = 1.0, 9/10 = 0.9)   -> en
    # N2 (1.0, 1.0)                  -> both
    # N3 (0, 0)                      -> none
    s = stats_from([[[19, 10], [20, 9], [20, 10], [0, 0]]], [20, 10])
    n = identify(s, "lap")
    assert n.method == "lap" and n.meta["settings"] == {"threshold": 0.95}
    assert idx(n, "en") == [[1, 2]] and idx(n, "zh") == [[0, 2]]
    n = identify(s, "lap", threshold=0.9)  # 0.9 is not > 0.9 either: N1 stays en-only
    assert idx(n, "en") == [[0, 1, 2]] and idx(n, "zh") == [[0, 2]]


# ---- LAVE ---------------------------------------------------------------------------------------
def test_lave_golden_negative_means_clamped():
    # 1 layer x 4 neurons, n = (2, 4); mean = act_sum / n, then clamped at 0:
    # N0 act (2, -4) -> (1.0, -1.0) -> (1.0, 0)
    # N1 act (1, 2)  -> (0.5, 0.5)
    # N2 act (-2, 4) -> (-1.0, 1.0) -> (0, 1.0)
    # N3 act (-1, -1)-> (-0.5, -0.25) -> (0, 0): never activated
    # 8 values sorted: 0 0 0 0 0.5 0.5 1 1; filter_rate 0.75 -> k = 6 -> thr = 0.5.
    # Pass (> 0.5): N0 (en), N2 (zh); both H = 0. top_rate 0.5 -> budget round(4 * 0.5) = 2.
    s = stats_from([[[1, 0], [1, 1], [0, 1], [0, 0]]], [2, 4], act_sum=[[[2, -4], [1, 2], [-2, 4], [-1, -1]]])
    n = identify(s, "lave", top_rate=0.5, filter_rate=0.75, activation_bar_ratio=0.75)
    assert n.method == "lave" and n.meta["threshold"] == pytest.approx(0.5)
    assert idx(n, "en") == [[0]] and idx(n, "zh") == [[2]]
    # Counting N0's zh mean of -1.0 as is would make q = (1, -1) / 0: the clamp is what keeps it defined.
    assert n.meta["settings"]["negative_means"] == "clamped to 0"


def test_lave_refuses_counts_only_stats(tmp_path):
    s = stats_from([[[1, 0], [1, 1]]], [2, 4])
    s.to_official(tmp_path, "t")
    official = ActivationStats.from_official(tmp_path, "t", ["en", "zh"])
    with pytest.raises(LapelensError, match="activation sums"):
        identify(official, "lave")


# ---- random -------------------------------------------------------------------------------------
def test_random_golden_counts_and_seed():
    # Reference on a 2 x 3 model: en has all 6 neurons, zh none, fr one. The draw must give the
    # same counts, so en is everything and zh nothing, whatever the seed.
    mask = torch.zeros(3, 2, 3, dtype=torch.bool)
    mask[0] = True
    mask[2, 1, 2] = True
    ref = LanguageNeurons(("en", "zh", "fr"), mask, "lape")
    r = identify(ref, "random", seed=3)
    assert r.method == "random" and r.languages == ("en", "zh", "fr")
    assert r.per_language()["neurons"].tolist() == [6, 0, 1]
    assert r.mask[0].all() and not r.mask[1].any()
    assert torch.equal(identify(ref, "random", seed=3).mask, r.mask)


def test_random_is_uniform_and_seeded():
    mask = torch.zeros(1, 2, 5, dtype=torch.bool)
    mask[0, 0, :3] = True  # 3 of 10 neurons
    ref = LanguageNeurons(("en",), mask, "lape")
    draws = torch.stack([identify(ref, "random", seed=s).mask[0].flatten() for s in range(2000)]).double()
    assert (draws.sum(1) == 3).all()
    # each neuron is drawn with probability 3/10; 2000 draws: sd = sqrt(0.3 * 0.7 / 2000) = 0.0102
    assert torch.allclose(draws.mean(0), torch.full((10,), 0.3, dtype=torch.float64), atol=0.05)
    assert not torch.equal(draws[0], draws[1]) or not torch.equal(draws[1], draws[2])


def test_random_from_stats_matches_lape_counts_and_checks_shape():
    s = stats_from([[[10, 0], [9, 2], [0, 0], [5, 10], [0, 19]], [[1, 18], [8, 0], [2, 4], [3, 0], [0, 20]]], [10, 20])
    lape = identify(s, "lape", top_rate=0.3, filter_rate=0.75, activation_bar_ratio=0.75)
    r = identify(s, "random", reference=lape, seed=1)
    assert r.per_language()["neurons"].tolist() == lape.per_language()["neurons"].tolist() == [1, 2]
    other = LanguageNeurons(("en", "zh"), torch.zeros(2, 2, 6, dtype=torch.bool))
    with pytest.raises(LapelensError, match="same model"):
        identify(s, "random", reference=other)


# ---- AP -----------------------------------------------------------------------------------------
# 5 sentences, labels en en zh zh zh; 1 layer x 3 neurons; means[s, 0, j]:
#   N0: 0.9 0.8 | 0.1 0.2 0.3     N1: 0.5 0.1 | 0.5 0.4 0.0     N2: 0.3 everywhere
AP_MEANS = torch.tensor([[0.9, 0.5, 0.3], [0.8, 0.1, 0.3], [0.1, 0.5, 0.3], [0.2, 0.4, 0.3], [0.3, 0.0, 0.3]]).reshape(
    5, 1, 3
)
AP_LABELS = torch.tensor([0, 0, 1, 1, 1])
# AP = sum over distinct thresholds (high to low) of recall gain x precision:
#   N0 en: both en first -> 1.0.  N0 zh: zh at ranks 3, 4, 5 -> (1/3 + 2/4 + 3/5) / 3 = 0.477778
#   N1 en: 0.5 ties en+zh -> P 1/2, R +1/2; en again at rank 4 -> P 2/4 -> 0.5 * 1/2 + 0.5 * 2/4 = 0.5
#   N1 zh: tie group P 1/2 (+1/3); 0.4 -> 2/3 (+1/3); 0.0 -> 3/5 (+1/3) -> (1/2 + 2/3 + 3/5) / 3 = 0.588889
#   N2 (all tied): one threshold -> AP = share of positives: en 2/5, zh 3/5
AP_EXPECTED = torch.tensor(
    [[1.0, 0.5, 0.4], [(1 / 3 + 2 / 4 + 3 / 5) / 3, (1 / 2 + 2 / 3 + 3 / 5) / 3, 0.6]], dtype=torch.float64
)


def test_average_precision_by_hand():
    got = average_precision(AP_MEANS.reshape(5, 3), AP_LABELS, 2)
    assert torch.allclose(got, AP_EXPECTED, atol=1e-12)


def test_ap_golden_selection_and_medians():
    n = identify(SentenceActivations(("en", "zh"), AP_LABELS, AP_MEANS), "ap", k=1)
    # en: top = N0 (1.0); bottom among the rest = N2 (0.4 < 0.5).
    # zh: top = N2 (0.6 > 0.5889 > 0.4778); bottom = N0.
    assert idx(n, "en") == [[0, 2]] and idx(n, "zh") == [[0, 2]]
    assert n.values["sign"][0, 0].tolist() == [1.0, 0.0, -1.0]
    assert n.values["sign"][1, 0].tolist() == [-1.0, 0.0, 1.0]
    assert torch.allclose(n.values["ap"][:, 0].double(), AP_EXPECTED, atol=1e-6)
    # medians on the target's sentences (mean of the two middle values for an even count):
    # en (sentences 0, 1): N0 (0.9 + 0.8) / 2 = 0.85, N1 (0.5 + 0.1) / 2 = 0.3, N2 0.3
    # zh (sentences 2-4): N0 median(0.1, 0.2, 0.3) = 0.2, N1 median(0.5, 0.4, 0.0) = 0.4, N2 0.3
    assert torch.allclose(n.values["median"][:, 0], torch.tensor([[0.85, 0.3, 0.3], [0.2, 0.4, 0.3]]), atol=1e-6)


def test_ap_top_and_bottom_never_overlap_on_ties():
    means = torch.zeros(4, 1, 4)  # every AP ties
    n = identify(SentenceActivations(("en", "zh"), torch.tensor([0, 0, 1, 1]), means), "ap", k=2)
    # top-2 by index: N0, N1; bottom-2 from the rest: N2, N3.
    assert n.values["sign"][0, 0].tolist() == [1.0, 1.0, -1.0, -1.0]


def test_ap_matches_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (40,), generator=g)
    scores = torch.randn(40, 25, generator=g)
    scores[:, :5] = torch.randint(0, 3, (40, 5), generator=g).float()  # heavy ties
    got = average_precision(scores, labels, 3)
    for c in range(3):
        for u in range(25):
            want = sklearn_metrics.average_precision_score((labels == c).numpy(), scores[:, u].numpy())
            assert got[c, u].item() == pytest.approx(want, abs=1e-12)


def test_ap_bad_inputs():
    sa = SentenceActivations(("en", "zh"), AP_LABELS, AP_MEANS)
    with pytest.raises(LapelensError, match="k=2"):
        identify(sa, "ap", k=2)  # 2 + 2 > 3 neurons
    with pytest.raises(LapelensError, match="No sentences"):
        identify(SentenceActivations(("en", "zh", "ja"), AP_LABELS, AP_MEANS), "ap", k=1)
    nan = AP_MEANS.clone()
    nan[0, 0, 0] = float("nan")
    with pytest.raises(LapelensError, match="NaN"):
        identify(SentenceActivations(("en", "zh"), AP_LABELS, nan), "ap", k=1)
    with pytest.raises(LapelensError, match="at least two languages"):
        identify(sa, "ap", languages=["zh"], k=1)


# ---- PV -----------------------------------------------------------------------------------------
# Base weights; one q_proj row [1, 1] and one up_proj row [1, 2, -4, 0] (+ an embedding and a norm,
# which PV leaves out). Tuned copies per language, and the change ratios r = |θ_k - θ| / |θ|:
#   q0 θ=1:  en 1.5 (0.5)  zh 1.25 (0.25) fr 1.0 (0)   -> s = max - r = (0, 0.25, 0.5)
#   q1 θ=1:  1.1 in all three (0.1 each)                -> s = (0, 0, 0)
#   u0 θ=1:  en 1.0 (0)    zh 2.0 (1)    fr 2.0 (1)     -> s = (1, 0, 0)
#   u1 θ=2:  3.0 in all three (0.5)                     -> s = (0, 0, 0)
#   u2 θ=-4: en -2 (0.5)   zh -4 (0)     fr -6 (0.5)    -> s = (0, 0.5, 0)
#   u3 θ=0:  ratio undefined                            -> never selected (s = 0)
# 18 values: 14 zeros, 0.25, 0.5, 0.5, 1. filter_rate 0.8 -> k = round(14.4) = 14 -> thr = 0 ->
# passing: q0, u0, u2. Entropies: u0 = u2 = 0, q0 = -(1/3 ln 1/3 + 2/3 ln 2/3) = 0.6365.
# top_rate 0.5 -> budget round(6 * 0.5) = 3: q0 -> zh, fr; u0 -> en; u2 -> zh (bar = thr = 0).
Q, U = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight"
PV_BASE = {Q: [[1.0, 1.0]], U: [[1.0, 2.0, -4.0, 0.0]]}
PV_TUNED = {
    "en": {Q: [[1.5, 1.1]], U: [[1.0, 3.0, -2.0, 0.3]]},
    "zh": {Q: [[1.25, 1.1]], U: [[2.0, 3.0, -4.0, 0.1]]},
    "fr": {Q: [[1.0, 1.1]], U: [[2.0, 3.0, -6.0, 0.0]]},
}
PV_OPTS = dict(top_rate=0.5, filter_rate=0.8, activation_bar_ratio=0.8)


def state(weights):
    sd = {k: torch.tensor(v) for k, v in weights.items()}
    sd["model.embed_tokens.weight"] = torch.randn(5, 2)
    sd["model.layers.0.input_layernorm.weight"] = torch.randn(2)
    return sd


def test_pv_golden():
    m = identify(state(PV_BASE), "pv", tuned={l: state(w) for l, w in PV_TUNED.items()}, **PV_OPTS)
    assert isinstance(m, ParameterMask) and m.languages == ("en", "zh", "fr")
    assert sorted(m.masks) == sorted([Q, U])  # no embedding, no norm
    en, zh, fr = range(3)
    assert m.masks[U][en].tolist() == [[True, False, False, False]]
    assert m.masks[Q][en].tolist() == [[False, False]]
    assert m.masks[Q][zh].tolist() == [[True, False]]
    assert m.masks[U][zh].tolist() == [[False, False, True, False]]
    assert m.masks[Q][fr].tolist() == [[True, False]]
    assert m.per_language()["parameters"].tolist() == [1, 2, 1]
    assert m.per_language().loc["zh", "share"] == pytest.approx(2 / 6)
    assert m.per_tensor().loc[Q].tolist() == [0, 1, 1]
    # budget 2: the two H = 0 entries (u0, u2) tie; both fit, q0 drops out.
    m2 = identify(
        state(PV_BASE),
        "pv",
        tuned={l: state(w) for l, w in PV_TUNED.items()},
        top_rate=1 / 3,
        filter_rate=0.8,
        activation_bar_ratio=0.8,
    )
    assert m2.per_language()["parameters"].tolist() == [1, 1, 0]


def test_pv_from_folders_and_save_load(tmp_path, capsys):
    for name, w in [("base", PV_BASE), *PV_TUNED.items()]:
        (tmp_path / name).mkdir()
        save_file({k: v.contiguous() for k, v in state(w).items()}, str(tmp_path / name / "model.safetensors"))
    m = pv(tmp_path / "base", tuned={l: tmp_path / l for l in PV_TUNED}, **PV_OPTS)
    assert m.per_language()["parameters"].tolist() == [1, 2, 1]
    m.save(tmp_path / "out")
    back = ParameterMask.load(tmp_path / "out")
    assert back.languages == m.languages and back.meta["settings"] == m.meta["settings"]
    assert all(torch.equal(back.masks[k], m.masks[k]) for k in m.masks)
    assert (
        main(
            [
                "identify",
                "--method",
                "pv",
                "--base",
                str(tmp_path / "base"),
                "--tuned",
                ",".join(f"{l}={tmp_path / l}" for l in PV_TUNED),
                "--top-rate",
                "0.5",
                "--filter-rate",
                "0.8",
                "--activation-bar-ratio",
                "0.8",
                "--out",
                str(tmp_path / "cli"),
            ]
        )
        == 0
    )
    assert ParameterMask.load(tmp_path / "cli").per_language()["parameters"].tolist() == [1, 2, 1]
    capsys.readouterr()
    assert main(["neurons", "show", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "method: pv" in out and "Parameters per language" in out
    assert (
        main(
            [
                "identify",
                "--method",
                "pv",
                "--base",
                str(tmp_path / "base"),
                "--tuned",
                "en=" + str(tmp_path / "en"),
                "--out",
                str(tmp_path / "x.pth"),
            ]
        )
        == 2
    )
    assert "at least two" in capsys.readouterr().err


def test_pv_bad_inputs(tmp_path):
    base = state(PV_BASE)
    with pytest.raises(LapelensError, match="at least two"):
        pv(base, tuned={"en": base})
    wrong = state(PV_TUNED["zh"])
    wrong[U] = torch.zeros(1, 5)
    with pytest.raises(LapelensError, match="other shapes"):
        pv(base, tuned={"en": state(PV_TUNED["en"]), "zh": wrong})
    with pytest.raises(LapelensError, match="safetensors"):
        pv(tmp_path, tuned={"en": tmp_path, "zh": tmp_path})


def test_tune_per_language_calls_continue_training(tmp_path, monkeypatch):
    calls = []

    bars = []

    def continue_training(model_dir, texts, out_dir, *, steps, lr, seq_len, batch_size, seed, bar):
        calls.append((model_dir, texts, out_dir, steps, lr, seq_len, batch_size, seed))
        bars.append(bar)
        return out_dir

    monkeypatch.setattr(lapelens.methods.pv, "continue_training", continue_training)
    out = tune_per_language(
        "base", {"en": ["a b"], "zh": ["c"]}, tmp_path, steps=5, lr=0.1, seq_len=8, batch_size=2, seed=7
    )
    assert out == {"en": tmp_path / "en", "zh": tmp_path / "zh"}
    assert calls == [
        ("base", ["a b"], tmp_path / "en", 5, 0.1, 8, 2, 7),
        ("base", ["c"], tmp_path / "zh", 5, 0.1, 8, 2, 7),
    ]
    assert bars[0] is bars[1] and bars[0].total == 10  # one progress bar over both languages' steps


# ---- registry and bad input ---------------------------------------------------------------------
def test_registry_and_errors():
    assert set(METHODS) == {"lape", "lap", "lave", "random", "ap", "pv"}
    assert METHODS["lape"].options == {"top_rate": 0.01, "filter_rate": 0.95, "activation_bar_ratio": 0.95}
    assert METHODS["ap"].options == {"k": 1000}
    s = stats_from([[[1, 0], [1, 1]]], [2, 4])
    with pytest.raises(LapelensError, match="Unknown method 'lapee'"):
        identify(s, "lapee")
    with pytest.raises(LapelensError, match="no option k"):
        identify(s, "lape", k=3)
    with pytest.raises(LapelensError, match="'xx' is not in these statistics"):
        identify(s, "lape", languages=["en", "xx"])
    with pytest.raises(LapelensError, match="reads SentenceActivations"):
        identify(s, "ap")
    empty = stats_from([[[0, 0]]], [0, 0])
    for method in ("lape", "lap", "lave"):
        with pytest.raises(LapelensError, match="No tokens"):
            identify(empty, method)


def test_languages_option_restricts_and_orders():
    s = stats_from([[[19, 10, 0], [20, 9, 10]]], [20, 10, 10], languages=("en", "zh", "fr"))
    n = identify(s, "lap", languages=["fr", "en"])
    assert n.languages == ("fr", "en") and idx(n, "fr") == [[1]] and idx(n, "en") == [[1]]


# ---- CLI ----------------------------------------------------------------------------------------
def test_cli_identify_stats_folder_official_folder_and_pth(tmp_path, capsys):
    s = stats_from([[[10, 0], [9, 2], [0, 0], [5, 10], [0, 19]], [[1, 18], [8, 0], [2, 4], [3, 0], [0, 20]]], [10, 20])
    s.meta["model"] = "toy"
    s.save(tmp_path / "stats")
    s.to_official(tmp_path / "official", "toy-7b")
    opts = ["--top-rate", "0.3", "--filter-rate", "0.75", "--activation-bar-ratio", "0.75"]
    assert main(["identify", "--stats", str(tmp_path / "stats"), "--out", str(tmp_path / "set"), *opts]) == 0
    assert "wrote" in capsys.readouterr().out
    n = LanguageNeurons.load(tmp_path / "set")
    # the hand-worked case of test_lape.test_golden_budget_three
    assert idx(n, "en") == [[0], []] and idx(n, "zh") == [[4], [4]]
    assert n.meta["model"] == "toy" and n.meta["settings"]["top_rate"] == 0.3
    assert main(["identify", "--stats", str(tmp_path / "official"), "--out", str(tmp_path / "m.pth"), *opts]) == 0
    masks = torch.load(tmp_path / "m.pth", weights_only=True)
    assert [[t.tolist() for t in lang] for lang in masks] == [[[0], []], [[4], [4]]]
    # random with the .pth as reference (its languages and width come from the statistics)
    assert (
        main(
            [
                "identify",
                "--method",
                "random",
                "--stats",
                str(tmp_path / "stats"),
                "--reference",
                str(tmp_path / "m.pth"),
                "--seed",
                "5",
                "--out",
                str(tmp_path / "rand"),
            ]
        )
        == 0
    )
    assert LanguageNeurons.load(tmp_path / "rand").per_language()["neurons"].tolist() == [1, 2]
    capsys.readouterr()

    assert (
        main(
            [
                "identify",
                "--stats",
                str(tmp_path / "stats"),
                "--method",
                "lap",
                "--k",
                "3",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "--k does not apply to method lap" in capsys.readouterr().err
    assert (
        main(["identify", "--stats", str(tmp_path / "stats"), "--languages", "en,ja", "--out", str(tmp_path / "x")])
        == 2
    )
    assert "'ja' is not in these statistics" in capsys.readouterr().err
    assert main(["identify", "--method", "ap", "--out", str(tmp_path / "x")]) == 2
    assert "needs --sentences" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["identify", "--stats", str(tmp_path / "empty"), "--out", str(tmp_path / "x")]) == 2
    assert "neither stats.json nor official" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["identify", "--stats", str(tmp_path / "stats"), "--method", "nope", "--out", str(tmp_path / "x")])


def test_cli_identify_ap(tmp_path):
    SentenceActivations(("en", "zh"), AP_LABELS, AP_MEANS, {"model": "toy"}).save(tmp_path / "sent")
    assert (
        main(
            [
                "identify",
                "--method",
                "ap",
                "--sentences",
                str(tmp_path / "sent"),
                "--k",
                "1",
                "--out",
                str(tmp_path / "ap"),
            ]
        )
        == 0
    )
    n = LanguageNeurons.load(tmp_path / "ap")
    assert n.method == "ap" and idx(n, "en") == [[0, 2]]
    assert n.values["median"][0, 0, 0].item() == pytest.approx(0.85)


def test_pv_on_hf_folders_keys_are_model_parameter_names(tmp_path):
    from transformers import AutoModelForCausalLM

    from tiny import make_tiny_model

    base_dir = make_tiny_model("llama", tmp_path / "base", n_layers=1, d_model=16, d_mlp=32)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    tuned = {}
    for k, lang in enumerate(("en", "zh", "fr")):
        copy = AutoModelForCausalLM.from_pretrained(base_dir)
        with torch.no_grad():
            w = copy.model.layers[0].mlp.gate_proj.weight
            w.mul_(2.0)  # every language doubles the gate ...
            w[k].copy_(model.model.layers[0].mlp.gate_proj.weight[k])  # ... except row k for language k
        copy.save_pretrained(tmp_path / lang)
        tuned[lang] = tmp_path / lang
    # Gate row k changed in all languages but k (r = 1 elsewhere, 0 on k): s = (1 on k, 0 else),
    # H = 0; every other entry has r = 0 everywhere -> s = 0 -> never passes (thr = 0). Block
    # matrices: q 256 + k 128 + v 128 + o 256 + gate, up, down 3 x 512 = 2304 entries; the 1%
    # budget (23) would cut into the tie (rows 0 and 1 first), so take 5% (115 > 48 passing).
    with pytest.warns(UserWarning, match="selecting 48"):
        m = pv(base_dir, tuned=tuned, top_rate=0.05, filter_rate=0.95, activation_bar_ratio=0.95)
    params = dict(model.named_parameters())
    assert set(m.masks) <= set(params)
    assert "model.layers.0.mlp.gate_proj.weight" in m.masks and "model.layers.0.self_attn.q_proj.weight" in m.masks
    assert not any("embed" in name or "norm" in name or "lm_head" in name for name in m.masks)
    for name, mask in m.masks.items():
        assert mask.shape[1:] == params[name].shape
    gate = m.masks["model.layers.0.mlp.gate_proj.weight"]
    for k in range(3):
        selected = gate[k].nonzero()[:, 0].unique().tolist()
        assert selected == [k]  # only row k, only for language k
    assert m.per_language()["parameters"].sum() == sum(int(v.sum()) for v in m.masks.values())


def test_ap_chunking_gives_the_same_result(monkeypatch):
    import lapelens.methods.ap as ap_module

    g = torch.Generator().manual_seed(1)
    sa = SentenceActivations(
        ("en", "zh", "fr"), torch.randint(0, 3, (30,), generator=g) % 3, torch.randn(30, 3, 7, generator=g)
    )
    sa.labels[:3] = torch.tensor([0, 1, 2])
    whole = identify(sa, "ap", k=4)
    monkeypatch.setattr(ap_module, "_CHUNK_ENTRIES", 7 * 30)  # 7 neurons at a time, 3 chunks
    chunked = identify(sa, "ap", k=4)
    assert torch.equal(whole.mask, chunked.mask)
    for key in ("ap", "median", "sign"):
        assert torch.equal(whole.values[key], chunked.values[key])


def test_pv_with_real_tuning_runs(tmp_path):
    from tiny import TEXTS, make_tiny_model

    base = make_tiny_model("llama", tmp_path / "base", n_layers=1, d_model=16, d_mlp=32)
    tuned = tune_per_language(
        base, {l: [TEXTS[l]] * 8 for l in ("en", "fr", "zh")}, tmp_path / "tuned", steps=2, seq_len=16, batch_size=2
    )
    assert tuned == {l: tmp_path / "tuned" / l for l in ("en", "fr", "zh")}
    m = pv(base, tuned=tuned)
    # 2304 block-matrix entries (see above); 1% -> round(23.04) = 23 selected, each given to at
    # least one language since bar = thr.
    assert m.budget == 23 and m.selected == 23 and m.meta["unassigned"] == 0
    back = ParameterMask.load(m.save(tmp_path / "pv"))
    assert (back.budget, back.selected) == (23, 23) and "budget" not in back.meta
    assert not m.short_of_budget
    selected = torch.zeros(1, dtype=torch.int64)
    for mask in m.masks.values():
        selected += mask.any(dim=0).sum()
    assert selected.item() == 23


def test_cli_pv_tunes_from_text_files(tmp_path, monkeypatch):
    # The CLI reads one text per line and hands each language's texts to continue_training; the
    # fake "tuning" writes the golden PV_TUNED weights, so the result is test_pv_golden's.
    seen = {}

    def continue_training(model_dir, texts, out_dir, *, steps, seed, **kw):
        lang = out_dir.name
        seen[lang] = (texts, steps)
        out_dir.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in state(PV_TUNED[lang]).items()}, str(out_dir / "model.safetensors"))
        return out_dir

    monkeypatch.setattr(lapelens.methods.pv, "continue_training", continue_training)
    (tmp_path / "base").mkdir()
    save_file({k: v.contiguous() for k, v in state(PV_BASE).items()}, str(tmp_path / "base" / "model.safetensors"))
    for lang in PV_TUNED:
        (tmp_path / f"{lang}.txt").write_text(f"first {lang}\n\nsecond {lang}\n", encoding="utf-8")
    spec = ",".join(f"{l}={tmp_path / (l + '.txt')}" for l in PV_TUNED)
    assert (
        main(
            [
                "identify",
                "--method",
                "pv",
                "--base",
                str(tmp_path / "base"),
                "--train-texts",
                spec,
                "--train-steps",
                "3",
                "--top-rate",
                "0.5",
                "--filter-rate",
                "0.8",
                "--activation-bar-ratio",
                "0.8",
                "--out",
                str(tmp_path / "pv"),
            ]
        )
        == 0
    )
    assert seen == {l: ([f"first {l}", f"second {l}"], 3) for l in PV_TUNED}
    assert (tmp_path / "pv.tuned" / "en" / "model.safetensors").is_file()
    assert ParameterMask.load(tmp_path / "pv").per_language()["parameters"].tolist() == [1, 2, 1]
