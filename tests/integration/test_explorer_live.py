"""The live explorer: its JSON API against plain PyTorch hooks on the HF model, bad requests, the
served page in headless Chromium (no request leaves the server), and ``lapelens explore --serve``."""

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest
import torch
from transformers import AutoModelForCausalLM

import lapelens
from lapelens.explorer import explore
from tiny import chromium, explorer_run

BUDGETS = dict(context_tokens=64, top_k=2, samples=1, window=(4, 4), loss_max_neurons=0, progress=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return explorer_run(tmp_path_factory.mktemp("live"))


@pytest.fixture(scope="module")
def config(run_dir):
    return json.loads((run_dir / "config.json").read_text())


@pytest.fixture(scope="module")
def hf(config):
    return AutoModelForCausalLM.from_pretrained(config["model"]).eval()


@pytest.fixture(scope="module")
def built(run_dir):
    return explore(run_dir, **BUDGETS)


@pytest.fixture(scope="module")
def url(built):
    server = built.server(0)  # a free port, on 127.0.0.1
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def get(url, path, **params):
    """(status, JSON body) of a GET."""
    try:
        with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(params)}", timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def act_fn_hook(hf, layer, set_to=None, store=None):
    """A forward hook on ``mlp.act_fn`` of ``layer``: record its output, or set neurons to values."""

    def hook(module, inputs, output):
        if store is not None:
            store.append(output.detach())
        if set_to is None:
            return None
        output = output.clone()
        for neuron, value in set_to.items():
            output[..., neuron] = value
        return output

    return hf.model.layers[layer].mlp.act_fn.register_forward_hook(hook)


def hf_greedy(hf, tok, prompt, k, hooks=()):
    """Greedy HF generation of [BOS] + prompt under ``hooks`` (each a callable returning a handle)."""
    ids = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
    handles = [h() for h in hooks]
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([ids]),
            max_new_tokens=k,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
    for h in handles:
        h.remove()
    new = out[0, len(ids) :].tolist()
    return new[: new.index(tok.eos_token_id)] if tok.eos_token_id in new else new


def test_activations_equal_a_hook_on_the_hf_act_fn(url, hf, built):
    tok = built.model.tokenizer
    for layer, neuron, text in [(1, 5, "Le renard brun saute."), (0, 63, "敏捷的棕色狐狸跳过了懒狗。")]:
        status, body = get(url, "/api/activations", layer=layer, neuron=neuron, text=text)
        assert status == 200
        ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
        store = []
        handle = act_fn_hook(hf, layer, store=store)
        with torch.no_grad():
            hf(torch.tensor([ids]))
        handle.remove()
        want = store[0][0, :, neuron]
        assert body["ids"] == ids[1:] and len(body["tokens"]) == len(body["values"]) == len(ids) - 1
        torch.testing.assert_close(torch.tensor(body["values"]), want[1:], rtol=0, atol=1e-4)
        assert body["separator"]["value"] == pytest.approx(want[0].item(), abs=1e-4)
        assert body["tokens"] == [tok.decode([i]) for i in ids[1:]]
    # the byte pieces of the Chinese text are merged into its characters: runs and whole tokens spell it
    starts = {start: (n, text) for start, n, text in body["runs"]}
    spelled, p = "", 0
    while p < len(body["tokens"]):
        n, text = starts.get(p, (1, body["tokens"][p]))
        spelled, p = spelled + text, p + n
    assert body["runs"] and spelled == "敏捷的棕色狐狸跳过了懒狗。"


def test_steering_a_neuron_equals_hf_greedy_generation_with_that_value(url, hf, built):
    tok = built.model.tokenizer
    status, plain = get(url, "/api/steer", prompt="Le renard", max_new_tokens=10)
    assert status == 200 and plain["ids"] == hf_greedy(hf, tok, "Le renard", 10) and plain["intervention"] is None
    status, body = get(url, "/api/steer", layer=1, neuron=5, value=6.5, prompt="Le renard", max_new_tokens=10)
    want = hf_greedy(hf, tok, "Le renard", 10, [lambda: act_fn_hook(hf, 1, {5: 6.5})])
    assert status == 200 and body["ids"] == want and body["text"] == tok.decode(want, skip_special_tokens=True)
    assert want != plain["ids"]  # the value changes the continuation, so the comparison means something


