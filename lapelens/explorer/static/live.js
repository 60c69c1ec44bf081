// The neuron explorer, part 4: live mode (the page served by `lapelens explore --serve`):
// the neuron on text you type, steering, and search by token through the server's JSON API.
"use strict";

async function api(path, params) {
  const url = `${path}?${new URLSearchParams(params)}`;
  const r = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
}

async function searchLive(q) {
  const variants = [...new Set([q, q.startsWith(" ") ? q : " " + q])], out = [];
  for (const token of variants) {
    const r = await api("/api/search", { token });
    if (r.token_id !== null) out.push({ token, id: r.token_id, neurons: r.neurons.map((n) => ({ f: n.layer * N + n.neuron, effect: n.effect })) });
  }
  return out;
}

// A neuron without logit tables on the page: the server computes them from the weights.
async function liveLogits(f, X, F) {
  try {
    const r = await api("/api/logits", { layer: Math.floor(f / N), neuron: f % N, top: X.logits.top });
    for (const t of [...r.promoted, ...r.suppressed]) VOCAB[t.id] ??= t.text;
    F.logits = { promoted: r.promoted.map((t) => t.id), promotedValue: r.promoted.map((t) => t.effect),
                 suppressed: r.suppressed.map((t) => t.id), suppressedValue: r.suppressed.map((t) => t.effect),
                 range: r.histogram.range, hist: r.histogram.counts };
  } catch (e) {
    for (const id of ["panel-logits", "panel-logit-hist"]) $(id).querySelector(".logits-missing").innerHTML = `<span class="err">${esc(e.message)}</span>`;
    return;
  }
  if (state.neuron !== f) return;  // another neuron was opened meanwhile
  $("panel-logits").innerHTML = logitPanel(f, X, F);
  $("panel-logit-hist").innerHTML = logitHistPanel(f, X, F);
  $("neuron-summary").textContent = summaryLine(f, X, F);
}

function livePanel(f, X, F) {
  const layer = Math.floor(f / N), neuron = f % N, el = $("panel-live");
  const detail = F.detail, suggested = detail ? detail.scale : Math.max(1, ...F.mean.map(Math.abs)) * 4;
  el.style.display = "";
  el.innerHTML = `<h2>Live: ${name(f)} on your text, and steering</h2>
<div class="row"><textarea id="live-text" rows="3" placeholder="Type text in any language, then run">${esc(state.liveText || "")}</textarea></div>
<div class="row"><button id="live-run">show activations</button><span id="live-status" class="note"></span></div>
<div id="live-tokens" class="ctx"></div>
<h3>Steering: greedy continuation with and without the intervention</h3>
<div class="row"><label><input type="radio" name="steer-kind" value="neuron" checked> set ${name(f)}'s activation to
<input type="number" id="steer-value" step="any" value="${suggested.toFixed(3)}"></label>
<label><input type="radio" name="steer-kind" value="language"> set the ${esc(D.selection.primary)} neurons of
<select id="steer-language">${D.languages.map((l) => `<option>${esc(l)}</option>`).join("")}</select> to
<input type="number" id="steer-scale" step="any" value="${D.settings.steer_scale}"> \u00d7 their mean activation</label></div>
<div class="row"><input id="steer-prompt" class="wide-input" placeholder="prompt (may be empty: the separator alone)" value="${esc(state.livePrompt || "")}"></div>
<div class="row">new tokens <input type="number" id="steer-tokens" value="24" min="1" max="${D.live_limits.max_new_tokens}">
<button id="steer-run">continue</button><span id="steer-status" class="note"></span></div>
<div class="steer-out"><div><b>without</b><br><span id="steer-plain"></span></div><div><b>with</b><br><span id="steer-steered"></span></div></div>
<p class="note">Activations: act_fn(hook_pre) of this neuron on each token, the text run after the separator token. Setting a neuron's activation to v sets hook_post = v (plain MLP) or v \u00d7 hook_pre_linear (gated MLP) at every position; greedy decoding, no repetition penalty.</p>`;
  $("live-run").onclick = async () => {
    state.liveText = $("live-text").value;
    $("live-status").textContent = "running\u2026";
    try {
      const r = await api("/api/activations", { layer, neuron, text: state.liveText });
      const max = Math.max(1e-6, ...r.values.map(Math.abs));
      $("live-tokens").innerHTML = shadedTokens(r.ids, r.values, r.runs, { texts: r.tokens, max });
      $("live-status").textContent = `${r.values.length} tokens; largest ${Math.max(...r.values).toFixed(3)}`;
    } catch (e) {
      $("live-status").innerHTML = `<span class="err">${esc(e.message)}</span>`;
    }
  };
  $("steer-run").onclick = async () => {
    state.livePrompt = $("steer-prompt").value;
    const base = { prompt: state.livePrompt, max_new_tokens: $("steer-tokens").value };
    const kind = document.querySelector('input[name="steer-kind"]:checked').value;
    const params = kind === "neuron" ? { ...base, layer, neuron, value: $("steer-value").value }
                                     : { ...base, language: $("steer-language").value, scale: $("steer-scale").value };
    $("steer-status").textContent = "generating\u2026";
    try {
      const [plain, steered] = [await api("/api/steer", base), await api("/api/steer", params)];
      $("steer-plain").textContent = plain.text;
      $("steer-steered").textContent = steered.text;
      $("steer-status").textContent = "";
    } catch (e) {
      $("steer-status").innerHTML = `<span class="err">${esc(e.message)}</span>`;
    }
  };
}
