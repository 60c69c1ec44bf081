"""The neuron explorer: its numbers against independent computations, and the page in headless Chromium.

The browser tests open the page from file:// with every other request aborted, and read what a user
sees (the bar labels, the token lists, the neuron list) back from the DOM.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import lapelens
from lapelens import LanguageNeurons, LapelensError, load_model
from lapelens.activations import collect, collect_sentence_means
from lapelens.cli import main
from lapelens.evaluate.perplexity import chunk_nll, evaluation_chunks
from lapelens.explorer import explore, token_activations
from lapelens.explorer.effects import logit_effects
from lapelens.methods import identify
from lapelens.tokens import iter_chunks
from tiny import TEXTS, make_tiny_model

CHROMIUM = "/usr/bin/chromium"
BUDGETS = dict(context_tokens=64, top_k=3, loss_neurons=6, loss_tokens=32, loss_seq_len=16, progress=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A `lapelens reproduce`-shaped folder for a tiny random LLaMA: stats, five neuron sets, config.json."""
    root = tmp_path_factory.mktemp("explore")
    model_dir = make_tiny_model("llama", root / "model")
    corpus = root / "corpus"
    corpus.mkdir()
    for lang, text in TEXTS.items():
        (corpus / f"{lang}.train.txt").write_text("\n".join([text] * 8) + "\n")
        (corpus / f"{lang}.valid.txt").write_text("\n".join([text[::-1]] * 4 + [text] * 4) + "\n")
    run = root / "run"
    model = load_model(model_dir)
    stats = collect(model, lapelens.load_corpus(str(corpus), "train"), seq_len=16, progress=False)
    stats.save(run / "stats")
    lape = identify(stats, "lape", top_rate=0.2)
    lape.save(run / "neurons_lape")
    identify(stats, "lap").save(run / "neurons_lap")
    identify(stats, "lave", top_rate=0.2).save(run / "neurons_lave")
    identify(stats, "random", reference=lape, seed=0).save(run / "neurons_random")
    sentences = {l: [s for s in TEXTS[l].replace("。", ".").split(".") if s.strip()] for l in TEXTS}
    identify(collect_sentence_means(model, sentences, progress=False), "ap", k=3).save(run / "neurons_ap")
    (run / "config.json").write_text(json.dumps({"model": str(model_dir), "corpus": str(corpus), "seq_len": 16}))
    return run