def test_steering_a_language_sets_its_neurons_to_scale_times_their_mean(url, hf, built, run_dir):
    tok = built.model.tokenizer
    stats = lapelens.ActivationStats.load(run_dir / "stats")
    lape = lapelens.load(run_dir / "neurons_lape")
    k = lape.lang_index("zh")
    mean = stats.mean_activation()[stats.lang_index("zh")]
    hooks = []
    for layer in range(lape.n_layers):
        values = {int(j): 3.0 * mean[layer, j].item() for j in lape.mask[k, layer].nonzero().flatten()}
        if values:
            hooks.append(lambda layer=layer, values=values: act_fn_hook(hf, layer, values))
    status, body = get(url, "/api/steer", language="zh", scale=3, prompt="The", max_new_tokens=8)
    assert status == 200 and body["ids"] == hf_greedy(hf, tok, "The", 8, hooks)
    assert body["intervention"]["neurons"] == int(lape.mask[k].sum())


def test_search_ranks_first_what_the_hf_weights_rank_first(url, hf, built):
    tok = built.model.tokenizer
    w_out = torch.stack([hf.model.layers[i].mlp.down_proj.weight.T for i in range(2)]).reshape(-1, 32)
    for token in [" the", "the", "狐"]:
        status, body = get(url, "/api/search", token=token, top=5)
        assert status == 200
        token_id = body["token_id"]
        assert tok.decode([token_id]) == token
        effect = (w_out @ hf.lm_head.weight[token_id]).detach()
        assert [n["layer"] * 64 + n["neuron"] for n in body["neurons"]] == effect.topk(5).indices.tolist()
        assert body["neurons"][0]["effect"] == pytest.approx(effect.max().item(), abs=1e-5)


def test_logits_of_any_neuron_equal_the_hf_weights(url, hf, built):
    tok = built.model.tokenizer
    listed = built.data.logits.effects.neurons.tolist()
    for layer, neuron in [(0, 0), (1, 63)]:
        assert [layer, neuron] not in listed  # not on the page: computed by the server
        status, body = get(url, "/api/logits", layer=layer, neuron=neuron, top=7)
        assert status == 200 and (body["layer"], body["neuron"]) == (layer, neuron)
        effect = (hf.model.layers[layer].mlp.down_proj.weight[:, neuron] @ hf.lm_head.weight.T).detach()
        for key, largest in (("promoted", True), ("suppressed", False)):
            want = effect.topk(7, largest=largest)
            assert [t["id"] for t in body[key]] == want.indices.tolist()
            assert [t["effect"] for t in body[key]] == pytest.approx(want.values.tolist(), abs=1e-5)
            for i, t in zip(want.indices.tolist(), body[key]):  # a byte piece is shown as its raw bytes
                decoded = tok.decode([i])
                assert t["text"] == decoded if "\ufffd" not in decoded else t["text"].startswith("\u2039")
        lo, hi = body["histogram"]["range"]
        x = effect.double().numpy()
        assert (lo, hi) == pytest.approx((x.mean() - 6 * x.std(), x.mean() + 6 * x.std()), rel=1e-3, abs=1e-5)
        bins = ((effect - lo) / ((hi - lo) / 24)).floor().clamp(0, 23).long()
        assert body["histogram"]["counts"] == torch.bincount(bins, minlength=24).tolist()


