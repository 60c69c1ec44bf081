"""The arithmetic of the similarity measures: hand-computed numbers, and agreement with an independent numpy
computation of the acceptance check (standardized cosines: aligned, mismatched over all pairs, top-1 retrieval)."""

import math

import numpy as np
import pytest
import torch

from lapelens import LapelensError
from lapelens.evaluate.embeddings import SentenceEmbeddings
from lapelens.evaluate.measures import (
    bootstrap_means,
    check_measure,
    dominance_matrix,
    energy_shares,
    halves,
    mean_over_sources,
    pair_similarity,
    partner,
    shifted_similarity,
    text_scores,
    top_dimensions,
    transform,
)

R2 = math.sqrt(2)


# ---- an independent computation -----------------------------------------------------------------
def np_transform(h, measure, vectors):
    """numpy: [lang, text, d] as the measure compares it (means/deviations fit on all texts or the other half)."""
    h = np.asarray(h, dtype=np.float64)
    if measure == "raw":
        return h
    n = h.shape[1]
    folds = [(np.arange(n), np.arange(n))]
    if vectors == "heldout":  # interleaved halves
        even, odd = np.arange(0, n, 2), np.arange(1, n, 2)
        folds = [(even, odd), (odd, even)]
    out = np.empty_like(h)
    for fit, apply in folds:
        mu = h[:, fit].mean(axis=1, keepdims=True)
        z = h[:, apply] - mu
        if measure == "standardized":
            z = z / (h[:, fit] - mu).reshape(-1, h.shape[2]).std(axis=0)
        out[:, apply] = z
    return out


def np_measures(x, texts=None):
    """numpy: mean over ordered pairs k != c of the aligned cosine, the mean cosine over all t != u, and the
    share of texts whose highest-cosine text of c is their translation; ``texts`` (with repeats) picks
    the texts averaged over, each still scored against all texts."""
    n_lang, n = x.shape[:2]
    texts = np.arange(n) if texts is None else texts
    unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
    out = []
    for k in range(n_lang):
        for c in range(n_lang):
            if k == c:
                continue
            cos = unit[k] @ unit[c].T
            aligned = np.diag(cos)
            mismatched = (cos.sum(1) - aligned) / (n - 1)
            hit = cos.argmax(1) == np.arange(n)
            out.append([aligned[texts].mean(), mismatched[texts].mean(), hit[texts].mean()])
    return np.mean(out, axis=0)


