"""Sentence embeddings against HF-module hooks; SES and dominance arithmetic against hand-computed numbers."""

import math

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from lapelens import LanguageNeurons, LapelensError, load_model
from lapelens.cli import main
from lapelens.evaluate.similarity import (
    DominanceResult, SentenceEmbeddings, SimilarityResult, dominance_matrix, mean_over_sources, pair_similarity,
    partner, sentence_embeddings, ses_matrix, shifted_similarity,
)
from tiny import TEXTS

N_ROWS = 5


@pytest.fixture(scope="module")
def parallel():
    """Aligned 'texts' of growing length (prefixes of the tiny texts), so that batches need padding."""
    rows = {lang: [text[: max(6, len(text) * (r + 1) // N_ROWS)] for r in range(N_ROWS)] for lang, text in TEXTS.items()}
    frame = pd.DataFrame(rows, index=pd.Index([f"p{r}" for r in range(N_ROWS)], name="id"))
    frame.columns.name = "lang"
    return frame


# ---- an independent reference: plain forward hooks on the HF decoder layers -------------------
def _hf_reference(folder, arch, tokenizer, frame):
    """[lang, text, layer, d_model]: mean over the text's tokens (BOS excluded) of each decoder layer's output,
    every text run alone (no padding)."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    layers = hf.transformer.h if arch == "gpt2" else hf.model.layers
    outs = {}
    handles = [layer.register_forward_hook(lambda mod, args, out, i=i: outs.__setitem__(i, out[0] if isinstance(out, tuple) else out))
               for i, layer in enumerate(layers)]
    try:
        result = []
        for lang in frame.columns:
            per_text = []
            for text in frame[lang]:
                ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
                with torch.no_grad():
                    hf(torch.tensor([ids]), use_cache=False)
                per_text.append(torch.stack([outs[i][0, 1:].mean(0) for i in range(len(layers))]))
            result.append(torch.stack(per_text))
        return torch.stack(result)
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_embeddings_equal_hf_hooks(tiny_dirs, parallel, arch):
    model = load_model(tiny_dirs[arch])
    lengths = [len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in parallel["en"]]
    assert len(set(lengths[:3])) > 1  # the first batch of 3 is padded
    emb = sentence_embeddings(model, parallel, batch_size=3, progress=False)
    ref = _hf_reference(tiny_dirs[arch], arch, model.tokenizer, parallel)
    assert emb.languages == tuple(parallel.columns)
    assert emb.embeddings.shape == (len(parallel.columns), N_ROWS, model.cfg.n_layers, model.cfg.d_model)
    torch.testing.assert_close(emb.embeddings, ref, atol=1e-5, rtol=1e-5)
    # Batched with padding == one text at a time.
    single = sentence_embeddings(model, parallel, batch_size=1, progress=False)
    torch.testing.assert_close(emb.embeddings, single.embeddings, atol=1e-5, rtol=1e-5)
    assert emb.meta["separator_in_mean"] is False and emb.meta["n_truncated"] == 0
    assert emb.meta["text_ids"] == list(parallel.index)


def test_truncation_and_language_subset(tiny_dirs, parallel):
    model = load_model(tiny_dirs["llama"])
    emb = sentence_embeddings(model, parallel, languages=["zh", "en"], max_tokens=4, progress=False)
    assert emb.languages == ("zh", "en")
    lengths = [len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in parallel["en"]]
    assert emb.meta["max_tokens"] == 4 and emb.meta["n_truncated"] >= sum(n > 4 for n in lengths) > 0
    # Truncation = embedding the first 4 tokens' text: compare one English text with the full run on its prefix.
    ids = model.tokenizer(parallel["en"].iloc[-1], add_special_tokens=False)["input_ids"][:4]
    prefix = model.tokenizer.decode(ids)
    assert model.tokenizer(prefix, add_special_tokens=False)["input_ids"] == ids
    short = pd.DataFrame({"en": [prefix, prefix], "zh": ["x", "y"]})
    ref = sentence_embeddings(model, short, progress=False)
    torch.testing.assert_close(emb.embeddings[1, -1], ref.embeddings[0, 0], atol=1e-5, rtol=1e-5)


def test_identical_texts_have_ses_one(tiny_dirs, parallel):
    model = load_model(tiny_dirs["gpt2"])
    frame = pd.DataFrame({"en": parallel["en"], "copy": parallel["en"], "fr": parallel["fr"]})
    emb = sentence_embeddings(model, frame, batch_size=2, progress=False)
    ses = emb.similarity().ses
    assert list(ses.columns) == ["en-copy", "en-fr", "copy-fr", "mean", "mismatched"]
    assert ses["en-copy"].tolist() == pytest.approx([1.0] * model.cfg.n_layers, abs=1e-6)
    assert ses["en-fr"].tolist() == pytest.approx(ses["copy-fr"].tolist(), abs=1e-6)
    assert (ses["en-fr"] < 0.999).all()
    assert ses["mean"].tolist() == pytest.approx(ses[["en-copy", "en-fr", "copy-fr"]].mean(axis=1).tolist())
    # Identical embeddings: shifting one onto the other is exact, so the pair's cosine is 1 under both v's.
    for vectors in ("heldout", "all"):
        m = dominance_matrix(emb.embeddings, vectors)
        assert m[0, 1].tolist() == pytest.approx([1.0] * model.cfg.n_layers, abs=1e-6)
        assert m[1, 0].tolist() == pytest.approx([1.0] * model.cfg.n_layers, abs=1e-6)


# ---- the arithmetic, by hand -------------------------------------------------------------------
# Two languages, two texts, one layer, d_model 2.
H0 = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
H1 = torch.tensor([[[1.0, 1.0]], [[1.0, -1.0]]])
EMB = torch.stack([H0, H1])  # lang text layer d_model


def test_ses_golden():
    # cos([1,0],[1,1]) = 1/sqrt2, cos([0,1],[1,-1]) = -1/sqrt2 -> mean 0
    assert pair_similarity(H0, H1).tolist() == pytest.approx([0.0], abs=1e-12)
    a = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    b = torch.tensor([[[1.0, 1.0]], [[0.0, 3.0]]])
    assert pair_similarity(a, b).tolist() == pytest.approx([(1 / math.sqrt(2) + 1) / 2])
    m = ses_matrix(torch.stack([a, b, H1]))
    assert m.shape == (3, 3, 1)
    assert m[0, 1, 0].item() == pytest.approx((1 / math.sqrt(2) + 1) / 2)
    assert m[1, 0, 0].item() == m[0, 1, 0].item()
    # b vs H1: cos([1,1],[1,1]) = 1, cos([0,3],[1,-1]) = -1/sqrt2
    assert m[1, 2, 0].item() == pytest.approx((1 - 1 / math.sqrt(2)) / 2)
    assert torch.diagonal(m[:, :, 0]).tolist() == pytest.approx([1.0] * 3)
    # Control: text t against text partner(t) = 1 - t. a vs b: cos([1,0],[0,3]) = 0, cos([0,1],[1,1]) = 1/sqrt2.
    c = ses_matrix(torch.stack([a, b]), mismatched=True)
    assert c[0, 1, 0].item() == pytest.approx(1 / (2 * math.sqrt(2)))
    # b vs a: cos([1,1],[0,1]) = 1/sqrt2, cos([0,3],[1,0]) = 0; a vs a: cos([1,0],[0,1]) = 0.
    assert c[1, 0, 0].item() == pytest.approx(1 / (2 * math.sqrt(2)))
    assert c[0, 0, 0].item() == pytest.approx(0.0, abs=1e-12)
    result = SentenceEmbeddings(("a", "b"), torch.stack([a, b])).similarity()
    assert result.ses.loc[0, "mismatched"] == pytest.approx(1 / (2 * math.sqrt(2)))


def test_partner_never_pairs_a_text_with_itself():
    for n in range(2, 9):
        p = partner(n)
        assert sorted(p.tolist()) == list(range(n)) and (p != torch.arange(n)).all()
    assert partner(6).tolist() == [3, 4, 5, 0, 1, 2]


def test_dominance_golden_all_vectors():
    # v0 = [.5,.5], v1 = [1,0].
    # 0 -> 1: text0 [1.5,-.5] vs [1,1]: 1/sqrt5; text1 [.5,.5] vs [1,-1]: 0.
    # 1 -> 0: text0 [.5,1.5] vs [1,0]: 1/sqrt10; text1 [.5,-.5] vs [0,1]: -1/sqrt2.
    m = dominance_matrix(EMB, "all")
    assert m[0, 1, 0].item() == pytest.approx(1 / (2 * math.sqrt(5)))
    assert m[1, 0, 0].item() == pytest.approx((1 / math.sqrt(10) - 1 / math.sqrt(2)) / 2)
    assert m[0, 0, 0].item() == pytest.approx(1.0) and m[1, 1, 0].item() == pytest.approx(1.0)
    result = SentenceEmbeddings(("a", "b"), EMB).dominance("all")
    assert result.shifted.loc[0, "b"] == pytest.approx(1 / (2 * math.sqrt(5)))
    assert result.shifted.loc[0, "a"] == pytest.approx((1 / math.sqrt(10) - 1 / math.sqrt(2)) / 2)
    assert result.unshifted.loc[0].tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
    # Control, target text swapped: 0 -> 1: [1.5,-.5] vs [1,-1]: 2/sqrt5; [.5,.5] vs [1,1]: 1.
    # 1 -> 0: [.5,1.5] vs [0,1]: 3/sqrt10; [.5,-.5] vs [1,0]: 1/sqrt2.
    control = dominance_matrix(EMB, "all", mismatched=True)
    assert control[0, 1, 0].item() == pytest.approx((2 / math.sqrt(5) + 1) / 2)
    assert control[1, 0, 0].item() == pytest.approx((3 / math.sqrt(10) + 1 / math.sqrt(2)) / 2)
    assert result.mismatched.loc[0, "b"] == pytest.approx((2 / math.sqrt(5) + 1) / 2)


def test_dominance_golden_heldout_vectors():
    # Fold 1: v from text0 (v0 = [1,0], v1 = [1,1]), scored on text1:
    #   0 -> 1: [0,1]-[1,0]+[1,1] = [0,2] vs [1,-1]: -1/sqrt2;  1 -> 0: [1,-2] vs [0,1]: -2/sqrt5.
    # Fold 2: v from text1 (v0 = [0,1], v1 = [1,-1]), scored on text0:
    #   0 -> 1: [2,-2] vs [1,1]: 0;  1 -> 0: [0,3] vs [1,0]: 0.
    m = dominance_matrix(EMB, "heldout")
    assert m[0, 1, 0].item() == pytest.approx(-1 / (2 * math.sqrt(2)))
    assert m[1, 0, 0].item() == pytest.approx(-1 / math.sqrt(5))
    # Halves of one text have no other text to mismatch with: the control is undefined.
    assert dominance_matrix(EMB, "heldout", mismatched=True).isnan().all()


@pytest.mark.parametrize("mismatched", [False, True])
def test_heldout_weighs_every_text_once_with_odd_counts(mismatched):
    torch.manual_seed(0)
    emb = torch.randn(3, 5, 2, 4)
    got = dominance_matrix(emb, "heldout", mismatched=mismatched)
    halves = [[0, 1, 2], [3, 4]]  # first half rounds up
    # Control partners, within the scored half: shift by half its size (3 -> 1, 2 -> 1).
    partners = {0: 1, 1: 2, 2: 0, 3: 4, 4: 3}
    expected = torch.zeros(3, 3, 2, dtype=torch.float64)
    for t in range(5):
        other = halves[1] if t in halves[0] else halves[0]
        v = emb[:, other].double().mean(1)
        u = partners[t] if mismatched else t
        for k in range(3):
            for c in range(3):
                h = emb[k, t].double() - v[k] + v[c]
                expected[k, c] += torch.nn.functional.cosine_similarity(h, emb[c, u].double(), dim=-1) / 5
    torch.testing.assert_close(got, expected)


def test_shift_to_own_language_is_plain_ses():
    torch.manual_seed(1)
    h_k, h_c, v = torch.randn(4, 3, 6), torch.randn(4, 3, 6), torch.randn(3, 6)
    # c == k: the shift cancels (v_c = v_k), leaving the plain SES of h_k vs h_c.
    torch.testing.assert_close(shifted_similarity(h_k, h_c, v, v), pair_similarity(h_k, h_c))
    torch.testing.assert_close(shifted_similarity(h_k, h_k, v, v), torch.ones(3, dtype=torch.float64))
    for vectors in ("heldout", "all"):
        m = dominance_matrix(torch.stack([h_k, h_c]), vectors)
        torch.testing.assert_close(torch.diagonal(m, dim1=0, dim2=1), torch.ones(3, 2, dtype=torch.float64))


def test_mean_over_sources_skips_the_target():
    m = torch.tensor([[10.0 * k + c for c in range(3)] for k in range(3)])[:, :, None]
    assert mean_over_sources(m)[:, 0].tolist() == pytest.approx([15.0, 11.0, 7.0])


# ---- results: save/load and figures -------------------------------------------------------------
def _neurons(n_layers, languages=("a", "b")):
    mask = torch.zeros(len(languages), n_layers, 8, dtype=torch.bool)
    mask[0, 0, :3] = True
    mask[1, -1, 2:4] = True
    return LanguageNeurons(languages, mask, method="lape", meta={"model": "m"})


def test_results_round_trip_and_figures(tmp_path):
    torch.manual_seed(2)
    emb = SentenceEmbeddings(("en", "zh", "ja"), torch.randn(3, 4, 2, 5), meta={"model": "m"})
    ses = emb.similarity(_neurons(2))
    assert ses.ses.index.name == "layer" and ses.ses.columns.name == "pair"
    assert list(ses.ses.columns) == ["en-zh", "en-ja", "zh-ja", "mean", "mismatched"]
    assert ses.ses.loc[1, "en-ja"] == pytest.approx(pair_similarity(emb.embeddings[0], emb.embeddings[2])[1].item())
    assert ses.meta["n_texts"] == 4 and ses.meta["languages"] == ["en", "zh", "ja"] and "lapelens_version" in ses.meta
    assert ses.neurons_per_layer.loc[0, "a"] == 3 and ses.neurons_per_layer.loc[1, "b"] == 2
    dom = emb.dominance()
    assert dom.meta["vectors"] == "heldout"
    ses.save(tmp_path)
    dom.save(tmp_path)
    ses2, dom2 = SimilarityResult.load(tmp_path), DominanceResult.load(tmp_path)
    pd.testing.assert_frame_equal(ses2.ses, ses.ses)
    pd.testing.assert_frame_equal(ses2.neurons_per_layer, ses.neurons_per_layer, check_dtype=False)
    pd.testing.assert_frame_equal(dom2.shifted, dom.shifted)
    pd.testing.assert_frame_equal(dom2.unshifted, dom.unshifted)
    pd.testing.assert_frame_equal(dom2.mismatched, dom.mismatched)
    assert ses2.meta == ses.meta and dom2.meta == dom.meta

    fig = ses.figure()
    assert isinstance(fig, go.Figure)
    lines = [t for t in fig.data if t.type == "scatter"]
    bars = [t for t in fig.data if t.type == "bar"]
    assert [t.name for t in lines] == [*ses.ses.columns[:-1], "mean, mismatched texts (control)"]
    assert list(lines[-1].y) == pytest.approx(ses.ses["mismatched"].tolist())
    lines = lines[:-1]
    assert list(lines[-1].y) == pytest.approx(ses.ses["mean"].tolist())
    assert [t.name for t in bars] == ["a", "b"] and list(bars[0].y) == [3, 0]
    assert len(SimilarityResult(ses.ses, ses.meta).figure().data) == 5  # no neuron panel
    dfig = dom.figure()
    assert len(dfig.data) == 9
    assert list(dfig.data[3].y) == pytest.approx(dom.shifted["zh"].tolist())
    assert list(dfig.data[4].y) == pytest.approx(dom.unshifted["zh"].tolist())
    assert list(dfig.data[5].y) == pytest.approx(dom.mismatched["zh"].tolist()) and dfig.data[5].visible == "legendonly"


def test_load_refuses_a_folder_without_results(tmp_path):
    with pytest.raises(LapelensError, match="not a similarity result .expected ses.json and ses.csv."):
        SimilarityResult.load(tmp_path)
    with pytest.raises(LapelensError, match="not a dominance result .expected dominance.json and dominance.csv."):
        DominanceResult.load(tmp_path)


# ---- bad input ----------------------------------------------------------------------------------
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
    with pytest.raises(LapelensError, match="3 layers"):
        SentenceEmbeddings(("a", "b"), EMB).similarity(_neurons(3))
    with pytest.raises(LapelensError, match="at least 2 aligned texts"):
        SentenceEmbeddings(("a", "b"), EMB[:, :1]).dominance()


# ---- CLI ----------------------------------------------------------------------------------------
def test_cli_writes_tables_and_figures(tiny_dirs, parallel, tmp_path, capsys):
    csv = tmp_path / "parallel.csv"
    parallel.to_csv(csv)
    neurons = tmp_path / "neurons"
    _neurons(2, ("en", "fr")).save(neurons)
    out = tmp_path / "out"
    argv = ["ses", "--model", str(tiny_dirs["llama"]), "--parallel", str(csv), "--languages", "en,fr,zh",
            "--n-texts", "4", "--seed", "3", "--batch-size", "2", "--neurons", str(neurons), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "SES per layer (4 texts, 3 languages" in printed and "Control: shifted" in printed
    for name in ("ses.csv", "ses_neurons.csv", "ses.json", "dominance.csv", "dominance_unshifted.csv", "dominance_mismatched.csv",
                 "dominance.json", "ses.html", "dominance.html"):
        assert (out / name).is_file(), name
    ses, dom = SimilarityResult.load(out), DominanceResult.load(out)
    ids = ses.meta["text_ids"]
    assert len(ids) == 4 and ids == [i for i in parallel.index if i in ids]  # a sample, in corpus order
    assert ses.meta["parallel"] == str(csv) and ses.meta["n_texts"] == 4 and dom.meta["vectors"] == "heldout"
    # The same numbers as the library on the same texts.
    emb = sentence_embeddings(load_model(tiny_dirs["llama"]), parallel.loc[ids], languages=["en", "fr", "zh"], progress=False)
    pd.testing.assert_frame_equal(ses.ses, emb.similarity().ses, atol=1e-6)
    pd.testing.assert_frame_equal(dom.shifted, emb.dominance().shifted, atol=1e-6)
    pd.testing.assert_frame_equal(dom.mismatched, emb.dominance().mismatched, atol=1e-6)
    assert list(ses.neurons_per_layer.columns) == ["en", "fr"]


def test_cli_errors(tiny_dirs, parallel, tmp_path, capsys):
    csv = tmp_path / "parallel.csv"
    parallel.to_csv(csv)
    base = ["ses", "--model", str(tiny_dirs["llama"]), "--parallel", str(csv), "--out", str(tmp_path / "o")]
    assert main(base + ["--n-texts", "1"]) == 2
    assert "--n-texts must be at least 2" in capsys.readouterr().err
    assert main(base + ["--n-texts", "50"]) == 2
    assert "at most 5" in capsys.readouterr().err
    assert main(base + ["--n-texts", "3", "--languages", "en,xx"]) == 2
    assert "['xx'] are not in the parallel data" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