@pytest.fixture(scope="module")
def built(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("page") / "explorer.html"
    return explore(run_dir, out=out, **BUDGETS), out


def hf_logit_effect(folder: Path, arch: str, layer: int, neuron: int) -> torch.Tensor:
    """``W_out[layer][neuron] @ W_U`` from the HF modules, in plain torch."""
    hf = AutoModelForCausalLM.from_pretrained(folder)
    if arch == "gpt2":  # Conv1D: weight is (in, out), so the neuron's output row is weight[neuron]
        w_out = hf.transformer.h[layer].mlp.c_proj.weight[neuron]
    else:  # nn.Linear: weight is (out, in), the neuron's output direction is column `neuron`
        w_out = hf.model.layers[layer].mlp.down_proj.weight[:, neuron]
    return (w_out @ hf.lm_head.weight.T).detach()


# ---- numbers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_logit_effects_equal_hf_down_projection_times_unembedding(arch, tmp_path):
    folder = make_tiny_model(arch, tmp_path / arch)
    promoted, promoted_v, suppressed, suppressed_v = logit_effects(load_model(folder), top=5)
    for layer, neuron in [(0, 0), (1, 37), (1, 63)]:
        effect = hf_logit_effect(folder, arch, layer, neuron)
        assert promoted[layer, neuron].tolist() == effect.topk(5).indices.tolist()
        assert suppressed[layer, neuron].tolist() == effect.topk(5, largest=False).indices.tolist()
        torch.testing.assert_close(promoted_v[layer, neuron], effect.topk(5).values, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(suppressed_v[layer, neuron], effect.topk(5, largest=False).values, rtol=1e-4, atol=1e-5)


def test_loss_change_equals_lapelens_deactivate(built, run_dir):
    ex, _ = built
    data, model = ex.data, ex.model
    config = json.loads((run_dir / "config.json").read_text())
    chunks = evaluation_chunks(model, config["corpus"], data.languages, 32, 16)
    assert len(data.loss_neurons) == 6
    for row in [0, 5]:
        layer, neuron = data.loss_neurons[row].tolist()
        mask = torch.zeros(len(data.languages), data.n_layers, data.d_mlp, dtype=torch.bool)
        mask[:, layer, neuron] = True
        single = LanguageNeurons(data.languages, mask, "single")
        for k, lang in enumerate(data.languages):
            tokens = chunks[lang].numel() - len(chunks[lang])
            base = chunk_nll(model, chunks[lang]).sum() / tokens
            with lapelens.deactivate(model, single, lang):
                off = chunk_nll(model, chunks[lang]).sum() / tokens
            assert data.loss_base[k].item() == pytest.approx(base.item(), abs=1e-5)
            assert data.loss_delta[row, k].item() == pytest.approx((off - base).item(), abs=1e-5)


def test_loss_neurons_are_lape_neurons_taken_round_robin_by_rank(built):
    data = built[0].data
    lape = data.selections["lape"]
    for layer, neuron in data.loss_neurons.tolist():
        assert lape[:, layer, neuron].any()
    # every language's best-ranked LAPE neuron is among them
    flat_rank = data.lape_rank.flatten()
    chosen = set((data.loss_neurons[:, 0] * data.d_mlp + data.loss_neurons[:, 1]).tolist())
    for k in range(len(data.languages)):
        idx = lape[k].flatten().nonzero().flatten()
        if len(idx):
            assert int(idx[flat_rank[idx].argmin()]) in chosen


def test_lape_rank_reproduces_the_lape_selection(built):
    data = built[0].data
    selected = data.selections["lape"].any(dim=0)
    n = int(selected.sum())
    ranked = (data.lape_rank >= 0) & (data.lape_rank < n)
    assert torch.equal(ranked, selected)


def test_contexts_and_histograms_equal_a_brute_force_pass(built, run_dir):
    ex = built[0]
    s, model = ex.data.samples, ex.model
    spec = lapelens.neuron_spec(model)
    config = json.loads((run_dir / "config.json").read_text())
    texts = lapelens.load_corpus(config["corpus"], "train")
    assert len(s.neurons) == int(torch.stack(list(ex.data.selections.values())).any(dim=(0, 1)).sum())
    for k, lang in enumerate(ex.data.languages):
        chunks = torch.stack(list(iter_chunks(model.tokenizer, texts[lang], 16, 64)))
        acts = {}
        hooks = [(spec.hook_pre(i), (lambda i: lambda a, hook: acts.__setitem__(i, spec.act_fn()(a).detach()))(i))
                 for i in range(spec.n_layers)]
        with torch.no_grad():
            model.run_with_hooks(chunks, fwd_hooks=hooks, return_type=None)
        assert s.tokens_seen[k] == chunks.numel()
        for d, (layer, neuron) in enumerate(s.neurons.tolist()):
            a = acts[layer][..., neuron]  # chunk pos
            best, at = a.max(dim=1)
            top = best.topk(3)
            torch.testing.assert_close(s.top[d, k], top.values, rtol=1e-4, atol=1e-5)
            c, p = int(top.indices[0]), int(at[top.indices[0]])
            assert (s.chunk[d, k, 0].item(), s.pos[d, k, 0].item()) == (c, p)
            assert torch.equal(ex.data.chunks[lang][c], chunks[c])
            torch.testing.assert_close(s.acts[d, k, 0, s.before], a[c, p], rtol=1e-4, atol=1e-5)
            if p >= 1:
                torch.testing.assert_close(s.acts[d, k, 0, s.before - 1], a[c, p - 1], rtol=1e-4, atol=1e-5)
            edges = s.edges[d]
            bins = ((a.flatten() - edges[0]) / (edges[-1] - edges[0]) * (len(edges) - 1)).floor().clamp(0, len(edges) - 2)
            assert s.hist[d, k].tolist() == torch.bincount(bins.long(), minlength=len(edges) - 1).tolist()


def test_byte_tokens_of_one_character_are_shown_as_that_character(built):
    data, tok = built[0].data, built[0].model.tokenizer
    checked = 0
    for lang in ("zh", "ja"):
        for c in data.samples.chunk[:, data.languages.index(lang)].unique().tolist():
            ids = data.chunks[lang][c].tolist()
            fixes = data.chunk_text[lang].get(c, {})
            decoded = tok.decode(ids)
            if "\ufffd" in decoded:  # the chunk starts or ends inside a character
                continue
            assert fixes, "the tiny tokenizer splits CJK characters into bytes"
            assert "".join(fixes.get(p, data.vocab[i]) for p, i in enumerate(ids)) == decoded
            checked += 1
    assert checked


def test_live_mode_shows_the_neurons_activation_per_token(built):
    ex = built[0]
    model = ex.model
    tokens, acts = token_activations(model, 1, 5, "Le renard brun saute.")
    store = {}
    ids = [0] + model.tokenizer("Le renard brun saute.", add_special_tokens=False)["input_ids"]
    model.run_with_hooks(torch.tensor([ids]), return_type=None,
                         fwd_hooks=[("blocks.1.mlp.hook_pre", lambda a, hook: store.__setitem__("a", a[0, :, 5].detach()))])
    torch.testing.assert_close(acts, torch.nn.functional.silu(store["a"]))
    assert len(tokens) == len(ids)
    shown = ex.live(1, 5, "Le renard brun saute.")
    html = shown._repr_html_() if hasattr(shown, "_repr_html_") else shown.data
    assert html.count('class="tok"') == len(ids) and f'data-act="{acts[-1].item():.6f}"' in html
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        with pytest.raises(LapelensError, match="ipywidgets"):
            ex.live(1, 5)
    else:
        assert ex.live(1, 5).children


def test_public_name_and_cli(run_dir, tmp_path):
    assert lapelens.explore is explore
    out = tmp_path / "cli.html"
    assert main(["explore", str(run_dir), "--out", str(out), "--context-tokens", "32", "--loss-neurons", "2",
                 "--loss-tokens", "32", "--loss-seq-len", "16", "--quiet"]) == 0
    assert out.stat().st_size > 10_000 and "explorer-data" in out.read_text()
    assert main(["explore", str(tmp_path), "--out", str(out)]) == 2  # not a run folder


# ---- the page in a browser -------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        yield b
        b.close()


@pytest.fixture
def page(browser, built):
    page = browser.new_page()
    page.errors, page.blocked = [], []
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))

    def route(r):
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            page.blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(built[1].resolve().as_uri())
    yield page
    page.close()


