"""The page's stylesheet and script (hand-written, no libraries): inlined into every explorer file."""

CSS = r"""
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #263238; color: #eceff1; padding: 10px 18px; }
header h1 { font-size: 18px; margin: 0 0 4px; }
header .meta { font-size: 12px; color: #b0bec5; }
main { padding: 12px 18px; max-width: 1250px; }
section { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px 14px; margin: 0 0 12px; }
h2 { font-size: 15px; margin: 0 0 8px; }
h3 { font-size: 13px; margin: 8px 0 4px; }
.note { color: #666; font-size: 12px; }
table.grid { border-collapse: collapse; }
table.grid td, table.grid th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; min-width: 34px; }
table.grid td.cell { cursor: pointer; }
table.grid td.cell:hover { outline: 2px solid #ff6f00; }
table.grid td.picked { outline: 2px solid #d50000; }
.list { max-height: 260px; overflow-y: auto; border: 1px solid #eee; margin-top: 6px; }
.list table { border-collapse: collapse; width: 100%; font-size: 12px; }
.list td, .list th { padding: 2px 6px; border-bottom: 1px solid #f0f0f0; text-align: left; }
.list tr.neuron-row { cursor: pointer; }
.list tr.neuron-row:hover { background: #fff3e0; }
.panels { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.panels section { margin: 0; }
.wide { grid-column: 1 / span 2; }
.ctx { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; margin: 2px 0; white-space: pre-wrap; }
.ctx span.tok { border-radius: 2px; }
.ctx span.part { display: inline-block; width: 3px; height: 1em; vertical-align: text-bottom; }
.ctx .val { color: #888; display: inline-block; width: 56px; }
.langblock { display: inline-block; vertical-align: top; margin: 0 14px 8px 0; }
.tokens td { padding: 1px 6px; font-size: 12px; }
.tokens td.t { font-family: ui-monospace, Menlo, Consolas, monospace; background: #f5f5f5; }
svg text { font-size: 11px; }
input[type=number] { width: 70px; }
button { cursor: pointer; }
.err { color: #c62828; }
"""

