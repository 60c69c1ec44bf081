"""Every long stage shows a bar with a total (issue 25): the total is what the stage then does."""

import pandas as pd
import pytest
import tqdm.auto

import lapelens.activations as acts
import lapelens.evaluate.generation as gen
import lapelens.methods.pv
import lapelens.training
from lapelens import identify, load_model
from lapelens.activations import collect, collect_sentence_means
from lapelens.evaluate.generation import Sampling
from lapelens.methods.pv import tune_per_language
from tiny import TEXTS

LANGS = ("en", "zh", "fr")


class Bars:
    """Stands in for tqdm: records each bar's total and how far it was advanced."""

    def __init__(self):
        self.made = []

    def __call__(self, iterable=None, total=None, desc=None, disable=False, initial=0, **kw):
        bar = _Bar(iterable, total, desc, disable, initial)
        self.made.append(bar)
        return bar

    def shown(self):
        return [(b.desc, b.total, b.n) for b in self.made if not b.disable]


class _Bar:
    def __init__(self, iterable, total, desc, disable, initial):
        self.iterable, self.total, self.desc, self.disable, self.n = iterable, total, desc, disable, initial

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.n += 1

    def update(self, n=1):
        self.n += n

    def set_postfix(self, *a, **k):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


@pytest.fixture(scope="module")
def model(tiny_dirs):
    return load_model(tiny_dirs["llama"])


@pytest.fixture(scope="module")
def texts():
    return {lang: [f"{TEXTS[lang]} {i}" for i in range(30)] for lang in LANGS}


def test_collect_without_a_budget_shows_the_corpus_size(model, texts, monkeypatch):
    bars = Bars()
    monkeypatch.setattr(acts, "tqdm", bars)
    stats = collect(model, texts, seq_len=16, batch_size=4)  # no tokens_per_language: all the text
    assert bars.shown() == [(f"collect {l}", int(n), int(n)) for l, n in zip(LANGS, stats.n)]
    assert all(n % 16 == 0 and n > 0 for n in stats.n.tolist())
    bars.made.clear()  # an earlier collection skipped: the total is what is left
    rest = collect(model, texts, seq_len=16, batch_size=4, skip_tokens=64)
    assert bars.shown() == [(f"collect {l}", int(n), int(n)) for l, n in zip(LANGS, rest.n)]
    assert (rest.n == stats.n - 64).all()
    bars.made.clear()
    collect(model, texts, seq_len=16, batch_size=4, progress=False)
    assert bars.shown() == []


def test_generation_experiments_count_every_generation(model, texts, monkeypatch):
    bars = Bars()
    monkeypatch.setattr(gen, "tqdm", bars)
    stats = collect(model, texts, tokens_per_language=128, seq_len=16, progress=False)
    lape = identify(stats, "lape", top_rate=0.1)
    sampling = Sampling(max_new_tokens=2, batch_size=2)
    result = gen.unconditional_steering(model, lape, stats, LANGS, n_samples=3, scale=2.0, sampling=sampling)
    assert bars.shown()[-1] == ("unconditional steering", 3 * 4, 3 * 4) and len(result.samples) == 12
    parallel = pd.DataFrame({l: [f"{TEXTS[l]} {i}" for i in range(5)] for l in LANGS})
    result = gen.prompted_steering(model, lape, stats, parallel, sources=["en", "zh"], n_prompts=2, sampling=sampling)
    # per source: its prompts before, then steered and deactivated+steered towards each other target
    assert bars.shown()[-1] == ("prompted steering", 2 * (2 * (1 + 2 * 2)), 20) and len(result.samples) == 20
    random = identify(lape, "random", seed=0)
    prompts = {l: parallel[l].tolist()[:2] for l in LANGS}
    result = gen.generation_under_deactivation(model, lape, prompts, random, sampling=Sampling.greedy(max_new_tokens=2))
    assert bars.shown()[-1] == ("generation under deactivation", 2 * 3 * 3, 18) and len(result.samples) == 18
    ap = identify(collect_sentence_means(model, {l: texts[l][:6] for l in LANGS}, progress=False), "ap", k=4)
    gen.kojima_pinning(model, ap, LANGS, n_samples=2, sampling=sampling)
    assert bars.shown()[-1] == ("Kojima median pinning", 2 * 4, 8)
    before = len(bars.shown())
    gen.kojima_pinning(model, ap, LANGS, n_samples=2, sampling=sampling, progress=False)
    assert len(bars.shown()) == before


def test_pv_tuning_is_one_bar_over_every_language(tiny_dirs, texts, tmp_path, monkeypatch):
    bars = Bars()
    monkeypatch.setattr(tqdm.auto, "tqdm", bars)  # transformers' bars
    for module in (lapelens.methods.pv, lapelens.training):  # ours, as each module imported it
        monkeypatch.setattr(module, "tqdm", bars)
    tune_per_language(
        tiny_dirs["llama"], {l: texts[l] for l in ("en", "zh")}, tmp_path, steps=2, seq_len=16, batch_size=2
    )
    ours = [bar for bar in bars.shown() if bar[0] not in ("Loading weights", "Writing model shards")]  # transformers'
    assert ours == [("pv tuning", 4, 4)]  # no bar per language: one over 2 languages x 2 steps
