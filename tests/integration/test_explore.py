"""The neuron explorer's numbers against independent computations, and the offline page in headless Chromium.

Independent means plain PyTorch on the Hugging Face model loaded from the same folder (forward hooks
on ``mlp.act_fn``, ``down_proj`` and ``lm_head`` weights), numpy, or golden numbers worked out by
hand. The browser tests open the page from file:// with every other request aborted, and read what
a user sees back from the DOM.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

import lapelens
from lapelens.cli import main
from lapelens.explorer import explore, from_parts
from lapelens.explorer.effects import neuron_logits, strongest_promoters, token_promoters
from lapelens.explorer.loss import bootstrap, choose_neurons
from lapelens.explorer.page import page_json
from lapelens.explorer.text import (
    decode_fixed,
    decode_ints,
    encode_fixed,
    encode_ints,
    fnv1a,
    id_width,
    merged_runs,
    raw_token,
)
from lapelens.neurons import LanguageNeurons
from lapelens.tokens import pack_chunks
from tiny import chromium, explorer_run, make_tiny_model

BUDGETS = dict(
    context_tokens=64,
    top_k=3,
    samples=2,
    window=(5, 4),
    loss_max_neurons=40,
    loss_tokens=64,
    loss_seq_len=16,
    n_boot=300,
    progress=False,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return explorer_run(tmp_path_factory.mktemp("explore"))


@pytest.fixture(scope="module")
def config(run_dir):
    return json.loads((run_dir / "config.json").read_text())


@pytest.fixture(scope="module")
def hf(config):
    return AutoModelForCausalLM.from_pretrained(config["model"]).eval()


@pytest.fixture(scope="module")
def built(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("page") / "explorer.html"
    return explore(run_dir, out=out, **BUDGETS), out


def hf_acts(hf, layer, tokens):
    """``act_fn(gate_proj(x))`` of every neuron of ``layer``, from a hook on the HF module."""
    got = {}
    handle = hf.model.layers[layer].mlp.act_fn.register_forward_hook(lambda m, i, o: got.__setitem__("a", o.detach()))
    with torch.no_grad():
        hf(tokens)
    handle.remove()
    return got["a"]


def hf_chunk_nll(hf, tokens, layer=None, neuron=None):
    """Summed next-token NLL per chunk, with ``act_fn`` output of one neuron zeroed if given."""

    def zero(module, inputs, output):
        output = output.clone()
        output[..., neuron] = 0
        return output

    handle = hf.model.layers[layer].mlp.act_fn.register_forward_hook(zero) if layer is not None else None
    with torch.no_grad():
        logits = hf(tokens).logits
    if handle:
        handle.remove()
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none")
    return nll.view(len(tokens), -1).double().sum(dim=1)


def hf_effect(folder, arch, layer, neuron):
    """``W_out[layer][neuron] @ W_U`` from the HF modules."""
    hf = AutoModelForCausalLM.from_pretrained(folder)
    if arch == "gpt2":  # Conv1D: weight is (in, out), so the neuron's output row is weight[neuron]
        w_out = hf.transformer.h[layer].mlp.c_proj.weight[neuron]
    else:  # nn.Linear: weight is (out, in); the neuron's output direction is column `neuron`
        w_out = hf.model.layers[layer].mlp.down_proj.weight[:, neuron]
    return (w_out @ hf.lm_head.weight.T).detach()


# ---- small pieces, golden numbers ----------------------------------------------------------------
def test_compact_integers_and_the_shard_hash():
    assert encode_ints([0, 1, 63, 64, 4095], 2) == "AAABA_BA__"
    assert decode_ints("AAABA_BA__", 2) == [0, 1, 63, 64, 4095]
    assert id_width(4096) == 2 and id_width(4097) == 3 and id_width(49152) == 3 and id_width(262144) == 3
    with pytest.raises(ValueError):
        encode_ints([4096], 2)
    # fixed point: one step is the largest magnitude / (2**17 - 1); code 2**17 is zero, code 0 "none"
    packed = encode_fixed([0.0, 3.0, -3.0, 1.5, float("nan")])
    assert packed["s"] == 3.0 / 131071 and decode_ints(packed["d"], 3) == [131072, 262143, 1, 196608, 0]
    assert decode_fixed(packed) == [0.0, 3.0, -3.0, pytest.approx(1.5, abs=packed["s"] / 2), None]
    assert fnv1a("") == 0x811C9DC5 and fnv1a("a") == 0xE40C292C and fnv1a("foobar") == 0xBF9CF968


def test_bootstrap_interval_golden():
    # Two chunks with changes 0 and 2 (one token each): resampled means are 0, 1, 2 with probability
    # 1/4, 1/2, 1/4, so the 2.5% and 97.5% percentiles are 0 and 2; the mean is 1.
    mean, low, high = bootstrap(torch.tensor([[0.0, 2.0]], dtype=torch.float64), torch.tensor([1, 1]), 4000, 0)
    assert (mean.item(), low.item(), high.item()) == (1.0, 0.0, 2.0)
    # The same change on every chunk: no spread at all.
    mean, low, high = bootstrap(torch.full((1, 5), 3.0, dtype=torch.float64), torch.full((5,), 2), 100, 0)
    assert mean.item() == low.item() == high.item() == 1.5


def test_loss_neurons_all_or_each_languages_best():
    mask = torch.zeros(2, 1, 6, dtype=torch.bool)
    mask[0, 0, [0, 1, 2]] = True
    mask[1, 0, [2, 3, 4]] = True
    neurons = LanguageNeurons(("a", "b"), mask, "lape")
    rank = torch.tensor([[5, 0, 1, 4, 2, -1]])
    assert choose_neurons(neurons, rank, 10, 1).tolist() == [[0, 1], [0, 2], [0, 4], [0, 3], [0, 0]]
    # Too many: each language's best in turns (a: 1, 2, 0; b: 2, 4, 3), up to the cap.
    assert choose_neurons(neurons, rank, 3, 2).tolist() == [[0, 1], [0, 2], [0, 4]]
    assert choose_neurons(neurons, rank, 4, 1).tolist() == [[0, 1], [0, 2]]


def test_byte_pieces_merge_into_the_characters_they_make(tmp_path):
    tok = lapelens.load_model(make_tiny_model("llama", tmp_path / "m")).tokenizer
    ids = tok("敏捷的棕色狐狸", add_special_tokens=False)["input_ids"]
    runs = merged_runs(tok, ids)
    assert runs, "the tiny tokenizer splits these characters into byte pieces"
    covered = {p for start, n, _ in runs for p in range(start, start + n)}
    shown = "".join(
        next(t for s, n, t in runs if s == p)
        if any(s == p for s, _, _ in runs)
        else ("" if p in covered else tok.decode([i]))
        for p, i in enumerate(ids)
    )
    assert shown == "敏捷的棕色狐狸"
    assert all("\ufffd" in tok.decode([ids[s]]) and n >= 2 for s, n, _ in runs)
    # a piece shown alone spells its bytes: the pieces of a run spell the UTF-8 bytes of its text
    for start, n, text in runs:
        spelled = "".join(raw_token(tok, i)[1:-1] for i in ids[start : start + n])
        assert spelled.encode("latin-1").decode("unicode_escape").encode("latin-1") == text.encode("utf-8")


# ---- numbers against the HF model ------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_logit_effects_equal_hf_down_projection_times_unembedding(arch, tmp_path):
    folder = make_tiny_model(arch, tmp_path / arch)
    model = lapelens.load_model(folder)
    listed = torch.tensor([[1, 63], [0, 0], [1, 37]])  # any order: rows follow it
    e = neuron_logits(model, listed, top=5, bins=12)
    assert torch.equal(e.neurons, listed)
    hf = AutoModelForCausalLM.from_pretrained(folder)
    for row, (layer, neuron) in enumerate(listed.tolist()):
        effect = hf_effect(folder, arch, layer, neuron)
        assert e.promoted[row].tolist() == effect.topk(5).indices.tolist()
        assert e.suppressed[row].tolist() == effect.topk(5, largest=False).indices.tolist()
        torch.testing.assert_close(e.promoted_value[row], effect.topk(5).values, rtol=1e-4, atol=1e-5)
        lo, hi = e.hist_range[row].tolist()
        counts = np.bincount(
            np.clip(np.floor((effect.numpy() - lo) / ((hi - lo) / 12)), 0, 11).astype(int), minlength=12
        )
        assert e.hist[row].tolist() == counts.tolist()
        # the moments that set the range: mean +- 6 standard deviations of the effects (numpy, float64)
        x = effect.double().numpy()
        assert (lo, hi) == pytest.approx((x.mean() - 6 * x.std(), x.mean() + 6 * x.std()), rel=1e-3, abs=1e-5)
    # per token, the strongest promoters over all layers and neurons, from the HF weights
    d_mlp = 64
    if arch == "gpt2":
        w_out = torch.stack([hf.transformer.h[i].mlp.c_proj.weight for i in range(2)])  # layer neuron d_model
    else:
        w_out = torch.stack([hf.model.layers[i].mlp.down_proj.weight.T for i in range(2)])
    assert w_out.shape[1] == d_mlp
    effects = (w_out.reshape(-1, w_out.shape[-1]) @ hf.lm_head.weight.T).detach()  # flat neuron x vocab
    tokens = torch.tensor([319, 0, 17, 200])
    found = strongest_promoters(model, tokens, top=4)
    assert torch.equal(found.tokens, tokens)
    for row, token in enumerate(tokens.tolist()):
        assert found.neurons[row].tolist() == effects[:, token].topk(4).indices.tolist()
        torch.testing.assert_close(found.value[row], effects[:, token].topk(4).values, rtol=1e-4, atol=1e-5)
    flat, values = token_promoters(model, 17, top=100)  # more than one layer's 64 neurons
    assert flat.tolist() == effects[:, 17].topk(100).indices.tolist()
    with pytest.raises(lapelens.LapelensError, match=r"No neuron \(2, 0\)"):
        neuron_logits(model, torch.tensor([[2, 0]]))


def test_loss_change_equals_a_hook_on_the_hf_model(built, hf, config):
    data = built[0].data
    c = data.loss.changes
    assert len(c.neurons) == int(data.selection.selections["lape"].any(dim=0).sum())  # all of them fit the budget
    chunks = {
        l: pack_chunks(built[0].model.tokenizer, lapelens.load_corpus(config["corpus"], "valid")[l], 16, 64)
        for l in data.languages
    }
    for row in [0, len(c.neurons) - 1]:
        layer, neuron = c.neurons[row].tolist()
        for k, lang in enumerate(data.languages):
            base = hf_chunk_nll(hf, chunks[lang])
            diff = hf_chunk_nll(hf, chunks[lang], layer, neuron) - base
            tokens = chunks[lang].shape[0] * 15
            assert c.base[k].item() == pytest.approx(base.sum().item() / tokens, abs=1e-5)
            assert c.delta[row, k].item() == pytest.approx(diff.sum().item() / tokens, abs=1e-5)
            # the interval: numpy percentiles of the same resamples of these chunks
            idx = torch.randint(
                0, len(diff), (c.n_boot, len(diff)), generator=torch.Generator().manual_seed(c.seed)
            ).numpy()
            boot = diff.numpy()[idx].sum(axis=1) / (15 * len(diff))
            assert c.low[row, k].item() == pytest.approx(np.percentile(boot, 2.5), abs=1e-5)
            assert c.high[row, k].item() == pytest.approx(np.percentile(boot, 97.5), abs=1e-5)


def test_loss_changes_are_kept_per_language_and_read_back(built, config, tmp_path, monkeypatch):
    """With a cache folder: one file per language; the same call again reads them (no forward) and
    gives the same numbers; other neurons are computed anew."""
    from lapelens.explorer import loss as loss_module

    model, data = built[0].model, built[0].data
    neurons = data.loss.changes.neurons[:2]
    chunks = {
        l: pack_chunks(model.tokenizer, lapelens.load_corpus(config["corpus"], "valid")[l], 16, 48)
        for l in data.languages[:2]
    }
    first = loss_module.loss_changes(model, neurons, chunks, n_boot=50, progress=False, cache=tmp_path)
    assert len(list(tmp_path.glob("loss-*.pt"))) == 2
    plain = loss_module.loss_changes(model, neurons, chunks, n_boot=50, progress=False)
    forwards, real = [], loss_module._language
    monkeypatch.setattr(loss_module, "_language", lambda *a: forwards.append(1) or real(*a))
    again = loss_module.loss_changes(model, neurons, chunks, n_boot=50, progress=False, cache=tmp_path)
    assert forwards == []
    for name in ("base", "delta", "low", "high"):
        assert torch.equal(getattr(again, name), getattr(first, name))
        assert torch.equal(getattr(plain, name), getattr(first, name))
    monkeypatch.undo()
    loss_module.loss_changes(model, neurons[:1], chunks, n_boot=50, progress=False, cache=tmp_path)
    assert len(list(tmp_path.glob("loss-*.pt"))) == 4


def test_contexts_samples_and_histograms_equal_a_brute_force_pass(built, hf, config):
    data = built[0].data
    s, panel = data.contexts.samples, data.contexts
    texts = lapelens.load_corpus(config["corpus"], "train")
    assert torch.equal(s.neurons, data.selection.selections["lape"].any(dim=0).nonzero())
    for k, lang in enumerate(data.languages):
        chunks = pack_chunks(built[0].model.tokenizer, texts[lang], 16, 64)
        assert s.tokens_seen[k] == chunks.numel()
        for d, (layer, neuron) in enumerate(s.neurons.tolist()):
            a = hf_acts(hf, layer, chunks)[..., neuron]  # chunk pos
            best, at = a.max(dim=1)
            top = best.topk(3)
            torch.testing.assert_close(s.value[d, k, :3], top.values, rtol=1e-4, atol=1e-5)
            shown = panel.chunks[lang][s.chunk[d, k, 0]]
            assert torch.equal(shown, chunks[int(top.indices[0])]) and s.pos[d, k, 0] == at[top.indices[0]]
            p = int(s.pos[d, k, 0])
            window = a[int(top.indices[0]), max(0, p - 5) : p + 5]
            kept = s.acts[d, k, 0, 5 - (p - max(0, p - 5)) :][: len(window)]
            torch.testing.assert_close(kept, window, rtol=1e-4, atol=1e-5)
            flat = a.flatten().sort().values
            for g, (q_lo, q_hi) in enumerate(s.groups):
                lo, hi = flat[int(q_lo * (len(flat) - 1))], flat[int(q_hi * (len(flat) - 1))]
                torch.testing.assert_close(s.bounds[d, k, g], torch.stack([lo, hi]), rtol=1e-4, atol=1e-5)
                share = ((a >= lo) & (a < hi)).double().mean().item()
                assert s.share[d, k, g].item() == pytest.approx(share, abs=0.02)  # 1 token of 64 may sit on a bound
                for c in range(3 + g * 2, 3 + g * 2 + 2):
                    if s.chunk[d, k, c] < 0:
                        continue
                    # the repeated texts give identical chunks: any of them has the same activations
                    chunk = next(
                        i for i in range(len(chunks)) if torch.equal(chunks[i], panel.chunks[lang][s.chunk[d, k, c]])
                    )
                    value = a[chunk, s.pos[d, k, c]]
                    assert s.value[d, k, c].item() == pytest.approx(value.item(), abs=1e-5)
                    assert lo - 1e-5 <= value < hi + 1e-5
            edges = s.edges[d]
            bins = (
                ((a.flatten() - edges[0]) / (edges[-1] - edges[0]) * (len(edges) - 1)).floor().clamp(0, len(edges) - 2)
            )
            hist = torch.bincount(bins.long(), minlength=len(edges) - 1)
            assert (s.hist[d, k] - hist).abs().sum() <= 2  # a value on a bin edge may round to either side


def test_the_page_holds_lists_and_the_layer_files_the_rest(built, run_dir):
    ex, out = built
    html_bytes, folder_bytes = ex.page(out).sizes()
    files = sorted(p.name for p in (out.parent / "explorer_files").iterdir())
    assert files == ["layer_000.js", "layer_001.js", "search_000.js", "vocab.js"]
    html = out.read_text()
    assert (
        '"promoted_value"' not in html
        and '"promoted_value"' in (out.parent / "explorer_files" / "layer_001.js").read_text()
    )
    assert html_bytes == len(html.encode()) and folder_bytes == sum(
        p.stat().st_size for p in (out.parent / "explorer_files").iterdir()
    )
    stats = lapelens.ActivationStats.load(run_dir / "stats")
    d = page_json(ex.data, "explorer_files")
    p = stats.firing_probability().flatten(1)
    union = ex.data.selection.selections["lape"].any(0) | ex.data.selection.selections["lap"].any(0)
    assert d["rows"]["index"] == union.flatten().nonzero().flatten().tolist()
    for row, f in enumerate(d["rows"]["index"][:10]):
        assert d["rows"]["p"][row] == pytest.approx(p[:, f].tolist(), abs=6e-5)
    # logit tables: exactly the listed neurons, in the layer files
    logits = ex.data.logits.effects
    assert sorted((logits.neurons[:, 0] * 64 + logits.neurons[:, 1]).tolist()) == d["rows"]["index"]
    layer1 = json.loads((out.parent / "explorer_files" / "layer_001.js").read_text().split(",", 1)[1][:-3])
    assert layer1["logits"]["neurons"] == union[1].nonzero().flatten().tolist()
    assert (
        decode_ints(layer1["selection"]["rank"], layer1["selection"]["rank_width"])
        == (ex.data.selection.rank[1] + 1).tolist()
    )


def test_the_search_index_holds_the_tokens_of_the_pages_text(built, config, hf):
    ex, out = built
    tok, search = ex.model.tokenizer, ex.data.search
    text = [pack_chunks(tok, lapelens.load_corpus(config["corpus"], "train")[l], 16, 64) for l in ex.data.languages]
    text += [pack_chunks(tok, lapelens.load_corpus(config["corpus"], "valid")[l], 16, 64) for l in ex.data.languages]
    ids = sorted(set(torch.cat([c.flatten() for c in text]).tolist()))
    typeable = [i for i in ids if tok.decode([i]) and "\ufffd" not in tok.decode([i])]
    assert search.promoters.tokens.tolist() == typeable and len(typeable) < len(search.texts)
    w_out = torch.stack([hf.model.layers[i].mlp.down_proj.weight.T for i in range(2)]).reshape(-1, 32)
    shards = {}
    for s in range(search.n_shards):
        script = (out.parent / "explorer_files" / f"search_{s:03d}.js").read_text()
        shards.update(json.loads(script.split(",", 1)[1][:-3]))
    step = page_json(ex.data, "explorer_files")["search"]["step"]
    found = {i: (text, n, c) for text, entries in shards.items() for i, n, c in entries}
    assert sorted(found) == typeable
    for token in typeable[:: max(1, len(typeable) // 12)]:
        text, neurons, codes = found[token]
        want = (w_out @ hf.lm_head.weight[token]).detach().topk(5)
        assert text == tok.decode([token]) and decode_ints(neurons, search.width) == want.indices.tolist()
        effects = decode_fixed({"s": step, "d": codes})
        assert effects == pytest.approx(want.values.tolist(), abs=step)


def test_a_neuron_set_of_fewer_languages_is_shown_in_the_statistics_columns(run_dir):
    stats = lapelens.ActivationStats.load(run_dir / "stats")
    lape = lapelens.load(run_dir / "neurons_lape")
    inputs = from_parts(stats, lape.subset(["zh", "en"]), model="m", corpus="c")
    shown = inputs.sets["lape"]
    assert shown.languages == stats.languages == ("en", "zh", "fr", "ja")
    assert torch.equal(shown.mask[0], lape.mask[0]) and torch.equal(shown.mask[1], lape.mask[1])
    assert not shown.mask[2:].any() and (inputs.model, inputs.corpus, inputs.seq_len) == ("m", "c", 16)
    with pytest.raises(lapelens.LapelensError, match=r"languages \['xx'\]"):
        from_parts(stats, LanguageNeurons(("xx",), lape.mask[:1], "lape"))


def test_public_name_and_cli(run_dir, tmp_path):
    assert lapelens.explore is explore
    out = tmp_path / "cli.html"
    assert (
        main(
            [
                "explore",
                str(run_dir),
                "--out",
                str(out),
                "--context-tokens",
                "32",
                "--loss-max-neurons",
                "2",
                "--loss-tokens",
                "32",
                "--loss-seq-len",
                "16",
                "--quiet",
            ]
        )
        == 0
    )
    assert "explorer-data" in out.read_text() and (tmp_path / "cli_files" / "layer_001.js").is_file()
    # statistics and a neuron set instead of a run folder (model and corpus given, as the statistics record none)
    config = json.loads((run_dir / "config.json").read_text())
    out2 = tmp_path / "parts.html"
    assert (
        main(
            [
                "explore",
                "--stats",
                str(run_dir / "stats"),
                "--neurons",
                str(run_dir / "neurons_lape"),
                "--model",
                config["model"],
                "--corpus",
                config["corpus"],
                "--out",
                str(out2),
                "--context-tokens",
                "32",
                "--loss-max-neurons",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    assert '"lape"' in out2.read_text() and '"lap"' not in out2.read_text()
    assert main(["explore", str(tmp_path), "--out", str(out)]) == 2  # not a run folder
    assert main(["explore", str(run_dir)]) == 2  # neither --out nor --serve
    assert main(["explore", "--out", str(out)]) == 2  # nothing to explore


# ---- the page in a browser -------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = chromium(p)
        if b is None:
            pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
        yield b
        b.close()


@pytest.fixture
def page(browser, built):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.errors, page.blocked, page.files = [], [], []
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))

    def route(r):
        if r.request.url.startswith("file://"):
            page.files.append(r.request.url.rsplit("/", 1)[-1])
            r.continue_()
        else:
            page.blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(built[1].resolve().as_uri())
    yield page
    page.close()


def open_neuron(page, layer, neuron):
    page.select_option("#search-kind", "neuron")
    page.fill("#search-input", f"L{layer} N{neuron}")
    page.click("#search-button")
    page.wait_for_function(f"document.getElementById('panel-firing').dataset.neuron === '{layer}:{neuron}'")


def shown_bars(page, cls):
    return {t.get_attribute("data-label"): t.text_content() for t in page.locator(f"svg.{cls} text.value").all()}


def listed(page):
    return [
        (int(r.get_attribute("data-layer")), int(r.get_attribute("data-neuron")))
        for r in page.locator("#neuron-list tr.neuron-row").all()
    ]


def test_page_loads_offline_and_loads_a_layer_only_when_opened(page):
    assert page.locator("#grid td.cell").count() > 0
    assert not [f for f in page.files if f.startswith("layer_")]
    open_neuron(page, 1, 5)
    assert [f for f in page.files if f.startswith("layer_")] == ["layer_001.js"]
    assert page.errors == [] and page.blocked == []


def test_overview_lists_and_language_columns(page, built):
    data = built[0].data
    lape = data.selection.selections["lape"]
    assert set(listed(page)) == {tuple(x) for x in lape.any(dim=0).nonzero().tolist()}
    page.locator("#grid td.cell[data-layer='1'][data-lang='2']").click()
    assert {n for _, n in listed(page)} == set(lape[2, 1].nonzero().flatten().tolist())
    page.locator("#grid th.lang-head[data-lang='1']").click()  # a language: its neurons in every layer
    assert set(listed(page)) == {tuple(x) for x in lape[1].nonzero().tolist()}
    assert page.errors == []


def test_list_sorts_by_a_language_column(page, run_dir):
    stats = lapelens.ActivationStats.load(run_dir / "stats")
    p = stats.firing_probability()[stats.lang_index("zh")]
    page.locator("#neuron-table th[data-sort='p_zh']").click()
    rows = listed(page)
    shown = [round(p[l, n].item(), 3) for l, n in rows]
    assert shown == sorted(shown, reverse=True) and len(rows) > 5
    page.locator("#neuron-table th[data-sort='p_zh']").click()  # again: ascending
    assert [round(p[l, n].item(), 3) for l, n in listed(page)] == sorted(shown)


def test_a_neuron_page_shows_the_statistics_the_logits_and_the_loss(page, built, run_dir, hf, config):
    data = built[0].data
    stats = lapelens.ActivationStats.load(run_dir / "stats")
    c = data.loss.changes
    layer, neuron = c.neurons[0].tolist()
    page.locator("#neuron-list tr.neuron-row").first.click()  # the list opens sorted by LAPE rank: the best first
    page.wait_for_function(f"document.getElementById('panel-firing').dataset.neuron === '{layer}:{neuron}'")
    p = stats.firing_probability()
    firing = {l: float(v) for l, v in shown_bars(page, "firing").items()}  # 3 decimals (JS rounds ties up)
    assert firing == {
        l: pytest.approx(p[k, layer, neuron].item(), abs=5e-4 + 1e-12) for k, l in enumerate(stats.languages)
    }
    mean = {l: float(v) for l, v in shown_bars(page, "mean").items()}  # 4 decimals of an 18-bit fixed-point value
    assert mean == {
        l: pytest.approx(stats.mean_activation()[k, layer, neuron].item(), abs=6e-5)
        for k, l in enumerate(stats.languages)
    }
    entropy = lapelens.stats.entropy(stats.firing_probability())[layer, neuron].item()
    assert float(page.inner_text("#entropy-value")) == pytest.approx(entropy, abs=6e-5)
    effect = hf_effect(Path(config["model"]), "llama", layer, neuron)
    ids = [int(t.get_attribute("data-token-id")) for t in page.locator("#panel-logits .promoted td.t").all()]
    assert ids == effect.topk(10).indices.tolist()
    values = [float(t.inner_text()) for t in page.locator("#panel-logits .promoted td:not(.t)").all()]
    assert values == pytest.approx(effect.topk(10).values.tolist(), abs=6e-4)
    assert page.locator("#panel-logit-hist rect").count() == 24
    labels = {t.get_attribute("data-label"): t for t in page.locator("svg.loss text.value").all()}
    for k, lang in enumerate(data.languages):
        assert float(labels[lang].get_attribute("data-delta")) == pytest.approx(c.delta[0, k].item(), abs=1e-6)
        spans_zero = c.low[0, k] <= 0 <= c.high[0, k]
        assert ("no detectable effect" in labels[lang].text_content()) == bool(spans_zero)
    summary = page.inner_text("#neuron-summary")
    top = built[0].model.tokenizer.decode([effect.argmax().item()])
    assert (
        summary.startswith(f"L{layer} N{neuron}: ")
        and "LAPE rank 0" in summary
        and f"promotes \u201c{top}\u201d" in summary
    )
    assert page.errors == []


def test_contexts_show_the_chunk_window_with_characters_whole(page, built):
    data = built[0].data
    s, panel, tok = data.contexts.samples, data.contexts, built[0].model.tokenizer
    d = 0
    layer, neuron = s.neurons[d].tolist()
    open_neuron(page, layer, neuron)
    for k, lang in enumerate(data.languages):
        chunk = panel.chunks[lang][s.chunk[d, k, 0]].tolist()
        pos = int(s.pos[d, k, 0])
        row = page.locator(f"#panel-contexts .ctx-lang[data-lang='{lang}'] .ctx[data-group='-1']").first
        spans = row.locator("span.tok").all()
        first = int(spans[0].get_attribute("data-pos"))
        ids = []
        for sp in spans:
            ids += [int(sp.get_attribute("data-token-id"))] + [None] * (int(sp.get_attribute("data-n")) - 1)
        assert ids[0] == chunk[max(0, pos - 5)] or first == 0
        text = "".join(sp.text_content() for sp in spans)
        window = chunk[max(0, pos - 5) : pos + 5]
        if "\ufffd" not in tok.decode(window) and "\u2039" not in text:
            assert text.replace("\u23ce", "\n") == tok.decode(window)  # byte pieces shown as whole characters
        assert row.locator("span.center").count() == 1
        # every context's numbers as written in the compact records: group, chunk, position, value
        rows = page.locator(f"#panel-contexts .ctx-lang[data-lang='{lang}'] .ctx").all()
        kept = [c for c in range(s.value.shape[2]) if s.chunk[d, k, c] >= 0]
        assert len(rows) == len(kept)
        scale = float(panel.scale()[d])
        for el, c in zip(rows, kept):
            group = -1 if c < s.top else (c - s.top) // s.samples
            assert int(el.get_attribute("data-group")) == group
            assert (int(el.get_attribute("data-chunk")), int(el.get_attribute("data-pos"))) == (
                s.chunk[d, k, c],
                s.pos[d, k, c],
            )
            assert float(el.get_attribute("data-value")) == pytest.approx(s.value[d, k, c].item(), abs=scale * 1e-5)
        for g in range(len(s.groups)):
            head = page.inner_text(f"#panel-contexts .ctx-lang[data-lang='{lang}'] .group-head[data-group='{g}']")
            lo, hi = s.bounds[d, k, g].tolist()
            assert f"(activation {lo:.3f} to {hi:.3f}, {100 * s.share[d, k, g].item():.1f}% of them)" in head
    assert page.errors == []


def test_search_by_token_language_layer_and_neuron(page, built, hf):
    data = built[0].data
    page.fill("#search-input", "the")
    page.click("#search-button")
    page.wait_for_selector("#search-results table.search-table")
    w_out = torch.stack([hf.model.layers[i].mlp.down_proj.weight.T for i in range(2)]).reshape(-1, 32)
    for table in page.locator("#search-results table.search-table").all():
        token = int(table.get_attribute("data-token-id"))
        assert data.search.texts[token] in ("the", " the")
        want = (w_out @ hf.lm_head.weight[token]).detach().topk(data.search.promoters.neurons.shape[1]).indices.tolist()
        got = [int(r.get_attribute("data-flat")) for r in table.locator("tr.neuron-row").all()]
        assert got == want
    # a token of the vocabulary that the page's text lacks: not indexed offline, and the page says so
    indexed = {data.search.texts[i] for i in data.search.promoters.tokens.tolist()}
    missing = next(
        t
        for t in data.search.texts
        if t.strip() == t and t.isalpha() and t not in indexed and " " + t not in indexed and t not in ("zh", "en")
    )
    page.fill("#search-input", missing)
    page.click("#search-button")
    page.wait_for_function("document.getElementById('search-status').textContent.startsWith('No token')")
    status = page.inner_text("#search-status")
    assert f"among the {len(indexed):,} tokens of the page's text" in status and "--serve" in status
    page.select_option("#search-kind", "auto")
    page.fill("#search-input", "zh")
    page.click("#search-button")
    zh = data.selection.selections["lape"][data.languages.index("zh")]
    assert set(listed(page)) == {tuple(x) for x in zh.nonzero().tolist()}
    page.fill("#search-input", "L1")
    page.click("#search-button")
    assert {l for l, _ in listed(page)} == {1}
    page.fill("#search-input", "1:7")
    page.click("#search-button")
    page.wait_for_function("document.getElementById('panel-firing').dataset.neuron === '1:7'")
    page.fill("#search-input", "L9 N0")
    page.click("#search-button")
    assert "No such neuron" in page.inner_text("#search-status")
    assert page.errors == []


def test_prev_and_next_follow_the_list(page):
    rows = listed(page)
    page.locator("#neuron-list tr.neuron-row").nth(1).click()
    page.wait_for_function(f"document.getElementById('panel-firing').dataset.neuron === '{rows[1][0]}:{rows[1][1]}'")
    page.click("#next-neuron")
    page.wait_for_function(f"document.getElementById('panel-firing').dataset.neuron === '{rows[2][0]}:{rows[2][1]}'")
    page.click("#prev-neuron")
    page.click("#prev-neuron")
    page.wait_for_function(f"document.getElementById('panel-firing').dataset.neuron === '{rows[0][0]}:{rows[0][1]}'")
    assert page.inner_text("#nav-position") == f"1 of {len(rows)} in the list"


def test_an_untracked_neuron_says_what_is_missing(page, built):
    data = built[0].data
    lape, lap = data.selection.selections["lape"].any(dim=0), data.selection.selections["lap"].any(dim=0)
    unlisted = (~lap & ~lape).nonzero()[0].tolist()  # no method selected it: no contexts, no logit tables offline
    open_neuron(page, *unlisted)
    assert "is not one of them" in page.inner_text("#panel-contexts")
    assert page.locator("#loss-missing").count() == 1
    assert page.locator("#panel-logits td.t").count() == 0 and page.locator("#panel-logit-hist rect").count() == 0
    note = page.inner_text("#panel-logits")
    assert f"for the {data.settings['logit_neurons']} neurons some method selected" in note and "--serve" in note
    assert "promotes" not in page.inner_text("#neuron-summary")
    assert page.errors == []


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


def test_live_mode_in_a_notebook_shades_the_neurons_activation(built, hf):
    ex = built[0]
    text = "Le renard brun saute."
    acts = lapelens.explorer.token_activations(ex.model, 1, 5, text)
    ids = [0] + ex.model.tokenizer(text, add_special_tokens=False)["input_ids"]
    want = hf_acts(hf, 1, torch.tensor([ids]))[0, :, 5]
    assert acts.ids == ids[1:] and acts.separator[0] == 0
    torch.testing.assert_close(torch.tensor(acts.values), want[1:], rtol=1e-4, atol=1e-5)
    shown = ex.live(1, 5, text)
    html = shown._repr_html_() if hasattr(shown, "_repr_html_") else shown.data
    assert html.count('class="tok"') == len(ids) - 1 and f'data-act="{acts.values[-1]:.6f}"' in html