JS = r"""
"use strict";
const D = JSON.parse(document.getElementById("explorer-data").textContent);
const K = D.languages.length, L = D.n_layers, N = D.d_mlp;
const METHODS = Object.keys(D.selections);
const detailRow = new Map(D.detail.index.map((f, i) => [f, i]));
const lossRow = new Map(D.loss.neurons.map((f, i) => [f, i]));
const state = { method: METHODS[0], layer: null, lang: null, neuron: null };
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const name = (f) => `L${Math.floor(f / N)} N${f % N}`;
const tokText = (id) => id < 0 ? "" : (D.vocab[id] ?? `#${id}`);
const shown = (s) => s.replace(/\n/g, "\u23ce").replace(/\t/g, "\u21e5");

// membership[method][flat] = list of language indices
const membership = {};
for (const m of METHODS) {
  const mem = new Map();
  D.languages.forEach((lang, k) => { for (const f of D.selections[m][lang]) { if (!mem.has(f)) mem.set(f, []); mem.get(f).push(k); } });
  membership[m] = mem;
}

function bars(labels, values, opts) {
  // Horizontal bars with the value written beside each one; opts: {fmt, max, min, color, ref, cls}
  const w = 330, rowH = 18, left = 44, right = 62, h = rowH * labels.length + 6;
  const min = Math.min(0, opts.min ?? Math.min(...values)), max = Math.max(opts.max ?? Math.max(...values), 1e-12);
  const x = (v) => left + (w - left - right) * (v - min) / (max - min || 1);
  let s = `<svg width="${w}" height="${h}" class="${opts.cls || ""}">`;
  labels.forEach((lab, i) => {
    const v = values[i], y = 3 + i * rowH, x0 = x(0), x1 = x(v);
    const color = typeof opts.color === "function" ? opts.color(v) : (opts.color || "#ff8f00");
    s += `<text x="${left - 6}" y="${y + 12}" text-anchor="end">${esc(lab)}</text>`;
    s += `<rect x="${Math.min(x0, x1)}" y="${y + 2}" width="${Math.max(Math.abs(x1 - x0), 0.5)}" height="${rowH - 5}" fill="${color}"></rect>`;
    s += `<text class="value" data-label="${esc(lab)}" x="${w - right + 4}" y="${y + 12}">${opts.fmt(v)}</text>`;
  });
  if (opts.ref != null && opts.ref >= min && opts.ref <= max) {
    s += `<line x1="${x(opts.ref)}" x2="${x(opts.ref)}" y1="0" y2="${h}" stroke="#333" stroke-dasharray="3,2"></line>`;
  }
  return s + "</svg>";
}

// ---- overview -------------------------------------------------------------------------------
function renderOverview() {
  const m = state.method;
  const counts = Array.from({length: L}, () => new Array(K).fill(0));
  D.languages.forEach((lang, k) => { for (const f of D.selections[m][lang]) counts[Math.floor(f / N)][k]++; });
  const max = Math.max(1, ...counts.flat());
  let s = `<table class="grid" id="grid"><tr><th>layer</th>${D.languages.map((l) => `<th>${esc(l)}</th>`).join("")}<th>all</th></tr>`;
  for (let i = 0; i < L; i++) {
    s += `<tr><th>${i}</th>`;
    for (let k = 0; k < K; k++) {
      const c = counts[i][k], a = (0.08 + 0.8 * c / max).toFixed(2), picked = state.layer === i && state.lang === k ? " picked" : "";
      s += `<td class="cell${picked}" data-layer="${i}" data-lang="${k}" style="background:rgba(255,143,0,${c ? a : 0})">${c}</td>`;
    }
    s += `<td>${counts[i].reduce((a, b) => a + b, 0)}</td></tr>`;
  }
  const tot = D.languages.map((_, k) => counts.reduce((a, r) => a + r[k], 0));
  s += `<tr><th>all</th>${tot.map((t) => `<td>${t}</td>`).join("")}<td>${membership[m].size} neurons</td></tr></table>`;
  $("grid-box").innerHTML = s;
  for (const td of document.querySelectorAll("#grid td.cell")) {
    td.onclick = () => { state.layer = +td.dataset.layer; state.lang = +td.dataset.lang; renderOverview(); };
  }
  renderList();
}

function renderList() {
  const m = state.method, mem = membership[m];
  let items = [...mem.keys()];
  let what = `all ${items.length} neurons that ${m} selected`;
  if (state.layer != null) {
    items = items.filter((f) => Math.floor(f / N) === state.layer && mem.get(f).includes(state.lang));
    what = `${items.length} ${m} neurons of layer ${state.layer} for ${D.languages[state.lang]} <button id="show-all">show all</button>`;
  }
  const r = (f) => D.rank[f] < 0 ? Infinity : D.rank[f];
  items.sort((a, b) => r(a) - r(b) || a - b);
  let s = `<table><tr><th>neuron</th><th>languages (${esc(m)})</th><th>LAPE rank</th><th>entropy</th></tr>`;
  for (const f of items) {
    s += `<tr class="neuron-row" data-flat="${f}" data-layer="${Math.floor(f / N)}" data-neuron="${f % N}"><td>${name(f)}</td>` +
         `<td>${mem.get(f).map((k) => D.languages[k]).join(", ")}</td><td>${D.rank[f] < 0 ? "\u2013" : D.rank[f]}</td>` +
         `<td>${D.entropy[f].toFixed(3)}</td></tr>`;
  }
  $("list-title").innerHTML = what;
  $("neuron-list").innerHTML = s + "</table>";
  if ($("show-all")) $("show-all").onclick = () => { state.layer = state.lang = null; renderOverview(); };
  for (const tr of document.querySelectorAll("#neuron-list tr.neuron-row")) tr.onclick = () => openNeuron(+tr.dataset.layer, +tr.dataset.neuron);
}

// ---- one neuron -----------------------------------------------------------------------------
function openNeuron(layer, neuron) {
  if (!Number.isInteger(layer) || !Number.isInteger(neuron) || layer < 0 || layer >= L || neuron < 0 || neuron >= N) {
    $("pick-error").textContent = `No such neuron: layers are 0-${L - 1}, neurons 0-${N - 1}.`;
    return;
  }
  $("pick-error").textContent = "";
  const f = layer * N + neuron;
  state.neuron = f;
  $("layer-input").value = layer; $("neuron-input").value = neuron;
  try { history.replaceState(null, "", `#L${layer}N${neuron}`); } catch (e) { /* sandboxed iframe (notebook) */ }
  $("neuron-title").textContent = `Layer ${layer}, neuron ${neuron}`;
  const panels = { "panel-selection": selectionPanel, "panel-firing": firingPanel, "panel-mean": meanPanel,
                   "panel-hist": histPanel, "panel-contexts": contextPanel, "panel-logits": logitPanel, "panel-loss": lossPanel };
  for (const [id, fn] of Object.entries(panels)) {
    const el = $(id);
    el.innerHTML = fn(f);
    el.dataset.neuron = `${layer}:${neuron}`;
  }
  $("neuron-view").style.display = "";
  $("neuron-view").scrollIntoView({block: "start"});
}

function selectionPanel(f) {
  const rank = D.rank[f];
  let s = `<h2>LAPE score and selections \u2013 ${name(f)}</h2>`;
  s += `<p>Entropy of the normalised firing probabilities: <b id="entropy-value">${D.entropy[f].toFixed(4)}</b>. `;
  s += rank < 0 ? `LAPE rank: <b id="rank-value">none</b> (no language fires above the filter threshold ${D.lape_threshold.toFixed(4)}, so LAPE gives it H = \u221e).`
                : `LAPE rank: <b id="rank-value">${rank}</b> of ${L * N} neurons (0 = lowest entropy among those passing the filter; LAPE keeps the first ${D.lape_total}).`;
  s += `</p><table class="grid" id="selection-table"><tr><th>method</th>${D.languages.map((l) => `<th>${esc(l)}</th>`).join("")}</tr>`;
  for (const m of METHODS) {
    const ks = membership[m].get(f) || [];
    s += `<tr><th>${esc(m)}</th>${D.languages.map((_, k) => `<td data-method="${m}" data-lang="${D.languages[k]}">${ks.includes(k) ? "\u2713" : ""}</td>`).join("")}</tr>`;
  }
  return s + "</table>";
}

function firingPanel(f) {
  const p = D.languages.map((_, k) => D.count[f * K + k] / D.n[k]);
  return `<h2>Firing probability p<sub>k</sub> \u2013 ${name(f)}</h2>` +
    bars(D.languages, p, { fmt: (v) => v.toFixed(3), min: 0, max: Math.max(...p, D.lape_threshold), ref: D.lape_threshold, cls: "firing" }) +
    `<p class="note">Share of language-k tokens with hook_pre &gt; 0 (from the run's statistics: ${D.languages.map((l, k) => `${l} ${D.n[k]}`).join(", ")} tokens). Dashed: LAPE's filter threshold ${D.lape_threshold.toFixed(4)}.</p>`;
}

function meanPanel(f) {
  const v = D.languages.map((_, k) => D.mean[f * K + k]);
  return `<h2>Mean activation \u2013 ${name(f)}</h2>` +
    bars(D.languages, v, { fmt: (x) => x.toFixed(4), color: (x) => x < 0 ? "#64b5f6" : "#8e24aa", cls: "mean" }) +
    `<p class="note">Mean of act_fn(hook_pre) per language (LAVE's score), from the run's statistics.</p>`;
}

function notDetailed(f) {
  return `<p class="note">Only the ${D.detail.index.length} neurons selected by ${D.settings.detail_methods.join(", ")} get contexts and histograms (a second pass over train text); ${name(f)} was not selected by any of them.</p>`;
}

function histPanel(f) {
  let s = `<h2>Activation distribution per language \u2013 ${name(f)}</h2>`;
  const d = detailRow.get(f);
  if (d === undefined) return s + notDetailed(f);
  const [lo, hi] = D.detail.edges[d], hist = D.detail.hist[d], nb = hist[0].length, w = 150, h = 60;
  const shares = hist.map((row) => { const t = row.reduce((a, b) => a + b, 0) || 1; return row.map((c) => c / t); });
  const top = Math.sqrt(Math.max(...shares.flat(), 1e-12));
  D.languages.forEach((lang, k) => {
    s += `<div class="langblock"><b>${esc(lang)}</b><br><svg width="${w}" height="${h + 14}" class="hist" data-lang="${lang}">`;
    shares[k].forEach((v, b) => {
      const bh = h * Math.sqrt(v) / top, x = b * w / nb;
      s += `<rect x="${x}" y="${h - bh}" width="${w / nb - 0.5}" height="${bh}" fill="#00897b"><title>${(lo + (hi - lo) * b / nb).toFixed(3)} to ${(lo + (hi - lo) * (b + 1) / nb).toFixed(3)}: ${(100 * v).toFixed(2)}% (${hist[k][b]} tokens)</title></rect>`;
    });
    s += `<line x1="${w * (0 - lo) / (hi - lo)}" x2="${w * (0 - lo) / (hi - lo)}" y1="0" y2="${h}" stroke="#999" stroke-dasharray="2,2"></line>`;
    s += `<text x="0" y="${h + 12}">${lo.toFixed(2)}</text><text x="${w}" y="${h + 12}" text-anchor="end">${hi.toFixed(2)}</text></svg></div>`;
  });
  return s + `<p class="note">Share of tokens per bin of act_fn(hook_pre), square-root height scale, on ${D.settings.context_tokens_label}; dashed line at 0; the outer bins also hold everything beyond them. Hover a bar for its numbers.</p>`;
}

function shade(a, max) {
  if (a >= 0) return `rgba(255,111,0,${Math.min(1, a / (max || 1)).toFixed(2)})`;
  return `rgba(66,165,245,${Math.min(1, -a / (max || 1) * 4).toFixed(2)})`;
}

function level(c) {
  // One character per token: "0"-"9", "a"-"z" = 0..35 levels, "A"-"Z" = -1..-26 (see page.py).
  const code = c.charCodeAt(0);
  return code >= 65 && code <= 90 ? -(code - 64) : parseInt(c, 36);
}

function contextPanel(f) {
  let s = `<h2>Top-activating contexts per language \u2013 ${name(f)}</h2>`;
  const d = detailRow.get(f);
  if (d === undefined) return s + notDetailed(f);
  const top = D.detail.top[d], scale = D.detail.scale[d], B = D.detail.before;
  D.languages.forEach((lang, k) => {
    s += `<h3>${esc(lang)}</h3>`;
    const rows = top[k].map((v, r) => [v, r]).filter(([v, r]) => v !== null && D.detail.chunk[d][k][r] >= 0);
    if (!rows.length) s += `<p class="note">no text</p>`;
    for (const [v, r] of rows) {
      const ref = D.detail.chunk[d][k][r], chunk = D.chunks[lang][ref], fix = (D.chunk_text[lang] || {})[ref] || {}, pos = D.detail.pos[d][k][r], levels = D.detail.act[d][k][r];
      s += `<div class="ctx" data-lang="${lang}" data-pos="${pos}"><span class="val">${v.toFixed(3)}</span>`;
      for (let i = 0; i < levels.length; i++) {
        const p = pos - B + i;
        if (p < 0 || p >= chunk.length) continue;
        const a = level(levels[i]) * scale / D.detail.levels, id = chunk[p], mark = i === B ? ";font-weight:bold" : "";
        const value = i === B ? v.toFixed(3) : `\u2248${a.toFixed(2)}`;
        const text = fix[p] ?? tokText(id);
        s += `<span class="tok${text ? "" : " part"}" data-token-id="${id}" style="background:${shade(a, scale)}${mark}" title="${esc(tokText(id))}: ${value}">${esc(shown(text))}</span>`;
      }
      s += `</div>`;
    }
  });
  return s + `<p class="note">Each row: a chunk's maximum activation (left; bold token) with ${B} tokens before it and ${D.settings.window[1]} after; at most one context per ${D.settings.run_config.seq_len ?? ""}-token chunk, from ${D.settings.context_tokens_label}. Orange = positive activation relative to this neuron's largest, blue = negative; hover a token for its (approximate) value.</p>`;
}

function logitPanel(f) {
  const T = D.logits.top, off = f * T;
  const table = (ids, vals, cls) => `<table class="tokens ${cls}">` + ids.slice(off, off + T).map((id, i) =>
    `<tr><td class="t" data-token-id="${id}">${esc(shown(tokText(id)))}</td><td>${vals[off + i].toFixed(3)}</td></tr>`).join("") + "</table>";
  return `<h2>Direct effect on the logits \u2013 ${name(f)}</h2>` +
    `<div class="langblock"><h3>promoted</h3>${table(D.logits.promoted, D.logits.promoted_logit, "promoted")}</div>` +
    `<div class="langblock"><h3>suppressed</h3>${table(D.logits.suppressed, D.logits.suppressed_logit, "suppressed")}</div>` +
    `<p class="note">W_out[layer][neuron] @ W_U: the logit change per unit of the neuron's output (hook_post), through the residual stream only (no final norm scale, no later layers).</p>`;
}

function lossPanel(f) {
  let s = `<h2>Loss change when this neuron alone is deactivated \u2013 ${name(f)}</h2>`;
  const r = lossRow.get(f), S = D.settings;
  const cap = `Computed for ${S.loss_neurons} of the ${S.lape_neurons} LAPE neurons (cap ${S.loss_neurons_cap}: each language's best-ranked, round robin), on ${S.loss_tokens_label} of held-out (${S.loss_split}) text.`;
  if (r === undefined) return s + `<p class="note">Not computed for ${name(f)}. ${cap}</p>`;
  const v = D.loss.delta[r];
  return s + bars(D.languages, v, { fmt: (x) => (x >= 0 ? "+" : "") + x.toFixed(5), color: (x) => x > 0 ? "#e53935" : "#1e88e5", cls: "loss" }) +
    `<p class="note">Change of the mean next-token loss (nats) with hook_post[..., neuron] = 0; unperturbed loss ${D.languages.map((l, k) => `${l} ${D.loss.base[k].toFixed(3)}`).join(", ")}. ${cap}</p>`;
}

// ---- wiring ---------------------------------------------------------------------------------
function init() {
  const sel = $("method-select");
  sel.innerHTML = METHODS.map((m) => `<option value="${m}">${m} (${membership[m].size} neurons)</option>`).join("");
  sel.onchange = () => { state.method = sel.value; renderOverview(); };
  $("open-neuron").onclick = () => openNeuron(parseInt($("layer-input").value, 10), parseInt($("neuron-input").value, 10));
  for (const id of ["layer-input", "neuron-input"]) $(id).onkeydown = (e) => { if (e.key === "Enter") $("open-neuron").click(); };
  renderOverview();
  const m = /^#L(\d+)N(\d+)$/.exec(location.hash);
  if (m) openNeuron(+m[1], +m[2]);
}
init();
"""