def open_by_index(page, layer, neuron):
    page.fill("#layer-input", str(layer))
    page.fill("#neuron-input", str(neuron))
    page.click("#open-neuron")


def shown_bars(page, cls):
    return {t.get_attribute("data-label"): t.text_content() for t in page.locator(f"svg.{cls} text.value").all()}


def test_page_loads_offline_without_errors(page):
    assert page.locator("#grid td.cell").count() > 0
    assert page.errors == [] and page.blocked == []


def test_overview_lists_every_lape_neuron(page, built):
    data = built[0].data
    page.select_option("#method-select", "lape")
    rows = page.locator("#neuron-list tr.neuron-row")
    listed = {(int(r.get_attribute("data-layer")), int(r.get_attribute("data-neuron"))) for r in rows.all()}
    lape = data.selections["lape"].any(dim=0)
    assert listed == {tuple(x) for x in lape.nonzero().tolist()} and rows.count() == len(listed)
    # a cell lists exactly that layer's neurons for that language
    cell = page.locator("#grid td.cell[data-layer='1'][data-lang='2']")
    cell.click()
    rows = page.locator("#neuron-list tr.neuron-row")
    listed = {int(r.get_attribute("data-neuron")) for r in rows.all()}
    assert listed == set(data.selections["lape"][2, 1].nonzero().flatten().tolist())
    assert int(cell.inner_text()) == len(listed)
    assert page.errors == []