def anisotropic(n_lang=3, n=12, layers=2, d=6, seed=0, content=1.0, noise=0.6):
    """Embeddings as a causal LM makes them: a large shared mean in one dimension, a mean per language,
    and per text a content vector shared by its translations plus noise."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.zeros(d)
    shared[0] = 40.0
    lang = 4 * torch.randn(n_lang, 1, layers, d, generator=g)
    text = content * torch.randn(1, n, layers, d, generator=g)
    return shared + lang + text + noise * torch.randn(n_lang, n, layers, d, generator=g)


# ---- transform --------------------------------------------------------------------------------------
def test_transform_golden():
    # a: [0,0],[2,4] (mean [1,2]); b: [1,1],[3,1] (mean [2,1]). Centred: a [-1,-2],[1,2]; b [-1,0],[1,0].
    # Deviations over the 4 centred texts: dim 0: 1; dim 1: sqrt((4 + 4 + 0 + 0) / 4) = sqrt 2.
    h = torch.tensor([[[0.0, 0.0], [2.0, 4.0]], [[1.0, 1.0], [3.0, 1.0]]])
    torch.testing.assert_close(transform(h, "raw", "all"), h.double())
    torch.testing.assert_close(
        transform(h, "centered", "all"),
        torch.tensor([[[-1.0, -2.0], [1.0, 2.0]], [[-1.0, 0.0], [1.0, 0.0]]], dtype=torch.float64),
    )
    torch.testing.assert_close(
        transform(h, "standardized", "all"),
        torch.tensor([[[-1.0, -R2], [1.0, R2]], [[-1.0, 0.0], [1.0, 0.0]]], dtype=torch.float64),
    )


def test_transform_heldout_uses_the_other_half():
    assert [(f.tolist(), a.tolist()) for f, a in halves(5)] == [([0, 2, 4], [1, 3]), ([1, 3], [0, 2, 4])]
    h = anisotropic(n=7, layers=1)[:, :, 0]
    for measure in ("centered", "standardized"):
        np.testing.assert_allclose(
            transform(h, measure, "heldout").numpy(), np_transform(h, measure, "heldout"), rtol=1e-12
        )
        np.testing.assert_allclose(transform(h, measure, "all").numpy(), np_transform(h, measure, "all"), rtol=1e-12)
    # A constant dimension carries nothing: set to 0, not divided by 0.
    h[:, :, 3] = 5.0
    x = transform(h, "standardized", "all")
    assert torch.isfinite(x).all() and (x[:, :, 3] == 0).all()


# ---- per-text scores ---------------------------------------------------------------------------------
def test_text_scores_golden():
    # a: [1,0],[0,1],[1,1]; b: [1,0],[1,1],[0,1]. cos(a_t, b_u):
    #   a0: 1, 1/r2, 0;  a1: 0, 1/r2, 1;  a2: 1/r2, 1, 1/r2.
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    s = text_scores(torch.stack([a, b]))
    assert s.shape == (3, 2, 2, 3)
    np.testing.assert_allclose(s[0, 0, 1], [1, 1 / R2, 1 / R2])  # aligned
    np.testing.assert_allclose(s[1, 0, 1], [1 / (2 * R2), 0.5, (1 / R2 + 1) / 2])  # mean over u != t
    np.testing.assert_allclose(s[2, 0, 1], [1, 0, 0])  # a1's nearest b is b2, a2's is b1
    # b -> a reads the columns: b1 = [1,1] is 1/r2 from a0 and from a1 but 1 from a2.
    np.testing.assert_allclose(s[1, 1, 0], [1 / (2 * R2), (1 / R2 + 1) / 2, 0.5])
    np.testing.assert_allclose(s[2, 1, 0], [1, 0, 0])
    # A language against itself: aligned 1, retrieval 1 (distinct texts).
    np.testing.assert_allclose(s[0, 0, 0], [1, 1, 1])


def test_a_tie_is_a_miss():
    same = torch.tensor([[1.0, 0.0], [2.0, 0.0]])  # two texts with the same direction
    s = text_scores(torch.stack([same, same]))
    np.testing.assert_allclose(s[0, 0, 1], [1, 1])
    np.testing.assert_allclose(s[2, 0, 1], [0, 0])


def test_similarity_golden_standardized():
    # The transform golden example: standardized a [-1,-r2],[1,r2]; b [-1,0],[1,0]. Aligned cosines 1/sqrt3 both,
    # mismatched -1/sqrt3 both, both texts retrieved.
    h = torch.tensor([[[0.0, 0.0], [2.0, 4.0]], [[1.0, 1.0], [3.0, 1.0]]])[:, :, None]
    ses = SentenceEmbeddings(("a", "b"), h).similarity(measure="standardized", vectors="all", n_boot=10).ses
    row = ses.loc[0]
    assert row["mean"] == pytest.approx(1 / math.sqrt(3))
    assert row["mismatched"] == pytest.approx(-1 / math.sqrt(3))
    assert row["gap"] == pytest.approx(2 / math.sqrt(3))
    assert row["retrieval"] == 1.0
    raw = SentenceEmbeddings(("a", "b"), h).similarity(measure="raw", vectors="all", n_boot=10).ses.loc[0]
    # raw: a0 = 0 has cosine 0 with everything; cos(a1, b1) = 10/(sqrt20 sqrt10) = 1/r2; cos(a1, b0) = 6/(sqrt20 r2).
    assert raw["mean"] == pytest.approx(1 / (2 * R2))
    assert raw["mismatched"] == pytest.approx(6 / (math.sqrt(20) * R2) / 2)


@pytest.mark.parametrize("vectors", ["all", "heldout"])
@pytest.mark.parametrize("measure", ["raw", "centered", "standardized"])
def test_similarity_equals_an_independent_computation(measure, vectors):
    emb = anisotropic(n=13)
    result = SentenceEmbeddings(("en", "zh", "fr"), emb).similarity(measure=measure, vectors=vectors, n_boot=20)
    for i in range(emb.shape[2]):
        expected = np_measures(np_transform(emb[:, :, i], measure, vectors))
        np.testing.assert_allclose(
            result.ses.loc[i, ["mean", "mismatched", "retrieval"]].to_numpy(float), expected, rtol=1e-9, atol=1e-12
        )
    np.testing.assert_allclose(result.ses["gap"], result.ses["mean"] - result.ses["mismatched"], atol=1e-14)
    # Per pair, then averaged: the pairs table holds the same numbers.
    by_layer = result.pairs.groupby(level="layer")[["mean", "mismatched", "retrieval"]].mean()
    np.testing.assert_allclose(by_layer.to_numpy(), result.ses[["mean", "mismatched", "retrieval"]].to_numpy())
    assert len(result.pairs) == 2 * 6 and result.pairs.index.names == ["layer", "source", "target"]


def test_bootstrap_resamples_texts_and_recomputes():
    emb = anisotropic(n=9, layers=1)
    n_boot, seed = 50, 3
    result = SentenceEmbeddings(("en", "zh", "fr"), emb).similarity(
        measure="standardized", vectors="all", n_boot=n_boot, seed=seed
    )
    x = np_transform(emb[:, :, 0], "standardized", "all")
    counts = np.random.default_rng(seed).multinomial(9, np.full(9, 1 / 9), size=n_boot)
    draws = np.array(
        [np_measures(x, np.repeat(np.arange(9), c)) for c in counts]
    )  # boot x (mean, mismatched, retrieval)
    for j, col in enumerate(["mean", "mismatched", "retrieval"]):
        low, high = np.percentile(draws[:, j], [2.5, 97.5])
        assert result.ses.loc[0, f"{col}_low"] == pytest.approx(low)
        assert result.ses.loc[0, f"{col}_high"] == pytest.approx(high)
    gap = np.percentile(draws[:, 0] - draws[:, 1], [2.5, 97.5])
    assert [result.ses.loc[0, "gap_low"], result.ses.loc[0, "gap_high"]] == pytest.approx(gap)
    # bootstrap_means: the mean over texts of each resample.
    values = np.arange(9.0)
    assert bootstrap_means(values, n_boot, seed) == pytest.approx(counts @ values / 9)


def test_standardized_removes_the_shared_mean():
    """The issue's finding, on synthetic embeddings: raw cosines near 1 for any two texts, standardized ones
    near 0 for mismatched texts and high for translations."""
    emb = anisotropic(n=40, d=16, content=1.0, noise=0.5, seed=4)
    e = SentenceEmbeddings(("en", "zh", "fr"), emb)
    raw = e.similarity(measure="raw", n_boot=20).ses
    std = e.similarity(n_boot=20).ses  # standardized, held out: the defaults
    assert (raw["mismatched"] > 0.8).all() and (raw["gap"] < 0.02).all() and (raw["retrieval"] < 0.1).all()
    assert (std["mismatched"].abs() < 0.05).all() and (std["gap"] > 0.7).all() and (std["retrieval"] > 0.9).all()
    diagnostics = e.diagnostics()
    assert (diagnostics["energy"]["shared"] > 0.85).all()
    top = diagnostics["top_dimensions"]
    assert (top["dim_1"] == 0).all() and (top["share_1"] > 0.9).all()


# ---- dominance -------------------------------------------------------------------------------------
def test_dominance_is_retrieval_into_each_target():
    g = torch.Generator().manual_seed(5)
    n = 30
    content = torch.randn(1, n, 2, 8, generator=g)
    noise = torch.tensor([1.2, 0.3, 1.2, 1.2])[:, None, None, None]  # en (second) has the cleanest texts
    emb = 20 + 3 * torch.randn(4, 1, 2, 8, generator=g) + content + noise * torch.randn(4, n, 2, 8, generator=g)
    langs = ("fr", "en", "zh", "ja")
    dom = SentenceEmbeddings(langs, emb).dominance(measure="standardized", vectors="all", n_boot=200, seed=1)
    per_layer = []
    for i in range(2):
        x = np_transform(emb[:, :, i], "standardized", "all")
        unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
        into = {
            c: np.mean([((unit[k] @ unit[ci].T).argmax(1) == np.arange(n)).mean() for k in range(4) if k != ci])
            for ci, c in enumerate(langs)
        }
        np.testing.assert_allclose(dom.retrieval.loc[i].to_numpy(), [into[c] for c in langs])
        per_layer.append(into)
    over = {c: np.mean([p[c] for p in per_layer]) for c in langs}
    assert dom.summary.loc["en", "retrieval"] == pytest.approx(over["en"])
    best = max((c for c in langs if c != "en"), key=over.get)
    row = dom.contrast.loc["retrieval"]
    assert row["reference"] == "en" and row["best_other"] == best
    assert row["value"] == pytest.approx(over["en"] - over[best])
    assert 0 < row["low"] <= row["value"] <= row["high"] and row["layers_on_top"] == 2 == row["n_layers"]
    assert list(dom.summary["layers_on_top"]) == [0, 2, 0, 0]
    assert dom.shifted is None  # Eq. 6 only under raw
    gap = dom.aligned - dom.mismatched
    assert dom.summary["gap"].to_numpy() == pytest.approx(gap.mean().to_numpy())


def test_dominance_without_the_reference_has_no_contrast():
    dom = SentenceEmbeddings(("a", "b"), anisotropic(n_lang=2, n=6)).dominance(n_boot=10)
    assert dom.contrast is None and dom.contrast_layers is None and list(dom.summary.index) == ["a", "b"]


def test_raw_dominance_keeps_eq6():
    emb = anisotropic(n=6)
    dom = SentenceEmbeddings(("en", "zh", "fr"), emb).dominance(measure="raw", vectors="all", n_boot=10)
    np.testing.assert_allclose(dom.shifted.to_numpy(), mean_over_sources(dominance_matrix(emb, "all")).T.numpy())
    np.testing.assert_allclose(
        dom.shifted_mismatched.to_numpy(), mean_over_sources(dominance_matrix(emb, "all", mismatched=True)).T.numpy()
    )
    np.testing.assert_allclose(dom.unshifted.to_numpy(), dom.aligned.to_numpy())


# Eq. 6 by hand. Two languages, two texts, one layer, d_model 2.
H0 = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
H1 = torch.tensor([[[1.0, 1.0]], [[1.0, -1.0]]])
EMB = torch.stack([H0, H1])  # lang text layer d_model


def test_eq6_golden_all_vectors():
    # v0 = [.5,.5], v1 = [1,0].
    # 0 -> 1: text0 [1.5,-.5] vs [1,1]: 1/sqrt5; text1 [.5,.5] vs [1,-1]: 0.
    # 1 -> 0: text0 [.5,1.5] vs [1,0]: 1/sqrt10; text1 [.5,-.5] vs [0,1]: -1/sqrt2.
    m = dominance_matrix(EMB, "all")
    assert m[0, 1, 0].item() == pytest.approx(1 / (2 * math.sqrt(5)))
    assert m[1, 0, 0].item() == pytest.approx((1 / math.sqrt(10) - 1 / R2) / 2)
    assert m[0, 0, 0].item() == pytest.approx(1.0) and m[1, 1, 0].item() == pytest.approx(1.0)
    # Control, target text swapped: 0 -> 1: [1.5,-.5] vs [1,-1]: 2/sqrt5; [.5,.5] vs [1,1]: 1.
    control = dominance_matrix(EMB, "all", mismatched=True)
    assert control[0, 1, 0].item() == pytest.approx((2 / math.sqrt(5) + 1) / 2)
    dom = SentenceEmbeddings(("a", "b"), EMB).dominance(measure="raw", vectors="all", n_boot=10)
    assert dom.shifted.loc[0, "b"] == pytest.approx(1 / (2 * math.sqrt(5)))
    assert dom.shifted_mismatched.loc[0, "b"] == pytest.approx((2 / math.sqrt(5) + 1) / 2)
    assert dom.unshifted.loc[0].tolist() == pytest.approx([0.0, 0.0], abs=1e-12)  # cos([1,0],[1,1]) + cos([0,1],[1,-1])


def test_eq6_golden_heldout_vectors():
    # Fold 1: v from text0 (v0 = [1,0], v1 = [1,1]), scored on text1:
    #   0 -> 1: [0,1]-[1,0]+[1,1] = [0,2] vs [1,-1]: -1/sqrt2;  1 -> 0: [1,-2] vs [0,1]: -2/sqrt5.
    # Fold 2: v from text1 (v0 = [0,1], v1 = [1,-1]), scored on text0:
    #   0 -> 1: [2,-2] vs [1,1]: 0;  1 -> 0: [0,3] vs [1,0]: 0.
    m = dominance_matrix(EMB, "heldout")
    assert m[0, 1, 0].item() == pytest.approx(-1 / (2 * R2))
    assert m[1, 0, 0].item() == pytest.approx(-1 / math.sqrt(5))
    assert dominance_matrix(EMB, "heldout", mismatched=True).isnan().all()


def test_eq6_pieces():
    assert partner(6).tolist() == [3, 4, 5, 0, 1, 2]
    for n in range(2, 9):
        assert (partner(n) != torch.arange(n)).all()
    m = torch.tensor([[10.0 * k + c for c in range(3)] for k in range(3)])[:, :, None]
    assert mean_over_sources(m)[:, 0].tolist() == pytest.approx([15.0, 11.0, 7.0])
    torch.manual_seed(1)
    h_k, h_c, v = torch.randn(4, 3, 6), torch.randn(4, 3, 6), torch.randn(3, 6)
    torch.testing.assert_close(shifted_similarity(h_k, h_c, v, v), pair_similarity(h_k, h_c))


# ---- diagnostics -----------------------------------------------------------------------------------
def test_energy_and_top_dimensions_golden():
    # a: [3,1],[3,3] (mean [3,2]); b: [1,1],[1,3] (mean [1,2]); shared mean [2,2].
    # mean |h|^2 = (10 + 18 + 2 + 10) / 4 = 10; |mu|^2 = 8; language: |[1,0]|^2 = 1; within: |[0,1]|^2 = 1.
    h = torch.tensor([[[3.0, 1.0], [3.0, 3.0]], [[1.0, 1.0], [1.0, 3.0]]])
    shares = energy_shares(h)
    assert (shares["shared"], shares["language"], shares["within"]) == pytest.approx((0.8, 0.1, 0.1))
    top = top_dimensions(torch.tensor([[[0.0, 3.0, -4.0]]]), k=2)
    assert [t[0] for t in top] == [2, 1] and [t[1] for t in top] == [-4.0, 3.0]
    assert [t[2] for t in top] == pytest.approx([16 / 25, 9 / 25])


# ---- bad input ---------------------------------------------------------------------------------------
def test_bad_settings_are_refused():
    # (Called with a wrong name, the typed methods end here too; under the tests' type checker they stop earlier.)
    with pytest.raises(LapelensError, match=r"measure must be one of \['raw', 'centered', 'standardized'\]"):
        check_measure("cosine", "all")
    with pytest.raises(LapelensError, match=r"vectors must be one of \['heldout', 'all'\]"):
        check_measure("raw", "train")
    e = SentenceEmbeddings(("a", "b"), anisotropic(n_lang=2, n=3))
    with pytest.raises(LapelensError, match="needs at least 4 aligned texts, got 3"):
        e.similarity()
    e.similarity(vectors="all", n_boot=5)  # fine on all texts
    with pytest.raises(LapelensError, match="n_boot must be at least 1"):
        e.similarity(vectors="all", n_boot=0)
    with pytest.raises(LapelensError, match="at least 2 aligned texts"):
        SentenceEmbeddings(("a", "b"), anisotropic(n_lang=2, n=1)).similarity(vectors="all")
    with pytest.raises(LapelensError, match="do not keep the first content token"):
        e.drop_first_token()
