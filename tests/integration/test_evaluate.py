"""Evaluation: perplexity matrices against hand computations on the HF models, bootstrap, sweeps,
steering and generation bookkeeping, and the CLI commands."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from lapelens import ActivationStats, LanguageNeurons, LapelensError, load_model, neuron_spec
from lapelens.evaluate import generation as gen
from lapelens.evaluate.perplexity import NONE, PerturbationResult, chunk_nll, compare, perturbation_matrix
from lapelens.evaluate.sweep import SweepResult, selection_ratio_sweep, sweep_masks
from lapelens.interventions import deactivate, pin_to_median, steer
from lapelens.tokens import pack_chunks
from tiny import ARCHS, TEXTS, hf_mlp

LANGS = tuple(TEXTS)


@pytest.fixture(scope="module")
def models(tiny_dirs):
    return {arch: load_model(tiny_dirs[arch]) for arch in ARCHS}


@pytest.fixture(scope="module")
def chunks(models, tiny_texts):
    tok = models["llama"].tokenizer
    return {lang: pack_chunks(tok, docs, 16) for lang, docs in tiny_texts.items()}


def random_neurons(spec, seed=0, share=0.15):
    gen_ = torch.Generator().manual_seed(seed)
    return LanguageNeurons(LANGS, torch.rand(len(LANGS), spec.n_layers, spec.d_mlp, generator=gen_) < share, "test")


def hf_ppl(hf, arch, chunks, mask=None):
    """exp(mean token NLL) by F.cross_entropy on a fresh HF model, optionally with down-proj inputs zeroed."""
    handles = []
    if mask is not None:
        for i in range(mask.shape[0]):
            _, _, down = hf_mlp(hf, arch, i)
            handles.append(down.register_forward_pre_hook(lambda m, a, c=mask[i]: (a[0].masked_fill(c, 0),)))
    with torch.no_grad():
        logits = hf(chunks).logits
    for h in handles:
        h.remove()
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), chunks[:, 1:].reshape(-1))
    return float(torch.exp(nll))


# ---- perplexity -------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_matrix_equals_hand_perplexity(models, tiny_dirs, chunks, arch):
    model = models[arch]
    spec = neuron_spec(model)
    neurons = random_neurons(spec)
    evaluated = {l: chunks[l] for l in ("en", "zh")}
    result = perturbation_matrix(model, neurons, evaluated, rows=["fr", "zh"], progress=False, n_boot=200)
    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch]).eval()
    assert result.rows == [NONE, "fr", "zh"] and result.columns == ["en", "zh"]
    for lang, c in evaluated.items():
        assert result.ppl.loc[NONE, lang] == pytest.approx(hf_ppl(hf, arch, c), rel=1e-5)
        for row in ("fr", "zh"):
            expected = hf_ppl(hf, arch, c, neurons.mask[neurons.lang_index(row)])
            assert result.ppl.loc[row, lang] == pytest.approx(expected, rel=1e-5)
            assert result.change.loc[row, lang] == pytest.approx(result.ppl.loc[row, lang] - result.ppl.loc[NONE, lang])
            assert result.relative.loc[row, lang] == pytest.approx(
                result.change.loc[row, lang] / result.ppl.loc[NONE, lang]
            )
    assert (result.relative.loc["fr"] != 0).all()


def test_chunk_nll_sums_cross_entropy_and_ignores_batching(models, chunks):
    model = models["gpt2"]
    c = chunks["ja"]
    by_one = chunk_nll(model, c, batch_size=1)
    by_all = chunk_nll(model, c, batch_size=64)
    with torch.no_grad():
        logits = model(c)
    hand = F.cross_entropy(logits[:, :-1].transpose(1, 2), c[:, 1:], reduction="none").double().sum(1)
    assert torch.allclose(by_one, hand, rtol=1e-6) and torch.allclose(by_all, hand, rtol=1e-6)
    assert by_one.dtype == torch.float64 and by_one.shape == (len(c),)


def test_bootstrap_intervals(models, chunks):
    model = models["qwen2"]
    result = perturbation_matrix(model, random_neurons(neuron_spec(model), share=0.3), chunks, progress=False)
    for kind in ("ppl", "change", "relative"):
        lo, hi = result.interval(kind)
        point = result.value(kind)
        assert ((lo <= point + 1e-12) & (point <= hi + 1e-12)).all().all(), kind
        assert (hi - lo).drop(index=NONE).gt(0).all().all()
    lo, hi = result.interval("change")
    assert (lo.loc[NONE] == 0).all() and (hi.loc[NONE] == 0).all()
    again = PerturbationResult(result.chunks, result.meta, seed=0)
    other = PerturbationResult(result.chunks, result.meta, seed=1)
    assert again.interval("relative")[0].equals(result.interval("relative")[0])
    assert not other.interval("relative")[0].equals(result.interval("relative")[0])


def test_save_load_round_trip(models, chunks, tmp_path):
    model = models["opt"]
    result = perturbation_matrix(
        model, random_neurons(neuron_spec(model)), chunks, progress=False, meta={"corpus": "tiny"}
    )
    result.save(tmp_path / "r")
    back = PerturbationResult.load(tmp_path / "r")
    assert back.ppl.equals(result.ppl)
    assert back.table().equals(result.table())
    assert back.meta["corpus"] == "tiny" and back.meta["method"] == "test"
    saved = json.loads((tmp_path / "r" / "perturbation.json").read_text())
    assert saved["lapelens_version"] and saved["rows"] == [NONE, *LANGS]
    table = pd.read_csv(tmp_path / "r" / "table.csv", index_col=[0, 1])
    assert table.loc[("fr", "en"), "relative"] == pytest.approx(result.relative.loc["fr", "en"])
    fig = result.figure()
    change = result.relative.drop(index=NONE).to_numpy() * 100  # coloured by its signed log, printed as it is
    assert np.allclose(fig.data[0].z, np.sign(change) * np.log10(1 + np.abs(change)))
    assert fig.data[0].text[1][2] == f"{change[1, 2]:.1f}%".replace("-0.0%", "0.0%")
    with pytest.raises(LapelensError, match="not a perturbation result"):
        PerturbationResult.load(tmp_path)


def synthetic(rel: np.ndarray, langs=("a", "b", "c"), method="m"):
    """A result with one 1-token chunk per cell, base PPL 10 everywhere and the given relative changes."""
    rows = []
    for c, col in enumerate(langs):
        rows.append({"perturbed": NONE, "evaluated": col, "chunk": 0, "nll": np.log(10.0), "tokens": 1})
        for r, row in enumerate(langs):
            rows.append(
                {"perturbed": row, "evaluated": col, "chunk": 0, "nll": np.log(10.0 * (1 + rel[r, c])), "tokens": 1}
            )
    return PerturbationResult(pd.DataFrame(rows), {"method": method}, n_boot=10)


def test_summary_numbers_by_hand():
    rel = np.array([[0.30, 0.02, 0.01], [0.05, 0.10, 0.20], [0.01, 0.03, 0.40]])
    result = synthetic(rel)
    assert np.allclose(result.relative.drop(index=NONE).to_numpy(), rel)
    assert result.diagonal_mean_relative_increase() == pytest.approx((0.30 + 0.10 + 0.40) / 3)
    off = (0.02 + 0.01 + 0.05 + 0.20 + 0.01 + 0.03) / 6
    assert result.offdiagonal_mean_relative_increase() == pytest.approx(off)
    assert result.diagonal_offdiagonal_ratio() == pytest.approx((0.8 / 3) / off)
    assert result.diagonal_largest_in_column() == 3
    rel2 = rel.copy()
    rel2[2, 1] = 0.5  # column b: deactivating c hurts b more than deactivating b
    assert synthetic(rel2).diagonal_largest_in_column() == 2
    flat = synthetic(np.full((3, 3), 0.01), method="random")
    table = compare({"lape": result, "random": flat})
    assert table.loc["random", "diag_offdiag_ratio"] == pytest.approx(1.0)
    assert table.loc["lape", "ratio_vs_reference"] == pytest.approx(result.diagonal_offdiagonal_ratio())
    assert synthetic(np.diag([0.1, 0.1, 0.1])).diagonal_offdiagonal_ratio() == float("inf")


def test_parameter_mask_rows_equal_hf_with_zeroed_parameters(models, tiny_dirs, chunks):
    from lapelens.methods.pv import ParameterMask

    model = models["llama"]
    names = ["model.layers.0.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight"]
    gen_ = torch.Generator().manual_seed(3)
    shapes = {n: tuple(model.original_model.get_parameter(n).shape) for n in names}
    pm = ParameterMask(("en", "zh"), {n: torch.rand(2, *shapes[n], generator=gen_) < 0.2 for n in names})
    before = {n: model.original_model.get_parameter(n).detach().clone() for n in names}
    result = perturbation_matrix(model, pm, {"ja": chunks["ja"]}, progress=False)
    for n in names:
        assert torch.equal(model.original_model.get_parameter(n), before[n])
    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).eval()
    with torch.no_grad():
        for n in names:
            hf.get_parameter(n)[pm.masks[n][1]] = 0
    assert result.ppl.loc["zh", "ja"] == pytest.approx(hf_ppl(hf, "llama", chunks["ja"]), rel=1e-5)
    assert result.meta["unit"] == "parameters" and result.meta["sizes"]["zh"] == pm.count("zh")


def test_misfit_sets_are_refused_before_running(models, chunks):
    model = models["bloom"]
    spec = neuron_spec(model)
    bad = LanguageNeurons(LANGS, torch.zeros(len(LANGS), spec.n_layers, spec.d_mlp // 2, dtype=torch.bool))
    with pytest.raises(LapelensError, match="neurons"):
        perturbation_matrix(model, bad, chunks, progress=False)
    with pytest.raises(LapelensError, match="Cannot perturb"):
        perturbation_matrix(model, {"a": 1}.keys(), chunks, progress=False)
    with pytest.raises(LapelensError, match="pos >= 2"):
        chunk_nll(model, torch.zeros(3, 1, dtype=torch.long))


# ---- sweep ------------------------------------------------------------------------------------
def fake_stats(spec, seed=0):
    """Firing counts where each language has some neurons that fire mostly on it."""
    g = torch.Generator().manual_seed(seed)
    stats = ActivationStats.zeros(LANGS, spec.n_layers, spec.d_mlp)
    stats.n[:] = 1000
    count = torch.randint(0, 400, (spec.n_layers, spec.d_mlp, len(LANGS)), generator=g)
    units = count.view(-1, len(LANGS))
    for k in range(len(LANGS)):  # ~4% of the units fire on 90-100% of language k's tokens
        units[5 * k + 1 :: 23, k] = torch.randint(900, 1000, units[5 * k + 1 :: 23, k].shape, generator=g)
    stats.count[:] = count.permute(2, 0, 1)
    stats.act_sum[:] = stats.count.double() / 100
    return stats


def test_sweep_sets_are_nested_and_start_at_lape(models, chunks):
    from lapelens.methods import identify

    model = models["mistral"]
    stats = fake_stats(neuron_spec(model))
    masks, short = sweep_masks(stats, "fr", [0, 0.01, 0.05, 0.1, 0.3])
    assert not masks[0].any()
    assert torch.equal(masks[0.01], identify(stats, "lape").mask[LANGS.index("fr")])
    order = sorted(masks)
    for a, b in zip(order, order[1:]):
        assert bool((masks[a] <= masks[b]).all()) and masks[a].sum() <= masks[b].sum()
    assert masks[0.1].sum() > masks[0.01].sum()
    assert short[0.3] and not short[0.01]
    with pytest.raises(LapelensError, match="top_rate"):
        sweep_masks(stats, "fr", [0.01], method="lap")


def test_sweep_rows_equal_direct_deactivation(models, chunks, tmp_path):
    model = models["mistral"]
    stats = fake_stats(neuron_spec(model))
    result = selection_ratio_sweep(
        model, stats, "fr", {"fr": chunks["fr"], "en": chunks["en"]}, ratios=[0, 0.05, 0.2], progress=False, n_boot=100
    )
    masks, _ = sweep_masks(stats, "fr", [0.05, 0.2])
    rel = result.value("relative")
    assert list(rel.index) == [0.0, 0.05, 0.2] and (rel.loc[0.0] == 0).all()
    assert result.n_neurons == (0, int(masks[0.05].sum()), int(masks[0.2].sum()))
    with deactivate(model, masks[0.2]):
        nll = chunk_nll(model, chunks["fr"])
    assert result.value("ppl").loc[0.2, "fr"] == pytest.approx(
        float(torch.exp(nll.sum() / (chunks["fr"].numel() - len(chunks["fr"]))))
    )
    result.save(tmp_path / "s")
    back = SweepResult.load(tmp_path / "s")
    assert back.value("relative").equals(rel) and back.n_neurons == result.n_neurons
    assert len(result.figure().data) == 2


# ---- generation -------------------------------------------------------------------------------
def test_generation_batches_and_seeds(models):
    model = models["llama"]
    prompts = gen.encode_prompts(model, ["Le renard", "The quick brown fox jumps over", "敏捷"], 10)
    assert all(p[0] == model.tokenizer.bos_token_id for p in prompts)
    greedy = gen.Sampling.greedy(max_new_tokens=6, repetition_penalty=1.0, batch_size=8)
    batched = gen.generate_ids(model, prompts, greedy)
    assert batched == [gen.generate_ids(model, [p], greedy)[0] for p in prompts]  # left padding changes nothing
    s = gen.Sampling(max_new_tokens=6, seed=3)
    state = torch.get_rng_state()
    assert gen.generate_ids(model, prompts, s) == gen.generate_ids(model, prompts, s)
    assert torch.equal(torch.get_rng_state(), state)
    assert gen.generate_ids(model, prompts, s) != gen.generate_ids(
        model, prompts, gen.Sampling(max_new_tokens=6, seed=4)
    )


def test_continuation_nll_by_hand(models, tiny_dirs):
    model = models["gpt2"]
    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs["gpt2"]).eval()
    prompts, conts = [[0, 5, 7], [0, 9]], [[11, 12, 13, 14], []]
    nll, count = gen.continuation_nll(model, prompts, conts)
    seq = torch.tensor([prompts[0] + conts[0]])
    with torch.no_grad():
        logits = hf(seq).logits[0]
    hand = F.cross_entropy(logits[2:6], seq[0, 3:7], reduction="sum")
    assert nll[0] == pytest.approx(float(hand), rel=1e-5) and list(count) == [4, 0] and nll[1] == 0


@pytest.fixture()
def fake_detector(monkeypatch):
    """Language = 'fr' when the text has an even number of characters, else 'en' (deterministic)."""
    import lapelens.langid

    monkeypatch.setattr(
        lapelens.langid, "detect_languages", lambda texts: ["fr" if len(t) % 2 == 0 else "en" for t in texts]
    )


def test_unconditional_steering_and_kojima_bookkeeping(models, fake_detector):
    model = models["qwen2"]
    spec = neuron_spec(model)
    neurons = random_neurons(spec, share=0.3)
    neurons.values["median"] = torch.full(neurons.mask.shape, 1.5)
    stats = fake_stats(spec)
    s = gen.Sampling(max_new_tokens=5, seed=1, batch_size=4)
    result = gen.unconditional_steering(model, neurons, stats, ["fr", "en"], n_samples=6, sampling=s)
    bos = [[model.tokenizer.bos_token_id]] * 6
    with steer(model, neurons, "fr", stats):
        by_hand = gen._decode(model, gen.generate_ids(model, bos, s))
    fr = result.samples[result.samples["condition"] == "fr"]
    assert list(fr["text"]) == by_hand
    base = result.samples[result.samples["condition"] == gen.BEFORE]
    for target in ("fr", "en"):
        got = result.samples[result.samples["condition"] == target]
        assert result.summary.loc[target, "after"] == pytest.approx(
            np.mean([len(t) % 2 == (target == "en") for t in got["text"]])
        )
        assert result.summary.loc[target, gen.BEFORE] == pytest.approx((base["detected"] == target).mean())
    # deactivate_others: the target's neurons set, every other language's (not the target's) zeroed
    both = gen.unconditional_steering(model, neurons, stats, ["fr"], n_samples=6, sampling=s, deactivate_others=True)
    others = (
        neurons.mask[[i for i, l in enumerate(neurons.languages) if l != "fr"]].any(0)
        & ~neurons.mask[neurons.languages.index("fr")]
    )
    assert others.any()
    with deactivate(model, others), steer(model, neurons, "fr", stats):
        by_hand = gen._decode(model, gen.generate_ids(model, bos, s))
    assert list(both.samples[both.samples["condition"] == "fr"]["text"]) == by_hand
    assert both.meta["deactivate_others"] is True
    koj = gen.kojima_pinning(model, neurons, ["ja"], n_samples=4, sampling=s)
    with pin_to_median(model, neurons, "ja"):
        pinned = gen._decode(model, gen.generate_ids(model, bos[:4], s))
    assert list(koj.samples[koj.samples["condition"] == "ja"]["text"]) == pinned
    assert koj.summary.loc["ja", "after"] == 0.0  # the fake detector never says ja


def test_prompted_steering_and_deactivated_generation(models, fake_detector, tmp_path):
    model = models["gpt2"]
    spec = neuron_spec(model)
    neurons = random_neurons(spec, share=0.3)
    stats = fake_stats(spec)
    parallel = pd.DataFrame({"en": [TEXTS["en"], "Open the file."], "fr": [TEXTS["fr"], "Ouvrez le fichier."]})
    s = gen.Sampling.greedy(max_new_tokens=5)
    result = gen.prompted_steering(model, neurons, stats, parallel, n_prompts=2, prompt_tokens=8, sampling=s)
    assert list(result.summary.index) == [("en", "fr"), ("fr", "en")]
    prompts = gen.encode_prompts(model, list(parallel["en"]), 8)
    with deactivate(model, neurons, "en"), steer(model, neurons, "fr", stats):
        both = gen._decode(model, gen.generate_ids(model, prompts, s))
    rows = result.samples[
        (result.samples["source"] == "en") & (result.samples["condition"] == "deactivated_and_steered")
    ]
    assert list(rows["text"]) == both
    assert result.summary.loc[("en", "fr"), "deactivated_and_steered"] == pytest.approx(
        np.mean([len(t) % 2 == 0 for t in both])
    )

    rand = random_neurons(spec, seed=5, share=0.3)
    out = gen.generation_under_deactivation(model, neurons, {"en": list(parallel["en"])}, rand, 8, s)
    assert list(out.summary.columns.get_level_values(0).unique()) == ["normal", "deactivated", "random"]
    deact = out.samples[out.samples["condition"] == "deactivated"]
    with deactivate(model, neurons, "en"):
        ids = gen.generate_ids(model, prompts, s)
    assert list(deact["text"]) == gen._decode(model, ids)
    nll, count = gen.continuation_nll(model, prompts, ids)  # unperturbed model scores the outputs
    assert out.summary.loc["en", ("deactivated", "ppl")] == pytest.approx(float(np.exp(nll.sum() / count.sum())))
    assert out.summary.loc["en", ("deactivated", "share_in_language")] == pytest.approx(
        (deact["detected"] == "en").mean()
    )
    out.save(tmp_path / "g")
    back = gen.GenerationResult.load(tmp_path / "g")
    assert np.allclose(back.summary.to_numpy(dtype=float), out.summary.to_numpy(dtype=float))
    assert list(back.samples["text"]) == list(out.samples["text"])
    bars = [(t.yaxis, t.name) for t in out.figure().data if t.type == "bar"]  # share and PPL panels, 3 conditions each
    assert [b for b in bars if b[0] == "y"] == [
        ("y", "normal"),
        ("y", "its test neurons deactivated"),
        ("y", "random neurons (same sizes) deactivated"),
    ]
    assert [b[1] for b in bars if b[0] == "y2"] == [b[1] for b in bars if b[0] == "y"]


# ---- CLI --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    for lang, text in TEXTS.items():
        (folder / f"{lang}.valid.txt").write_text("\n".join([text] * 6) + "\n", encoding="utf-8")
    return folder


def test_cli_perturb_and_sweep(models, tiny_dirs, corpus_dir, tmp_path, capsys):
    from lapelens.cli import main

    spec = neuron_spec(models["llama"])
    random_neurons(spec).save(tmp_path / "n")
    rs = random_neurons(spec, seed=9)
    rs.method = "random"
    rs.save(tmp_path / "rs")
    code = main(
        [
            "perturb",
            "--neurons",
            f"{tmp_path / 'n'},rand={tmp_path / 'rs'}",
            "--model",
            str(tiny_dirs["llama"]),
            "--corpus",
            str(corpus_dir),
            "--seq-len",
            "16",
            "--tokens-per-language",
            "128",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            "--n-boot",
            "50",
            "--figure",
            str(tmp_path / "f.html"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "Relative PPL change (%)" in printed and "ratio_vs_reference" in printed
    result = PerturbationResult.load(tmp_path / "out" / "test")
    assert result.meta["chunks"] == {l: 8 for l in LANGS}
    direct = perturbation_matrix(
        models["llama"], LanguageNeurons.load(tmp_path / "n"), _cli_chunks(models["llama"], corpus_dir), progress=False
    )
    assert np.allclose(result.ppl.to_numpy(), direct.ppl.loc[result.rows, result.columns].to_numpy(), rtol=1e-6)
    assert (tmp_path / "out" / "compare.csv").is_file() and (tmp_path / "f.html").is_file()

    fake_stats(spec).save(tmp_path / "stats")
    code = main(
        [
            "sweep",
            "--stats",
            str(tmp_path / "stats"),
            "--target",
            "fr",
            "--ratios",
            "0,0.05",
            "--model",
            str(tiny_dirs["llama"]),
            "--corpus",
            str(corpus_dir),
            "--seq-len",
            "16",
            "--tokens-per-language",
            "64",
            "--out",
            str(tmp_path / "sweep"),
            "--quiet",
            "--n-boot",
            "20",
        ]
    )
    assert code == 0 and SweepResult.load(tmp_path / "sweep").ratios == (0.0, 0.05)
    assert (
        main(
            [
                "perturb",
                "--neurons",
                str(tmp_path / "n"),
                "--model",
                str(tiny_dirs["llama"]),
                "--corpus",
                str(corpus_dir),
                "--out",
                str(tmp_path / "x"),
                "--tokens-per-language",
                "0",
                "--quiet",
            ]
        )
        == 2
    )


def _cli_chunks(model, corpus_dir):
    from lapelens.corpus import load_corpus

    return {l: pack_chunks(model.tokenizer, d, 16, 128) for l, d in load_corpus(corpus_dir, split="valid").items()}


def test_cli_steer_and_generate(models, tiny_dirs, tmp_path, capsys, fake_detector, monkeypatch):
    import lapelens.cli.generate
    import lapelens.cli.steer
    from lapelens.cli import main

    parallel = pd.DataFrame({l: [TEXTS[l], TEXTS[l][:20], TEXTS[l][5:]] for l in LANGS})
    for command in (lapelens.cli.steer, lapelens.cli.generate):
        monkeypatch.setattr(command, "load_parallel", lambda name, split, languages: parallel[list(languages)])

    spec = neuron_spec(models["gpt2"])
    neurons = random_neurons(spec, share=0.3)
    neurons.values["median"] = torch.ones(neurons.mask.shape)
    neurons.save(tmp_path / "n")
    fake_stats(spec).save(tmp_path / "stats")
    common = ["--model", str(tiny_dirs["gpt2"]), "--quiet", "--max-new-tokens", "4"]
    assert (
        main(
            [
                "steer",
                "--neurons",
                str(tmp_path / "n"),
                "--stats",
                str(tmp_path / "stats"),
                "--samples",
                "3",
                "--languages",
                "fr,en",
                "--out",
                str(tmp_path / "u"),
                *common,
            ]
        )
        == 0
    )
    assert "share >= 0.8" in capsys.readouterr().out
    assert list(gen.GenerationResult.load(tmp_path / "u").summary.index) == ["fr", "en"]
    assert (
        main(
            [
                "steer",
                "--mode",
                "kojima",
                "--neurons",
                str(tmp_path / "n"),
                "--samples",
                "2",
                "--languages",
                "zh",
                "--out",
                str(tmp_path / "k"),
                *common,
            ]
        )
        == 0
    )
    assert main(["steer", "--neurons", str(tmp_path / "n"), "--out", str(tmp_path / "e"), *common]) == 2
    assert "--stats" in capsys.readouterr().err
    assert (
        main(
            [
                "steer",
                "--mode",
                "prompted",
                "--neurons",
                str(tmp_path / "n"),
                "--stats",
                str(tmp_path / "stats"),
                "--languages",
                "en,fr",
                "--n-prompts",
                "2",
                "--out",
                str(tmp_path / "p"),
                *common,
            ]
        )
        == 0
    )
    prompted = gen.GenerationResult.load(tmp_path / "p")
    assert list(prompted.summary.index) == [("en", "fr"), ("fr", "en")]
    assert (
        main(
            [
                "generate",
                "--neurons",
                str(tmp_path / "n"),
                "--random-seed",
                "1",
                "--languages",
                "en,ja",
                "--n-prompts",
                "3",
                "--out",
                str(tmp_path / "g"),
                *common,
            ]
        )
        == 0
    )
    out = gen.GenerationResult.load(tmp_path / "g")
    assert list(out.summary.index) == ["en", "ja"]
    assert set(out.samples["condition"]) == {"normal", "deactivated", "random"}
    assert "share_in_language" in capsys.readouterr().out
