"""``lapelens.notebook_setup``, the first cell of every notebook: collect and identify, nothing else."""

import plotly.io as pio
import torch

import lapelens
from tiny import TEXTS, make_tiny_model

LANGS = ("en", "fr", "zh")


def test_notebook_setup_is_collect_then_identify(tmp_path):
    model_dir = make_tiny_model("llama", tmp_path / "model")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for lang in LANGS:
        (corpus / f"{lang}.train.txt").write_text("\n".join([TEXTS[lang]] * 12) + "\n", encoding="utf-8")
    renderer = pio.renderers.default
    try:
        setup = lapelens.notebook_setup(model=str(model_dir), corpus=str(corpus), languages=LANGS,
                                        tokens_per_language=64, seq_len=16, top_rate=0.2, png_figures=False)
        assert pio.renderers.default == setup.figures == "plotly_mimetype"  # no plotly.js in the notebook
    finally:
        pio.renderers.default = renderer
    # The same steps taken by hand, on the model it loaded, give the same statistics and neurons.
    train = lapelens.load_corpus(str(corpus), split="train", languages=list(LANGS))
    assert setup.train == train
    stats = lapelens.collect(setup.model, train, tokens_per_language=64, seq_len=16, progress=False)
    assert setup.stats.languages == LANGS and setup.stats.n.tolist() == stats.n.tolist() and min(stats.n.tolist()) > 0
    assert torch.equal(setup.stats.count, stats.count) and torch.equal(setup.stats.act_sum, stats.act_sum)
    lape = lapelens.identify(stats, "lape", top_rate=0.2)
    assert torch.equal(setup.lape.mask, lape.mask)
    assert f"{int(lape.mask.any(0).sum())} LAPE neurons" in repr(setup)
