"""Split-half stability: halves partition the chunks exactly, and the Jaccard table is right."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from lapelens import LanguageNeurons, collect, identify, load_model
from lapelens.evaluate.stability import selection_agreement, split_half_stability
from tiny import TEXTS


def test_selection_agreement_by_hand():
    a = torch.zeros(2, 1, 10, dtype=torch.bool)
    b = torch.zeros(2, 1, 10, dtype=torch.bool)
    a[0, 0, [0, 1, 2, 3]] = True  # en: A = {0,1,2,3}, B = {2,3,4}: shared 2, union 5
    b[0, 0, [2, 3, 4]] = True
    a[1, 0, [5]] = True  # fr: disjoint
    b[1, 0, [6, 7]] = True
    t = selection_agreement(LanguageNeurons(("en", "fr"), a), LanguageNeurons(("en", "fr"), b), 10)
    assert t.loc["en", "shared"] == 2 and t.loc["en", "jaccard"] == pytest.approx(2 / 5)
    assert t.loc["en", "jaccard_random"] == pytest.approx(1.2 / (7 - 1.2))  # 4*3/10 shared expected
    assert t.loc["fr", "jaccard"] == 0 and t.loc["fr", "half_b"] == 2


def test_halves_merge_to_the_one_pass_statistics(tiny_dirs):
    model = load_model(tiny_dirs["llama"])
    texts = {lang: [TEXTS[lang]] * 40 for lang in ("en", "fr", "zh")}
    result = split_half_stability(model, texts, tokens_per_language=512, seq_len=32, top_rate=0.1, progress=False)
    full = collect(model, texts, tokens_per_language=512, seq_len=32, progress=False)
    merged = result.merged()
    assert merged.languages == full.languages
    assert torch.equal(merged.count, full.count) and torch.equal(merged.n, full.n)
    # activation sums are added per batch in float32 before the float64 total: equal to rounding.
    assert torch.allclose(merged.act_sum, full.act_sum, rtol=1e-5, atol=1e-4)
    assert all(int(h.n.sum()) == 3 * 256 for h in result.halves)
    a, b = (identify(h, "lape", top_rate=0.1) for h in result.halves)
    for lang in texts:
        shared = int((a.mask[a.lang_index(lang)] & b.mask[b.lang_index(lang)]).sum())
        assert result.table.loc[lang, "shared"] == shared
    assert isinstance(result.table, pd.DataFrame) and list(result.table.index) == ["en", "fr", "zh"]
