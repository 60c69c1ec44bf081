"""Sentence embeddings against a plain Hugging Face forward (hidden_states[i + 1]); the results' files,
figures and the `lapelens ses` command."""

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from lapelens import LanguageNeurons, LapelensError, load, load_model
from lapelens.cli import main
from lapelens.evaluate.embeddings import SentenceEmbeddings, sentence_embeddings
from lapelens.evaluate.similarity import DominanceResult, SimilarityResult
from lapelens.models import embedded_model_dir
from tiny import ARCHS, TEXTS, refuse_model_loads

N_ROWS = 5


@pytest.fixture(scope="module")
def parallel():
    """Aligned 'texts' of growing length (prefixes of the tiny texts), so that batches need padding."""
    rows = {
        lang: [text[: max(6, len(text) * (r + 1) // N_ROWS)] for r in range(N_ROWS)] for lang, text in TEXTS.items()
    }
    frame = pd.DataFrame(rows, index=pd.Index([f"p{r}" for r in range(N_ROWS)], name="id"))
    frame.columns.name = "lang"
    return frame


# ---- an independent reference: a plain HF forward, no lapelens hooks --------------------------------
def hf_hidden_states(folder, frame):
    """Per language and text, ``hidden_states[1:]`` ([layer, pos, d_model]) of the text run alone as [sep] + tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    sep = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    out = {}
    for lang in frame.columns:
        out[lang] = []
        for text in frame[lang]:
            ids = [sep] + tok(text, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                states = hf(torch.tensor([ids]), output_hidden_states=True, use_cache=False).hidden_states
            out[lang].append(torch.stack(states[1:])[:, 0])
    return out


def check_against_hf(emb, states, languages, atol):
    for k, lang in enumerate(languages):
        norms = []
        for t, h in enumerate(states[lang]):  # h: layer pos d_model
            torch.testing.assert_close(emb.embeddings[k, t], h[:, 1:].mean(1), atol=atol, rtol=1e-4)
            torch.testing.assert_close(emb.first_token[k, t], h[:, 1], atol=atol, rtol=1e-4)
            assert emb.n_tokens[k, t] == h.shape[1] - 1
            norms.append(h.norm(dim=-1))
        torch.testing.assert_close(
            emb.separator_norm[k], torch.stack([n[:, 0] for n in norms]).mean(0), atol=atol, rtol=1e-4
        )
        torch.testing.assert_close(
            emb.token_norm_median[k], torch.cat([n[:, 1:] for n in norms], 1).median(1).values, atol=atol, rtol=1e-4
        )
        dropped = emb.drop_first_token()
        for t, h in enumerate(states[lang]):
            if h.shape[1] > 2:
                torch.testing.assert_close(dropped.embeddings[k, t], h[:, 2:].mean(1), atol=atol, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_embeddings_equal_hf_hidden_states(tiny_dirs, parallel, arch):
    """At every layer i the mean over content tokens of HF's hidden_states[i + 1]: the last one is after the
    final norm, for every architecture."""
    model = load_model(tiny_dirs[arch])
    lengths = [len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in parallel["en"]]
    assert len(set(lengths[:3])) > 1  # the first batch of 3 is padded
    emb = sentence_embeddings(model, parallel, batch_size=3, progress=False)
    assert emb.embeddings.shape == (len(parallel.columns), N_ROWS, model.cfg.n_layers, model.cfg.d_model)
    check_against_hf(emb, hf_hidden_states(tiny_dirs[arch], parallel), list(parallel.columns), atol=1e-5)
    assert emb.meta["separator_in_mean"] is False and emb.meta["first_token_in_mean"] is True
    assert emb.meta["n_truncated"] == 0 and emb.meta["text_ids"] == list(parallel.index)


def test_embedded_model_equals_hf_hidden_states():
    model = load_model("embedded")
    from lapelens import load_parallel

    frame = load_parallel("embedded", split="valid").head(5)
    emb = sentence_embeddings(model, frame, batch_size=2, progress=False)
    check_against_hf(emb, hf_hidden_states(embedded_model_dir(), frame), list(frame.columns), atol=1e-4)


def test_first_token_option_and_batching(tiny_dirs, parallel):
    model = load_model(tiny_dirs["llama"])
    emb = sentence_embeddings(model, parallel, batch_size=3, progress=False)
    single = sentence_embeddings(model, parallel, batch_size=1, progress=False)
    torch.testing.assert_close(emb.embeddings, single.embeddings, atol=1e-5, rtol=1e-5)
    out = sentence_embeddings(model, parallel, batch_size=2, progress=False, first_token=False)
    assert out.meta["first_token_in_mean"] is False and not out.first_token_in_mean
    torch.testing.assert_close(out.embeddings, emb.drop_first_token().embeddings, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.with_first_token(True).embeddings, emb.embeddings, atol=1e-5, rtol=1e-5)
    # A one-token text keeps its token (nothing else to average).
    one = SentenceEmbeddings(
        ("a", "b"), torch.ones(2, 2, 1, 3), {}, torch.zeros(2, 2, 1, 3), torch.tensor([[1, 2], [1, 2]])
    )
    dropped = one.drop_first_token()
    assert dropped.embeddings[:, 0].eq(1).all() and dropped.embeddings[:, 1].eq(2).all()
    assert dropped.meta["n_single_token"] == 2


def test_truncation_and_language_subset(tiny_dirs, parallel):
    model = load_model(tiny_dirs["llama"])
    emb = sentence_embeddings(model, parallel, languages=["zh", "en"], max_tokens=4, progress=False)
    assert emb.languages == ("zh", "en")
    lengths = [len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in parallel["en"]]
    assert emb.meta["max_tokens"] == 4 and emb.meta["n_truncated"] >= sum(n > 4 for n in lengths) > 0
    ids = model.tokenizer(parallel["en"].iloc[-1], add_special_tokens=False)["input_ids"][:4]
    prefix = model.tokenizer.decode(ids)
    assert model.tokenizer(prefix, add_special_tokens=False)["input_ids"] == ids
    ref = sentence_embeddings(model, pd.DataFrame({"en": [prefix, prefix], "zh": ["x", "y"]}), progress=False)
    torch.testing.assert_close(emb.embeddings[1, -1], ref.embeddings[0, 0], atol=1e-5, rtol=1e-5)
    sub = emb.subset(["en"] * 1 + ["zh"])
    assert sub.languages == ("en", "zh") and torch.equal(sub.embeddings[0], emb.embeddings[1])
    assert torch.equal(sub.first_token[1], emb.first_token[0])


def test_identical_texts_align_perfectly(tiny_dirs, parallel):
    model = load_model(tiny_dirs["gpt2"])
    frame = pd.DataFrame({"en": parallel["en"], "copy": parallel["en"], "fr": parallel["fr"]})
    emb = sentence_embeddings(model, frame, batch_size=2, progress=False)
    pairs = emb.similarity(n_boot=10).pairs
    for measure in ("raw", "centered", "standardized"):
        pairs = emb.similarity(measure=measure, vectors="all", n_boot=10).pairs
        copy = pairs.xs(("en", "copy"), level=("source", "target"))
        assert copy["mean"].tolist() == pytest.approx([1.0] * model.cfg.n_layers)
        assert copy["retrieval"].tolist() == [1.0] * model.cfg.n_layers
        assert (pairs.xs(("en", "fr"), level=("source", "target"))["mean"] < 0.999).all()


# ---- results: files ---------------------------------------------------------------------------------
def _neurons(n_layers, languages=("a", "b")):
    mask = torch.zeros(len(languages), n_layers, 8, dtype=torch.bool)
    mask[0, 0, :3] = True
    mask[1, -1, 2:4] = True
    return LanguageNeurons(languages, mask, method="lape", meta={"model": "m"})


def _embeddings(n_texts=6, n_layers=3, seed=2):
    g = torch.Generator().manual_seed(seed)
    emb = 5 + torch.randn(3, n_texts, n_layers, 5, generator=g)
    first = 30 + torch.randn(3, n_texts, n_layers, 5, generator=g)
    return SentenceEmbeddings(
        ("en", "zh", "ja"),
        emb,
        {"model": "m", "n_truncated": 0},
        first,
        torch.randint(1, 6, (3, n_texts), generator=g),
        50 + torch.rand(3, n_layers, generator=g),
        8 + torch.rand(3, n_layers, generator=g),
    )


def test_results_round_trip(tmp_path):
    emb = _embeddings()
    ses = emb.similarity(_neurons(3), n_boot=30)
    assert list(ses.ses.columns[:4]) == ["mean", "mismatched", "gap", "retrieval"]
    assert ses.meta["measure"] == "standardized" and ses.meta["vectors"] == "heldout" and ses.meta["chance"] == 1 / 6
    assert ses.neurons_per_layer.loc[0, "a"] == 3 and ses.neurons_per_layer.loc[2, "b"] == 2
    assert list(ses.norms.index.names) == ["language", "layer"] and len(ses.norms) == 9
    # The first content tokens here are far larger than the median token: all are sinks.
    assert (ses.norms["first_token_sinks"] == 1.0).all()
    assert ses.first_token["gap_first_in"].tolist() == pytest.approx(ses.ses["gap"].tolist())
    out = emb.drop_first_token().similarity(n_boot=30)
    assert out.first_token["gap_first_out"].tolist() == pytest.approx(out.ses["gap"].tolist())
    assert out.first_token["gap_first_in"].tolist() == pytest.approx(
        ses.ses["gap"].tolist(), rel=1e-5
    )  # float32 round trip
    dom = emb.dominance(n_boot=30)
    ses.save(tmp_path)
    dom.save(tmp_path)
    ses2, dom2 = SimilarityResult.load(tmp_path), DominanceResult.load(tmp_path)
    for a, b in [
        (ses.ses, ses2.ses),
        (ses.pairs, ses2.pairs),
        (ses.energy, ses2.energy),
        (ses.norms, ses2.norms),
        (ses.top_dimensions, ses2.top_dimensions),
        (ses.first_token, ses2.first_token),
    ]:
        pd.testing.assert_frame_equal(a, b, check_dtype=False, check_names=False)
    pd.testing.assert_frame_equal(ses2.neurons_per_layer, ses.neurons_per_layer, check_dtype=False)
    for name in ("retrieval", "aligned", "mismatched", "summary", "contrast", "contrast_layers"):
        pd.testing.assert_frame_equal(getattr(dom, name), getattr(dom2, name), check_dtype=False, check_names=False)
    assert ses2.meta.pop("lapelens_version") == dom2.meta.pop("lapelens_version")  # stamped when saved
    assert ses2.meta == ses.meta and dom2.meta == dom.meta and dom2.shifted is None
    raw = emb.dominance(measure="raw", n_boot=10)
    raw.save(tmp_path / "raw")
    again = DominanceResult.load(tmp_path / "raw")
    pd.testing.assert_frame_equal(again.shifted, raw.shifted, check_names=False)
    pd.testing.assert_frame_equal(again.shifted_mismatched, raw.shifted_mismatched, check_names=False)
    # Embeddings: every tensor back, and the same measures from them.
    emb.save(tmp_path / "emb")
    back = load(tmp_path / "emb")
    assert isinstance(back, SentenceEmbeddings) and back.languages == emb.languages
    for name in ("embeddings", "first_token", "n_tokens", "separator_norm", "token_norm_median"):
        assert torch.equal(getattr(back, name), getattr(emb, name)), name
    pd.testing.assert_frame_equal(back.similarity(n_boot=30).ses, emb.similarity(n_boot=30).ses)


def test_schema_1_results_still_load(tmp_path):
    """Folders saved before the measures (raw cosine, one partner per text) load as raw results."""
    layers = pd.RangeIndex(2, name="layer")
    pd.DataFrame({"en-zh": [0.9, 0.8], "mean": [0.9, 0.8], "mismatched": [0.85, 0.79]}, index=layers).to_csv(
        tmp_path / "ses.csv"
    )
    (tmp_path / "ses.json").write_text(
        json.dumps({"kind": "similarity", "schema_version": 1, "model": "m", "n_texts": 4})
    )
    for suffix, value in (("", 0.9), ("_unshifted", 0.5), ("_mismatched", 0.88)):
        pd.DataFrame({"en": [value] * 2, "zh": [value] * 2}, index=layers).to_csv(tmp_path / f"dominance{suffix}.csv")
    (tmp_path / "dominance.json").write_text(json.dumps({"kind": "dominance", "model": "m", "vectors": "heldout"}))
    ses, dom = SimilarityResult.load(tmp_path), DominanceResult.load(tmp_path)
    assert list(ses.ses.columns) == ["mean", "mismatched", "gap"] and ses.ses["gap"].tolist() == pytest.approx(
        [0.05, 0.01]
    )
    assert ses.meta["measure"] == "raw" and ses.peak().name == 0
    assert (
        dom.retrieval is None
        and dom.shifted["en"].tolist() == [0.9, 0.9]
        and dom.shifted_mismatched["zh"].tolist() == [0.88] * 2
    )
    assert len(ses.figure().data) == 3 and len(dom.figure().data) == 2 * 3 + 3
    (tmp_path / "ses.json").write_text(json.dumps({"kind": "similarity", "schema_version": 3}))
    with pytest.raises(LapelensError, match="schema version 3"):
        SimilarityResult.load(tmp_path)


def test_load_refuses_a_folder_without_results(tmp_path):
    with pytest.raises(LapelensError, match="not a similarity result .expected ses.json and ses.csv."):
        SimilarityResult.load(tmp_path)
    with pytest.raises(LapelensError, match="not a dominance result .expected dominance.json and dominance.csv."):
        DominanceResult.load(tmp_path)
    with pytest.raises(LapelensError, match="holds no sentence embeddings"):
        SentenceEmbeddings.load(tmp_path)


# ---- figures ----------------------------------------------------------------------------------------
def test_figures_draw_the_tables():
    emb = _embeddings()
    ses = emb.similarity(_neurons(3), n_boot=30)
    fig = ses.figure()
    assert isinstance(fig, go.Figure) and "standardized" in fig.layout.title.text
    by_name = {t.name: t for t in fig.data if t.showlegend is not False}
    assert list(by_name["mean over pairs"].y) == pytest.approx(ses.ses["gap"].tolist())
    assert list(by_name["retrieval, mean over pairs"].y) == pytest.approx(ses.ses["retrieval"].tolist())
    assert list(by_name["chance (1/6)"].y) == pytest.approx([1 / 6] * 3)
    band = next(t for t in fig.data if t.name == "95% interval" and t.legend == "legend")
    assert list(band.y) == pytest.approx(ses.ses["gap_high"].tolist() + ses.ses["gap_low"].tolist()[::-1])
    pairs = [t for t in fig.data if t.legendgroup == "pairs"]
    assert len(pairs) == 3 and list(pairs[0].y) == pytest.approx(
        ses.pairs.xs(("en", "zh"), level=(1, 2))["gap"].tolist()
    )
    # Each panel its own legend: gap (legend), retrieval (legend2), the cosines themselves (legend3), neurons (legend4).
    assert {t.legend for t in fig.data} == {"legend", "legend2", "legend3", "legend4"}
    assert [t.name for t in fig.data if t.type == "bar"] == [
        "a",
        "b",
    ] and fig.layout.legend4.x == fig.layout.xaxis4.domain[0]
    cosines = {t.name: t for t in fig.data if t.legend == "legend3" and t.showlegend is not False}
    assert list(cosines["aligned (translation)"].y) == pytest.approx(ses.ses["mean"].tolist())
    assert list(cosines["mismatched (t ≠ u)"].y) == pytest.approx(ses.ses["mismatched"].tolist())
    assert all(t.visible is None for t in fig.data)  # every trace drawn, none only in the legend
    # three panel titles and the caption, without the neuron panel
    assert len(SimilarityResult(ses.ses, ses.meta).figure().layout.annotations) == 3 + 1
    dom = emb.dominance(n_boot=30)
    dfig = dom.figure()
    zh = [t for t in dfig.data if t.legendgroup == "zh"]
    assert list(zh[0].y) == pytest.approx(dom.retrieval["zh"].tolist())
    assert list(zh[1].y) == pytest.approx(dom.aligned["zh"].tolist()) and zh[2].line.dash == "dash"
    assert list(zh[2].y) == pytest.approx(dom.mismatched["zh"].tolist())
    assert any("Retrieval into en minus the best other target" in a.text for a in dfig.layout.annotations)
    raw = emb.dominance(measure="raw", n_boot=10).figure()
    en = [t for t in raw.data if t.legendgroup == "en"]
    assert [t.line.dash for t in en] == [None, "solid", "dash", "dot"]


# ---- CLI ----------------------------------------------------------------------------------------
def test_cli_writes_tables_figures_and_embeddings(tiny_dirs, parallel, tmp_path, capsys):
    csv = tmp_path / "parallel.csv"
    parallel.to_csv(csv)
    neurons = tmp_path / "neurons"
    _neurons(2, ("en", "fr")).save(neurons)
    out, saved = tmp_path / "out", tmp_path / "emb"
    argv = [
        "ses",
        "--model",
        str(tiny_dirs["llama"]),
        "--parallel",
        str(csv),
        "--languages",
        "en,fr,zh",
        "--n-texts",
        "4",
        "--seed",
        "3",
        "--batch-size",
        "2",
        "--n-boot",
        "50",
        "--neurons",
        str(neurons),
        "--embeddings-out",
        str(saved),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for needle in (
        "SES per layer: measure standardized, vectors heldout; 4 texts x 3 languages",
        "Largest gap: layer",
        "en minus the best other target",
        "Diagnostics",
        "First content token in vs out",
    ):
        assert needle in printed, needle
    for name in (
        "ses.csv",
        "ses_pairs.csv",
        "ses_neurons.csv",
        "ses_energy.csv",
        "ses_top_dims.csv",
        "ses_norms.csv",
        "ses_first_token.csv",
        "ses.json",
        "dominance.csv",
        "dominance_summary.csv",
        "dominance_contrast.csv",
        "dominance.json",
        "ses.html",
        "dominance.html",
    ):
        assert (out / name).is_file(), name
    ses, dom = SimilarityResult.load(out), DominanceResult.load(out)
    ids = ses.meta["text_ids"]
    assert len(ids) == 4 and ids == [i for i in parallel.index if i in ids]  # a sample, in corpus order
    assert ses.meta["parallel"] == str(csv) and ses.meta["n_boot"] == 50 and dom.meta["vectors"] == "heldout"
    # The same numbers as the library on the same texts.
    emb = sentence_embeddings(
        load_model(tiny_dirs["llama"]), parallel.loc[ids], languages=["en", "fr", "zh"], progress=False
    )
    pd.testing.assert_frame_equal(ses.ses, emb.similarity(n_boot=50, seed=3).ses, atol=1e-6, check_names=False)
    pd.testing.assert_frame_equal(
        dom.retrieval, emb.dominance(n_boot=50, seed=3).retrieval, atol=1e-6, check_names=False
    )
    # From the saved embeddings, without the model: any measure, first token out.
    raw_out = tmp_path / "raw"
    assert (
        main(
            [
                "ses",
                "--embeddings",
                str(saved),
                "--measure",
                "raw",
                "--drop-first-token",
                "--n-boot",
                "50",
                "--out",
                str(raw_out),
                "--quiet",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == ""
    raw = SimilarityResult.load(raw_out)
    expected = SentenceEmbeddings.load(saved).drop_first_token().similarity(measure="raw", n_boot=50).ses
    pd.testing.assert_frame_equal(raw.ses, expected, check_names=False)
    assert raw.meta["first_token_in_mean"] is False and DominanceResult.load(raw_out).shifted is not None


def test_cli_errors(tiny_dirs, parallel, tmp_path, capsys, monkeypatch):
    csv = tmp_path / "parallel.csv"
    parallel.to_csv(csv)
    base = ["ses", "--model", str(tiny_dirs["llama"]), "--parallel", str(csv), "--out", str(tmp_path / "o")]
    assert main(base + ["--n-texts", "1"]) == 2
    assert "--n-texts must be at least 2" in capsys.readouterr().err
    assert main(base + ["--n-texts", "50"]) == 2
    assert "at most 5" in capsys.readouterr().err
    assert main(base + ["--n-texts", "3", "--languages", "en,xx"]) == 2
    assert "['xx'] are not in the parallel data" in capsys.readouterr().err
    refuse_model_loads(monkeypatch, "the model was loaded")
    assert main(base + ["--n-texts", "3"]) == 2  # refused before the model runs
    assert "needs at least 4 aligned texts, got 3: give more texts or --vectors all" in capsys.readouterr().err
    assert main(base + ["--n-texts", "4", "--n-boot", "0"]) == 2
    assert "--n-boot must be a positive number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ["--measure", "cosine"])
    assert "invalid choice: 'cosine'" in capsys.readouterr().err
    _embeddings().save(tmp_path / "emb")
    assert (
        main(["ses", "--embeddings", str(tmp_path / "emb"), "--languages", "en,fr", "--out", str(tmp_path / "o")]) == 2
    )
    assert "--languages fr: not in the embeddings" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_input(tiny_dirs, parallel):
    model = load_model(tiny_dirs["llama"])
    with pytest.raises(LapelensError, match=r"\['de'\] are not in the parallel data"):
        sentence_embeddings(model, parallel, languages=["en", "de"], progress=False)
    with pytest.raises(LapelensError, match="at least 2 aligned texts"):
        sentence_embeddings(model, parallel.iloc[:1], progress=False)
    with pytest.raises(LapelensError, match="at least 2 languages"):
        sentence_embeddings(model, parallel, languages=["en"], progress=False)
    blank = parallel.copy()
    blank.loc["p2", "fr"] = "  "
    with pytest.raises(LapelensError, match=r"'fr' has empty or missing texts in rows \['p2'\]"):
        sentence_embeddings(model, blank, progress=False)
    with pytest.raises(LapelensError, match="for a model with 2 layers, the embeddings have 3"):
        _embeddings().similarity(_neurons(2), n_boot=5)
    with pytest.raises(LapelensError, match=r"\['ko'\] are not in these embeddings"):
        _embeddings().subset(["ko"])
    with pytest.raises(LapelensError, match="first_token and n_tokens together"):
        SentenceEmbeddings(("a", "b"), torch.zeros(2, 2, 1, 3), {}, torch.zeros(2, 2, 1, 3))
    with pytest.raises(LapelensError, match=r"shape \(lang=2, text, layer, d_model\)"):
        SentenceEmbeddings(("a", "b"), torch.zeros(3, 2, 1, 3))
    assert np.isfinite(_embeddings().similarity(n_boot=5).ses.to_numpy()).all()


def test_cli_reads_an_indonesian_column_named_id(tiny_dirs, parallel, tmp_path):
    """Indonesian's code is "id": asked for as a language, the column is text, not the row index."""
    csv = tmp_path / "parallel.csv"
    parallel[["en", "fr"]].rename(columns={"fr": "id"}).to_csv(csv, index=False)
    out = tmp_path / "out"
    assert (
        main(
            [
                "ses",
                "--model",
                str(tiny_dirs["llama"]),
                "--parallel",
                str(csv),
                "--languages",
                "en,id",
                "--n-texts",
                "4",
                "--n-boot",
                "10",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    ses = SimilarityResult.load(out)
    assert ses.meta["languages"] == ["en", "id"] and len(ses.meta["text_ids"]) == 4


# ---- the ses and dominance experiments of `lapelens reproduce` -----------------------------------------
def test_reproduce_settings_of_ses_and_dominance(tiny_dirs, parallel, tmp_path, capsys, monkeypatch):
    """Measure, vectors and resamples are reproduce flags (standardized, heldout, 1000 by default), shared by
    both experiments and used by their stages; their stage records keep the keys earlier runs wrote (so
    those stages are reused)."""
    from types import SimpleNamespace

    from lapelens.evaluate import EXPERIMENTS, Context
    from lapelens.pipeline import ReproduceConfig, validate

    model, langs = load_model(tiny_dirs["llama"]), ["en", "zh", "fr"]
    settings = SimpleNamespace(
        languages=langs, ses_texts=4, ses_measure="raw", ses_vectors="all", ses_n_boot=20, seed=3
    )
    ctx = Context(settings, model, parallel=lambda: parallel)
    emb = sentence_embeddings(model, parallel.head(4), langs, progress=False)
    ses, dom = EXPERIMENTS["ses"].compute(ctx), EXPERIMENTS["dominance"].compute(ctx)
    pd.testing.assert_frame_equal(ses.ses, emb.similarity(measure="raw", vectors="all", n_boot=20, seed=3).ses)
    pd.testing.assert_frame_equal(dom.summary, emb.dominance(measure="raw", vectors="all", n_boot=20, seed=3).summary)
    assert ses.meta["measure"] == dom.meta["measure"] == "raw" and dom.shifted is not None  # Eq. 6 under raw

    cfg = validate(ReproduceConfig(out="x", seed=3))
    expected = {"ses_texts": 200, "measure": "standardized", "vectors": "heldout", "n_boot": 1000, "seed": 3}
    assert EXPERIMENTS["ses"].settings_record(cfg) == EXPERIMENTS["dominance"].settings_record(cfg) == expected
    quick = validate(ReproduceConfig.quick("x", ses_measure="raw", ses_vectors="all", ses_n_boot=50))
    assert EXPERIMENTS["ses"].settings_record(quick) == {
        "ses_texts": 40,
        "measure": "raw",
        "vectors": "all",
        "n_boot": 50,
        "seed": 0,
    }
    refuse_model_loads(monkeypatch, "a model was loaded before the settings were checked")
    capsys.readouterr()
    for flags, message in (
        (["--ses-measure", "cosine"], "--ses-measure must be one of raw, centered, standardized, got 'cosine'."),
        (["--ses-vectors", "half"], "--ses-vectors must be one of heldout, all, got 'half'."),
        (["--ses-n-boot", "0"], "--ses-n-boot must be at least 1, got 0."),
        (["--ses-texts", "3"], "--ses-texts must be at least 4, got 3."),
    ):
        assert main(["reproduce", "--out", str(tmp_path / "run"), *flags]) == 2
        assert capsys.readouterr().err.strip() == f"lapelens reproduce: error: {message}"
    assert not (tmp_path / "run").exists()