@pytest.mark.parametrize(
    "path, params, says",
    [
        ("/api/activations", dict(layer=2, neuron=0, text="x"), "No neuron (2, 0)"),
        ("/api/activations", dict(layer=0, neuron=64, text="x"), "No neuron (0, 64)"),
        ("/api/activations", dict(layer="one", neuron=0, text="x"), "whole numbers"),
        ("/api/activations", dict(layer=0, neuron=0, text=""), "empty"),
        ("/api/activations", dict(layer=0, neuron=0), "Missing parameter 'text'"),
        ("/api/activations", dict(layer=0, neuron=0, text="word " * 300), "at most"),
        ("/api/activations", dict(layer=0, neuron=0, text="x" * 5000), "characters"),
        ("/api/steer", dict(layer=0, neuron=0, value="abc", prompt="x"), "value must be a number"),
        ("/api/steer", dict(layer=0, neuron=0, value="nan", prompt="x"), "finite"),
        ("/api/steer", dict(layer=0, neuron=0, value=1, language="zh"), "not both"),
        ("/api/steer", dict(language="xx"), "'xx'"),
        ("/api/steer", dict(prompt="x", max_new_tokens=0), "max_new_tokens"),
        ("/api/steer", dict(prompt="x", max_new_tokens="ten"), "max_new_tokens"),
        ("/api/steer", dict(prompt="word " * 120, max_new_tokens=20), "at most"),
        ("/api/search", dict(token=""), "empty"),
        ("/api/search", dict(token="the", top=0), "top"),
        ("/api/logits", dict(layer=2, neuron=0), "No neuron (2, 0)"),
        ("/api/logits", dict(layer=0), "Missing parameter 'neuron'"),
        ("/api/logits", dict(layer=0, neuron=0, top="all"), "top"),
    ],
)
def test_bad_requests_get_a_400_and_the_server_keeps_serving(url, path, params, says):
    status, body = get(url, path, **params)
    assert status == 400 and list(body) == ["error"] and says in body["error"] and "\n" not in body["error"]
    assert get(url, "/api/info")[0] == 200


def test_a_search_that_finds_no_token_says_so(url):
    status, body = get(url, "/api/search", token="zzzzqqq")
    assert status == 200 and body["token_id"] is None and body["neurons"] == [] and "No single token" in body["note"]


def test_a_saved_page_is_served_as_it_was_written(built, tmp_path):
    from lapelens.explorer.server import load_page

    written = built.page(tmp_path / "p.html")
    written.save(tmp_path / "p.html")
    (tmp_path / "p.html").rename(tmp_path / "renamed.html")  # the folder is the one the page names
    loaded = load_page(tmp_path / "renamed.html")
    assert (loaded.html, loaded.folder, loaded.files) == (written.html, "p_files", written.files)
    (tmp_path / "p_files" / "layer_000.js").unlink()
    (tmp_path / "p_files" / "layer_001.js").unlink()
    (tmp_path / "p_files" / "search_000.js").unlink()
    (tmp_path / "p_files" / "vocab.js").unlink()
    with pytest.raises(lapelens.LapelensError, match="folder .* is missing"):
        load_page(tmp_path / "renamed.html")
    with pytest.raises(lapelens.LapelensError, match="not an explorer page"):
        load_page(__file__)


