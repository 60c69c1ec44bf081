"""``lapelens.notebook_setup``, the first cell of every notebook: collect and identify, nothing else;
and the committed notebooks: executed once top to bottom, small, prose before every step."""

import json
import re
import sys

import plotly.io as pio
import pytest
import torch
from transformers.utils import logging as hf_logging

import lapelens
from tiny import ROOT, TEXTS, make_tiny_model

LANGS = ("en", "fr", "zh")


def test_notebook_setup_is_collect_then_identify(tmp_path):
    model_dir = make_tiny_model("llama", tmp_path / "model")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for lang in LANGS:
        (corpus / f"{lang}.train.txt").write_text("\n".join([TEXTS[lang]] * 12) + "\n", encoding="utf-8")
    renderer = pio.renderers.default
    bar = hf_logging.is_progress_bar_enabled()
    try:
        setup = lapelens.notebook_setup(
            model=str(model_dir),
            corpus=str(corpus),
            languages=LANGS,
            tokens_per_language=64,
            seq_len=16,
            top_rate=0.2,
            png_figures=False,
        )
        assert pio.renderers.default == setup.figures == "plotly_mimetype"  # no plotly.js in the notebook
    finally:
        pio.renderers.default = renderer
    assert hf_logging.is_progress_bar_enabled() == bar  # quiet while loading only
    # The same steps taken by hand, on the model it loaded, give the same statistics and neurons.
    train = lapelens.load_corpus(str(corpus), split="train", languages=list(LANGS))
    assert setup.train == train
    stats = lapelens.collect(setup.model, train, tokens_per_language=64, seq_len=16, progress=False)
    assert setup.stats.languages == LANGS and setup.stats.n.tolist() == stats.n.tolist() and min(stats.n.tolist()) > 0
    assert torch.equal(setup.stats.count, stats.count) and torch.equal(setup.stats.act_sum, stats.act_sum)
    lape = lapelens.identify(stats, "lape", top_rate=0.2)
    assert torch.equal(setup.lape.mask, lape.mask)
    assert f"{int(lape.mask.any(0).sum())} LAPE neurons" in repr(setup)


# ---- the committed notebooks -------------------------------------------------------------------
# CI executes them (nbmake, in memory); what is committed is one top-to-bottom run with its outputs,
# so that the walkthroughs read on GitHub without running. These tests hold that rule.

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _text(output: dict) -> str:
    if output["output_type"] == "stream":
        return "".join(output["text"])
    return json.dumps(output.get("data", {})) + "".join(output.get("traceback", []))


def test_there_are_four_notebooks():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_executed_and_small(path):
    assert path.stat().st_size < 1_000_000, "a figure inlined plotly.js? use notebook_setup's renderer"
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    # One run, top to bottom: execution counts 1, 2, 3, ... and something shown by the last cell.
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))
    assert code[-1]["outputs"]
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert not [o for o in outputs if o["output_type"] == "stream" and o["name"] == "stderr"], (
        "warnings or progress bars"
    )
    shown = "".join(_text(o) for o in outputs)
    assert not re.search(r"/(work|root|home|tmp)/", shown), "an absolute path of this machine in the outputs"
    assert "<script" not in shown and "plotly.min.js" not in shown


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_a_walkthrough(path):
    cells = json.loads(path.read_text())["cells"]
    sources = ["".join(c["source"]) for c in cells]
    code = [s for c, s in zip(cells, sources) if c["cell_type"] == "code"]
    assert cells[0]["cell_type"] == "markdown" and "Tang et al." in sources[0]
    # One shared setup call, first, and no cell repeating what it does.
    assert "lapelens.notebook_setup()" in code[0] and not any("notebook_setup" in s for s in code[1:])
    assert not any(re.search(r"\b(load_model|load_corpus|collect)\(", s) for s in code)
    # Prose before every step: no code cell is more than one code cell away from markdown.
    kinds = "".join("m" if c["cell_type"] == "markdown" else "c" for c in cells)
    assert "ccc" not in kinds
    # Only lapelens and the standard library.
    imported = {m.split(".")[0] for s in code for m in re.findall(r"^\s*(?:import|from)\s+([\w.]+)", s, re.M)}
    assert imported <= {"lapelens"} | set(sys.stdlib_module_names), imported