def test_choosing_a_neuron_updates_every_panel(page, built):
    data = built[0].data
    page.select_option("#method-select", "lape")
    page.locator("#neuron-list tr.neuron-row").first.click()
    first = page.locator("#neuron-list tr.neuron-row").first
    a = (int(first.get_attribute("data-layer")), int(first.get_attribute("data-neuron")))
    panels = ["panel-selection", "panel-firing", "panel-mean", "panel-hist", "panel-contexts", "panel-logits", "panel-loss"]
    before = {p: page.inner_html(f"#{p}") for p in panels}
    assert all(page.get_attribute(f"#{p}", "data-neuron") == f"{a[0]}:{a[1]}" for p in panels)
    assert page.locator("#panel-contexts .ctx").count() > 0 and page.locator("#panel-hist svg.hist").count() == len(data.languages)
    assert page.locator("#panel-loss svg.loss").count() == 1  # the best LAPE neuron has a loss change
    lape = data.selections["lape"].any(dim=0)
    b = next(tuple(x) for x in lape.nonzero().tolist() if tuple(x) != a)
    open_by_index(page, *b)
    for p in panels:
        assert page.get_attribute(f"#{p}", "data-neuron") == f"{b[0]}:{b[1]}"
        assert page.inner_html(f"#{p}") != before[p], p
    assert page.inner_text("#neuron-title") == f"Layer {b[0]}, neuron {b[1]}"
    # the first context of the first language shows the chunk's tokens up to its maximum, the maximum in bold
    s = data.samples
    d = s.neurons.tolist().index(list(b))
    chunk, pos = data.chunks[data.languages[0]][s.chunk[d, 0, 0]], s.pos[d, 0, 0].item()
    ctx = page.locator(f"#panel-contexts .ctx[data-lang='{data.languages[0]}']").first
    ids = [int(t.get_attribute("data-token-id")) for t in ctx.locator("span.tok").all()]
    assert ids == chunk[max(0, pos - s.before): pos + 5].tolist()
    assert ctx.locator("span.tok").nth(min(pos, s.before)).evaluate("e => e.style.fontWeight") == "bold"
    assert page.errors == []


def test_firing_probabilities_and_means_equal_the_statistics(page, built, run_dir):
    stats = lapelens.ActivationStats.load(run_dir / "stats")
    p, mean = stats.firing_probability(), stats.mean_activation()
    selected = built[0].data.selections["lape"].any(dim=0)
    unselected = (~torch.stack(list(built[0].data.selections.values())).any(dim=(0, 1))).nonzero()[0].tolist()
    for layer, neuron in [tuple(selected.nonzero()[0].tolist()), tuple(unselected), (1, 63)]:
        open_by_index(page, layer, neuron)
        shown = shown_bars(page, "firing")
        assert shown == {l: f"{round(p[k, layer, neuron].item(), 3):.3f}" for k, l in enumerate(stats.languages)}
        shown = shown_bars(page, "mean")
        for k, l in enumerate(stats.languages):
            assert float(shown[l]) == pytest.approx(mean[k, layer, neuron].item(), abs=1e-4)
    assert page.errors == []


def test_promoted_tokens_equal_w_out_times_w_u(page, built, run_dir):
    folder = Path(json.loads((run_dir / "config.json").read_text())["model"])
    for layer, neuron in [(0, 3), (1, 40)]:
        open_by_index(page, layer, neuron)
        effect = hf_logit_effect(folder, "llama", layer, neuron)
        ids = [int(t.get_attribute("data-token-id")) for t in page.locator("#panel-logits .promoted td.t").all()]
        assert ids == effect.topk(10).indices.tolist()
        ids = [int(t.get_attribute("data-token-id")) for t in page.locator("#panel-logits .suppressed td.t").all()]
        assert ids == effect.topk(10, largest=False).indices.tolist()


def test_notebook_display_runs_the_page_in_an_iframe(browser, built):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_content(built[0]._repr_html_())
    frame = page.frame_locator("iframe")
    frame.locator("#neuron-list tr.neuron-row").first.click()
    assert frame.locator("#panel-firing svg.firing").count() == 1
    assert errors == []
    page.close()


def test_an_unselected_neuron_says_what_is_missing(page, built):
    data = built[0].data
    unselected = (~torch.stack(list(data.selections.values())).any(dim=(0, 1))).nonzero()[0].tolist()
    open_by_index(page, *unselected)
    assert "was not selected" in page.inner_text("#panel-contexts")
    assert "Not computed" in page.inner_text("#panel-loss")
    assert page.locator("#panel-logits td.t").count() == 20
    open_by_index(page, 99, 0)
    assert "No such neuron" in page.inner_text("#pick-error")
    assert page.errors == []