def test_a_request_for_another_host_name_is_refused(url):
    request = urllib.request.Request(url + "/api/info", headers={"Host": "attacker.example:80"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=60)
    assert caught.value.code == 403 and "Host" in json.loads(caught.value.read())["error"]
    assert get(url.replace("127.0.0.1", "localhost"), "/api/info")[0] == 200


def test_unknown_paths_get_a_404(url):
    status, body = get(url, "/api/nothing")
    assert status == 404 and "/api/activations" in body["error"]


# ---- the served page in a browser ------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = chromium(p)
        if b is None:
            pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
        yield b
        b.close()


def test_the_live_page_talks_only_to_its_server(browser, url, built, hf):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, outside, inside = [], [], []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))

    def route(r):
        if r.request.url.startswith(url + "/"):
            inside.append(r.request.url[len(url) :])
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(url + "/")
    page.locator("#neuron-list tr.neuron-row").first.click()
    page.wait_for_selector("#panel-live #live-text")
    layer, neuron = map(int, page.get_attribute("#neuron-view", "data-neuron").split(":"))
    # the text box: each token shaded with the API's value
    page.fill("#live-text", "Le renard brun saute.")
    page.click("#live-run")
    page.wait_for_selector("#live-tokens span.tok")
    _, body = get(url, "/api/activations", layer=layer, neuron=neuron, text="Le renard brun saute.")
    shown = [float(s.get_attribute("data-value")) for s in page.locator("#live-tokens span.tok").all()]
    assert shown == pytest.approx(body["values"], abs=1e-6)
    # the steering box: the unsteered and the steered continuation side by side
    page.fill("#steer-prompt", "Le")
    page.fill("#steer-value", "5")
    page.fill("#steer-tokens", "6")
    page.click("#steer-run")
    page.wait_for_function("document.getElementById('steer-steered').textContent.length > 0")
    _, steered = get(url, "/api/steer", layer=layer, neuron=neuron, value=5, prompt="Le", max_new_tokens=6)
    _, plain = get(url, "/api/steer", prompt="Le", max_new_tokens=6)
    assert page.text_content("#steer-steered") == steered["text"] and page.text_content("#steer-plain") == plain["text"]
    # a neuron no method selected: its logit effects come from the server
    lape, lap = (built.data.selection.selections[m].any(dim=0) for m in ("lape", "lap"))
    layer, neuron = (~lape & ~lap).nonzero()[-1].tolist()
    page.select_option("#search-kind", "neuron")
    page.fill("#search-input", f"L{layer} N{neuron}")
    page.click("#search-button")
    page.wait_for_function(  # this neuron's panel, filled by the server's answer (not the neuron open before)
        f"document.getElementById('panel-logits').dataset.neuron === '{layer}:{neuron}'"
        " && document.querySelector('#panel-logits .promoted td.t') !== null"
    )
    effect = (hf.model.layers[layer].mlp.down_proj.weight[:, neuron] @ hf.lm_head.weight.T).detach()
    ids = [int(t.get_attribute("data-token-id")) for t in page.locator("#panel-logits .promoted td.t").all()]
    assert ids == effect.topk(10).indices.tolist() and page.locator("#panel-logit-hist rect").count() == 24
    assert "promotes" in page.inner_text("#neuron-summary")
    # search by token goes through the API
    page.select_option("#search-kind", "token")
    page.fill("#search-input", "the")
    page.click("#search-button")
    page.wait_for_selector("#search-results table.search-table")
    assert any(p.startswith("/api/search?") for p in inside)
    assert errors == [] and outside == []
    assert {p.split("?")[0] for p in inside} <= {
        "/",
        "/explorer_files/layer_000.js",
        "/explorer_files/layer_001.js",
        "/explorer_files/vocab.js",
        "/api/activations",
        "/api/steer",
        "/api/search",
        "/api/logits",
    }
    page.close()


# ---- the command ------------------------------------------------------------------------------------
def test_cli_serve_starts_answers_and_stops_on_ctrl_c(run_dir, config):
    cmd = [
        sys.executable,
        "-m",
        "lapelens",
        "explore",
        "--serve",
        "--port",
        "0",
        "--stats",
        str(run_dir / "stats"),
        "--neurons",
        str(run_dir / "neurons_lape"),
        "--model",
        config["model"],
        "--corpus",
        config["corpus"],
        "--context-tokens",
        "32",
        "--quiet",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "serving the explorer at" in line:
                break
        assert lines and "serving the explorer at" in lines[-1], "".join(lines)
        url = lines[-1].split(" at ")[1].split()[0].rstrip("/")
        assert url.startswith("http://127.0.0.1:")
        status, info = get(url, "/api/info")
        assert status == 200 and info["method"] == "lape" and info["languages"] == ["en", "zh", "fr", "ja"]
        with urllib.request.urlopen(url + "/", timeout=60) as r:
            assert b'content="live"' in r.read()
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
        assert proc.returncode == 0 and "stopped" in rest, rest
    finally:
        if proc.poll() is None:
            proc.kill()
